//! Which kernel an image boots (`--kernel`): the specialised one that
//! kbuild.rs builds, a file, or Debian's cloud kernel, which this module
//! finds on the host in /boot, else in unibeam's cache, else fetches with
//! `apt-get download` and unpacks in Rust.

use crate::deb::{self, DebError};
use crate::kbuild;
use crate::kimage::{kernel_format, Kernel, KernelOrigin, ORIGIN_FILE};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use thiserror::Error;
use unibeam_spec::hostfs::{at, PathIo};

/// The metapackage that always points at Debian's current cloud kernel.
pub const CLOUD_KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";

#[derive(Debug, Error)]
pub enum KernelError {
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error("`apt-get download {package}` failed: {detail}; check apt sources (apt-get update) or install {CLOUD_KERNEL_PACKAGE}")]
    Download { package: String, detail: String },
    #[error("`apt-get download {package}` could not run; install apt or {CLOUD_KERNEL_PACKAGE}")]
    NoAptGet {
        package: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: malformed; remove it and the kernel is fetched again")]
    BadOrigin {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}: has no Depends on a linux-image package")]
    NoKernelDependency(PathBuf),
    #[error("the specialised kernel is not built yet; run `unibeam kernel build` (about 7 minutes), or pass --kernel debian")]
    NoSpecialised,
    #[error("{0}: holds no boot/vmlinuz-* kernel")]
    NoVmlinuz(PathBuf),
    #[error("--kernel {path}: {problem}, not a Linux kernel (a bzImage such as /boot/vmlinuz-*, or an ELF vmlinux)")]
    NotAKernel { path: PathBuf, problem: String },
}

/// Which kernel an image boots (`--kernel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelChoice {
    /// The specialised kernel when it is cached, else Debian's.
    Auto,
    /// The specialised kernel, which must have been built already.
    Specialised,
    Debian,
    /// A kernel file with every driver the guest needs built in.
    File(PathBuf),
}

/// Finds the kernel `choice` names.
pub fn resolve(choice: &KernelChoice, cache: &Path, progress: &dyn Fn(&str)) -> Result<Kernel, KernelError> {
    match choice {
        KernelChoice::Auto => match kbuild::cached(cache) {
            Some(kernel) => Ok(kernel),
            None => debian_cloud(cache, progress),
        },
        KernelChoice::Specialised => kbuild::cached(cache).ok_or(KernelError::NoSpecialised),
        KernelChoice::Debian => debian_cloud(cache, progress),
        KernelChoice::File(path) => {
            // Enough for the bzImage header; an empty or foreign file is
            // named here, not by QEMU's failure at the first boot.
            let mut head = Vec::with_capacity(0x206);
            fs::File::open(path)
                .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 0x206), &mut head))
                .map_err(at::<PathIo>(path))?;
            kernel_format(&head).map_err(|problem| KernelError::NotAKernel {
                path: path.clone(),
                problem,
            })?;
            Ok(Kernel {
                image: path.clone(),
                modules_dir: None,
                release: "custom".into(),
                origin: KernelOrigin::File { path: path.clone() },
                // An unknown kernel is assumed to be a general-purpose one.
                acpi: true,
                apic_bus_khz: false,
            })
        }
    }
}

/// Finds the Debian cloud kernel, downloading it into `cache` if needed.
/// `progress` hears about slow steps.
pub fn debian_cloud(cache: &Path, progress: &dyn Fn(&str)) -> Result<Kernel, KernelError> {
    if let Some(kernel) = from_host_boot(Path::new("/boot"), Path::new("/lib/modules")) {
        return Ok(kernel);
    }
    let kernels = cache.join("kernels");
    if let Some(kernel) = from_cache(&kernels)? {
        return Ok(kernel);
    }
    download(&kernels, progress)
}

