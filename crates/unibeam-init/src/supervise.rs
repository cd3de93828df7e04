//! Runs the BEAM as init's child: prepares its files, forwards its output
//! to the console, turns stop requests into a graceful stop, reaps every
//! orphan, and returns the BEAM's exit status.

use crate::log;
use crate::platform::Platform;
use crate::stop::Stop;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use thiserror::Error;
use unibeam_spec::{BootSpec, FileContent, APPS_STARTED_MARKER, BEAM_UID, INIT_FAILURE_STATUS, RUN_DIR};

#[derive(Debug, Error)]
pub enum SuperviseError {
    #[error("{what}")]
    Signals {
        what: &'static str,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("chown {path}")]
    Chown {
        path: String,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("{path}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("boot.json has no launch plan: run the image with this unibeam's `run`")]
    NoLaunchPlan,
    #[error("pipe")]
    Pipe(#[source] std::io::Error),
    #[error("exec {program}")]
    Exec {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// For `map_err`: an I/O error on the file at `path`.
fn at(path: &str) -> impl FnOnce(std::io::Error) -> SuperviseError + '_ {
    move |source| SuperviseError::File {
        path: path.into(),
        source,
    }
}

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
pub fn signal_fd() -> Result<SignalFd, SuperviseError> {
    let set = handled_signals();
    let failed = |what| move |source| SuperviseError::Signals { what, source };
    set.thread_block().map_err(failed("block signals"))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map_err(failed("signalfd"))
}

/// Writes what the launch needs (cookie, filtered vm.args, overrides, ...),
/// owned by the user the BEAM runs as.
fn prepare_files(spec: &BootSpec, launch: &unibeam_spec::BeamLaunch) -> Result<(), SuperviseError> {
    let owner = (!spec.instance.run_as_root).then_some(BEAM_UID);
    let chown = |path: &str| match owner {
        Some(id) => {
            nix::unistd::chown(path, Some(Uid::from_raw(id)), Some(Gid::from_raw(id))).map_err(|source| {
                SuperviseError::Chown {
                    path: path.into(),
                    source,
                }
            })
        }
        None => Ok(()),
    };
    fs::create_dir_all(RUN_DIR).map_err(at(RUN_DIR))?;
    chown(RUN_DIR)?;
    for file in &launch.files {
        let data = match &file.content {
            FileContent::Text(text) => text.clone().into_bytes(),
            FileContent::CopyOf(from) => fs::read(from).map_err(at(from))?,
        };
        let _ = fs::remove_file(&file.path);
        fs::write(&file.path, data).map_err(at(&file.path))?;
        let mode = if file.private { 0o400 } else { 0o644 };
        fs::set_permissions(&file.path, fs::Permissions::from_mode(mode)).map_err(at(&file.path))?;
        chown(&file.path)?;
    }
    Ok(())
}

/// Copies the BEAM's output to the console, turning the boot marker into
/// a timestamped init line.
/// With `freeze` (the BEAM's pid, under `run --snapshot`), the BEAM is
/// stopped before the milestone goes out (see thaw.rs).
fn forward_output(pipe: impl Read + Send + 'static, freeze: Option<Pid>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if line.trim() == APPS_STARTED_MARKER {
                if let Some(beam) = freeze {
                    crate::thaw::freeze(beam);
                }
                crate::log::milestone(unibeam_spec::milestone::APPS_STARTED, "");
            } else {
                eprintln!("{line}");
            }
        }
    });
}

/// Starts erlexec the way the release's own start script would.
pub fn spawn_beam(spec: &BootSpec) -> Result<Pid, SuperviseError> {
    let rel = &spec.release;
    // `run` worked the command out on the host; init only carries it out.
    let launch = spec.launch.as_ref().ok_or(SuperviseError::NoLaunchPlan)?;
    for warning in &launch.warnings {
        log!("warning: {warning}");
    }
    prepare_files(spec, launch)?;
    let (reader, writer) = std::io::pipe().map_err(SuperviseError::Pipe)?;
    let writer_err = writer.try_clone().map_err(SuperviseError::Pipe)?;
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().cloned())
        .current_dir(&rel.root)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_err);
    let as_user = !spec.instance.run_as_root;
    // SAFETY: runs between fork and exec and only makes async-signal-safe
    // calls (pthread_sigmask, setgroups, setgid, setuid).
    unsafe {
        command.pre_exec(move || {
            // Blocked signals survive exec: the BEAM would never see SIGTERM.
            handled_signals().thread_unblock().map_err(std::io::Error::from)?;
            if as_user {
                nix::unistd::setgroups(&[]).map_err(std::io::Error::from)?;
                nix::unistd::setgid(Gid::from_raw(BEAM_UID)).map_err(std::io::Error::from)?;
                nix::unistd::setuid(Uid::from_raw(BEAM_UID)).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|source| SuperviseError::Exec {
        program: launch.program.clone(),
        source,
    })?;
    drop(command); // closes our copies of the pipe's write end
    let beam = Pid::from_raw(child.id() as i32);
    forward_output(reader, spec.instance.freeze_for_snapshot.then_some(beam));
    Ok(beam)
}

/// Input devices that can send `KEY_POWER`: ACPI's power button (QMP
/// `system_powerdown`) or the virtio keyboard that kernels without ACPI
/// get (QMP `input-send-event`).
pub fn open_power_buttons() -> Vec<File> {
    let Ok(entries) = fs::read_dir("/sys/class/input") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
        .filter(|e| {
            fs::read_to_string(e.path().join("device/capabilities/key"))
                .is_ok_and(|caps| has_power_key(&caps))
        })
        .filter_map(|e| File::open(format!("/dev/input/{}", e.file_name().to_string_lossy())).ok())
        .collect()
}

/// Reads sysfs's key bitmap: hex words, most significant first, each as
/// wide as a C long.
fn has_power_key(caps: &str) -> bool {
    const BITS: usize = usize::BITS as usize;
    let words: Vec<&str> = caps.split_whitespace().rev().collect();
    let idx = usize::from(KEY_POWER);
    words
        .get(idx / BITS)
        .and_then(|w| usize::from_str_radix(w, 16).ok())
        .is_some_and(|w| w & (1 << (idx % BITS)) != 0)
}

/// The keys pressed (not released) in what the device has queued.
fn keys_pressed(button: &mut File) -> Vec<u16> {
    let mut buf = [0u8; INPUT_EVENT_SIZE * 8];
    let Ok(n) = button.read(&mut buf) else {
        return Vec::new();
    };
    buf[..n]
        .chunks_exact(INPUT_EVENT_SIZE)
        .filter_map(|ev| {
            let kind = u16::from_ne_bytes([ev[16], ev[17]]);
            let code = u16::from_ne_bytes([ev[18], ev[19]]);
            let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
            (kind == EV_KEY && value == 1).then_some(code)
        })
        .collect()
}

/// Shell-style status: the exit code, or 128 + the signal number.
fn exit_code(status: WaitStatus) -> Option<u8> {
    match status {
        WaitStatus::Exited(_, code) => Some(code as u8),
        WaitStatus::Signaled(_, sig, _) => Some(128u8.wrapping_add(sig as u8)),
        _ => None,
    }
}

/// Reaps every exited child; returns the BEAM's wait status if it was one
/// of them.
fn reap(beam: Pid) -> Option<WaitStatus> {
    let mut beam_status = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return beam_status,
            Ok(status) if status.pid() == Some(beam) && exit_code(status).is_some() => {
                beam_status = Some(status)
            }
            Ok(_) => {}
        }
    }
}

