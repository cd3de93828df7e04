//! Stopping and killing detached instances from another process.

use crate::process::ProcessId;
use crate::qemu::{PowerButton, QemuCommand};
use crate::qmp::Qmp;
use crate::state::{
    write_atomic, InstanceName, InstanceRecord, StateError, Status, Store, QEMU_FILE, QMP_SOCKET,
    STOP_REQUESTED,
};
use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;
use std::os::unix::ffi::OsStringExt;
use std::time::{Duration, Instant};

/// Marks the instance so its monitor does not restart it.
fn forbid_restart(store: &Store, name: &InstanceName) -> Result<(), StateError> {
    write_atomic(&store.dir(name).join(STOP_REQUESTED), b"")
}

/// SIGKILL to `record`'s QEMU if it is still that process. Also used once
/// a suspended VM's state is saved: the guest is paused, so nothing is
/// lost if QEMU does not take its QMP quit.
pub fn kill_qemu(record: &InstanceRecord) {
    if let Some(q) = record.qemu.filter(|q| q.alive()) {
        // A pid we just verified is still our QEMU.
        let _ = send_signal(Pid::from_raw(q.pid as i32), Signal::SIGKILL);
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
/// unknown: its QEMU is the qemu-system process whose command line names
/// the instance's directory, and its monitor is that QEMU's parent. Both
/// get SIGKILL and are waited for, so `rm -f` leaves no VM behind and no
/// monitor that would write into the directory being removed.
pub fn kill_unrecorded(store: &Store, name: &InstanceName) {
    let mut needle = store.dir(name).into_os_string().into_vec();
    needle.push(b'/');
    let qemus: Vec<u32> = pids().filter(|&pid| is_qemu_of(pid, &needle)).collect();
    let mut victims = Vec::new();
    for &qemu in &qemus {
        if let Some(monitor) = parent(qemu).filter(|&p| is_monitor_of(p, name)) {
            victims.push(monitor);
        }
        victims.push(qemu);
    }
    let identities: Vec<ProcessId> = victims.iter().filter_map(|&pid| ProcessId::of(pid)).collect();
    for id in &identities {
        // A pid whose identity we just took from /proc.
        let _ = send_signal(Pid::from_raw(id.pid as i32), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while identities.iter().any(ProcessId::alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
}

fn cmdline(pid: u32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
}

fn is_qemu_of(pid: u32, dir: &[u8]) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    comm.starts_with("qemu-system") && cmdline(pid).windows(dir.len()).any(|w| w == dir)
}

/// `unibeam monitor NAME`, as detach.rs starts it.
fn is_monitor_of(pid: u32, name: &InstanceName) -> bool {
    let args: Vec<Vec<u8>> = cmdline(pid).split(|b| *b == 0).map(<[u8]>::to_vec).collect();
    args.len() >= 3 && args[1] == b"monitor" && args[2] == name.as_bytes()
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_parents_and_tells_monitors_by_their_command_line() {
        let me = std::process::id();
        let ppid = nix::unistd::getppid().as_raw() as u32;
        assert_eq!(parent(me), Some(ppid));
        assert!(pids().any(|p| p == me));
        let web = InstanceName::parse("web").unwrap();
        assert!(!is_monitor_of(me, &web), "a test binary is no monitor");
        assert!(!is_qemu_of(me, b"/nowhere/"), "nor a QEMU");
    }
}
