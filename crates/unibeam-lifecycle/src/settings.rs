//! Per-instance settings (what `run`'s flags and a cluster member's plan
//! say), checked, and turned into the boot spec that travels to the guest
//! in the config layer (never on a command line).

use crate::progress::Progress;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use unibeam_cluster::values::Cidr;
use unibeam_spec::hostfs;
use unibeam_spec::{BootSpec, ClusterSpec, DnsDiscovery, ExitPolicy, PrivateNic};
use unibeam_vmm::{Carrier, PrivateNet};

#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("{flag} {value:?}: use letters, digits, '-', '_' and '.', at most 64")]
    BadHostname { flag: &'static str, value: String },
    #[error("--node-name {node:?}: {why} (NAME or NAME@HOST)")]
    BadNodeName { node: String, why: String },
    #[error("--cookie-file {}", .0.display())]
    CookieRead(PathBuf, #[source] std::io::Error),
    #[error("--cookie-file {}: {why}", path.display())]
    BadCookie { path: PathBuf, why: String },
    #[error("--sys-config {}", .0.display())]
    SysConfigRead(PathBuf, #[source] std::io::Error),
    #[error("--sys-config {}:{detail}", path.display())]
    BadSysConfig { path: PathBuf, detail: String },
    #[error("--private-net {0}: the group must be a multicast address, e.g. 239.255.0.1:40000")]
    NotMulticast(SocketAddrV4),
    #[error("{0:?}: cluster members need long node names, e.g. web-1@10.77.0.2")]
    NotLongName(String),
    #[error(transparent)]
    DistTls(#[from] crate::dist_tls::DistTlsError),
}

/// Membership of a cluster: what the guest needs to mesh with its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub cluster: String,
    /// Long node names to connect to, and reconnect to when a link drops.
    pub peers: Vec<String>,
    pub net_ticktime_s: u32,
    /// Peers from DNS (`discovery = "dns:NAME"`).
    pub discovery: Option<DnsDiscovery>,
}

/// A second NIC on a private segment: a cluster's, or a named network's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateLink {
    pub carrier: LinkCarrier,
    /// This VM's address on it.
    pub address: Cidr,
}

/// What carries a private segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkCarrier {
    /// QEMU, over this multicast group and port on the host's loopback.
    Multicast(SocketAddrV4),
    /// A tap on a Linux bridge (a `bridge` network).
    Tap { tap: String, bridge: String },
}

/// Everything about one instance that reaches its guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSettings {
    /// Environment of the BEAM.
    pub env: Vec<(String, String)>,
    /// The instance's name; the guest hostname defaults to it.
    pub name: Option<String>,
    pub hostname: Option<String>,
    /// `NAME` for -sname, `NAME@HOST` for -name.
    pub node_name: Option<String>,
    /// File holding the Erlang cookie.
    pub cookie_file: Option<PathBuf>,
    /// sys.config-format overrides.
    pub sys_config: Option<PathBuf>,
    pub vm_args: Vec<String>,
    pub dhcp: bool,
    /// Seconds the BEAM gets to stop gracefully.
    pub stop_timeout_s: u32,
    pub on_exit: ExitPolicy,
    pub run_as_root: bool,
    pub membership: Option<Membership>,
    pub private_link: Option<PrivateLink>,
    /// TLS distribution (`run --dist-tls`): a certificate from the
    /// host-wide CA is issued when the instance is created.
    pub dist_tls: bool,
    /// The node's TLS files (issued by a cluster's CA, or for `--dist-tls`).
    pub dist_tls_files: Option<unibeam_cluster::tls::NodeTls>,
    /// A named network to join (`run --network`); `vm::prepare` turns it
    /// into the private link.
    pub network: Option<String>,
}

impl Default for InstanceSettings {
    fn default() -> Self {
        InstanceSettings {
            env: Vec::new(),
            name: None,
            hostname: None,
            node_name: None,
            cookie_file: None,
            sys_config: None,
            vm_args: Vec::new(),
            dhcp: false,
            stop_timeout_s: 30,
            on_exit: ExitPolicy::Poweroff,
            run_as_root: false,
            membership: None,
            private_link: None,
            dist_tls: false,
            dist_tls_files: None,
            network: None,
        }
    }
}

