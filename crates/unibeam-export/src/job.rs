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
