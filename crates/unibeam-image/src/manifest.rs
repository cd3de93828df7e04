//! `image.json`: what an image holds, where it came from, and the boot spec
//! the runner hands the guest.

use crate::initramfs::{Node, Tree};
use crate::kernel::KernelOrigin;
use crate::layers::{FileRecord, LayerInfo};
use crate::shell::ShellMode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::{BootSpec, BOOT_SPEC_PATH};

pub const MANIFEST_FILE: &str = "image.json";
pub const FORMAT: u32 = 2;

#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("{0}: not a unibeam image (no image.json); build one with `unibeam build`")]
    NotAnImage(PathBuf),
    #[error("{path}: malformed image.json: {cause}")]
    Malformed { path: PathBuf, cause: serde_json::Error },
    #[error("{path}: image format {found}, this unibeam reads {FORMAT}; rebuild the image")]
    Format { path: PathBuf, found: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    pub origin: KernelOrigin,
    pub release: String,
    pub file: String,
    pub bytes: u64,
    /// Whether the kernel has ACPI (see `Kernel::acpi`). Images from
    /// before this field booted ACPI kernels only.
    #[serde(default = "yes")]
    pub acpi: bool,
    /// Whether the kernel reads `apic_bus_khz=` (see `Kernel::apic_bus_khz`).
    #[serde(default)]
    pub apic_bus_khz: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitramfsInfo {
    pub file: String,
    pub compression: String,
    pub bytes: u64,
    pub uncompressed_bytes: u64,
    /// In unpack order; their bytes add up to `bytes`.
    pub layers: Vec<LayerInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseInfo {
    pub name: String,
    pub version: String,
}

/// Whether the image has a POSIX shell, and why (see `shell::scan`).
/// Images from before this field have none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellInfo {
    pub mode: ShellMode,
    /// Whether `/bin/sh` (dash) is in the image.
    pub included: bool,
    /// Why the release needs a shell, even when `mode` left it out.
    pub reasons: Vec<String>,
    /// Programs put in `/usr/bin` for the release to run.
    pub programs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    pub format: u32,
    pub created_by: String,
    pub release: ReleaseInfo,
    pub erts_version: String,
    pub kernel: KernelInfo,
    pub initramfs: InitramfsInfo,
    /// Module names in load order.
    pub modules: Vec<String>,
    /// Written into the per-instance config layer at boot.
    pub boot: BootSpec,
    /// Every file in the image with its size and sha256: the image's SBOM.
    pub files: Vec<FileRecord>,
    #[serde(default)]
    pub shell: ShellInfo,
    /// What will not work in the guest, one line each: `unibeam build`
    /// prints them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl ImageManifest {
    pub fn read(image_dir: &Path) -> Result<ImageManifest, ManifestError> {
        let path = image_dir.join(MANIFEST_FILE);
        let text =
            fs::read_to_string(&path).map_err(|_| ManifestError::NotAnImage(image_dir.to_path_buf()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|cause| ManifestError::Malformed {
                path: path.clone(),
                cause,
            })?;
        let found = value["format"].as_u64().unwrap_or(0) as u32;
        if found != FORMAT {
            return Err(ManifestError::Format { path, found });
        }
        serde_json::from_value(value).map_err(|cause| ManifestError::Malformed { path, cause })
    }

    pub fn total_bytes(&self) -> u64 {
        self.kernel.bytes + self.initramfs.bytes
    }

    /// `kernel 6.1.0-56-cloud-amd64 14.2 MB, initramfs 6.1 MB, total 20.3 MB`
    pub fn size_summary(&self) -> String {
        let mb = |bytes: u64| format!("{:.1} MB", bytes as f64 / 1e6);
        format!(
            "kernel {} {}, initramfs {}, total {}",
            self.kernel.release,
            mb(self.kernel.bytes),
            mb(self.initramfs.bytes),
            mb(self.total_bytes())
        )
    }

    /// Uncompressed bytes and file count per OTP application
    /// (`/release/lib/<app>-<vsn>/...`).
    pub fn application_sizes(&self) -> BTreeMap<String, (u64, usize)> {
        let prefix = format!("{}/lib/", self.boot.release.root);
        let mut apps: BTreeMap<String, (u64, usize)> = BTreeMap::new();
        for file in &self.files {
            let Some(app) = file.path.strip_prefix(&prefix).and_then(|r| r.split('/').next()) else {
                continue;
            };
            let entry = apps.entry(app.to_string()).or_default();
            entry.0 += file.bytes;
            entry.1 += 1;
        }
        apps
    }
}

/// The image's layers decompressed on the host, back to back, each at a
/// 4-byte aligned offset as the kernel requires of plain archives. The
/// host unpacks 14 MB in milliseconds; the guest kernel under TCG needs
/// most of a second for it (0.6 s against 1.0 s to init in
/// docs/benchmarks.md). The image on disk stays compressed.
pub fn unpack_layers(initramfs: &[u8], layers: &[LayerInfo]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let total = layers.iter().map(|l| l.uncompressed_bytes as usize + 3).sum();
    let mut out = Vec::with_capacity(total);
    for layer in layers {
        let (start, len) = (layer.offset as usize, layer.bytes as usize);
        let data = initramfs
            .get(start..start + len)
            .ok_or_else(|| std::io::Error::other(format!("layer {:?} lies past the end", layer.name)))?;
        if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            zstd::stream::copy_decode(data, &mut out)?;
        } else if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            xz2::read::XzDecoder::new(data).read_to_end(&mut out)?;
        } else {
            out.extend_from_slice(data);
        }
        out.resize(out.len().next_multiple_of(4), 0);
    }
    Ok(out)
}