/// The newest readable `vmlinuz-*-cloud-amd64` whose modules are installed.
fn from_host_boot(boot: &Path, modules_root: &Path) -> Option<Kernel> {
    let mut releases: Vec<String> = fs::read_dir(boot)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(String::from))
        .filter(|r| r.ends_with("-cloud-amd64"))
        .collect();
    releases.sort();
    releases.into_iter().rev().find_map(|release| {
        let image = boot.join(format!("vmlinuz-{release}"));
        let modules_dir = modules_root.join(&release);
        let readable = fs::File::open(&image).is_ok();
        (readable && modules_dir.join("kernel").is_dir()).then_some(Kernel {
            image,
            modules_dir: Some(modules_dir),
            release,
            origin: KernelOrigin::HostBoot,
            acpi: true,
            apic_bus_khz: false,
        })
    })
}

fn from_cache(kernels: &Path) -> Result<Option<Kernel>, KernelError> {
    let Ok(entries) = fs::read_dir(kernels) else {
        return Ok(None);
    };
    let mut releases: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    releases.sort();
    let Some(release) = releases.pop() else {
        return Ok(None);
    };
    let dir = kernels.join(&release);
    let origin_path = dir.join(ORIGIN_FILE);
    let text = fs::read_to_string(&origin_path).map_err(at::<PathIo>(&origin_path))?;
    let origin: KernelOrigin = serde_json::from_str(&text).map_err(|source| KernelError::BadOrigin {
        path: origin_path.clone(),
        source,
    })?;
    Ok(Some(cached_layout(&dir, release, origin)))
}

fn cached_layout(dir: &Path, release: String, origin: KernelOrigin) -> Kernel {
    Kernel {
        image: dir.join(format!("boot/vmlinuz-{release}")),
        modules_dir: Some(dir.join(format!("lib/modules/{release}"))),
        release,
        origin,
        acpi: true,
        apic_bus_khz: false,
    }
}

