//! Everything between an image and a running VM: the QEMU command line as
//! data, the accelerator probe, QMP, and the foreground runner.

pub mod accel;
pub mod chain;
pub mod control;
pub mod drives;
pub mod logfile;
pub mod monitor;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod ramfile;
pub mod runner;
pub mod snapshot;
pub mod snapstream;
pub mod state;

pub use accel::{choose as choose_accel, AccelChoice, AccelDecision, AccelError};
pub use chain::error_chain;
pub use qemu::{
    check_cpus, default_kernel_args, find_qemu, Accel, Carrier, Machine, PortForward, PrivateNet,
    QemuCommand, QemuError, Snapshots, APIC_BUS_KHZ,
};
pub use runner::{run_foreground, Outcome, RunError};
