//! Runs the BEAM as init's child: forwards stop requests, reaps every
//! orphan, and returns the BEAM's exit status.

use crate::log;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use unibeam_spec::ReleaseSpec;

/// How long the BEAM gets to run `init:stop()` before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit: timeval (16), type, code (2 each), value (4).
const INPUT_EVENT_SIZE: usize = 24;

/// Signals init handles itself instead of dying from or ignoring them.
fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGPWR,
    ] {
        set.add(sig);
    }
    set
}

/// Blocks the handled signals and returns a descriptor that reports them.
/// Must run before any child exists, so no SIGCHLD is missed.
pub fn signal_fd() -> Result<SignalFd, String> {
    let set = handled_signals();
    set.thread_block().map_err(|e| format!("block signals: {e}"))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))
}

/// What a mix release's start script does to the filesystem before exec.
fn prepare_release(release: &ReleaseSpec) -> Result<(), String> {
    if let Some((from, to)) = release.config_copy() {
        fs::copy(&from, &to).map_err(|e| format!("copy {from} to {to}: {e}"))?;
    }
    if let Some(cookie_file) = release.cookie_file() {
        use std::os::unix::fs::PermissionsExt;
        let cookie = fs::read_to_string(&cookie_file).map_err(|e| format!("{cookie_file}: {e}"))?;
        let home_cookie = "/tmp/.erlang.cookie";
        fs::write(home_cookie, cookie.trim()).map_err(|e| format!("{home_cookie}: {e}"))?;
        fs::set_permissions(home_cookie, fs::Permissions::from_mode(0o400))
            .map_err(|e| format!("{home_cookie}: {e}"))?;
    }
    Ok(())
}

/// Starts erlexec the way the release's own start script would.
pub fn spawn_beam(release: &ReleaseSpec) -> Result<Pid, String> {
    prepare_release(release)?;
    let mut command = Command::new(release.erlexec());
    command
        .args(release.erlexec_args())
        .env_clear()
        .envs(release.env())
        .current_dir(&release.root)
        .stdin(Stdio::null());
    // The signals init reads through its signalfd are blocked in init, and
    // a blocked mask survives exec: the BEAM would never see SIGTERM.
    // SAFETY: the closure runs between fork and exec and only calls
    // pthread_sigmask, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| handled_signals().thread_unblock().map_err(std::io::Error::from));
    }
    let child = command
        .spawn()
        .map_err(|e| format!("exec {}: {e}", release.erlexec()))?;
    Ok(Pid::from_raw(child.id() as i32))
}

/// ACPI power button devices; QMP `system_powerdown` presses them.
pub fn open_power_buttons() -> Vec<File> {
    let Ok(entries) = fs::read_dir("/sys/class/input") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
        .filter(|e| {
            fs::read_to_string(e.path().join("device/name"))
                .map(|n| n.trim() == "Power Button")
                .unwrap_or(false)
        })
        .filter_map(|e| File::open(format!("/dev/input/{}", e.file_name().to_string_lossy())).ok())
        .collect()
}

fn power_pressed(button: &mut File) -> bool {
    let mut buf = [0u8; INPUT_EVENT_SIZE * 8];
    let Ok(n) = button.read(&mut buf) else {
        return false;
    };
    buf[..n].chunks_exact(INPUT_EVENT_SIZE).any(|ev| {
        let kind = u16::from_ne_bytes([ev[16], ev[17]]);
        let code = u16::from_ne_bytes([ev[18], ev[19]]);
        let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
        kind == EV_KEY && code == KEY_POWER && value == 1
    })
}

/// Shell-style status: the exit code, or 128 + the signal number.
fn exit_code(status: WaitStatus) -> Option<u8> {
    match status {
        WaitStatus::Exited(_, code) => Some(code as u8),
        WaitStatus::Signaled(_, sig, _) => Some(128u8.wrapping_add(sig as u8)),
        _ => None,
    }
}

/// Reaps every exited child; returns the BEAM's status if it was one of them.
fn reap(beam: Pid) -> Option<u8> {
    let mut beam_status = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return beam_status,
            Ok(status) if status.pid() == Some(beam) => beam_status = exit_code(status).or(beam_status),
            Ok(_) => {}
        }
    }
}

struct Stop {
    deadline: Option<Instant>,
    killed: bool,
}

impl Stop {
    fn request(&mut self, beam: Pid, why: &str) {
        if self.deadline.is_some() {
            return;
        }
        log!(
            "{why}: asking the BEAM to stop (SIGTERM), {}s before SIGKILL",
            STOP_TIMEOUT.as_secs()
        );
        let _ = kill(beam, Signal::SIGTERM);
        self.deadline = Some(Instant::now() + STOP_TIMEOUT);
    }

    fn timeout(&self) -> PollTimeout {
        match self.deadline {
            None => PollTimeout::NONE,
            Some(_) if self.killed => PollTimeout::from(100u16),
            Some(d) => {
                let ms = d.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::ZERO)
            }
        }
    }

    fn enforce(&mut self) {
        if let Some(d) = self.deadline {
            if !self.killed && Instant::now() >= d {
                log!("the BEAM did not stop in time: SIGKILL to every process");
                let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
                self.killed = true;
            }
        }
    }
}

/// Waits for the BEAM to exit, turning stop requests into SIGTERM.
pub fn supervise(beam: Pid, signals: &SignalFd, mut buttons: Vec<File>) -> u8 {
    let mut stop = Stop {
        deadline: None,
        killed: false,
    };
    loop {
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        fds.extend(buttons.iter().map(|b| PollFd::new(b.as_fd(), PollFlags::POLLIN)));
        let _ = poll(&mut fds, stop.timeout());
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
            .collect();
        drop(fds);
        if ready[0] {
            while let Ok(Some(info)) = signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => {}
                    Ok(sig) => stop.request(beam, &format!("received {sig}")),
                    Err(_) => {}
                }
            }
        }
        for (button, _) in buttons.iter_mut().zip(&ready[1..]).filter(|(_, r)| **r) {
            if power_pressed(button) {
                stop.request(beam, "power button pressed");
            }
        }
        if let Some(status) = reap(beam) {
            return status;
        }
        stop.enforce();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        let pid = Pid::from_raw(7);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 3)), Some(3));
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }

    #[test]
    fn stop_without_deadline_waits_forever() {
        let stop = Stop {
            deadline: None,
            killed: false,
        };
        assert_eq!(stop.timeout(), PollTimeout::NONE);
    }
}
