//! `unibeam run --timings`: picks init's timestamped console lines out of
//! the stream and reports the boot timeline once the applications started.

use std::io::Write;
use std::time::Instant;
use unibeam_spec::milestone;

/// The label the timeline shows once the applications started.
const APPS_STARTED: &str = "applications started";

/// The boot milestones init logs, with the label the timeline shows.
const MILESTONES: &[(&str, &str)] = &[
    (milestone::INIT_STARTED, "kernel -> init"),
    (milestone::MODULES_LOADED, "modules loaded"),
    (milestone::NETWORK_UP, "network up"),
    (milestone::BEAM_EXECED, "BEAM exec'd"),
    (milestone::APPS_STARTED, APPS_STARTED),
];

/// `[    2.389] unibeam-init: started ...` → (2.389, label)
pub fn milestone(line: &str) -> Option<(f64, &'static str)> {
    let (_, label) = MILESTONES.iter().find(|(needle, _)| line.contains(needle))?;
    let stamp = line
        .trim_start()
        .strip_prefix('[')?
        .split(']')
        .next()?
        .trim()
        .parse()
        .ok()?;
    Some((stamp, label))
}

/// The timeline as a small table: guest time, step, and time since the
/// previous step.
pub fn render(steps: &[(f64, &str, f64)]) -> String {
    let mut out = String::from("boot timeline (guest clock; host seconds since `run` started):\n");
    let mut previous = 0.0;
    for (stamp, label, host) in steps {
        out.push_str(&format!(
            "  {stamp:>7.3} s  {label:<22} +{:.3} s   (host {host:.2} s)\n",
            stamp - previous
        ));
        previous = *stamp;
    }
    out
}

/// Passes the console through, collects the milestones, and hands the
/// rendered timeline to `report` once the applications started.
pub struct TimelineWriter<W: Write> {
    inner: W,
    started: Instant,
    pending: Vec<u8>,
    steps: Vec<(f64, &'static str, f64)>,
    report: Box<dyn FnMut(&str) + Send>,
}

impl<W: Write> TimelineWriter<W> {
    pub fn new(inner: W, started: Instant, report: Box<dyn FnMut(&str) + Send>) -> Self {
        TimelineWriter {
            inner,
            started,
            pending: Vec::new(),
            steps: Vec::new(),
            report,
        }
    }

    fn note(&mut self, line: &str) {
        if let Some((stamp, label)) = milestone(line) {
            self.steps
                .push((stamp, label, self.started.elapsed().as_secs_f64()));
            if label == APPS_STARTED {
                (self.report)(&render(&self.steps));
            }
        }
    }
}

impl<W: Write> Write for TimelineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write_all(buf)?;
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.note(&String::from_utf8_lossy(&line));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milestones_are_recognised() {
        assert_eq!(
            milestone("[    2.389] unibeam-init: started (kernel -> init)"),
            Some((2.389, "kernel -> init"))
        );
        assert_eq!(
            milestone("[    6.531] unibeam-init: applications started"),
            Some((6.531, "applications started"))
        );
        assert_eq!(milestone("hello listening on port 8080"), None);
    }

    #[test]
    fn writer_passes_through_and_collects() {
        let mut w = TimelineWriter::new(Vec::new(), Instant::now(), Box::new(|_| {}));
        w.write_all(b"[    2.000] unibeam-init: started (kernel -> init)\n[    2.5")
            .unwrap();
        w.write_all(b"00] unibeam-init: modules loaded (11)\nnoise\n")
            .unwrap();
        assert_eq!(
            w.steps.iter().map(|s| s.1).collect::<Vec<_>>(),
            ["kernel -> init", "modules loaded"]
        );
        assert!(String::from_utf8_lossy(&w.inner).ends_with("noise\n"));
        let table = render(&w.steps);
        assert!(
            table.contains("modules loaded") && table.contains("+0.500 s"),
            "{table}"
        );
    }
}