/// A MAC unique on the private segment, derived from the address.
fn private_mac(ip: std::net::Ipv4Addr) -> String {
    let o = ip.octets();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", o[1], o[2], o[3])
}

/// `name@host` with an Erlang-atom-safe name and a dotted host.
fn valid_long_name(node: &str) -> bool {
    let Some((name, host)) = node.split_once('@') else {
        return false;
    };
    let plain = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    !name.is_empty() && plain(name) && host.contains('.') && plain(host)
}

/// What the BEAM takes for `-sname`/`-name` (net_kernel): NAME of letters,
/// digits, '_' and '-', then optionally `@HOST`, a host name or IPv4
/// address; at most 255 bytes, an atom's limit.
pub fn check_node_name(node: &str) -> Result<(), SettingsError> {
    match unibeam_spec::names::node_name_problem(node) {
        None => Ok(()),
        Some(why) => Err(SettingsError::BadNodeName {
            node: node.to_string(),
            why,
        }),
    }
}

/// More than any cookie file holds: the cookie itself is at most 255.
pub const COOKIE_FILE_MAX: u64 = 64 << 10;
/// More than any sys.config holds; it travels in the initrd.
const SYS_CONFIG_MAX: u64 = 16 << 20;

/// The cookie in `path`, as the BEAM reads `.erlang.cookie`: one word of
/// printable ASCII, at most 255 characters (an atom's limit).
fn read_cookie(path: &Path, progress: &dyn Progress) -> Result<String, SettingsError> {
    let bytes = hostfs::read_limited(path, COOKIE_FILE_MAX)
        .map_err(|e| SettingsError::CookieRead(path.into(), e.source))?;
    let bad = |why: String| SettingsError::BadCookie {
        path: path.to_path_buf(),
        why,
    };
    let text = String::from_utf8(bytes).map_err(|_| bad("not text; the cookie is printable ASCII".into()))?;
    let cookie = text.trim();
    if cookie.is_empty() || cookie.contains(char::is_whitespace) {
        return Err(bad("the cookie must be one word".into()));
    }
    if let Some(c) = cookie.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(bad(format!(
            "the cookie holds {c:?}, which the BEAM refuses (it takes printable ASCII)"
        )));
    }
    if cookie.len() > 255 {
        return Err(bad(format!(
            "the cookie is {} characters long; the BEAM takes at most 255",
            cookie.len()
        )));
    }
    check_cookie_mode(path, progress)?;
    Ok(cookie.to_string())
}

/// The cookie is the cluster's password. A file others can write lets
/// them choose it: refused. One others can read gives it away: warned.
fn check_cookie_mode(path: &Path, progress: &dyn Progress) -> Result<(), SettingsError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| SettingsError::CookieRead(path.into(), e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(SettingsError::BadCookie {
            path: path.to_path_buf(),
            why: format!(
                "writable by others (mode {mode:03o}), so anyone could choose the cookie; `chmod 600 {}`",
                path.display()
            ),
        });
    }
    if mode & 0o044 != 0 {
        progress.warn(&format!(
            "--cookie-file {0}: readable by others (mode {mode:03o}); `chmod 600 {0}`",
            path.display()
        ));
    }
    Ok(())
}

