//! How the library tells its caller what it is doing: the CLI shows a
//! spinner and prints warnings on stderr, the control plane logs them,
//! tests stay quiet.

/// Receives the progress of long steps and what the user should know.
pub trait Progress {
    /// A long task begins (e.g. "build"); `step`s follow until `end`.
    fn begin(&self, _task: &str) {}
    /// What the current task is doing now.
    fn step(&self, _what: &str) {}
    /// The current task is over.
    fn end(&self) {}
    /// Something that may go wrong later, e.g. a setting the guest ignores.
    fn warn(&self, warning: &str);
    /// What unibeam decided or did, e.g. the accelerator and why.
    fn note(&self, line: &str);
}

/// Drops everything: for callers that only want the result.
pub struct Quiet;

impl Progress for Quiet {
    fn warn(&self, _warning: &str) {}
    fn note(&self, _line: &str) {}
}

/// Collects warnings and notes, for tests that check them.
#[derive(Default)]
pub struct Recorded {
    pub lines: std::sync::Mutex<Vec<String>>,
}

impl Progress for Recorded {
    fn warn(&self, warning: &str) {
        self.push(format!("warning: {warning}"));
    }
    fn note(&self, line: &str) {
        self.push(line.to_string());
    }
}

impl Recorded {
    fn push(&self, line: String) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(line);
        }
    }

    /// Everything recorded so far.
    pub fn all(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}
