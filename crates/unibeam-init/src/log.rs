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

#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::log::line(&format!($($arg)*)) };
}
