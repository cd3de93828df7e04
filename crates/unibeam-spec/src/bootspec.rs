//! The boot spec: everything one instance's guest needs to know, from
//! the image (the release) and from `run` (the instance's settings).

use crate::beam::{BeamLaunch, ReleaseSpec};
#[cfg(any(test, feature = "testing"))]
use crate::beam::{CodeLoading, ConfigSource, Flavor};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

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
    /// Peers found in DNS instead of (or besides) the list above.
    #[serde(default)]
    pub discovery: Option<DnsDiscovery>,
}

/// Peer discovery through DNS, as libcluster and dns_cluster do on
/// Kubernetes and Fly: the members are the A records of `name`, and each
/// is the node `<basename>@<address>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsDiscovery {
    /// A DNS name: letters, digits, '-' and '.', checked on the host.
    pub name: String,
    pub basename: String,
    /// The DNS server to ask; `None`: the guest's own resolver.
    pub nameserver: Option<Ipv4Addr>,
    pub interval_s: u32,
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
    /// Volumes init mounts before the BEAM starts (`run -v`).
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Where init reads the cookie at boot, for an exported VM whose
    /// engine delivers the secret (`unibeam export`); `cookie` is then
    /// `None`, so the secret is in neither the image nor the manifests.
    #[serde(default)]
    pub cookie_from: Option<SecretSource>,
    /// TLS distribution (`run --dist-tls`, `tls = true`): the CA and this
    /// node's certificate and key, written as private files for the BEAM.
    #[serde(default)]
    pub dist_tls: Option<crate::DistTls>,
    /// `run --snapshot`: init stops the BEAM (SIGSTOP) when its
    /// applications have started, so that the host saves a guest whose
    /// app runs no code, and lets it go on when the host presses one of
    /// the [`crate::snapshot_keys`].
    #[serde(default)]
    pub freeze_for_snapshot: bool,
}

/// A secret the engine hands the guest as a read-only virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSource {
    pub disk: SecretDisk,
    pub format: SecretFormat,
}

/// How init finds the secret's disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretDisk {
    /// By its virtio serial (as volumes are: probe order differs by
    /// engine); KubeVirt, QEMU and cloud-hypervisor set one.
    Serial(String),
    /// By its kernel name, e.g. `vda`: Firecracker answers a serial
    /// request with an id of its own making, but attaches drives in order.
    Name(String),
}

/// How the secret lies on its disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum SecretFormat {
    /// The disk's bytes are the secret, up to the first NUL or newline
    /// (a file given to QEMU as a raw drive reads as zero-padded sectors).
    Raw,
    /// An ISO 9660 image holding the secret as the file `file` (KubeVirt
    /// builds one from a Secret's keys).
    Iso9660 { file: String },
}

/// Where init leaves a secret it read at boot (root's, 0400), for the
/// launch plan's `CopyOf`: /tmp is the guest's only writable place.
pub const SECRET_COOKIE_PATH: &str = "/tmp/unibeam-secrets/cookie";

/// One volume: a virtio-blk disk holding an ext4 filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// The volume's name on the host, for console lines.
    pub name: String,
    /// The disk's virtio serial (`vol0`, ...): how init finds its
    /// /dev/vdX, whatever order the devices were probed in.
    pub serial: String,
    /// Where it is mounted: absolute, normalised, checked on the host.
    pub path: String,
    pub read_only: bool,
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
            volumes: Vec::new(),
            cookie_from: None,
            dist_tls: None,
            freeze_for_snapshot: false,
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

impl ClusterSpec {
    /// `net_ticktime`, and a mesh keeper: one process per peer that connects
    /// to it and, whenever the connection is down, tries again every 2 s. So a
    /// node that restarts rejoins by itself, and the app needs no code for it.
    /// The expression goes to init as one argv element, never through a shell.
    pub(crate) fn beam_args(&self, me: Option<&str>) -> Vec<String> {
        let peers: Vec<String> = self
            .peers
            .iter()
            .filter(|p| Some(p.as_str()) != me)
            .map(|p| format!("'{}'", p.replace(['\\', '\''], "")))
            .collect();
        let keeper = format!(
            "[spawn(fun() -> Keep = fun K(P) -> case lists:member(P, nodes()) of true -> ok; \
             false -> net_kernel:connect_node(P) end, receive after 2000 -> K(P) end end, Keep(Peer) end) \
             || Peer <- [{}]], ok",
            peers.join(",")
        );
        let mut args = vec![
            "-kernel".into(),
            "net_ticktime".into(),
            self.net_ticktime_s.to_string(),
            "-eval".into(),
            keeper,
        ];
        if let Some(discovery) = &self.discovery {
            args.extend(["-eval".into(), discovery.poller()]);
        }
        args
    }
}
