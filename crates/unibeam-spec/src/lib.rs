//! Types shared by the host (image builder, runner) and the guest PID 1.
//!
//! The runner serialises a [`BootSpec`] as JSON into the per-instance config
//! layer of the initramfs, at [`BOOT_SPEC_PATH`]; `unibeam-init` reads it
//! back at boot. Secrets such as the cookie travel only this way, never on
//! the kernel command line.

mod beam;
mod envsh;
#[cfg(feature = "host")]
pub mod hostfs;
mod launch;
mod render;
pub mod safepath;
mod startenv;

pub use beam::{
    BeamLaunch, CodeLoading, ConfigSource, FileContent, Flavor, PreparedFile, ReleaseSpec,
    APPS_STARTED_MARKER, BEAM_HOME, RUN_DIR, SMALL_GUEST_MIB,
};
pub use envsh::{EnvScript, ENV_SH_SUBSET};
pub use render::{filter_vm_args, inline_args_files, replace_os_vars};
use serde::{Deserialize, Serialize};
pub use startenv::{unsupported_start_vars, ReadFile, UNSUPPORTED_START_VARS};
use std::net::Ipv4Addr;

/// Where the boot spec lives inside the guest.
pub const BOOT_SPEC_PATH: &str = "/unibeam/boot.json";

/// I/O port of QEMU's `isa-debug-exit` device. A byte `s` written there makes
/// QEMU exit with `(s << 1) | 1`.
pub const DEBUG_EXIT_PORT: u16 = 0x501;

/// Console line prefix with the BEAM's exit status, for people reading the
/// console. The host never parses it: the BEAM writes to the same console.
pub const EXIT_STATUS_MARKER: &str = "unibeam-init: beam exited with status ";

/// I/O port of the `isa-debugcon` device that carries init's verdict to a
/// file on the host. Port I/O needs CAP_SYS_RAWIO, which the BEAM (uid
/// 65534) lacks, so only PID 1 can write there (or a BEAM run with
/// `--root`). Clear of isa-debug-exit (0x501), pvpanic (0x505), fw_cfg
/// (0x510) and SeaBIOS's debug port (0x402).
pub const VERDICT_PORT: u16 = 0x508;

/// How a verdict line starts: `unibeam-verdict KIND STATUS [REASON]\n`.
pub const VERDICT_PREFIX: &str = "unibeam-verdict ";
/// Verdict kind: the BEAM exited (or was killed) with STATUS.
pub const VERDICT_EXITED: &str = "exited";
/// Verdict kind: the kernel's OOM killer ended the BEAM, which exited with STATUS.
pub const VERDICT_OOM_KILLED: &str = "oom-killed";
/// Verdict kind: init itself failed; REASON says why.
pub const VERDICT_INIT_FAILED: &str = "init-failed";

/// How init's first console line starts. Before it, kernel lines such as
/// a panic are the kernel's own; after it, the console carries the app's
/// output too and is never read as a verdict.
pub const INIT_STARTED_MARKER: &str = "unibeam-init: started";

/// Exit status the guest reports when init itself failed before or around the BEAM.
pub const INIT_FAILURE_STATUS: u8 = 125;

/// TCP port the BEAM's distribution listens on, since the guest has no EPMD.
pub const DIST_PORT: u16 = 4370;

/// The uid/gid the BEAM runs as unless the instance asks for root.
pub const BEAM_UID: u32 = 65534;

/// Everything PID 1 needs to bring the guest up and start the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSpec {
    pub hostname: String,
    /// Kernel modules, as guest paths, in the order they must be loaded.
    pub modules: Vec<String>,
    pub network: NetworkSpec,
    pub release: ReleaseSpec,
    #[serde(default)]
    pub instance: InstanceSpec,
    /// What init execs, worked out by `run` on the host from the release
    /// and the instance (see [`BootSpec::plan_launch`]).
    #[serde(default)]
    pub launch: Option<BeamLaunch>,
}

/// IPv4 set-up of one interface: static, or leased by DHCP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub interface: String,
    /// Ask a DHCP server; the static fields below are then unused.
    #[serde(default)]
    pub dhcp: bool,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub dns: Ipv4Addr,
    /// A second NIC on a cluster's private segment.
    #[serde(default)]
    pub private: Option<PrivateNic>,
}

