//! The per-instance monitor: `unibeam` re-executed and detached, one per
//! instance (the Podman way, no daemon). It runs QEMU, keeps the bounded
//! console log, records state, and applies the restart policy.

use crate::logfile::{BoundedLog, DEFAULT_CAP};
use crate::qemu::QemuCommand;
use crate::runner::{boot, Outcome};
use crate::state::{
    InstanceName, InstanceRecord, ProcessId, Restart, StateError, Status, Store, CONSOLE_LOG, STOP_REQUESTED,
    SUSPENDED_STATE, SUSPENDING,
};
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// First restart delay; doubles per restart, as Docker's does.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// A run this long resets the backoff.
const STABLE_RUN: Duration = Duration::from_secs(10);

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The exit code `ps` shows for how a boot ended.
fn exit_code(outcome: &Result<Outcome, crate::RunError>, qemu_code: i32) -> i32 {
    match outcome {
        Ok(Outcome::Exited(status) | Outcome::OomKilled { status, .. }) => i32::from(*status),
        Ok(Outcome::NoStatus { .. }) if qemu_code < 0 => 137,
        _ => 125,
    }
}

/// Whether the policy restarts after `code`, having restarted `restarts` times.
pub fn should_restart(policy: Restart, code: i32, restarts: u32) -> bool {
    match policy {
        Restart::No => false,
        Restart::Always => true,
        Restart::OnFailure { max } => code != 0 && max.is_none_or(|m| restarts < m),
    }
}

pub fn backoff(restarts_in_a_row: u32) -> Duration {
    BACKOFF_START
        .saturating_mul(1u32 << restarts_in_a_row.min(16))
        .min(BACKOFF_CAP)
}

fn stop_requested(store: &Store, name: &InstanceName) -> bool {
    store.dir(name).join(STOP_REQUESTED).exists()
}

/// Whether QEMU ended because `unibeam suspend` saved it and quit it.
fn was_suspended(store: &Store, name: &InstanceName) -> bool {
    let dir = store.dir(name);
    let asked = std::fs::remove_file(dir.join(SUSPENDING)).is_ok();
    asked
        && dir
            .join(SUSPENDED_STATE)
            .join(crate::snapshot::META_FILE)
            .is_file()
}

fn open_log(store: &Store, name: &InstanceName) -> Result<BoundedLog, StateError> {
    let path = store.dir(name).join(CONSOLE_LOG);
    BoundedLog::open(&path, DEFAULT_CAP).map_err(unibeam_spec::hostfs::at(&path))
}

/// Boots once; returns the exit code. unibeam's own notes go into the
/// console log after QEMU's output.
fn boot_once(store: &Store, record: &mut InstanceRecord, cmd: &QemuCommand) -> Result<i32, StateError> {
    let note = |text: String| -> Result<(), StateError> {
        let _ = writeln!(open_log(store, &record.name)?, "unibeam: {text}");
        Ok(())
    };
    let mut cmd = cmd.clone();
    let suspended = store.dir(&record.name).join(SUSPENDED_STATE);
    cmd.snapshots.resume = suspended.is_dir().then_some(suspended);
    let mut booted = match boot(&cmd, open_log(store, &record.name)?) {
        Ok(b) => b,
        Err(e) => {
            note(crate::error_chain(&e))?;
            return Ok(125);
        }
    };
    record.qemu = ProcessId::of(booted.child.id());
    record.started = Some(now_secs());
    record.status = Status::Running;
    store.save(record)?;
    let qemu_code = booted.child.wait().map(|s| s.code().unwrap_or(-1)).unwrap_or(-1);
    let outcome = booted.finish(qemu_code);
    let code = exit_code(&outcome, qemu_code);
    match &outcome {
        Ok(Outcome::KernelPanic(line)) => note(format!("guest kernel panic: {line}"))?,
        Ok(Outcome::OutOfMemory(line)) => note(format!("guest out of memory, needs more --memory: {line}"))?,
        Ok(Outcome::OomKilled { .. }) => {
            note("the guest's OOM killer ended the BEAM; it needs more --memory".into())?
        }
        Ok(Outcome::InitFailed(reason)) => note(format!("the guest's init failed: {reason}"))?,
        Ok(Outcome::NoStatus { detail }) => note(detail.clone())?,
        // QEMU's own failure, with its message: `logs` shows it.
        Err(e) => note(crate::error_chain(&e))?,
        Ok(Outcome::Exited(_)) => {}
    }
    Ok(code)
}

/// Runs the instance until it exits for good.
pub fn monitor(store: &Store, name: &InstanceName, cmd: &QemuCommand) -> Result<(), StateError> {
    let mut record = store.load(name)?;
    record.monitor = ProcessId::of(std::process::id());
    let mut in_a_row = 0;
    loop {
        let began = Instant::now();
        let code = boot_once(store, &mut record, cmd)?;
        if began.elapsed() > STABLE_RUN {
            in_a_row = 0;
        }
        if was_suspended(store, name) {
            record.status = Status::Suspended;
            record.qemu = None;
            record.monitor = None;
            return store.save(&record);
        }
        if stop_requested(store, name) || !should_restart(record.restart, code, record.restarts) {
            record.status = Status::Exited { code };
            record.qemu = None;
            record.monitor = None;
            return store.save(&record);
        }
        record.status = Status::Restarting;
        record.restarts += 1;
        store.save(&record)?;
        let until = Instant::now() + backoff(in_a_row);
        in_a_row += 1;
        while Instant::now() < until {
            if stop_requested(store, name) {
                record.status = Status::Exited { code };
                record.monitor = None;
                return store.save(&record);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies() {
        assert!(!should_restart(Restart::No, 1, 0));
        assert!(should_restart(Restart::Always, 0, 99));
        let two = Restart::OnFailure { max: Some(2) };
        assert!(should_restart(two, 1, 0) && should_restart(two, 1, 1));
        assert!(!should_restart(two, 1, 2), "exactly two restarts");
        assert!(!should_restart(two, 0, 0), "success is not a failure");
        assert!(should_restart(Restart::OnFailure { max: None }, 3, 1000));
    }

    #[test]
    fn qemus_own_failure_is_never_a_clean_exit() {
        let failed = Err(crate::RunError::Qemu("qemu-system-x86_64: nope".into()));
        assert_eq!(exit_code(&failed, 1), 125, "QEMU's exit 1 is not guest status 0");
        assert_eq!(exit_code(&Ok(Outcome::Exited(0)), 1), 0);
        assert_eq!(exit_code(&Ok(Outcome::OomKilled { status: 137 }), 19), 137);
        assert_eq!(exit_code(&Ok(Outcome::InitFailed("x".into())), 251), 125);
        let none = Ok(Outcome::NoStatus {
            detail: String::new(),
        });
        assert_eq!(exit_code(&none, -1), 137, "QEMU killed");
        assert_eq!(exit_code(&none, 0), 125);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(30), BACKOFF_CAP);
    }
}
