//! What every target module shares: the user's settings, the export under
//! way, and the one error a target's writing can raise.

use crate::source::{Source, SourceError};
use std::net::Ipv4Addr;
use std::path::Path;
use thiserror::Error;
use unibeam_spec::hostfs::{at, PathIo};

/// Per-instance settings that go into the exported VM.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The VM's, job's or service's name, and the guest's hostname;
    /// `None`: the release's name.
    pub name: Option<String>,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Guest TCP ports the engine publishes (`-p 8080`).
    pub ports: Vec<u16>,
    /// The node name (`name` or `name@host`); `None` keeps the release's.
    pub node_name: Option<String>,
    /// Firecracker and cloud-hypervisor: the guest's address on its tap.
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// Firecracker and cloud-hypervisor: the host's tap device.
    pub tap: String,
    /// KubeVirt: where the OCI image will be pushed; `None`:
    /// `localhost/<name>:<version>`.
    pub image_ref: Option<String>,
    /// Nomad: where the artifact archive will be served from; `None`: a
    /// placeholder to replace.
    pub artifact_url: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            name: None,
            memory_mib: 128,
            cpus: 1,
            ports: Vec::new(),
            node_name: None,
            address: Ipv4Addr::new(172, 16, 0, 2),
            prefix_len: 24,
            gateway: Ipv4Addr::new(172, 16, 0, 1),
            tap: "tap0".into(),
            image_ref: None,
            artifact_url: None,
        }
    }
}

/// A setting that no engine could run: refused before anything is
/// written, naming the flag.
#[derive(Debug, Error)]
pub enum SettingError {
    #[error("-p 0: not a port; give the guest's TCP port, 1 to 65535")]
    ZeroPort,
    #[error("-p {0} is given twice; publish each port once")]
    PortTwice(u16),
    #[error("--node-name {node:?}: {why} (NAME or NAME@HOST)")]
    NodeName { node: String, why: String },
    #[error("--tap {tap:?}: {why}")]
    Tap { tap: String, why: String },
    #[error("--address {address}/{prefix_len}: {why}")]
    Address {
        address: Ipv4Addr,
        prefix_len: u8,
        why: &'static str,
    },
    #[error("--gateway {gateway}: {why} of --address {address}/{prefix_len}")]
    Gateway {
        gateway: Ipv4Addr,
        address: Ipv4Addr,
        prefix_len: u8,
        why: &'static str,
    },
    #[error("--image-ref {0:?}: not an image reference; give e.g. registry.example/team/NAME:1.0 (lower-case repository)")]
    ImageRef(String),
    #[error("--artifact-url {0:?}: not a URL; give e.g. https://files.internal/NAME.tar.gz")]
    ArtifactUrl(String),
}

impl Settings {
    /// Every setting checked, before any file is written.
    pub fn check(&self) -> Result<(), SettingError> {
        for (i, port) in self.ports.iter().enumerate() {
            if *port == 0 {
                return Err(SettingError::ZeroPort);
            }
            if self.ports[..i].contains(port) {
                return Err(SettingError::PortTwice(*port));
            }
        }
        if let Some(node) = &self.node_name {
            if let Some(why) = unibeam_spec::names::node_name_problem(node) {
                return Err(SettingError::NodeName {
                    node: node.clone(),
                    why,
                });
            }
        }
        if let Some(why) = unibeam_spec::names::interface_name_problem(&self.tap) {
            return Err(SettingError::Tap {
                tap: self.tap.clone(),
                why,
            });
        }
        self.check_addresses()?;
        if let Some(r) = &self.image_ref {
            if !is_image_ref(r) {
                return Err(SettingError::ImageRef(r.clone()));
            }
        }
        if let Some(url) = &self.artifact_url {
            if !is_url(url) {
                return Err(SettingError::ArtifactUrl(url.clone()));
            }
        }
        Ok(())
    }

    /// The guest's address is a host address of its subnet, and the
    /// gateway another one of the same subnet.
    fn check_addresses(&self) -> Result<(), SettingError> {
        let (address, prefix_len) = (self.address, self.prefix_len);
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
        let host_part = |a: Ipv4Addr| u32::from(a) & !mask;
        let role = |a: Ipv4Addr| match host_part(a) {
            0 => Some("the network's own address"),
            h if h == !mask => Some("the broadcast address"),
            _ => None,
        };
        if let Some(why) = role(address) {
            return Err(SettingError::Address {
                address,
                prefix_len,
                why,
            });
        }
        let gateway = self.gateway;
        let why = if u32::from(gateway) & mask != u32::from(address) & mask {
            Some("is outside the subnet")
        } else if gateway == address {
            Some("is the address")
        } else if role(gateway).is_some() {
            Some("is the network's or broadcast address of the subnet")
        } else {
            None
        };
        match why {
            Some(why) => Err(SettingError::Gateway {
                gateway,
                address,
                prefix_len,
                why,
            }),
            None => Ok(()),
        }
    }
}