/// Whether the kernel's OOM killer ended `pid`. A SIGKILL alone does not
/// say (init's own stop timeout sends one too), so the kernel's log must
/// name the pid. The killer logs just after it signals, and the victim may
/// be reaped first: the log is read again for a moment.
fn killed_for_memory(pid: Pid) -> bool {
    for _ in 0..10 {
        if kernel_log_names_oom_kill(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Reads every record in /dev/kmsg, from the oldest the ring still holds.
fn kernel_log_names_oom_kill(pid: Pid) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let kmsg = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg");
    let Ok(mut kmsg) = kmsg else {
        return false;
    };
    // One read returns one record; 8 KiB holds the longest printk allows.
    let mut record = vec![0u8; 8192];
    loop {
        match kmsg.read(&mut record) {
            Ok(0) => return false,
            Ok(n) => {
                if record_names_oom_kill(&String::from_utf8_lossy(&record[..n]), pid) {
                    return true;
                }
            }
            // Records were overwritten while we read: go on with the next.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            // EAGAIN: none left.
            Err(_) => return false,
        }
    }
}

/// A /dev/kmsg record is `PRI,SEQ,USEC,FLAGS;MESSAGE`. Only the kernel
/// logs with facility 0 (PRI / 8): a process writing to /dev/kmsg (root
/// only) gets LOG_USER whatever it asks for.
fn record_names_oom_kill(record: &str, pid: Pid) -> bool {
    let Some((prefix, message)) = record.split_once(';') else {
        return false;
    };
    let from_kernel = prefix
        .split(',')
        .next()
        .and_then(|pri| pri.parse::<u32>().ok())
        .is_some_and(|pri| pri >> 3 == 0);
    let message = message.lines().next().unwrap_or_default();
    from_kernel && message.contains(&format!("Killed process {pid} ("))
}

/// Event sources init waits on: its signals and the power buttons.
pub struct Events {
    pub signals: SignalFd,
    pub buttons: Vec<File>,
}

impl Events {
    /// Waits up to `wait` (forever if None); returns why a stop was asked
    /// for, if it was.
    fn next(&mut self, wait: Option<Duration>) -> Option<String> {
        let timeout = match wait {
            None => PollTimeout::NONE,
            Some(d) => PollTimeout::try_from(d.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::ZERO),
        };
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        fds.extend(
            self.buttons
                .iter()
                .map(|b| PollFd::new(b.as_fd(), PollFlags::POLLIN)),
        );
        let _ = poll(&mut fds, timeout);
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
            .collect();
        drop(fds);
        let mut why = None;
        if ready[0] {
            while let Ok(Some(info)) = self.signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) | Err(_) => {}
                    Ok(sig) => why = Some(format!("received {sig}")),
                }
            }
        }
        for (button, _) in self.buttons.iter_mut().zip(&ready[1..]).filter(|(_, r)| **r) {
            for key in keys_pressed(button) {
                if key == KEY_POWER {
                    why = Some("power button pressed".into());
                } else {
                    crate::thaw::on_key(key);
                }
            }
        }
        why
    }

    /// Blocks until a stop is asked for (the `hang` exit policy).
    pub fn wait_for_stop(&mut self) {
        loop {
            let why = self.next(None);
            let _ = reap(Pid::from_raw(-1));
            if let Some(why) = why {
                log!("{why}: powering off");
                return;
            }
        }
    }
}

