//! `unibeam export`: an image (`unibeam build`'s output) as the files
//! another engine runs it from, with no unibeam on the running side.
//!
//! Every target gets the image's kernel and an initrd: the image's own
//! compressed layers, as built, plus one more uncompressed newc layer made
//! here holding the boot spec (`/unibeam/boot.json`, as `run` appends it)
//! with settings that suit the engine: DHCP where the engine serves it
//! (KubeVirt's masquerade, QEMU's user network under Nomad), a static
//! address on a tap for Firecracker and cloud-hypervisor, the memory, the
//! node name. The cookie is in neither: the engine hands it to the guest
//! as a read-only disk (a KubeVirt Secret volume, a file a Nomad template
//! renders, a file the operator attaches) and init reads it at boot
//! (unibeam-init secrets.rs; `InstanceSpec::cookie_from` says where).
//!
//! One module per target; `source` reads and checks the image, `instance`
//! makes the boot spec and initrd, `outdir` owns the output directory.

mod cloud_hypervisor;
mod firecracker;
mod instance;
mod job;
mod kubevirt;
mod nomad;
mod oci;
mod outdir;
mod source;

pub use instance::{Addressing, COOKIE_SERIAL};
pub use job::{SettingError, Settings, TargetError};
pub use outdir::{OutDirError, MARKER_FILE};
pub use source::{Source, SourceError};

use job::Job;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use thiserror::Error;

/// An engine `unibeam export` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Oci,
    Kubevirt,
    Nomad,
    Firecracker,
    CloudHypervisor,
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::Oci,
        Target::Kubevirt,
        Target::Nomad,
        Target::Firecracker,
        Target::CloudHypervisor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Oci => "oci",
            Target::Kubevirt => "kubevirt",
            Target::Nomad => "nomad",
            Target::Firecracker => "firecracker",
            Target::CloudHypervisor => "cloud-hypervisor",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Target::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
            format!(
                "unknown export target {s:?}: expected one of {}",
                names.join(", ")
            )
        })
    }
}

#[derive(Debug, Error)]
pub enum ExportError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    OutDir(#[from] OutDirError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Setting(#[from] SettingError),
    #[error("--name {0:?}: use lower-case letters, digits and '-', starting with a letter (a DNS label)")]
    BadName(String),
}

/// What an export wrote: its directory, the files in it, and what the
/// user does next (one line each).
#[derive(Debug)]
pub struct Exported {
    pub dir: PathBuf,
    pub files: Vec<String>,
    pub next_steps: Vec<String>,
}

/// Exports the image in `image` for `target` into `out`. `out` must not
/// exist, be empty, or be an earlier export (it is then replaced); anything
/// else is refused before any work, so a user's files are never touched.
pub fn export(
    image: &Path,
    target: Target,
    out: &Path,
    settings: &Settings,
) -> Result<Exported, ExportError> {
    settings.check()?;
    let staging = outdir::Staging::claim(out)?;
    let source = Source::open(image)?;
    let name = settings
        .name
        .clone()
        .unwrap_or_else(|| dns_label(&source.manifest.release.name));
    if !is_dns_label(&name) {
        return Err(ExportError::BadName(name));
    }
    let job = Job {
        source: &source,
        settings,
        name: &name,
        dir: staging.dir(),
    };
    let next_steps = match target {
        Target::Oci => oci::export(&job)?,
        Target::Kubevirt => kubevirt::export(&job)?,
        Target::Nomad => nomad::export(&job)?,
        Target::Firecracker => firecracker::export(&job)?,
        Target::CloudHypervisor => cloud_hypervisor::export(&job)?,
    };
    let files = staging.commit()?;
    Ok(Exported {
        dir: out.to_path_buf(),
        files,
        next_steps,
    })
}

/// Kubernetes, Nomad and DNS take names as RFC 1123 labels.
fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A release name as a DNS label: `hello_world` → `hello-world`.
fn dns_label(s: &str) -> String {
    let label: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    label.trim_matches('-').chars().take(63).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_by_name_and_unknown_ones_are_listed() {
        for t in Target::ALL {
            assert_eq!(t.name().parse::<Target>().unwrap(), t);
        }
        let err = "docker".parse::<Target>().unwrap_err();
        assert!(
            err.contains("\"docker\"") && err.contains("cloud-hypervisor"),
            "{err}"
        );
    }

    #[test]
    fn release_names_become_dns_labels() {
        assert_eq!(dns_label("hello_elixir"), "hello-elixir");
        assert!(is_dns_label("hello-1"));
        assert!(!is_dns_label("Hello"));
        assert!(!is_dns_label("1abc"));
    }
}
