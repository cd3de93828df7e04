//! The image being exported: its manifest, read and checked, and its
//! kernel and layers, verified against it (a tampered image is refused,
//! as `run` refuses it).

use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_image::bootfiles::pvh_vmlinux;
use unibeam_image::manifest::{ImageManifest, ManifestError};
use unibeam_image::verify::{self, VerifyError};

#[derive(Debug, Error)]
pub enum SourceError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("{0}: the kernel has no PVH entry point, which Firecracker and cloud-hypervisor need an ELF vmlinux for; build the image with the specialised kernel (--kernel specialised)")]
    NoVmlinux(PathBuf),
}

/// A verified image.
pub struct Source {
    pub dir: PathBuf,
    pub manifest: ImageManifest,
    /// The kernel as built (a bzImage).
    pub bzimage: Vec<u8>,
    /// The image's layers as built: compressed newc archives back to back.
    pub initramfs: Vec<u8>,
}

impl Source {
    pub fn open(dir: &Path) -> Result<Source, SourceError> {
        let manifest = ImageManifest::read(dir)?;
        let kernel = verify::kernel(&dir.join(&manifest.kernel.file), &manifest.kernel)?;
        let layers = verify::layers(&dir.join(&manifest.initramfs.file), &manifest.initramfs.layers)?;
        Ok(Source {
            dir: dir.to_path_buf(),
            manifest,
            bzimage: kernel.bytes,
            initramfs: layers.bytes,
        })
    }

    /// The ELF vmlinux inside the bzImage (entered at its PVH note), for
    /// engines that load no bzImage.
    pub fn vmlinux(&self) -> Result<Vec<u8>, SourceError> {
        pvh_vmlinux(&self.bzimage)
            .ok_or_else(|| SourceError::NoVmlinux(self.dir.join(&self.manifest.kernel.file)))
    }
}
