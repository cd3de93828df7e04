//! Everything between an image and a running VM: the QEMU command line as
//! data, the accelerator probe, QMP, and the foreground runner.

pub mod accel;
pub mod control;
pub mod logfile;
pub mod monitor;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod runner;
pub mod state;

pub use accel::{choose as choose_accel, AccelChoice, AccelDecision, AccelError};
pub use qemu::{
    check_cpus, default_kernel_args, find_qemu, Accel, Machine, PortForward, PrivateNet, QemuCommand,
    QemuError, APIC_BUS_KHZ,
};
pub use runner::{run_foreground, Outcome, RunError};

/// An error and its causes on one line, joined by ": ", for where only
/// one line fits: a log line, a recorded reason.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}