/// Appends the per-instance layer, the boot spec as an uncompressed newc
/// archive, to an image's layers, so the kernel unpacks it last.
pub fn append_config_layer(initramfs: &mut Vec<u8>, spec: &BootSpec) {
    // The kernel takes an uncompressed archive only at a 4-byte aligned
    // offset; it skips the zero bytes before it.
    initramfs.resize(initramfs.len().next_multiple_of(4), 0);
    let mut tree = Tree::new();
    let data = spec.to_json().into_bytes();
    tree.insert(
        BOOT_SPEC_PATH,
        Node::Bytes {
            data,
            executable: false,
        },
    );
    tree.write_cpio(initramfs).expect("writing to memory cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_a_non_image_names_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let err = ImageManifest::read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a unibeam image"));
        fs::write(dir.path().join(MANIFEST_FILE), r#"{"format": 1}"#).unwrap();
        let err = ImageManifest::read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("rebuild the image"), "{err}");
    }

    #[test]
    fn layers_unpack_whatever_their_compression() {
        use crate::layers::{Compression, LayerName};
        let plain: [&[u8]; 3] = [b"070701first", b"070701second!", b"070701third"];
        let packed = [
            Compression::Zstd(3).compress(plain[0]).unwrap(),
            Compression::Xz.compress(plain[1]).unwrap(),
            Compression::None.compress(plain[2]).unwrap(),
        ];
        let mut initramfs = Vec::new();
        let mut layers = Vec::new();
        for (p, raw) in packed.iter().zip(plain) {
            layers.push(LayerInfo {
                name: LayerName::App,
                offset: initramfs.len() as u64,
                bytes: p.len() as u64,
                uncompressed_bytes: raw.len() as u64,
                entries: 1,
                key: String::new(),
                sha256: String::new(),
            });
            initramfs.extend_from_slice(p);
        }
        let out = unpack_layers(&initramfs, &layers).unwrap();
        assert_eq!(&out[..11], plain[0]);
        assert_eq!(&out[12..25], plain[1], "each archive starts 4-byte aligned");
        assert_eq!(&out[28..39], plain[2]);
        assert_eq!(out.len() % 4, 0);
        layers[2].bytes += 100;
        assert!(unpack_layers(&initramfs, &layers).is_err());
    }

    #[test]
    fn config_layer_is_an_aligned_newc_archive_with_the_spec() {
        let spec = BootSpec::sample();
        let mut initramfs = vec![1, 2, 3, 4, 5];
        append_config_layer(&mut initramfs, &spec);
        assert_eq!(&initramfs[5..8], &[0, 0, 0]);
        assert!(initramfs[8..].starts_with(b"070701"));
        let text = String::from_utf8_lossy(&initramfs);
        assert!(text.contains("unibeam/boot.json") && text.contains("\"hostname\": \"hello\""));
    }
}
