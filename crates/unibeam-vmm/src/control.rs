//! Stopping and killing detached instances from another process.

use crate::qemu::{PowerButton, QemuCommand};
use crate::qmp::Qmp;
use crate::state::{
    write_atomic, InstanceName, InstanceRecord, StateError, Status, Store, QEMU_FILE, QMP_SOCKET, STOP_REQUESTED,
};
use std::time::{Duration, Instant};

/// Marks the instance so its monitor does not restart it.
fn forbid_restart(store: &Store, name: &InstanceName) -> Result<(), StateError> {
    write_atomic(&store.dir(name).join(STOP_REQUESTED), b"")
}

fn kill_qemu(record: &InstanceRecord) {
    if let Some(q) = record.qemu.filter(|q| q.alive()) {
        // SAFETY: kill(2) on a pid we just verified is still our QEMU.
        unsafe { libc::kill(q.pid as libc::pid_t, libc::SIGKILL) };
    }
}

/// Waits until the monitor has recorded the exit (or nothing is left alive).
fn wait_for_exit(store: &Store, name: &InstanceName, limit: Duration) -> Result<InstanceRecord, StateError> {
    let deadline = Instant::now() + limit;
    loop {
        let record = store.load(name)?;
        let exited = matches!(record.observed_status(), Status::Exited { .. });
        if exited || Instant::now() > deadline {
            return Ok(record);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The button the instance's kernel listens to; ACPI's when the command
/// cannot be read (instances from before kernels without ACPI).
fn power_button(store: &Store, name: &InstanceName) -> PowerButton {
    std::fs::read(store.dir(name).join(QEMU_FILE))
        .ok()
        .and_then(|json| serde_json::from_slice::<QemuCommand>(&json).ok())
        .map_or(PowerButton::Acpi, |cmd| cmd.power_button())
}

/// Presses the power button, gives the guest `timeout`, then asks QEMU to
/// quit, then SIGKILLs it. Returns the final record.
///
/// The wait is for QEMU's exit as the monitor records it, not for QMP's
/// SHUTDOWN event: our guest powers off through isa-debug-exit, which ends
/// QEMU at once, without that event, and with the BEAM's status.
pub fn stop(store: &Store, name: &InstanceName, timeout: Duration) -> Result<InstanceRecord, StateError> {
    let record = store.load(name)?;
    forbid_restart(store, name)?;
    if matches!(record.observed_status(), Status::Exited { .. }) {
        return Ok(record);
    }
    let socket = store.dir(name).join(QMP_SOCKET);
    if let Ok(mut qmp) = Qmp::connect(&socket, Duration::from_secs(2)) {
        let _ = qmp.press_power_button(power_button(store, name));
        let record = wait_for_exit(store, name, timeout)?;
        if matches!(record.observed_status(), Status::Exited { .. }) {
            return Ok(record);
        }
        let _ = qmp.quit();
    }
    let record = wait_for_exit(store, name, Duration::from_secs(2))?;
    kill_qemu(&record);
    wait_for_exit(store, name, Duration::from_secs(5))
}

/// SIGKILL to the instance's QEMU; no restart follows.
pub fn kill(store: &Store, name: &InstanceName) -> Result<InstanceRecord, StateError> {
    let record = store.load(name)?;
    forbid_restart(store, name)?;
    kill_qemu(&record);
    wait_for_exit(store, name, Duration::from_secs(5))
}

/// For an instance whose record is gone or corrupt, so its pids are
/// unknown: asks a QEMU still listening on its QMP socket to quit, so
/// `rm -f` leaves no VM behind. Best effort; the monitor dies with its
/// record's directory.
pub fn quit_unrecorded(store: &Store, name: &InstanceName) {
    let socket = store.dir(name).join(QMP_SOCKET);
    if socket.exists() {
        if let Ok(mut qmp) = Qmp::connect(&socket, Duration::from_millis(500)) {
            let _ = qmp.quit();
        }
    }
}
