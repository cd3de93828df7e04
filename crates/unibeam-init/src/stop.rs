//! The graceful-stop state machine: SIGTERM to the BEAM (it runs
//! `init:stop()`), then SIGKILL to everything once the timeout passes.

use crate::log;
use crate::platform::Platform;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

pub struct Stop {
    timeout: Duration,
    deadline: Option<Instant>,
    killed: bool,
}

impl Stop {
    pub fn new(timeout: Duration) -> Stop {
        Stop {
            timeout,
            deadline: None,
            killed: false,
        }
    }

    pub fn requested(&self) -> bool {
        self.deadline.is_some()
    }

    /// The first request sends SIGTERM and starts the clock. Later ones
    /// send SIGTERM again but keep the clock: a BEAM still booting ignores
    /// SIGTERM until its signal server runs, and the host presses the
    /// power button again until the VM is off.
    pub fn request(&mut self, p: &mut impl Platform, beam: i32, now: Instant, why: &str) {
        if self.deadline.is_some() {
            if !self.killed {
                p.signal(beam, Signal::SIGTERM);
            }
            return;
        }
        log!(
            "{why}: asking the BEAM to stop (SIGTERM), {}s before SIGKILL",
            self.timeout.as_secs()
        );
        p.signal(beam, Signal::SIGTERM);
        self.deadline = Some(now + self.timeout);
    }

    /// How long to wait for events before `enforce` must run again.
    pub fn wait(&self, now: Instant) -> Option<Duration> {
        match self.deadline {
            None => None,
            Some(_) if self.killed => Some(Duration::from_millis(100)),
            Some(d) => Some(d.saturating_duration_since(now)),
        }
    }

    /// Past the deadline: SIGKILL to every process, once.
    pub fn enforce(&mut self, p: &mut impl Platform, now: Instant) {
        if let Some(d) = self.deadline {
            if !self.killed && now >= d {
                log!(
                    "the BEAM did not stop within {}s: SIGKILL to every process",
                    self.timeout.as_secs()
                );
                p.signal(-1, Signal::SIGKILL);
                self.killed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::recorder::Recorder;

    #[test]
    fn shutdown_sequence_terms_then_kills_once() {
        let mut p = Recorder::default();
        let mut stop = Stop::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(stop.wait(t0), None, "no deadline before a request");
        stop.enforce(&mut p, t0 + Duration::from_secs(60));
        assert!(p.calls.is_empty(), "nothing to enforce before a request");

        stop.request(&mut p, 78, t0, "power button pressed");
        stop.request(&mut p, 78, t0 + Duration::from_secs(1), "SIGTERM");
        assert_eq!(p.calls, ["signal 78 SIGTERM", "signal 78 SIGTERM"]);
        assert_eq!(
            stop.wait(t0 + Duration::from_secs(2)),
            Some(Duration::from_secs(3))
        );

        stop.enforce(&mut p, t0 + Duration::from_secs(4));
        assert_eq!(
            p.calls.len(),
            2,
            "still within the timeout: the clock kept its start"
        );
        stop.enforce(&mut p, t0 + Duration::from_secs(5));
        stop.enforce(&mut p, t0 + Duration::from_secs(6));
        assert_eq!(
            p.calls,
            ["signal 78 SIGTERM", "signal 78 SIGTERM", "signal -1 SIGKILL"]
        );
        stop.request(&mut p, 78, t0 + Duration::from_secs(7), "power button pressed");
        assert_eq!(p.calls.len(), 3, "nothing after the kill");
        assert!(stop.requested());
    }
}