/// A NIC on a private L2 segment shared by a cluster's VMs. Init finds it
/// by MAC: NIC names depend on probe order, which differs by machine type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateNic {
    /// `52:54:00:xx:xx:xx`, lowercase.
    pub mac: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

/// Membership of an Erlang cluster that unibeam meshes: the node connects
/// to every peer at boot and keeps reconnecting, with no code in the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub name: String,
    /// Long node names of every member, this node included.
    pub peers: Vec<String>,
    /// `net_ticktime`, identical on every node of the cluster.
    pub net_ticktime_s: u32,
}

impl NetworkSpec {
    /// The addressing that QEMU's user-mode network (slirp) hands out.
    pub fn qemu_user() -> Self {
        NetworkSpec {
            interface: "eth0".into(),
            dhcp: false,
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: Ipv4Addr::new(10, 0, 2, 3),
            private: None,
        }
    }

    pub fn netmask(&self) -> Ipv4Addr {
        netmask(self.prefix_len)
    }
}

pub fn netmask(prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0))
}

/// What init does when the BEAM exits on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitPolicy {
    /// Power off and hand the exit status to the host.
    #[default]
    Poweroff,
    /// Start the BEAM again, in place.
    Reboot,
    /// Keep the VM up, for debugging.
    Hang,
}

/// Per-instance settings the runner adds to the image's boot spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// Extra environment for the BEAM (`run -e K=V`).
    pub env: Vec<(String, String)>,
    /// Extra emulator flags, after the release's vm.args.
    pub extra_vm_args: Vec<String>,
    /// A sys.config-format term list that overrides the release's config.
    pub sys_config_overrides: Option<String>,
    /// `name` (short) or `name@host` (long when host has a dot).
    pub node_name: Option<String>,
    pub cookie: Option<String>,
    /// Seconds the BEAM gets to stop before SIGKILL.
    pub stop_timeout_s: u32,
    pub on_exit: ExitPolicy,
    /// Run the BEAM as root instead of an unprivileged user.
    pub run_as_root: bool,
    #[serde(default)]
    pub cluster: Option<ClusterSpec>,
    /// The guest's memory in MiB (`run --memory`); 0 when unknown. The
    /// BEAM's process and port tables are sized to it.
    #[serde(default)]
    pub memory_mib: u32,
}

impl Default for InstanceSpec {
    fn default() -> Self {
        InstanceSpec {
            env: Vec::new(),
            extra_vm_args: Vec::new(),
            sys_config_overrides: None,
            node_name: None,
            cookie: None,
            stop_timeout_s: 30,
            on_exit: ExitPolicy::Poweroff,
            run_as_root: false,
            cluster: None,
            memory_mib: 0,
        }
    }
}

impl BootSpec {
    /// examples/hello's spec, for tests here and in the crates that use it
    /// (feature `testing`).
    #[cfg(any(test, feature = "testing"))]
    pub fn sample() -> BootSpec {
        BootSpec {
            hostname: "hello".into(),
            modules: vec![
                "/lib/modules/virtio.ko".into(),
                "/lib/modules/virtio_net.ko".into(),
            ],
            network: NetworkSpec::qemu_user(),
            release: ReleaseSpec {
                root: "/release".into(),
                name: "hello".into(),
                version: "0.1.0".into(),
                erts_version: "13.1.5".into(),
                boot_script: "start".into(),
                has_sys_config: true,
                has_vm_args: true,
                sys_config_source: ConfigSource::Plain,
                vm_args_source: ConfigSource::Plain,
                env_sh: false,
                start_files: Vec::new(),
                code_loading: CodeLoading::Embedded,
                flavor: Flavor::Relx,
            },
            instance: InstanceSpec::default(),
            launch: None,
        }
    }

    /// Works out what init execs from the image's start files and the
    /// instance's settings, and keeps it in the spec; returns what the
    /// release asks for that was skipped or defaulted.
    pub fn plan_launch(&mut self) -> Vec<String> {
        let release = self.release.clone();
        let launch = self.beam_launch(&|path: &str| release.start_file(path));
        let warnings = launch.warnings.clone();
        self.launch = Some(launch);
        warnings
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("BootSpec always serialises")
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests;
