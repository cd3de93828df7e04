//! A foreground `run`. Given `--name`, the instance is in the store for
//! as long as the run lasts, like a detached one, so `ps`, `logs`, `stop`,
//! `kill`, `rpc`, `remsh`, `top` and `stats` reach it; its console goes to
//! the terminal and to its log. The run removes the instance when it
//! ends. A run killed with SIGKILL cannot (its QEMU dies with it): the
//! next `ps`, or `run --name` of the same name, removes what it left.

use crate::instances::{self, InstancesError};
use crate::paths::{self, PathsError};
use crate::progress::Progress;
use crate::stats::{self, Sampler};
use crate::vm::{self, Finished, VmError, VmSpec};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;
use unibeam_vmm::logfile::{BoundedLog, DEFAULT_CAP};
use unibeam_vmm::monitor::now_secs;
use unibeam_vmm::state::{
    InstanceName, InstanceRecord, ProcessId, StateError, Status, Store, CONSOLE_LOG, STOP_REQUESTED,
};
use unibeam_vmm::Outcome;

#[derive(Debug, Error)]
pub enum ForegroundError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Instances(#[from] InstancesError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Paths(#[from] PathsError),
}

/// How long a run that `unibeam stop`/`kill` ended keeps its exited
/// record, so the command that asked (polling every 50 ms) reads how it
/// ended before the record goes.
const LINGER: Duration = Duration::from_secs(1);

/// `run` in the foreground until the VM powers off; with `--name`, as a
/// named instance for that long (see the module's documentation).
pub fn run(
    spec: &VmSpec,
    console: Box<dyn Write + Send>,
    show_command: bool,
    progress: &dyn Progress,
) -> Result<Finished, ForegroundError> {
    match &spec.instance.name {
        None => Ok(vm::run_attached(spec, console, show_command, progress)?),
        Some(name) => {
            let name = name.parse()?;
            run_named(&paths::store()?, name, spec, console, show_command, progress)
        }
    }
}

fn run_named(
    store: &Store,
    name: InstanceName,
    spec: &VmSpec,
    console: Box<dyn Write + Send>,
    show_command: bool,
    progress: &dyn Progress,
) -> Result<Finished, ForegroundError> {
    spec.check()?;
    // Before any slow build: without QEMU nothing else matters.
    unibeam_vmm::find_qemu().map_err(VmError::from)?;
    sweep_abandoned(store, &name);
    let mut record = instances::new_record(spec, name)?;
    record.foreground = true;
    let dir = store.create(&record)?;
    // Declared first, so dropped last: after the sampler has stopped
    // writing into the directory.
    let _owned = RemovedWhenDone(dir.clone());
    let (spec, prepared, record) = instances::prepare_recorded(store, spec, record, &dir, progress)?;
    let _held = unibeam_vmm::drives::lock_all(&prepared.cmd.drives, &instances::holder(&record.name))
        .map_err(InstancesError::from)?;
    let log_path = dir.join(CONSOLE_LOG);
    let log = BoundedLog::open(&log_path, DEFAULT_CAP)
        .map_err(unibeam_spec::hostfs::at::<StateError>(&log_path))?;
    let console = Box::new(Tee(console, log));
    let sampler = stats::interval_from_env().map(|every| Sampler::start(store, &record.name, every));
    let mut running = record.clone();
    let finished = vm::boot_prepared(&spec, &prepared, console, show_command, progress, |qemu| {
        running.qemu = ProcessId::of(qemu);
        running.started = Some(now_secs());
        running.status = Status::Running;
        let _ = store.save(&running);
    });
    drop(sampler);
    record_exit(store, running, &finished);
    Ok(finished?)
}

/// Writes down how the run ended; when a `stop` or `kill` asked for it,
/// gives that command time to read it.
fn record_exit(store: &Store, mut record: InstanceRecord, finished: &Result<Finished, VmError>) {
    let code = match finished.as_ref().map(|f| &f.outcome) {
        Ok(Outcome::Exited(status) | Outcome::OomKilled { status }) => i32::from(*status),
        _ => 125,
    };
    record.status = Status::Exited { code };
    record.qemu = None;
    let _ = store.save(&record);
    if store.dir(&record.name).join(STOP_REQUESTED).exists() {
        std::thread::sleep(LINGER);
    }
}

/// Removes what a killed foreground run left under `name`, so the name
/// can be used again.
fn sweep_abandoned(store: &Store, name: &InstanceName) {
    if store
        .load(name)
        .is_ok_and(|r| instances::is_abandoned_foreground(&r))
    {
        let _ = store.remove(name);
    }
}

/// The instance's directory, removed however the run ends short of
/// SIGKILL: an error, a panic or the VM powering off.
struct RemovedWhenDone(PathBuf);

impl Drop for RemovedWhenDone {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // Its network addresses go with it (instance dirs are named so).
        if let Some(name) = self.0.file_name().and_then(|n| n.to_str()) {
            crate::networks::leave(name);
        }
    }
}

/// The console to the terminal and to the instance's log. The log is
/// best effort: the terminal must not stop because the log's disk is full.
// Hand-written: two writers in a dozen lines, where a crate would add a
// dependency for less.
struct Tee<A, B>(A, B);

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(buf)?;
        let _ = self.1.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.1.flush();
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tee_writes_both_and_survives_a_failing_log() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::Error::other("disk full"))
            }
        }
        let mut tee = Tee(Vec::new(), Vec::new());
        tee.write_all(b"hello\n").unwrap();
        assert_eq!(
            (tee.0.as_slice(), tee.1.as_slice()),
            (&b"hello\n"[..], &b"hello\n"[..])
        );
        let mut tee = Tee(Vec::new(), Full);
        tee.write_all(b"still shown\n").unwrap();
        tee.flush().unwrap();
        assert_eq!(tee.0, b"still shown\n");
    }
}