fn apt_download(package: &str, dir: &Path) -> Result<PathBuf, KernelError> {
    let output = Command::new("apt-get")
        .args(["download", "-q", package])
        .current_dir(dir)
        .output()
        .map_err(|source| KernelError::NoAptGet {
            package: package.into(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let detail = stderr
            .lines()
            .rfind(|l| l.starts_with("E:"))
            .unwrap_or("no error text")
            .to_string();
        return Err(KernelError::Download {
            package: package.into(),
            detail,
        });
    }
    let prefix = format!("{package}_");
    fs::read_dir(dir)
        .map_err(at::<PathIo>(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
        .ok_or_else(|| KernelError::Download {
            package: package.into(),
            detail: "apt-get wrote no .deb".into(),
        })
}

/// `linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)` → the package name.
fn first_dependency(depends: &str) -> Option<String> {
    let first = depends.split([',', '|']).next()?.trim();
    let name = first.split_whitespace().next()?;
    name.starts_with("linux-image-").then(|| name.to_string())
}

fn download(kernels: &Path, progress: &dyn Fn(&str)) -> Result<Kernel, KernelError> {
    fs::create_dir_all(kernels).map_err(at::<PathIo>(kernels))?;
    // A private scratch dir, renamed into place only once complete, so an
    // interrupted download never looks like a cached kernel.
    let scratch = kernels.join(format!(".download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).map_err(at::<PathIo>(&scratch))?;
    let result = download_into(&scratch, kernels, progress);
    let _ = fs::remove_dir_all(&scratch);
    result
}

fn download_into(scratch: &Path, kernels: &Path, progress: &dyn Fn(&str)) -> Result<Kernel, KernelError> {
    progress(&format!("resolving {CLOUD_KERNEL_PACKAGE} with apt-get"));
    let meta = apt_download(CLOUD_KERNEL_PACKAGE, scratch)?;
    let depends = deb::control_field(&meta, "Depends")?.unwrap_or_default();
    let package = first_dependency(&depends).ok_or_else(|| KernelError::NoKernelDependency(meta.clone()))?;
    progress(&format!("downloading {package}"));
    let deb_path = apt_download(&package, scratch)?;
    let version = deb::control_field(&deb_path, "Version")?.unwrap_or_default();
    progress(&format!("unpacking {package} {version}"));
    let tree = scratch.join("tree");
    deb::extract_data(&deb_path, &tree, |p| {
        let p = p.to_string_lossy();
        p.starts_with("boot/vmlinuz-") || p.starts_with("lib/modules/")
    })?;
    let release = fs::read_dir(tree.join("boot"))
        .map_err(at::<PathIo>(&tree))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find_map(|n| n.strip_prefix("vmlinuz-").map(String::from))
        .ok_or_else(|| KernelError::NoVmlinuz(deb_path.clone()))?;
    let origin = KernelOrigin::DebianPackage { package, version };
    let origin_path = tree.join(ORIGIN_FILE);
    let json = serde_json::to_string_pretty(&origin).expect("origin serialises");
    fs::write(&origin_path, json).map_err(at::<PathIo>(&origin_path))?;
    let dest = kernels.join(&release);
    if let Err(e) = fs::rename(&tree, &dest) {
        // Another unibeam fetched the same kernel meanwhile; theirs will do.
        if !dest.join(ORIGIN_FILE).is_file() {
            return Err(at(&dest)(e));
        }
    }
    Ok(cached_layout(&dest, release, origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_name_without_version() {
        assert_eq!(
            first_dependency("linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)").as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(first_dependency("libc6 (>= 2.3)"), None);
    }

    #[test]
    fn host_boot_needs_modules_and_picks_newest() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot");
        let mods = dir.path().join("modules");
        fs::create_dir_all(&boot).unwrap();
        for r in ["6.1.0-9-cloud-amd64", "6.1.0-10-cloud-amd64", "6.1.0-11-amd64"] {
            fs::write(boot.join(format!("vmlinuz-{r}")), "k").unwrap();
        }
        assert!(from_host_boot(&boot, &mods).is_none(), "no modules yet");
        fs::create_dir_all(mods.join("6.1.0-9-cloud-amd64/kernel")).unwrap();
        let k = from_host_boot(&boot, &mods).unwrap();
        assert_eq!(k.release, "6.1.0-9-cloud-amd64");
        assert_eq!(k.origin, KernelOrigin::HostBoot);
    }

    #[test]
    fn cache_round_trips_its_origin() {
        let dir = tempfile::tempdir().unwrap();
        assert!(from_cache(dir.path()).unwrap().is_none());
        let rel = "6.1.0-56-cloud-amd64";
        let kdir = dir.path().join(rel);
        fs::create_dir_all(&kdir).unwrap();
        let origin = KernelOrigin::DebianPackage {
            package: "linux-image-6.1.0-56-cloud-amd64".into(),
            version: "6.1.192-2".into(),
        };
        fs::write(kdir.join(ORIGIN_FILE), serde_json::to_string(&origin).unwrap()).unwrap();
        fs::create_dir_all(dir.path().join(".download-1")).unwrap();
        let k = from_cache(dir.path()).unwrap().unwrap();
        assert_eq!(k.origin, origin);
        assert_eq!(k.image, kdir.join(format!("boot/vmlinuz-{rel}")));
    }

    #[test]
    fn specialised_must_be_built_first_and_files_must_exist() {
        let cache = tempfile::tempdir().unwrap();
        let err = resolve(&KernelChoice::Specialised, cache.path(), &|_| {}).unwrap_err();
        assert!(err.to_string().contains("unibeam kernel build"), "{err}");
        let missing = cache.path().join("vmlinuz");
        let err = resolve(&KernelChoice::File(missing.clone()), cache.path(), &|_| {}).unwrap_err();
        assert!(
            err.to_string().starts_with(&missing.display().to_string()),
            "{err}"
        );
        fs::write(&missing, "").unwrap();
        let err = resolve(&KernelChoice::File(missing.clone()), cache.path(), &|_| {}).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        fs::write(&missing, "k").unwrap();
        let err = resolve(&KernelChoice::File(missing.clone()), cache.path(), &|_| {}).unwrap_err();
        assert!(err.to_string().contains("not a Linux kernel"), "{err}");
        fs::write(&missing, b"\x7fELF\x02\x01\x01").unwrap();
        let k = resolve(&KernelChoice::File(missing.clone()), cache.path(), &|_| {}).unwrap();
        assert!(k.modules_dir.is_none());
        assert_eq!(k.origin.label(), "file");
    }
}
