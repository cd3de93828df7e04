//! How the CLI shows the library's progress: a spinner on stderr for long
//! steps (indicatif hides it when stderr is not a terminal), warnings and
//! notes as `warning: ...` and `unibeam: ...` lines.

use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Mutex;
use std::time::Duration;
use unibeam_lifecycle::Progress;

#[derive(Default)]
pub struct Console {
    bar: Mutex<Option<ProgressBar>>,
}

impl Console {
    /// Prints `line` on stderr without tearing the spinner.
    fn print(&self, line: &str) {
        match self.bar.lock().ok().as_ref().and_then(|b| b.as_ref()) {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

impl Progress for Console {
    fn begin(&self, task: &str) {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
                .expect("static template is valid"),
        );
        bar.set_prefix(task.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn step(&self, what: &str) {
        if let Some(bar) = self.bar.lock().ok().as_ref().and_then(|b| b.as_ref()) {
            bar.set_message(what.to_string());
        }
    }

    fn end(&self) {
        if let Some(bar) = self.bar.lock().ok().and_then(|mut b| b.take()) {
            bar.finish_and_clear();
        }
    }

    fn warn(&self, warning: &str) {
        self.print(&format!("warning: {warning}"));
    }

    fn note(&self, line: &str) {
        self.print(&format!("unibeam: {line}"));
    }
}
