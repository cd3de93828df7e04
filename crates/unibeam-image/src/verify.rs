//! The one check of an image's bytes against image.json before a boot: the
//! kernel's sha256 (images from before it was recorded skip that) and each
//! layer's. A flipped byte in an uncompressed layer, or in a file of a
//! compressed one re-packed by hand, would otherwise boot unnoticed.
//!
//! The files are read once, here; what comes back is those bytes with a
//! key made of their verified hashes, so the boot-files cache can trust a
//! hit without hashing anything again.

use crate::kimage::kernel_format;
use crate::layers::{hex, LayerInfo};
use crate::manifest::KernelInfo;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::hostfs::{at, PathIo};

#[derive(Debug, Error)]
pub enum VerifyError {
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error("{path}: {what} is not what image.json records ({detail}); the image was altered or damaged: rebuild the image")]
    Mismatch {
        path: PathBuf,
        what: String,
        detail: String,
    },
    #[error("{path}: {problem}, not a Linux kernel; rebuild the image")]
    NotAKernel { path: PathBuf, problem: String },
}

/// A file's bytes, checked, and the key that names them in caches.
#[derive(Debug)]
pub struct Verified {
    pub bytes: Vec<u8>,
    /// The verified sha256 (hex) the bytes' cache entries are named by.
    pub key: String,
}

fn read(path: &Path) -> Result<Vec<u8>, VerifyError> {
    fs::read(path).map_err(at(path))
}

fn mismatch(path: &Path, what: impl Into<String>, detail: impl Into<String>) -> VerifyError {
    VerifyError::Mismatch {
        path: path.to_path_buf(),
        what: what.into(),
        detail: detail.into(),
    }
}

/// Reads the kernel at `path` and checks it against `info`.
pub fn kernel(path: &Path, info: &KernelInfo) -> Result<Verified, VerifyError> {
    let bytes = read(path)?;
    if let Err(problem) = kernel_format(&bytes) {
        return Err(VerifyError::NotAKernel {
            path: path.to_path_buf(),
            problem,
        });
    }
    let actual = hex(&Sha256::digest(&bytes));
    match &info.sha256 {
        Some(recorded) if *recorded != actual => Err(mismatch(
            path,
            "the kernel's sha256",
            format!("{actual}, recorded {recorded}"),
        )),
        _ => Ok(Verified { bytes, key: actual }),
    }
}

/// Reads the initramfs at `path` and checks that it is exactly `layers`,
/// back to back, each with its recorded sha256.
pub fn layers(path: &Path, layers: &[LayerInfo]) -> Result<Verified, VerifyError> {
    let bytes = read(path)?;
    let mut key = Sha256::new();
    key.update(b"unibeam-verified-layers-v1\0");
    let mut end = 0usize;
    for layer in layers {
        let name = layer.name.as_str();
        let data = usize::try_from(layer.offset)
            .ok()
            .filter(|start| *start == end)
            .zip(usize::try_from(layer.bytes).ok())
            .and_then(|(start, len)| bytes.get(start..start.checked_add(len)?))
            .ok_or_else(|| mismatch(path, format!("the {name} layer's place"), "it lies past the end"))?;
        end += data.len();
        let actual = hex(&Sha256::digest(data));
        if actual != layer.sha256 {
            return Err(mismatch(
                path,
                format!("the {name} layer's sha256"),
                format!("{actual}, recorded {}", layer.sha256),
            ));
        }
        key.update(format!("{name} {} {actual}\n", layer.uncompressed_bytes));
    }
    if end != bytes.len() {
        let detail = format!("{} bytes, the layers add up to {end}", bytes.len());
        return Err(mismatch(path, "its size", detail));
    }
    Ok(Verified {
        bytes,
        key: hex(&key.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{sha256_hex, LayerName};

    fn layer(name: LayerName, offset: u64, data: &[u8]) -> LayerInfo {
        LayerInfo {
            name,
            offset,
            bytes: data.len() as u64,
            uncompressed_bytes: data.len() as u64,
            entries: 1,
            key: String::new(),
            sha256: sha256_hex(data),
        }
    }

    #[test]
    fn layers_must_match_their_hashes_and_cover_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initramfs.img");
        fs::write(&path, b"basebytesappbytes").unwrap();
        let good = [
            layer(LayerName::Base, 0, b"basebytes"),
            layer(LayerName::App, 9, b"appbytes"),
        ];
        let verified = layers(&path, &good).unwrap();
        assert_eq!(verified.bytes, b"basebytesappbytes");
        assert_eq!(layers(&path, &good).unwrap().key, verified.key, "stable key");

        fs::write(&path, b"basebytesappbytez").unwrap();
        let err = layers(&path, &good).unwrap_err().to_string();
        assert!(
            err.contains("app layer's sha256") && err.contains("rebuild the image"),
            "{err}"
        );

        fs::write(&path, b"basebytesappbytes!").unwrap();
        let err = layers(&path, &good).unwrap_err().to_string();
        assert!(err.contains("its size"), "{err}");

        fs::write(&path, b"basebytesappbytes").unwrap();
        let mut gap = good.clone();
        gap[1].offset = 1 << 63;
        let err = layers(&path, &gap).unwrap_err().to_string();
        assert!(err.contains("app layer's place"), "{err}");
    }

    #[test]
    fn kernels_are_checked_when_their_hash_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinuz");
        let mut bz = vec![0u8; 1024];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        fs::write(&path, &bz).unwrap();
        let mut info: KernelInfo = serde_json::from_str(
            r#"{"origin": {"kind": "file", "path": "/k"}, "release": "6.1", "file": "vmlinuz", "bytes": 1024}"#,
        )
        .unwrap();
        assert!(kernel(&path, &info).is_ok(), "images from before the field");
        info.sha256 = Some(sha256_hex(&bz));
        assert_eq!(kernel(&path, &info).unwrap().key, sha256_hex(&bz));
        bz[700] ^= 1;
        fs::write(&path, &bz).unwrap();
        let err = kernel(&path, &info).unwrap_err().to_string();
        assert!(
            err.contains("kernel's sha256") && err.contains("vmlinuz"),
            "{err}"
        );
        fs::write(&path, b"").unwrap();
        let err = kernel(&path, &info).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }
}
