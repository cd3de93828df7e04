//! `unibeam kernel build`: a Lupine-style kernel for one job, built from
//! Debian's `linux-source-6.1` with `tinyconfig` plus our fragment, all
//! built in, and cached by source version and fragment hash.

use crate::kimage::{Kernel, KernelOrigin, ORIGIN_FILE};
use crate::kpatch::{self, PatchError};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use thiserror::Error;
use unibeam_spec::hostfs::{at, PathIo};

/// The Debian package whose tarball we build.
pub const SOURCE_PACKAGE: &str = "linux-source-6.1";
const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";
/// Our config fragment; every line says why it is there.
pub const FRAGMENT: &str = include_str!("../kernel/unibeam.config");
/// What `make tinyconfig bzImage` needs besides the source.
pub const BUILD_PACKAGES: &[&str] = &[
    SOURCE_PACKAGE,
    "make",
    "gcc",
    "libc6-dev",
    "bc",
    "bison",
    "flex",
    "libelf-dev",
    "xz-utils",
];
/// Bumped when the build steps change in a way the key must see.
const BUILD_RECIPE: &str = "tinyconfig+fragment+olddefconfig/kpatch: entry text, apic_bus_khz/bzImage v3";
const CACHE_SUBDIR: &str = "specialised-kernels";
const IMAGE_FILE: &str = "bzImage";
const CONFIG_FILE: &str = "config";

#[derive(Debug, Error)]
pub enum KbuildError {
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error("missing build packages: {0}; run `apt-get install {0}` as root (or `make kernel`)")]
    MissingPackages(String),
    #[error("`apt-get install {packages}` failed (exit {code}); check apt sources with `apt-get update`")]
    Install { packages: String, code: i32 },
    #[error("`{step}` failed; the last lines of its output are in {log}")]
    Step { step: String, log: PathBuf },
    #[error(transparent)]
    Patch(#[from] PatchError),
    #[error("`make kernelrelease` failed (exit {code}, {stderr}); the kernel tree is unusable")]
    KernelRelease { code: i32, stderr: String },
    #[error("kernel config does not match the fragment (unmet dependencies, or a `select` turned an option back on): {0}")]
    LostOptions(String),
}

/// The fragment's settings, without their reasons: `CONFIG_X=y` lines and
/// `# CONFIG_X is not set` lines.
pub fn fragment_options() -> Vec<&'static str> {
    FRAGMENT
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_") || switched_off(l).is_some())
        .collect()
}

/// `CONFIG_X` for a `# CONFIG_X is not set` line.
fn switched_off(line: &str) -> Option<&str> {
    line.strip_prefix("# ")?
        .strip_suffix(" is not set")
        .filter(|o| o.starts_with("CONFIG_"))
}

fn fragment_hash() -> String {
    let mut h = Sha256::new();
    h.update(BUILD_RECIPE);
    h.update(FRAGMENT);
    h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The installed version of `package`, if any.
fn installed_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}|${Version}", package])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (status, version) = text.split_once('|')?;
    (status.ends_with(" installed") && !version.is_empty()).then(|| version.to_string())
}

/// Where a kernel for this fragment and source version is cached.
fn cache_entry(cache: &Path, source_version: &str) -> PathBuf {
    cache
        .join(CACHE_SUBDIR)
        .join(format!("{}-{source_version}", fragment_hash()))
}

/// The cached specialised kernel for the current fragment: for the
/// installed source version when there is one, else the newest cached.
pub fn cached(cache: &Path) -> Option<Kernel> {
    let dir = match installed_version(SOURCE_PACKAGE) {
        Some(v) => cache_entry(cache, &v),
        None => {
            let prefix = format!("{}-", fragment_hash());
            let mut names: Vec<String> = fs::read_dir(cache.join(CACHE_SUBDIR))
                .ok()?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect();
            names.sort();
            cache.join(CACHE_SUBDIR).join(names.pop()?)
        }
    };
    read_entry(&dir)
}

