//! Console logging with the monotonic clock, so init's lines line up with
//! the kernel's own `[    1.234567]` timestamps.

use nix::time::{clock_gettime, ClockId};

/// Seconds since the kernel started.
pub fn uptime() -> f64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0)
}

/// Writes one `unibeam-init:` line to the console (stderr is /dev/console).
pub fn line(msg: &str) {
    eprintln!("[{:>9.3}] unibeam-init: {msg}", uptime());
}

/// Writes a boot milestone (`unibeam_spec::milestone`, whose text the
/// host looks for) followed by `detail`.
pub fn milestone(milestone: &str, detail: &str) {
    eprintln!("[{:>9.3}] {milestone}{detail}", uptime());
}

/// An error and its causes on one line, `a: b: c`: init has only the
/// console line and the verdict to say why something failed.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::log::line(&format!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chain_is_one_line_of_every_cause() {
        let e = crate::kmod::load("/nonexistent/virtio.ko").unwrap_err();
        assert_eq!(e.to_string(), "/nonexistent/virtio.ko");
        assert_eq!(
            super::chain(&e),
            "/nonexistent/virtio.ko: No such file or directory (os error 2)"
        );
    }
}
