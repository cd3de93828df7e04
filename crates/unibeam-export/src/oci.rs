//! `--to oci`: an OCI image layout whose one layer holds the kernel and
//! the initrd under /boot, owned by UID/GID 107 (qemu's user in
//! virt-launcher), where KubeVirt's `kernelBoot.container` takes them
//! from. The initrd is KubeVirt's (DHCP from masquerade, the cookie from
//! a Secret disk): this image is what `--to kubevirt` deploys.
//!
//! The layout's JSON is oci-spec's types, so media types and field names
//! are the spec's; the layer is a tar (the `tar` crate) gzipped by flate2,
//! with mtime 0 and sorted entries: two exports of one image are
//! byte-identical, and so are their digests.

use crate::instance::{self, Addressing, Guest, COOKIE_SERIAL};
use crate::job::{Job, TargetError};
use oci_spec::image::{
    Arch, Descriptor, DescriptorBuilder, Digest, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, RootFsBuilder, SCHEMA_VERSION,
};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::str::FromStr;
use unibeam_spec::{SecretDisk, SecretFormat, SecretSource};
use unibeam_vmm::qemu::Machine;

/// The kernel and initrd paths inside the image, as the VM spec names them.
pub const KERNEL_PATH: &str = "/boot/vmlinuz";
pub const INITRD_PATH: &str = "/boot/initramfs.img";
/// The Secret's key that holds the cookie: KubeVirt writes each key as a
/// file of the disk's ISO 9660 image.
pub const COOKIE_KEY: &str = "cookie";
/// qemu's UID and GID in KubeVirt's virt-launcher.
const QEMU_ID: u64 = 107;

fn spec(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> TargetError {
    move |source| TargetError::OciSpec { what, source }
}

/// What the guest gets under KubeVirt: virtio-pci (q35), DHCP from the
/// masquerade binding, the cookie from a Secret volume's ISO disk.
pub fn kubevirt_guest() -> Guest {
    Guest {
        machine: Machine::Pc,
        addressing: Addressing::Dhcp,
        cookie: SecretSource {
            disk: SecretDisk::Serial(COOKIE_SERIAL.into()),
            format: SecretFormat::Iso9660 {
                file: COOKIE_KEY.into(),
            },
        },
    }
}

pub fn export(job: &Job) -> Result<Vec<String>, TargetError> {
    let tag = write_layout(job, "")?;
    Ok(vec![
        "check it: skopeo inspect oci:DIR".to_string(),
        format!(
            "push it: skopeo copy oci:DIR:{tag} docker://REGISTRY/{}:{tag}",
            job.name
        ),
    ])
}

/// Writes the layout under `prefix` in the export; returns its tag.
pub fn write_layout(job: &Job, prefix: &str) -> Result<String, TargetError> {
    let guest = kubevirt_guest();
    let initrd = instance::initrd(job, &guest);
    let layer_tar = layer(&job.source.bzimage, &initrd).map_err(TargetError::OciLayer)?;
    let diff_id = sha256(&layer_tar);
    let layer_gz = gzip(&layer_tar).map_err(TargetError::OciLayer)?;
    let layer = blob(job, prefix, MediaType::ImageLayerGzip, &layer_gz)?;
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(vec![format!("sha256:{diff_id}")])
        .build()
        .map_err(spec("rootfs"))?;
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .rootfs(rootfs)
        .build()
        .map_err(spec("image config"))?;
    let config = blob(job, prefix, MediaType::ImageConfig, &serde_json::to_vec(&config)?)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(vec![layer])
        .build()
        .map_err(spec("image manifest"))?;
    let mut manifest_desc = blob(
        job,
        prefix,
        MediaType::ImageManifest,
        &serde_json::to_vec(&manifest)?,
    )?;
    let tag = job.source.manifest.release.version.clone();
    manifest_desc.set_annotations(Some(HashMap::from([(
        "org.opencontainers.image.ref.name".to_string(),
        tag.clone(),
    )])));
    let index = ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_desc])
        .build()
        .map_err(spec("image index"))?;
    job.write(
        &format!("{prefix}index.json"),
        &serde_json::to_vec_pretty(&index)?,
    )?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(spec("oci-layout"))?;
    job.write(&format!("{prefix}oci-layout"), &serde_json::to_vec(&layout)?)?;
    Ok(tag)
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Stores `data` as a blob named by its digest; returns its descriptor.
fn blob(job: &Job, prefix: &str, media_type: MediaType, data: &[u8]) -> Result<Descriptor, TargetError> {
    let hex = sha256(data);
    job.write(&format!("{prefix}blobs/sha256/{hex}"), data)?;
    let digest = Digest::from_str(&format!("sha256:{hex}")).map_err(spec("digest"))?;
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest)
        .size(data.len() as u64)
        .build()
        .map_err(spec("descriptor"))
}

/// The layer: /boot, /boot/vmlinuz, /boot/initramfs.img, owned by 107.
fn layer(kernel: &[u8], initrd: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut dir, "boot/", std::io::empty())?;
    for (path, data) in [(KERNEL_PATH, kernel), (INITRD_PATH, initrd)] {
        let mut h = header(tar::EntryType::Regular, 0o444, data.len() as u64);
        tar.append_data(&mut h, path.trim_start_matches('/'), data)?;
    }
    tar.into_inner()
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(QEMU_ID);
    h.set_gid(QEMU_ID);
    h.set_mtime(0);
    h.set_size(size);
    h
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data)?;
    gz.finish()
}