/// How the BEAM ended.
pub struct Exit {
    pub status: u8,
    /// A stop was asked for (signal or power button) before it exited.
    pub stopped: bool,
    /// The kernel's OOM killer ended it.
    pub oom_killed: bool,
}

/// Waits for the BEAM to exit, turning stop requests into a graceful stop.
pub fn supervise(p: &mut impl Platform, beam: Pid, events: &mut Events, timeout: Duration) -> Exit {
    let mut stop = Stop::new(timeout);
    loop {
        let now = Instant::now();
        let wait = match (stop.wait(now), crate::thaw::wait()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(why) = events.next(wait) {
            crate::thaw::thaw();
            stop.request(p, beam.as_raw(), Instant::now(), &why);
        }
        crate::thaw::enforce(Instant::now());
        if let Some(wait) = reap(beam) {
            let sigkill = matches!(wait, WaitStatus::Signaled(_, Signal::SIGKILL, _));
            return Exit {
                status: exit_code(wait).unwrap_or(INIT_FAILURE_STATUS),
                stopped: stop.requested(),
                oom_killed: sigkill && killed_for_memory(beam),
            };
        }
        stop.enforce(p, Instant::now());
    }
}

/// The slogan of a crash dump the BEAM left, if any; the dump is removed
/// so a restarted BEAM's dump is not mistaken for it.
pub fn crash_slogan(path: &str) -> Option<String> {
    let text = fs::read(path).ok()?;
    let _ = fs::remove_file(path);
    String::from_utf8_lossy(&text[..text.len().min(64 * 1024)])
        .lines()
        .find(|l| l.starts_with("Slogan: "))
        .map(|l| l.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_key_is_read_from_the_key_bitmap() {
        // ACPI's power button: KEY_POWER (116) alone, bit 52 of word 1.
        assert!(has_power_key("10000000000000 0\n"));
        // A keyboard with many keys, KEY_POWER among them.
        assert!(has_power_key(
            "1 fff0000000000000 ffffffffffffffff fffffffffffffffe\n"
        ));
        assert!(!has_power_key("0\n"), "a device without keys");
        assert!(
            !has_power_key("e000000000000 ffffffff"),
            "keys, but not the power key"
        );
        assert!(!has_power_key("not hex at all"));
    }

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
    fn only_the_kernels_own_oom_record_for_the_beam_counts() {
        let beam = Pid::from_raw(26);
        let kernel = "3,612,2718281,-;Out of memory: Killed process 26 (beam.smp) \
                      total-vm:1048576kB, anon-rss:40000kB\n";
        assert!(record_names_oom_kill(kernel, beam));
        assert!(
            !record_names_oom_kill(kernel, Pid::from_raw(2)),
            "another process was killed"
        );
        let written = "11,613,2718282,-;Out of memory: Killed process 26 (beam.smp)\n";
        assert!(
            !record_names_oom_kill(written, beam),
            "facility 1: written to /dev/kmsg by a process"
        );
        assert!(!record_names_oom_kill("garbage", beam));
        let continued = "6,614,1,-;eth0 up\n SUBSYSTEM=Killed process 26 (\n";
        assert!(!record_names_oom_kill(continued, beam));
    }

    #[test]
    fn crash_slogans_are_read_once() {
        let dir = std::env::temp_dir().join(format!("unibeam-init-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let dump = dir.join("erl_crash.dump");
        fs::write(
            &dump,
            "=erl_crash_dump:0.5\nThu Nov 27\nSlogan: Kernel pid terminated (application_controller)\n",
        )
        .unwrap();
        let path = dump.to_str().unwrap();
        assert_eq!(
            crash_slogan(path).as_deref(),
            Some("Slogan: Kernel pid terminated (application_controller)")
        );
        assert_eq!(crash_slogan(path), None);
        let _ = fs::remove_dir_all(dir);
    }
}