fn read_entry(dir: &Path) -> Option<Kernel> {
    let origin: KernelOrigin = serde_json::from_slice(&fs::read(dir.join(ORIGIN_FILE)).ok()?).ok()?;
    let KernelOrigin::Specialised { release, .. } = &origin else {
        return None;
    };
    let config = fs::read_to_string(dir.join(CONFIG_FILE)).ok()?;
    Some(Kernel {
        image: dir.join(IMAGE_FILE),
        modules_dir: None,
        release: release.clone(),
        origin,
        acpi: config.lines().any(|l| l.trim() == "CONFIG_ACPI=y"),
        // The cache key covers BUILD_RECIPE, so every entry found has it.
        apic_bus_khz: true,
    })
}

/// Installs what the build needs when running as root; otherwise names
/// the missing packages.
fn ensure_packages(progress: &dyn Fn(&str)) -> Result<(), KbuildError> {
    let missing: Vec<&str> = BUILD_PACKAGES
        .iter()
        .copied()
        .filter(|p| installed_version(p).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages = missing.join(" ");
    if !nix::unistd::geteuid().is_root() {
        return Err(KbuildError::MissingPackages(packages));
    }
    progress(&format!("installing {packages} with apt-get"));
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .map_err(at::<PathIo>(Path::new("apt-get")))?;
    if !status.success() {
        return Err(KbuildError::Install {
            packages,
            code: status.code().unwrap_or(-1),
        });
    }
    Ok(())
}

/// Builds the specialised kernel unless it is cached, and returns it.
/// `progress` hears each step and, while compiling, the file being built.
pub fn build(cache: &Path, jobs: usize, progress: &dyn Fn(&str)) -> Result<Kernel, KbuildError> {
    ensure_packages(progress)?;
    let version = installed_version(SOURCE_PACKAGE)
        .ok_or_else(|| KbuildError::MissingPackages(SOURCE_PACKAGE.into()))?;
    let dest = cache_entry(cache, &version);
    if let Some(kernel) = read_entry(&dest) {
        return Ok(kernel);
    }
    let parent = cache.join(CACHE_SUBDIR);
    fs::create_dir_all(&parent).map_err(at::<PathIo>(&parent))?;
    // Built in a private dir and renamed into place once complete, so an
    // interrupted build never looks like a cached kernel.
    let work = parent.join(format!(".build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(at::<PathIo>(&work))?;
    let result = build_in(&work, &version, jobs, progress).and_then(|staged| {
        match fs::rename(&staged, &dest) {
            Ok(()) => Ok(()),
            // Another unibeam built the same kernel meanwhile; theirs will do.
            Err(_) if read_entry(&dest).is_some() => Ok(()),
            Err(e) => Err(at(&dest)(e)),
        }
    });
    match result {
        Ok(()) => {
            let _ = fs::remove_dir_all(&work);
            read_entry(&dest).ok_or_else(|| at(&dest)(std::io::ErrorKind::NotFound.into()))
        }
        Err(e) => {
            keep_failure_log(&work, &parent);
            let _ = fs::remove_dir_all(&work);
            Err(e)
        }
    }
}

/// The log outlives the failed tree (a gigabyte of objects) for reading.
fn keep_failure_log(work: &Path, parent: &Path) {
    let _ = fs::rename(work.join("build.log"), parent.join("failed-build.log"));
}

/// Extracts, configures and compiles in `work`; returns the staged entry.
fn build_in(
    work: &Path,
    version: &str,
    jobs: usize,
    progress: &dyn Fn(&str),
) -> Result<PathBuf, KbuildError> {
    let log_path = work.join("build.log");
    let final_log = work.parent().unwrap_or(work).join("failed-build.log");
    let mut steps = Steps {
        log: fs::File::create(&log_path).map_err(at::<PathIo>(&log_path))?,
        log_path: final_log,
    };
    progress(&format!("extracting {SOURCE_TARBALL}"));
    steps.run(
        "tar -xf",
        Command::new("tar").args(["-xf", SOURCE_TARBALL, "-C"]).arg(work),
        &|_| {},
    )?;
    let src = work.join(SOURCE_PACKAGE);
    let make = || {
        let mut c = Command::new("make");
        c.current_dir(&src).arg("ARCH=x86_64");
        c
    };
    kpatch::apply(&src)?;
    progress("configuring: tinyconfig + unibeam.config");
    steps.run("make tinyconfig", make().arg("tinyconfig"), &|_| {})?;
    let config = src.join(".config");
    append_fragment(&config)?;
    steps.run("make olddefconfig", make().arg("olddefconfig"), &|_| {})?;
    check_config(&config)?;
    let counter = std::cell::Cell::new(0usize);
    let on_line = |line: &str| {
        if let Some(target) = line.trim_start().strip_prefix("CC ") {
            counter.set(counter.get() + 1);
            progress(&format!("compiling ({} files) {}", counter.get(), target.trim()));
        }
    };
    steps.run(
        "make bzImage",
        make().arg(format!("-j{jobs}")).arg("bzImage"),
        &on_line,
    )?;
    let release = kernel_release(&src)?;
    let staged = work.join("entry");
    fs::create_dir_all(&staged).map_err(at::<PathIo>(&staged))?;
    let image = src.join("arch/x86/boot/bzImage");
    fs::copy(&image, staged.join(IMAGE_FILE)).map_err(at::<PathIo>(&image))?;
    fs::copy(&config, staged.join(CONFIG_FILE)).map_err(at::<PathIo>(&config))?;
    let origin = KernelOrigin::Specialised {
        source_package: SOURCE_PACKAGE.into(),
        source_version: version.into(),
        fragment_sha256: fragment_hash(),
        release,
    };
    let origin_path = staged.join(ORIGIN_FILE);
    let json = serde_json::to_string_pretty(&origin).expect("origin serialises");
    fs::write(&origin_path, json).map_err(at::<PathIo>(&origin_path))?;
    Ok(staged)
}

fn append_fragment(config: &Path) -> Result<(), KbuildError> {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(config)
        .map_err(at::<PathIo>(config))?;
    f.write_all(FRAGMENT.as_bytes()).map_err(at(config))
}

/// Kconfig silently drops an option whose dependencies are unmet; a
/// fragment line that did not survive is a bug in the fragment.
fn check_config(config: &Path) -> Result<(), KbuildError> {
    let text = fs::read_to_string(config).map_err(at::<PathIo>(config))?;
    let lost = lost_options(&text);
    if lost.is_empty() {
        Ok(())
    } else {
        Err(KbuildError::LostOptions(lost.join(", ")))
    }
}

/// Options that are on and should be (`CONFIG_X=y` missing), or that are
/// off and came back on through a `select` (`CONFIG_X=y` present).
fn lost_options(config: &str) -> Vec<&'static str> {
    let present: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    fragment_options()
        .into_iter()
        .filter(|o| match switched_off(o) {
            Some(name) => present.contains(format!("{name}=y").as_str()),
            None => !present.contains(o),
        })
        .collect()
}

fn kernel_release(src: &Path) -> Result<String, KbuildError> {
    let out = Command::new("make")
        .current_dir(src)
        .args(["-s", "ARCH=x86_64", "kernelrelease"])
        .output()
        .map_err(at::<PathIo>(src))?;
    let release = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || release.is_empty() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(KbuildError::KernelRelease {
            code: out.status.code().unwrap_or(-1),
            stderr: stderr
                .lines()
                .last()
                .unwrap_or("no error text")
                .trim()
                .to_string(),
        });
    }
    Ok(release)
}

/// Runs build steps with their output appended to one log.
struct Steps {
    log: fs::File,
    /// Where the log is kept if a step fails.
    log_path: PathBuf,
}

impl Steps {
    fn run(&mut self, step: &str, cmd: &mut Command, on_line: &dyn Fn(&str)) -> Result<(), KbuildError> {
        let _ = writeln!(self.log, "### {step}");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(self.log.try_clone().map_err(at::<PathIo>(&self.log_path))?)
            .spawn()
            .map_err(at::<PathIo>(Path::new(step)))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            on_line(&line);
            let _ = writeln!(self.log, "{line}");
        }
        let status = child.wait().map_err(at::<PathIo>(Path::new(step)))?;
        if status.success() {
            Ok(())
        } else {
            Err(KbuildError::Step {
                step: step.into(),
                log: self.log_path.clone(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fragment_option_has_a_reason_above_it() {
        let lines: Vec<&str> = FRAGMENT.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if fragment_options().contains(line) {
                let above = lines[i - 1];
                assert!(
                    above.starts_with("# ") && above.len() > 6 && !fragment_options().contains(&above),
                    "{line} has no comment line above it"
                );
            }
        }
        assert!(fragment_options().len() > 30);
    }

    #[test]
    fn fragment_builds_everything_in() {
        for o in fragment_options() {
            assert!(!o.ends_with("=m"), "{o}: the specialised kernel has no modules");
        }
    }

    #[test]
    fn lost_options_are_named() {
        let mut config: String = fragment_options().join("\n");
        assert!(lost_options(&config).is_empty());
        config = config.replace("CONFIG_VIRTIO_NET=y", "# CONFIG_VIRTIO_NET is not set");
        assert_eq!(lost_options(&config), vec!["CONFIG_VIRTIO_NET=y"]);
        config = config.replace("# CONFIG_VT is not set", "CONFIG_VT=y");
        assert_eq!(
            lost_options(&config),
            vec!["CONFIG_VIRTIO_NET=y", "# CONFIG_VT is not set"]
        );
    }

    #[test]
    fn kernel_release_fails_when_make_fails() {
        // No Makefile here: `make kernelrelease` exits 2 and prints nothing
        // to stdout, which must not become an empty release.
        let dir = tempfile::tempdir().unwrap();
        let err = kernel_release(dir.path()).unwrap_err();
        assert!(err.to_string().contains("make kernelrelease"), "{err}");
    }

    #[test]
    fn cache_keys_differ_by_source_version() {
        let a = cache_entry(Path::new("/c"), "6.1.1-1");
        let b = cache_entry(Path::new("/c"), "6.1.2-1");
        assert_ne!(a, b);
        assert!(a.starts_with("/c/specialised-kernels"));
    }

    #[test]
    fn entry_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_entry(dir.path()).is_none());
        let origin = KernelOrigin::Specialised {
            source_package: SOURCE_PACKAGE.into(),
            source_version: "6.1.192-2".into(),
            fragment_sha256: fragment_hash(),
            release: "6.1.192".into(),
        };
        fs::write(
            dir.path().join(ORIGIN_FILE),
            serde_json::to_string(&origin).unwrap(),
        )
        .unwrap();
        assert!(
            read_entry(dir.path()).is_none(),
            "an entry without its config is incomplete"
        );
        fs::write(
            dir.path().join(CONFIG_FILE),
            "CONFIG_64BIT=y\n# CONFIG_ACPI is not set\n",
        )
        .unwrap();
        let k = read_entry(dir.path()).unwrap();
        assert_eq!(k.release, "6.1.192");
        assert!(k.modules_dir.is_none());
        assert_eq!(k.image, dir.path().join(IMAGE_FILE));
        assert!(!k.acpi, "the config decides whether the kernel has ACPI");
        fs::write(dir.path().join(CONFIG_FILE), "CONFIG_ACPI=y\n").unwrap();
        assert!(read_entry(dir.path()).unwrap().acpi);
    }
}
