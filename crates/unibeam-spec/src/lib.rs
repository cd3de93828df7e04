//! Types shared by the host (image builder, runner) and the guest PID 1.
//!
//! The runner serialises a [`BootSpec`] as JSON into the per-instance config
//! layer of the initramfs, at [`BOOT_SPEC_PATH`]; `unibeam-init` reads it
//! back at boot. Secrets such as the cookie travel only this way, never on
//! the kernel command line.

#![forbid(unsafe_code)]

mod beam;
mod bootspec;
mod discovery;
mod dist_tls;
mod envsh;
#[cfg(feature = "host")]
pub mod hostfs;
mod launch;
pub mod names;
mod quiesce;
mod render;
pub mod safepath;
mod startenv;
mod wire;

pub use beam::{
    BeamLaunch, CodeLoading, ConfigSource, FileContent, Flavor, PreparedFile, ReleaseSpec,
    APPS_STARTED_MARKER, BEAM_HOME, RUN_DIR, SMALL_GUEST_MIB,
};
pub use bootspec::{
    netmask, BootSpec, ClusterSpec, DnsDiscovery, ExitPolicy, InstanceSpec, NetworkSpec, PrivateNic,
    VolumeMount,
};
pub use bootspec::{SecretDisk, SecretFormat, SecretSource, SECRET_COOKIE_PATH};
pub use dist_tls::{ssl_dist_options, DistTls, DistTlsPaths};
pub use envsh::{EnvScript, ENV_SH_SUBSET};
pub use quiesce::THAW_FILE;
pub use render::{filter_vm_args, inline_args_files, replace_os_vars};
pub use startenv::{unsupported_start_vars, ReadFile, UNSUPPORTED_START_VARS};
pub use wire::{
    milestone, snapshot_keys, BEAM_UID, BOOT_SPEC_PATH, DEBUG_EXIT_PORT, DIST_PORT, EXIT_STATUS_MARKER,
    INIT_FAILURE_STATUS, INIT_STARTED_MARKER, RESTORED_MARKER, VERDICT_EXITED, VERDICT_INIT_FAILED,
    VERDICT_OOM_KILLED, VERDICT_PORT, VERDICT_PREFIX,
};

#[cfg(test)]
mod tests;
