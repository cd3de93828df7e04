//! `unibeam suspend NAME`: the running VM's whole state saved into its
//! instance directory (QEMU's migration stream, compressed: unibeam-vmm
//! snapshot.rs), then QEMU stopped. `start` resumes it: the monitor loads
//! the state instead of booting, once.

use std::time::{Duration, Instant};
use thiserror::Error;
use unibeam_spec::hostfs::{self, PathIo};
use unibeam_vmm::qemu::QemuCommand;
use unibeam_vmm::qmp::{Qmp, QmpError};
use unibeam_vmm::snapshot::{self, Meta, SnapshotError};
use unibeam_vmm::state::{
    InstanceName, InstanceRecord, StateError, Status, Store, QEMU_FILE, SUSPENDED_STATE, SUSPENDING,
};

#[derive(Debug, Error)]
pub enum SuspendError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    File(#[from] PathIo),
    #[error("{0} is not running (it is {1}); only a running instance can be suspended")]
    NotRunning(InstanceName, String),
    #[error("{}: unreadable QEMU command", .0.display())]
    CorruptQemuFile(std::path::PathBuf, #[source] serde_json::Error),
    #[error("saving {0}'s state; it runs on")]
    Save(InstanceName, #[source] SnapshotError),
    #[error("stopping {0}'s QEMU after the save")]
    Quit(InstanceName, #[source] QmpError),
    #[error("{0}'s monitor did not record the suspend within {1:?}")]
    NotRecorded(InstanceName, Duration),
}

/// Saves `name`'s state and stops its QEMU; returns the saved state's
/// record. A failed save leaves the VM running as it was.
pub fn suspend(store: &Store, name: &InstanceName) -> Result<Meta, SuspendError> {
    let record = store.load(name)?;
    let status = record.observed_status();
    if status != Status::Running {
        return Err(SuspendError::NotRunning(name.clone(), status.to_string()));
    }
    let dir = store.dir(name);
    let path = dir.join(QEMU_FILE);
    let json = std::fs::read(&path).map_err(hostfs::at::<PathIo>(&path))?;
    let cmd: QemuCommand =
        serde_json::from_slice(&json).map_err(|e| SuspendError::CorruptQemuFile(path, e))?;
    let marker = dir.join(SUSPENDING);
    hostfs::write_atomic(&marker, b"")?;
    let state = dir.join(SUSPENDED_STATE);
    let meta = match snapshot::save(&cmd, &state, unibeam_vmm::snapstream::Compression::Fast) {
        Ok(meta) => meta,
        Err(e) => {
            let _ = std::fs::remove_file(&marker);
            snapshot::discard(&state);
            let _ = snapshot::carry_on(&cmd);
            return Err(SuspendError::Save(name.clone(), e));
        }
    };
    stop_saved(&record, &cmd).map_err(|e| SuspendError::Quit(name.clone(), e))?;
    wait_for_record(store, name, Duration::from_secs(30))?;
    Ok(meta)
}

/// Ends a QEMU whose guest is saved and paused. A QEMU that drops the QMP
/// connection instead of answering `quit` (seen on a loaded host as
/// "Broken pipe") is either already going or gets SIGKILL: with the guest
/// paused and its state on disk, nothing is lost either way.
fn stop_saved(record: &InstanceRecord, cmd: &QemuCommand) -> Result<(), QmpError> {
    let Err(e) = Qmp::connect(&cmd.qmp_socket, Duration::from_secs(10)).and_then(|mut q| q.quit()) else {
        return Ok(());
    };
    let Some(qemu) = record.qemu else {
        return Err(e);
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while qemu.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if qemu.alive() {
        unibeam_vmm::control::kill_qemu(record);
    }
    Ok(())
}

fn wait_for_record(store: &Store, name: &InstanceName, limit: Duration) -> Result<(), SuspendError> {
    let deadline = Instant::now() + limit;
    while store.load(name)?.status != Status::Suspended {
        if Instant::now() > deadline {
            return Err(SuspendError::NotRecorded(name.clone(), limit));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_that_is_not_running_is_refused_with_its_state_as_ps_shows_it() {
        let (_dir, store, name) = crate::testing::store_with("web", Status::Exited { code: 137 });
        let err = suspend(&store, &name).unwrap_err().to_string();
        assert_eq!(
            err,
            "web is not running (it is exited (137)); only a running instance can be suspended"
        );
    }
}
