//! Ends the VM and hands the BEAM's exit status to the host.

use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{sync, Pid};
use unibeam_spec::{DEBUG_EXIT_PORT, EXIT_STATUS_MARKER};

/// Kills what is left, syncs, reports `status` and powers off. Never returns.
pub fn off(status: u8) -> ! {
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    sync();
    eprintln!("{EXIT_STATUS_MARKER}{status}");
    // The UART drains asynchronously; make sure the marker reached the host
    // before QEMU goes away.
    let _ = nix::sys::termios::tcdrain(std::io::stderr());
    debug_exit(status);
    let _ = reboot(RebootMode::RB_POWER_OFF);
    // reboot() only returns on failure; PID 1 must never exit.
    loop {
        std::thread::park();
    }
}

/// Writes the status to QEMU's isa-debug-exit port. Without that device the
/// write is ignored and the caller falls back to an ACPI power-off.
fn debug_exit(status: u8) {
    // SAFETY: ioperm only changes this process's I/O permission bitmap.
    if unsafe { libc::ioperm(u64::from(DEBUG_EXIT_PORT), 1, 1) } != 0 {
        return;
    }
    // SAFETY: ioperm above granted access to exactly this port; writing a
    // byte there has no effect on memory safety.
    unsafe {
        std::arch::asm!("out dx, al", in("dx") DEBUG_EXIT_PORT, in("al") status, options(nomem, nostack));
    }
}