/// `[HOST[:PORT]/]PATH[:TAG][@DIGEST]`, as registries take it: the path's
/// components lower-case letters, digits and separators.
fn is_image_ref(r: &str) -> bool {
    let (name, digest) = match r.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (r, None),
    };
    let (name, tag) = match name.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (name, None),
    };
    let word = |s: &str, extra: &str| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    };
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts[0];
    if parts.len() > 1 && (first.contains(['.', ':']) || first == "localhost") {
        parts.remove(0);
        if !word(first, ".-:") {
            return false;
        }
    }
    let component = |c: &&str| word(c, "._-") && !c.chars().any(|ch| ch.is_ascii_uppercase());
    r.len() <= 255
        && parts.iter().all(component)
        && tag.is_none_or(|t| t.len() <= 128 && word(t, "._-"))
        && digest.is_none_or(|d| word(d, ":"))
}

/// A URL with a scheme and nothing a job file or shell would mangle.
fn is_url(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, rest)| word_like(scheme) && !rest.is_empty())
        && !url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"'<>\\`".contains(c))
}

fn word_like(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
}

/// What a target module can fail at while writing its files.
#[derive(Debug, Error)]
pub enum TargetError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Write(#[from] PathIo),
    #[error("building the OCI {what}")]
    OciSpec {
        what: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("writing the OCI layer")]
    OciLayer(#[source] std::io::Error),
    #[error("writing YAML")]
    Yaml(#[from] serde_yaml::Error),
    #[error("writing JSON")]
    Json(#[from] serde_json::Error),
}

/// One export under way: what every target module takes.
pub(crate) struct Job<'a> {
    pub source: &'a Source,
    pub settings: &'a Settings,
    /// The checked name (a DNS label).
    pub name: &'a str,
    /// The staging directory the target writes into.
    pub dir: &'a Path,
}

impl Job<'_> {
    /// Writes `data` to `file` in the export.
    pub fn write(&self, file: &str, data: &[u8]) -> Result<(), TargetError> {
        let path = self.dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(at::<PathIo>(parent))?;
        }
        std::fs::write(&path, data).map_err(at::<PathIo>(&path))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut Settings)) -> Result<(), SettingError> {
        let mut s = Settings::default();
        f(&mut s);
        s.check()
    }

    #[test]
    fn the_defaults_pass() {
        with(|_| {}).unwrap();
        with(|s| s.ports = vec![8080, 4369]).unwrap();
        with(|s| s.image_ref = Some("registry.example:5000/team/hello:0.1.0".into())).unwrap();
        with(|s| s.artifact_url = Some("https://files.internal/hello.tar.gz".into())).unwrap();
        with(|s| s.node_name = Some("hello@10.0.0.2".into())).unwrap();
    }

    #[test]
    fn settings_no_engine_could_run_are_named() {
        let err = |f: fn(&mut Settings)| with(f).unwrap_err().to_string();
        assert!(err(|s| s.ports = vec![0]).contains("-p 0"));
        assert!(err(|s| s.ports = vec![80, 80]).contains("-p 80 is given twice"));
        assert!(err(|s| s.node_name = Some("a b".into())).contains("--node-name \"a b\""));
        assert!(err(|s| s.tap = "a;$(reboot)".into()).contains("--tap"));
        assert!(err(|s| s.tap = "x\ntouch /tmp/x".into()).contains("--tap"));
        assert!(err(|s| s.tap = String::new()).contains("--tap"));
        assert!(err(|s| s.address = "172.16.0.0".parse().unwrap()).contains("network's own address"));
        assert!(err(|s| s.address = "172.16.0.255".parse().unwrap()).contains("broadcast"));
        assert!(err(|s| s.gateway = "172.16.0.2".parse().unwrap()).contains("is the address"));
        assert!(err(|s| s.gateway = "10.9.0.1".parse().unwrap()).contains("outside the subnet"));
        assert!(err(|s| s.image_ref = Some(String::new())).contains("--image-ref"));
        assert!(err(|s| s.image_ref = Some("UPPER/x:1".into())).contains("--image-ref"));
        assert!(err(|s| s.artifact_url = Some("not a url".into())).contains("--artifact-url"));
        assert!(err(|s| s.artifact_url = Some("http://x/\"a".into())).contains("--artifact-url"));
    }
}
