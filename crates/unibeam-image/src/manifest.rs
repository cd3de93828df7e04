//! `image.json`: what an image holds, where it came from, and the boot spec
//! the runner hands the guest.

use crate::initramfs::{Node, Tree};
use crate::kimage::KernelOrigin;
use crate::layers::{FileRecord, LayerInfo};
use crate::shell::ShellMode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::{BootSpec, BOOT_SPEC_PATH};

pub const MANIFEST_FILE: &str = "image.json";
/// 4: init writes the snapshot hand-over file (quiesce.rs) and Debian
/// images carry virtio_input; an older image's init would leave a
/// snapshot's BEAM waiting.
pub const FORMAT: u32 = 4;

#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("{0}: not a unibeam image (no image.json); build one with `unibeam build`")]
    NotAnImage(PathBuf),
    #[error("{path}: malformed image.json")]
    Malformed {
        path: PathBuf,
        #[source]
        cause: serde_json::Error,
    },
    #[error("{path}: image format {found}, this unibeam reads {FORMAT}; rebuild the image")]
    Format { path: PathBuf, found: u32 },
    /// A size, offset or file name that the image's files contradict:
    /// image.json was edited or damaged, or belongs to other files.
    #[error("{path}: {field} = {value} {problem}; rebuild the image")]
    Inconsistent {
        path: PathBuf,
        field: String,
        value: String,
        problem: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    pub origin: KernelOrigin,
    pub release: String,
    pub file: String,
    pub bytes: u64,
    /// Of the kernel file, checked before every boot. Images from before
    /// this field have only their layers checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
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
        let manifest: ImageManifest =
            serde_json::from_value(value).map_err(|cause| ManifestError::Malformed {
                path: path.clone(),
                cause,
            })?;
        manifest.check_against_files(image_dir)?;
        Ok(manifest)
    }

    /// Checks every size, offset and file name image.json gives against
    /// the files on disk, so nothing later allocates or slices by a number
    /// the files do not bear out.
    fn check_against_files(&self, image_dir: &Path) -> Result<(), ManifestError> {
        let bad = |field: &str, value: &dyn std::fmt::Display, problem: String| ManifestError::Inconsistent {
            path: image_dir.join(MANIFEST_FILE),
            field: field.to_string(),
            value: value.to_string(),
            problem,
        };
        let on_disk = |field: &str, file: &str| -> Result<u64, ManifestError> {
            if !is_plain_file_name(file) {
                return Err(bad(
                    field,
                    &format!("{file:?}"),
                    "is not a file name inside the image".into(),
                ));
            }
            let meta = fs::metadata(image_dir.join(file));
            meta.map(|m| m.len())
                .map_err(|e| bad(field, &format!("{file:?}"), format!("cannot be read ({e})")))
        };
        let kernel_len = on_disk("kernel.file", &self.kernel.file)?;
        if self.kernel.bytes != kernel_len {
            let problem = format!("but {} has {kernel_len} bytes", self.kernel.file);
            return Err(bad("kernel.bytes", &self.kernel.bytes, problem));
        }
        let initramfs_len = on_disk("initramfs.file", &self.initramfs.file)?;
        if self.initramfs.bytes != initramfs_len {
            let problem = format!("but {} has {initramfs_len} bytes", self.initramfs.file);
            return Err(bad("initramfs.bytes", &self.initramfs.bytes, problem));
        }
        let mut next = 0u64;
        for (i, layer) in self.initramfs.layers.iter().enumerate() {
            let field = |name: &str| format!("initramfs.layers[{i}].{name}");
            if layer.offset != next {
                let problem = format!(
                    "but the {} layer starts at byte {next}, after the one before",
                    layer.name.as_str()
                );
                return Err(bad(&field("offset"), &layer.offset, problem));
            }
            next = match layer.offset.checked_add(layer.bytes) {
                Some(end) if end <= initramfs_len => end,
                _ => {
                    let problem = format!(
                        "runs past the end of {} ({initramfs_len} bytes)",
                        self.initramfs.file
                    );
                    return Err(bad(&field("bytes"), &layer.bytes, problem));
                }
            };
            // Not checkable without unpacking, which stops at the real end
            // anyway (unpack_layers); this only refuses sizes no layer
            // format reaches, zstd's 1:32768 on zeros being the best.
            if layer.uncompressed_bytes > layer.bytes.saturating_mul(MAX_RATIO).max(1 << 20) {
                let problem = format!("is more than {MAX_RATIO} times the layer's {} bytes", layer.bytes);
                return Err(bad(
                    &field("uncompressed_bytes"),
                    &layer.uncompressed_bytes,
                    problem,
                ));
            }
        }
        if next != initramfs_len {
            let problem = format!("but {} has {initramfs_len} bytes", self.initramfs.file);
            return Err(bad("initramfs.layers (bytes, added up)", &next, problem));
        }
        Ok(())
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
            // SBOM sizes are not checkable against the packed files.
            entry.0 = entry.0.saturating_add(file.bytes);
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
/// Each layer must unpack to exactly the `uncompressed_bytes` image.json
/// gives, and is never unpacked beyond it.
pub fn unpack_layers(initramfs: &[u8], layers: &[LayerInfo]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let error = std::io::Error::other;
    // A hint only: `read` checked these numbers against the files, and a
    // bigger total is never reserved up front.
    let total = layers.iter().fold(0u64, |sum, l| {
        sum.saturating_add(l.uncompressed_bytes).saturating_add(3)
    });
    let mut out = Vec::with_capacity(usize::try_from(total.min(MAX_RESERVE)).unwrap_or(0));
    for layer in layers {
        let name = layer.name.as_str();
        let data = usize::try_from(layer.offset)
            .ok()
            .zip(usize::try_from(layer.bytes).ok())
            .and_then(|(start, len)| initramfs.get(start..start.checked_add(len)?))
            .ok_or_else(|| error(format!("the {name} layer lies past the end")))?;
        let before = out.len();
        // One byte more than promised tells a longer layer from an exact one.
        let limit = layer.uncompressed_bytes.saturating_add(1);
        if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            zstd::stream::Decoder::new(data)?
                .take(limit)
                .read_to_end(&mut out)?;
        } else if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            xz2::read::XzDecoder::new(data)
                .take(limit)
                .read_to_end(&mut out)?;
        } else {
            out.extend_from_slice(data);
        }
        let got = (out.len() - before) as u64;
        if got != layer.uncompressed_bytes {
            return Err(error(format!(
                "the {name} layer unpacks to {got}{} bytes, image.json says {}",
                if got > layer.uncompressed_bytes {
                    " or more"
                } else {
                    ""
                },
                layer.uncompressed_bytes
            )));
        }
        out.resize(out.len().next_multiple_of(4), 0);
    }
    Ok(out)
}

