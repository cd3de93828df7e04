//! Builds an image directory: `vmlinuz`, `initramfs.img` and `image.json`.

use crate::elf::{self, ElfError, Resolver};
use crate::initramfs::{Node, Tree};
use crate::kernel::{self, KernelError, KernelOrigin};
use crate::modules::{self, ModuleError};
use crate::release::{Release, ReleaseError};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::{BootSpec, CodeLoading, NetworkSpec, ReleaseSpec, BOOT_SPEC_PATH};

pub const MANIFEST_FILE: &str = "image.json";
pub const KERNEL_FILE: &str = "vmlinuz";
pub const INITRAMFS_FILE: &str = "initramfs.img";
/// Where the release lives in the guest.
pub const GUEST_RELEASE_ROOT: &str = "/release";
/// Where system libraries go in the guest: a default ld.so directory, so
/// the guest needs no ld.so.cache.
const GUEST_LIB_DIR: &str = "/lib/x86_64-linux-gnu";
const GUEST_MODULE_DIR: &str = "/lib/modules";

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Module(#[from] ModuleError),
    #[error("{0}: unibeam-init not found; build it with `cargo build --release -p unibeam-init` or set UNIBEAM_INIT")]
    InitMissing(PathBuf),
    #[error("{0}: exists and is not a unibeam image; choose another output directory")]
    OutputOccupied(PathBuf),
    #[error("{0}: not a unibeam image (no image.json); build one with `unibeam build`")]
    NotAnImage(PathBuf),
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: malformed image.json: {cause}")]
    Manifest {
        path: PathBuf,
        cause: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |cause| BuildError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub release_dir: PathBuf,
    pub output: PathBuf,
    /// The guest PID 1 binary to install as `/init`.
    pub init_binary: PathBuf,
    /// unibeam's cache, e.g. `~/.cache/unibeam`.
    pub cache_dir: PathBuf,
    pub zstd_level: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    pub origin: KernelOrigin,
    pub release: String,
    pub file: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitramfsInfo {
    pub file: String,
    pub compression: String,
    pub bytes: u64,
    pub uncompressed_bytes: u64,
    pub files: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseInfo {
    pub name: String,
    pub version: String,
}

/// `image.json`: what the image holds and where it came from.
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
    pub boot: BootSpec,
}

impl ImageManifest {
    pub fn read(image_dir: &Path) -> Result<ImageManifest, BuildError> {
        let path = image_dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&path)
            .map_err(|_| BuildError::NotAnImage(image_dir.to_path_buf()))?;
        serde_json::from_str(&text).map_err(|cause| BuildError::Manifest { path, cause })
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
}

/// Builds the image and returns its manifest. Nothing appears at
/// `opts.output` unless the whole build succeeded.
pub fn build_image(
    opts: &BuildOptions,
    progress: &dyn Fn(&str),
) -> Result<ImageManifest, BuildError> {
    progress("reading release");
    let release = Release::open(&opts.release_dir)?;
    if !opts.init_binary.is_file() {
        return Err(BuildError::InitMissing(opts.init_binary.clone()));
    }
    let kernel = kernel::debian_cloud(&opts.cache_dir, progress)?;
    progress("resolving kernel modules");
    let module_files = modules::load_order(&kernel.modules_dir, modules::NETWORK_AND_POWER)?;

    progress("collecting release and shared libraries");
    let mut tree = Tree::new();
    let release_files = tree
        .add_host_dir(&release.root, GUEST_RELEASE_ROOT)
        .map_err(io(&release.root))?;
    let mut elf_roots: Vec<PathBuf> = release_files
        .into_iter()
        .filter(|p| elf::is_elf(p))
        .collect();
    elf_roots.push(opts.init_binary.clone());
    add_library_closure(&mut tree, &elf_roots, &release.root)?;
    tree.insert(
        "/init",
        Node::HostFile {
            source: opts.init_binary.clone(),
            executable: true,
        },
    );

    let mut module_paths = Vec::new();
    for ko in &module_files {
        let name = ko.file_name().unwrap_or_default().to_string_lossy();
        let guest = format!("{GUEST_MODULE_DIR}/{name}");
        tree.insert(
            &guest,
            Node::HostFile {
                source: ko.clone(),
                executable: false,
            },
        );
        module_paths.push(guest);
    }
    add_runtime_skeleton(&mut tree);
    let spec = boot_spec(&release, module_paths);
    tree.insert(
        BOOT_SPEC_PATH,
        Node::Bytes {
            data: spec.to_json().into_bytes(),
            executable: false,
        },
    );

    progress("compressing initramfs");
    let staging = staging_dir(&opts.output)?;
    let result = write_image(&staging, &tree, &kernel, &release, spec, opts);
    match result {
        Ok(manifest) => {
            replace_dir(&staging, &opts.output)?;
            Ok(manifest)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// Adds every shared library the ELF files need, plus the loader. Libraries
/// that already live inside the release are left where they are.
fn add_library_closure(
    tree: &mut Tree,
    roots: &[PathBuf],
    release_root: &Path,
) -> Result<(), BuildError> {
    let closure = elf::closure(roots, &Resolver::host())?;
    let release_root = fs::canonicalize(release_root).map_err(io(release_root))?;
    let mut placed: Vec<(PathBuf, String)> = Vec::new();
    for (name, host_path) in &closure.libraries {
        let real = fs::canonicalize(host_path).map_err(io(host_path))?;
        if real.starts_with(&release_root) {
            continue;
        }
        let guest = format!("{GUEST_LIB_DIR}/{name}");
        tree.insert(
            &guest,
            Node::HostFile {
                source: real.clone(),
                executable: true,
            },
        );
        placed.push((real, guest));
    }
    for interp in &closure.interpreters {
        let real = fs::canonicalize(interp).map_err(io(Path::new(interp)))?;
        match placed.iter().find(|(r, _)| *r == real) {
            Some((_, guest)) if guest != interp => {
                tree.insert(interp, Node::Symlink(guest.clone()))
            }
            Some(_) => {}
            None => tree.insert(
                interp,
                Node::HostFile {
                    source: real,
                    executable: true,
                },
            ),
        }
    }
    Ok(())
}

/// Mount points and the console device the kernel opens for PID 1 before
/// devtmpfs exists.
fn add_runtime_skeleton(tree: &mut Tree) {
    for dir in ["/proc", "/sys", "/dev", "/tmp", "/etc", "/run"] {
        tree.insert(dir, Node::Dir);
    }
    tree.insert("/dev/console", Node::CharDevice { major: 5, minor: 1 });
}

fn boot_spec(release: &Release, modules: Vec<String>) -> BootSpec {
    BootSpec {
        hostname: release.name.clone(),
        modules,
        network: NetworkSpec::qemu_user(),
        release: ReleaseSpec {
            root: GUEST_RELEASE_ROOT.into(),
            name: release.name.clone(),
            version: release.version.clone(),
            erts_version: release.erts_version.clone(),
            boot_script: release.boot_script.clone(),
            has_sys_config: release.has_sys_config,
            has_vm_args: release.has_vm_args,
            code_loading: CodeLoading::Embedded,
        },
    }
}

fn write_image(
    dir: &Path,
    tree: &Tree,
    kernel: &kernel::Kernel,
    release: &Release,
    boot: BootSpec,
    opts: &BuildOptions,
) -> Result<ImageManifest, BuildError> {
    let cpio = tree.write_cpio(Vec::new()).map_err(io(dir))?;
    let compressed = zstd::encode_all(&cpio[..], opts.zstd_level).map_err(io(dir))?;
    let initramfs_path = dir.join(INITRAMFS_FILE);
    fs::write(&initramfs_path, &compressed).map_err(io(&initramfs_path))?;
    let kernel_path = dir.join(KERNEL_FILE);
    let kernel_bytes = fs::copy(&kernel.image, &kernel_path).map_err(io(&kernel.image))?;
    let manifest = ImageManifest {
        format: 1,
        created_by: format!("unibeam {}", env!("CARGO_PKG_VERSION")),
        release: ReleaseInfo {
            name: release.name.clone(),
            version: release.version.clone(),
        },
        erts_version: release.erts_version.clone(),
        kernel: KernelInfo {
            origin: kernel.origin.clone(),
            release: kernel.release.clone(),
            file: KERNEL_FILE.into(),
            bytes: kernel_bytes,
        },
        initramfs: InitramfsInfo {
            file: INITRAMFS_FILE.into(),
            compression: format!("zstd-{}", opts.zstd_level),
            bytes: compressed.len() as u64,
            uncompressed_bytes: cpio.len() as u64,
            files: tree.listing().map_err(io(dir))?.len(),
        },
        modules: boot
            .modules
            .iter()
            .filter_map(|m| {
                Path::new(m)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
            })
            .collect(),
        boot,
    };
    let manifest_path = dir.join(MANIFEST_FILE);
    let json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    fs::write(&manifest_path, json + "\n").map_err(io(&manifest_path))?;
    Ok(manifest)
}

/// A fresh sibling of `output`, so the final rename stays on one filesystem.
fn staging_dir(output: &Path) -> Result<PathBuf, BuildError> {
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io(&parent))?;
    let name = output.file_name().unwrap_or_default().to_string_lossy();
    let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir(&staging).map_err(io(&staging))?;
    Ok(staging)
}

/// Moves a finished image into place, replacing an older image but never
/// anything else.
fn replace_dir(staging: &Path, output: &Path) -> Result<(), BuildError> {
    if output.exists() {
        let is_empty_dir = fs::read_dir(output)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !output.join(MANIFEST_FILE).is_file() && !is_empty_dir {
            let _ = fs::remove_dir_all(staging);
            return Err(BuildError::OutputOccupied(output.to_path_buf()));
        }
        fs::remove_dir_all(output).map_err(io(output))?;
    }
    fs::rename(staging, output).map_err(io(output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_dir_refuses_foreign_directories() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("precious.txt"), "keep me").unwrap();
        let staging = staging_dir(&out).unwrap();
        assert!(matches!(
            replace_dir(&staging, &out),
            Err(BuildError::OutputOccupied(_))
        ));
        assert!(out.join("precious.txt").exists());
        assert!(!staging.exists());
    }

    #[test]
    fn replace_dir_swaps_an_older_image() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("img");
        fs::create_dir(&out).unwrap();
        fs::write(out.join(MANIFEST_FILE), "{}").unwrap();
        let staging = staging_dir(&out).unwrap();
        fs::write(staging.join("new"), "x").unwrap();
        replace_dir(&staging, &out).unwrap();
        assert!(out.join("new").exists() && !out.join(MANIFEST_FILE).exists());
    }

    #[test]
    fn reading_a_non_image_names_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let err = ImageManifest::read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a unibeam image"));
    }
}
