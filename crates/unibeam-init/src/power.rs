//! Ends the VM and hands init's verdict to the host.
//!
//! The verdict goes to an `isa-debugcon` port that QEMU copies into a file
//! beside the instance: only PID 1 may do port I/O, so the BEAM, which
//! shares the console with init, cannot forge it. isa-debug-exit then makes
//! QEMU exit at once; its code is not what the host believes.

use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{sync, Pid};
use unibeam_spec::{
    DEBUG_EXIT_PORT, EXIT_STATUS_MARKER, INIT_FAILURE_STATUS, VERDICT_EXITED, VERDICT_INIT_FAILED,
    VERDICT_OOM_KILLED, VERDICT_PORT, VERDICT_PREFIX,
};

/// How the guest ended, as init tells the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The BEAM's exit status (128 + N for a signal).
    Exited(u8),
    /// The kernel's OOM killer ended the BEAM, whose status this is.
    OomKilled(u8),
    /// init itself failed, for this reason.
    InitFailed(String),
}

impl Verdict {
    /// The status for the console line and isa-debug-exit.
    pub fn status(&self) -> u8 {
        match self {
            Verdict::Exited(s) | Verdict::OomKilled(s) => *s,
            Verdict::InitFailed(_) => INIT_FAILURE_STATUS,
        }
    }

    /// One line: `unibeam-verdict KIND STATUS [REASON]`.
    pub fn line(&self) -> String {
        let status = self.status();
        match self {
            Verdict::Exited(_) => format!("{VERDICT_PREFIX}{VERDICT_EXITED} {status}\n"),
            Verdict::OomKilled(_) => format!("{VERDICT_PREFIX}{VERDICT_OOM_KILLED} {status}\n"),
            Verdict::InitFailed(why) => {
                let why = why.replace(['\n', '\r'], " ");
                format!("{VERDICT_PREFIX}{VERDICT_INIT_FAILED} {status} {why}\n")
            }
        }
    }
}

/// Kills what is left, syncs, reports the verdict and powers off. Never returns.
pub fn off(verdict: &Verdict) -> ! {
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    sync();
    crate::volumes::unmount_all();
    let status = verdict.status();
    // For people reading the console; the host reads the verdict port.
    eprintln!("{EXIT_STATUS_MARKER}{status}");
    // The UART drains asynchronously; let the line reach the host before
    // QEMU goes away.
    let _ = nix::sys::termios::tcdrain(std::io::stderr());
    write_port(VERDICT_PORT, verdict.line().as_bytes());
    // A host without the verdict device (an older unibeam) still decodes it.
    write_port(DEBUG_EXIT_PORT, &[status]);
    let _ = reboot(RebootMode::RB_POWER_OFF);
    // reboot() only returns on failure; PID 1 must never exit.
    loop {
        std::thread::park();
    }
}

/// Writes `bytes` to an I/O port. Without a device there the writes are
/// ignored: a VM without isa-debug-exit falls back to the power-off below.
fn write_port(port: u16, bytes: &[u8]) {
    // SAFETY: ioperm only changes this process's I/O permission bitmap.
    if unsafe { libc::ioperm(u64::from(port), 1, 1) } != 0 {
        return;
    }
    for &byte in bytes {
        // SAFETY: ioperm above granted access to exactly this port; writing
        // a byte there has no effect on memory safety.
        unsafe {
            std::arch::asm!("out dx, al", in("dx") port, in("al") byte, options(nomem, nostack));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_lines_carry_kind_status_and_reason() {
        assert_eq!(Verdict::Exited(200).line(), "unibeam-verdict exited 200\n");
        assert_eq!(Verdict::OomKilled(137).line(), "unibeam-verdict oom-killed 137\n");
        let failed = Verdict::InitFailed("/unibeam/boot.json: missing\nsecond".into());
        assert_eq!(
            failed.line(),
            "unibeam-verdict init-failed 125 /unibeam/boot.json: missing second\n",
            "one line, whatever the reason holds"
        );
        assert_eq!(failed.status(), INIT_FAILURE_STATUS);
    }
}