/// The most unpacking reserves before it has seen the data.
const MAX_RESERVE: u64 = 64 << 20;

/// How much bigger than its compressed size a layer may claim to unpack
/// to (see `check_against_files`).
const MAX_RATIO: u64 = 1 << 20;

/// A name in the image directory itself: no `/`, not `.` or `..`.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// The sha256 of a file, as image.json records them.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    Ok(crate::layers::sha256_hex(&fs::read(path)?))
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

    /// An image dir whose image.json, after `edit`, is read back.
    fn read_edited(edit: impl FnOnce(&mut serde_json::Value)) -> Result<ImageManifest, ManifestError> {
        use crate::layers::LayerName;
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("vmlinuz"), b"kernel").unwrap();
        fs::write(dir.path().join("initramfs.img"), b"basebytesapp").unwrap();
        let layer = |name, offset, bytes| LayerInfo {
            name,
            offset,
            bytes,
            uncompressed_bytes: bytes,
            entries: 1,
            key: String::new(),
            sha256: String::new(),
        };
        let mut m = serde_json::json!({
            "format": FORMAT,
            "created_by": "test",
            "release": {"name": "hello", "version": "0.1.0"},
            "erts_version": "13.1.5",
            "kernel": {"origin": {"kind": "file", "path": "/k"}, "release": "custom", "file": "vmlinuz", "bytes": 6},
            "initramfs": {"file": "initramfs.img", "compression": "none", "bytes": 12, "uncompressed_bytes": 12,
                "layers": [layer(LayerName::Base, 0, 9), layer(LayerName::App, 9, 3)]},
            "modules": [],
            "boot": BootSpec::sample(),
            "files": [],
        });
        edit(&mut m);
        fs::write(dir.path().join(MANIFEST_FILE), m.to_string()).unwrap();
        ImageManifest::read(dir.path())
    }

    #[test]
    fn sizes_and_offsets_must_fit_the_files() {
        assert!(read_edited(|_| {}).is_ok());
        let huge = serde_json::json!(1u64 << 63);
        let field_of = |edit: &dyn Fn(&mut serde_json::Value)| match read_edited(edit) {
            Err(ManifestError::Inconsistent { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field_of(&|m| m["kernel"]["bytes"] = huge.clone()), "kernel.bytes");
        assert_eq!(
            field_of(&|m| m["initramfs"]["bytes"] = huge.clone()),
            "initramfs.bytes"
        );
        let layers = |i: usize, f: &'static str| {
            let huge = huge.clone();
            move |m: &mut serde_json::Value| m["initramfs"]["layers"][i][f] = huge.clone()
        };
        assert_eq!(field_of(&layers(1, "offset")), "initramfs.layers[1].offset");
        assert_eq!(field_of(&layers(0, "bytes")), "initramfs.layers[0].bytes");
        assert_eq!(field_of(&layers(1, "bytes")), "initramfs.layers[1].bytes");
        assert_eq!(
            field_of(&layers(0, "uncompressed_bytes")),
            "initramfs.layers[0].uncompressed_bytes"
        );
        assert_eq!(
            field_of(&|m| m["kernel"]["file"] = "../../etc/passwd".into()),
            "kernel.file"
        );
        assert_eq!(
            field_of(&|m| m["initramfs"]["file"] = "nope".into()),
            "initramfs.file"
        );
        let short = |m: &mut serde_json::Value| m["initramfs"]["layers"][1]["bytes"] = 2.into();
        assert_eq!(field_of(&short), "initramfs.layers (bytes, added up)");
        let err = read_edited(|m| m["kernel"]["bytes"] = 7.into())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("image.json: kernel.bytes = 7 but vmlinuz has 6 bytes; rebuild the image"),
            "{err}"
        );
    }

    #[test]
    fn layers_unpack_to_exactly_their_recorded_size() {
        use crate::layers::{Compression, LayerName};
        let raw = b"070701 a layer".repeat(100);
        let packed = Compression::Zstd(3).compress(&raw).unwrap();
        let mut layer = LayerInfo {
            name: LayerName::Deps,
            offset: 0,
            bytes: packed.len() as u64,
            uncompressed_bytes: raw.len() as u64,
            entries: 1,
            key: String::new(),
            sha256: String::new(),
        };
        assert!(unpack_layers(&packed, std::slice::from_ref(&layer)).is_ok());
        layer.uncompressed_bytes = 10;
        let err = unpack_layers(&packed, std::slice::from_ref(&layer))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unpacks to 11 or more bytes, image.json says 10"),
            "{err}"
        );
        layer.uncompressed_bytes = u64::MAX;
        assert!(
            unpack_layers(&packed, std::slice::from_ref(&layer)).is_err(),
            "no huge reservation"
        );
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