/// The overrides in `path`, checked to be what `-config` reads.
fn read_sys_config(path: &Path) -> Result<String, SettingsError> {
    let bytes = hostfs::read_limited(path, SYS_CONFIG_MAX)
        .map_err(|e| SettingsError::SysConfigRead(path.into(), e.source))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        SettingsError::SysConfigRead(
            path.into(),
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
        )
    })?;
    unibeam_image::erlfiles::check_config(&text).map_err(|e| SettingsError::BadSysConfig {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok(text)
}

fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

impl InstanceSettings {
    /// The QEMU side of the private link.
    pub fn private_net(&self) -> Option<PrivateNet> {
        let link = self.private_link.as_ref()?;
        let carrier = match &link.carrier {
            LinkCarrier::Multicast(segment) => Carrier::Multicast {
                group: *segment.ip(),
                port: segment.port(),
            },
            LinkCarrier::Tap { tap, bridge } => Carrier::Tap {
                tap: tap.clone(),
                bridge: bridge.clone(),
                fd: None,
            },
        };
        Some(PrivateNet {
            carrier,
            mac: private_mac(link.address.address),
        })
    }

    /// Checks every value, reading the files they name, without changing
    /// anything: `run` and `up` call it before they start anything.
    pub fn check(&self) -> Result<(), SettingsError> {
        for (flag, value) in [("--name", &self.name), ("--hostname", &self.hostname)] {
            if let Some(value) = value.as_ref().filter(|v| !valid_hostname(v)) {
                return Err(SettingsError::BadHostname {
                    flag,
                    value: value.clone(),
                });
            }
        }
        if let Some(node) = &self.node_name {
            check_node_name(node)?;
        }
        if let Some(path) = &self.cookie_file {
            read_cookie(path, &crate::progress::Quiet)?;
        }
        if let Some(path) = &self.sys_config {
            read_sys_config(path)?;
        }
        if let Some(tls) = &self.dist_tls_files {
            tls.node.read().map_err(crate::dist_tls::DistTlsError::from)?;
        }
        self.check_cluster()
    }

    fn check_cluster(&self) -> Result<(), SettingsError> {
        if let Some(PrivateLink {
            carrier: LinkCarrier::Multicast(segment),
            ..
        }) = &self.private_link
        {
            if !segment.ip().is_multicast() {
                return Err(SettingsError::NotMulticast(*segment));
            }
        }
        if let Some(membership) = &self.membership {
            let node = self.node_name.as_deref().unwrap_or_default();
            let names = std::iter::once(node).chain(membership.peers.iter().map(String::as_str));
            if let Some(bad) = names.into_iter().find(|n| !valid_long_name(n)) {
                return Err(SettingsError::NotLongName(bad.to_string()));
            }
        }
        Ok(())
    }

    /// Writes these settings into `spec`.
    pub fn apply(&self, spec: &mut BootSpec, progress: &dyn Progress) -> Result<(), SettingsError> {
        self.check()?;
        if let Some(hostname) = self.hostname.as_ref().or(self.name.as_ref()) {
            spec.hostname = hostname.clone();
        }
        let inst = &mut spec.instance;
        inst.env = self.env.clone();
        for warning in unibeam_spec::unsupported_start_vars(&inst.env) {
            progress.warn(&warning);
        }
        inst.extra_vm_args = self.vm_args.clone();
        inst.node_name = self.node_name.clone();
        if let Some(path) = &self.cookie_file {
            inst.cookie = Some(read_cookie(path, progress)?);
        }
        if let Some(path) = &self.sys_config {
            inst.sys_config_overrides = Some(read_sys_config(path)?);
        }
        inst.stop_timeout_s = self.stop_timeout_s;
        inst.on_exit = self.on_exit;
        inst.run_as_root = self.run_as_root;
        if let Some(tls) = &self.dist_tls_files {
            let pem = tls.node.read().map_err(crate::dist_tls::DistTlsError::from)?;
            inst.dist_tls = Some(unibeam_spec::DistTls {
                ca_pem: pem.ca,
                cert_pem: pem.cert,
                key_pem: pem.key,
            });
        }
        spec.network.dhcp = self.dhcp;
        if let Some(link) = &self.private_link {
            spec.network.private = Some(PrivateNic {
                mac: private_mac(link.address.address),
                address: link.address.address,
                prefix_len: link.address.prefix_len,
            });
        }
        if let Some(m) = &self.membership {
            spec.instance.cluster = Some(ClusterSpec {
                name: m.cluster.clone(),
                peers: m.peers.clone(),
                net_ticktime_s: m.net_ticktime_s,
                discovery: m.discovery.clone(),
            });
        }
        Ok(())
    }

    /// How long a host waits for a stopping guest before killing QEMU.
    pub fn stop_grace(&self) -> Duration {
        Duration::from_secs(u64::from(self.stop_timeout_s) + 15)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Recorded;
    use std::net::Ipv4Addr;

    #[test]
    fn cluster_settings_are_checked() {
        assert_eq!(private_mac(Ipv4Addr::new(10, 77, 0, 2)), "52:54:00:4d:00:02");
        assert!(valid_long_name("web-1@10.77.0.2"));
        assert!(!valid_long_name("web-1"));
        assert!(!valid_long_name("web'1@10.77.0.2"));
        let mut s = InstanceSettings {
            node_name: Some("web-1".into()),
            membership: Some(Membership {
                cluster: "shop".into(),
                peers: vec![],
                net_ticktime_s: 10,
                discovery: None,
            }),
            ..InstanceSettings::default()
        };
        assert!(s.check().unwrap_err().to_string().contains("long node names"));
        s.node_name = Some("web-1@10.77.0.2".into());
        s.check().unwrap();
        s.private_link = Some(PrivateLink {
            carrier: LinkCarrier::Multicast("10.0.0.1:4000".parse().unwrap()),
            address: "10.77.0.2/24".parse().unwrap(),
        });
        assert!(s.check().unwrap_err().to_string().contains("multicast"));
    }

    #[test]
    fn node_names_are_checked_as_the_beam_would() {
        for good in ["web", "web-1@10.77.0.2", "a_b@host.example", "x@localhost"] {
            check_node_name(good).unwrap();
        }
        for (bad, why) in [
            ("bad name", "' ' in the name"),
            ("web@", "host after '@' is empty"),
            ("@host", "name before '@' is empty"),
            ("we!b@10.0.0.1", "'!' in the name"),
            ("web@ho st", "' ' in the host"),
        ] {
            let err = check_node_name(bad).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains(&format!("{bad:?}")), "{err}");
        }
        assert!(check_node_name(&"a".repeat(256))
            .unwrap_err()
            .to_string()
            .contains("255"));
    }

    #[test]
    fn cookies_are_checked_as_the_beam_would() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        let err = |text: &str| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            read_cookie(&path, &Recorded::default()).unwrap_err().to_string()
        };
        assert!(err(&"x".repeat(256)).contains("256 characters"));
        assert!(err("caf\u{e9}").contains("'\u{e9}'"));
        assert!(err("two words").contains("one word"));
        std::fs::write(&path, format!("{}\n", "x".repeat(255))).unwrap();
        assert_eq!(read_cookie(&path, &Recorded::default()).unwrap().len(), 255);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let seen = Recorded::default();
        read_cookie(&path, &seen).unwrap();
        assert!(seen.all()[0].contains("readable by others"), "{:?}", seen.all());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = read_cookie(&path, &seen).unwrap_err().to_string();
        assert!(err.contains("writable by others"), "{err}");
    }

    #[test]
    fn hostnames_are_checked() {
        assert!(valid_hostname("web-1.local"));
        assert!(!valid_hostname("bad host"));
        assert!(!valid_hostname(""));
        let s = InstanceSettings {
            hostname: Some("bad host".into()),
            ..InstanceSettings::default()
        };
        assert!(s
            .check()
            .unwrap_err()
            .to_string()
            .starts_with("--hostname \"bad host\""));
    }

    #[test]
    fn settings_reach_the_boot_spec() {
        let mut spec = BootSpec::sample();
        let s = InstanceSettings {
            env: vec![("A".into(), "b".into())],
            name: Some("web".into()),
            private_link: Some(PrivateLink {
                carrier: LinkCarrier::Multicast("239.255.0.1:40000".parse().unwrap()),
                address: "10.77.0.2/24".parse().unwrap(),
            }),
            ..InstanceSettings::default()
        };
        s.apply(&mut spec, &Recorded::default()).unwrap();
        assert_eq!(spec.hostname, "web");
        assert_eq!(spec.instance.env, [("A".to_string(), "b".to_string())]);
        assert_eq!(spec.network.private.unwrap().prefix_len, 24);
        assert_eq!(s.private_net().unwrap().mac, "52:54:00:4d:00:02");
    }
}
