//! A kernel image: the file, its module tree, its release and where it
//! came from. Both ways of getting a kernel (Debian's, in kernel.rs, and
//! our own build, in kbuild.rs) produce one.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Beside a cached kernel: its [`KernelOrigin`] as JSON.
pub const ORIGIN_FILE: &str = "origin.json";

/// A kernel image and the module tree that belongs to it.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub image: PathBuf,
    /// None for a kernel with every driver built in.
    pub modules_dir: Option<PathBuf>,
    /// `uname -r` of the kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    pub origin: KernelOrigin,
    /// Whether the kernel has ACPI, and with it the power button that QMP
    /// `system_powerdown` presses. Without it the runner attaches a
    /// virtio keyboard and presses its power key instead.
    pub acpi: bool,
    /// Whether the kernel takes its APIC timer period from the VMM
    /// (`apic_bus_khz=`, a patch of `unibeam kernel build`, see kpatch.rs).
    pub apic_bus_khz: bool,
}

/// Where the kernel came from, recorded in image.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum KernelOrigin {
    HostBoot,
    DebianPackage {
        package: String,
        version: String,
    },
    /// `unibeam kernel build`: tinyconfig plus our fragment.
    Specialised {
        source_package: String,
        source_version: String,
        fragment_sha256: String,
        release: String,
    },
    /// `--kernel <path>`: the user's own kernel, with everything built in.
    File {
        path: PathBuf,
    },
}

impl KernelOrigin {
    /// A short name for `inspect` and benchmarks.
    pub fn label(&self) -> &'static str {
        match self {
            KernelOrigin::HostBoot | KernelOrigin::DebianPackage { .. } => "debian",
            KernelOrigin::Specialised { .. } => "specialised",
            KernelOrigin::File { .. } => "file",
        }
    }
}

/// What a kernel file is, from its first bytes: a bzImage (the setup
/// header's `HdrS` at 0x202) or an ELF vmlinux; else why it is neither.
pub fn kernel_format(bytes: &[u8]) -> Result<&'static str, String> {
    if bytes.is_empty() {
        Err("the file is empty".into())
    } else if bytes.get(0x202..0x206) == Some(b"HdrS") {
        Ok("bzImage")
    } else if bytes.starts_with(b"\x7fELF") {
        Ok("ELF")
    } else {
        Err("it has neither a bzImage header nor an ELF one".into())
    }
}
