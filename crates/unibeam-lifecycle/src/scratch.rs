//! Scratch files and their cleanup. A foreground `run` works in
//! `/tmp/unibeam-run-<pid>-*` (the instance's initrd, about 12 MiB for
//! hello, the QMP socket, and the image when `run` was given a release); a
//! tarball is unpacked into `~/.cache/unibeam/unpacked/tarball-<pid>-*`;
//! `build` writes into `.<output>.partial-<pid>` beside its output. Each
//! is removed when its process ends normally; `build` also removes its own
//! on SIGINT, SIGTERM and SIGHUP. A process killed with SIGKILL cannot, so
//! the next command first removes those whose process is gone.

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tempfile::TempDir;
use thiserror::Error;
use unibeam_image::image::staging_name;
use unibeam_image::input::UNPACKED_PREFIX;

const PREFIX: &str = "unibeam-run-";

#[derive(Debug, Error)]
pub enum ScratchError {
    #[error("creating a runtime directory in {}", .0.display())]
    RuntimeDir(PathBuf, #[source] std::io::Error),
    #[error("installing the interrupt handler")]
    Signals(#[source] std::io::Error),
}

/// Creates this run's directory under the system's temporary directory,
/// after sweeping those that dead runs left there.
pub fn runtime_dir() -> Result<TempDir, ScratchError> {
    let base = std::env::temp_dir();
    sweep(&base, PREFIX, &|pid| !process_exists(pid));
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .tempdir_in(&base)
        .map_err(|e| ScratchError::RuntimeDir(base, e))
}

/// Removes the unpacked tarballs of processes that are gone.
pub fn sweep_unpacked(unpacked: &Path) {
    sweep(unpacked, UNPACKED_PREFIX, &|pid| !process_exists(pid));
}

/// The directory `output`'s staging dirs are in, and their name up to the pid.
fn staging_parts(output: &Path) -> (PathBuf, String) {
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = staging_name(output, 0);
    let prefix = name.strip_suffix('0').unwrap_or(&name).to_string();
    (parent, prefix)
}

/// Where an interrupted `build` has things of its own to remove.
#[derive(Clone, Default)]
pub struct BuildGuard {
    staging: Arc<Mutex<Option<(PathBuf, String)>>>,
}

/// Arranges for this `build`'s unpacked tarball and, once
/// [`BuildGuard::building`] names it, its staging dir to be removed on
/// SIGINT, SIGTERM or SIGHUP; the process then exits as the signal would
/// have ended it.
pub fn guard_build(unpacked: &Path) -> Result<BuildGuard, ScratchError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let guard = BuildGuard::default();
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(ScratchError::Signals)?;
    let (unpacked, staging) = (unpacked.to_path_buf(), guard.staging.clone());
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let me = |pid: i32| pid == std::process::id() as i32;
            sweep(&unpacked, UNPACKED_PREFIX, &me);
            if let Some((parent, prefix)) = staging.lock().ok().and_then(|s| s.clone()) {
                sweep(&parent, &prefix, &me);
            }
            std::process::exit(128 + signal);
        }
    });
    Ok(guard)
}

impl BuildGuard {
    /// The build now writes `output`: staging dirs that dead builds of it
    /// left are swept, and this one's is removed if we are interrupted.
    pub fn building(&self, output: &Path) {
        let (parent, prefix) = staging_parts(output);
        sweep(&parent, &prefix, &|pid| !process_exists(pid));
        if let Ok(mut staging) = self.staging.lock() {
            *staging = Some((parent, prefix));
        }
    }
}

/// Removes the `<prefix><pid>[-...]` directories in `base` whose pid `gone`
/// says to. A live pid keeps its directory even if it was reused by another
/// program: leaving a stale directory is harmless, removing a live one is
/// not. Failures are ignored; another user's directories are not ours.
fn sweep(base: &Path, prefix: &str, gone: &dyn Fn(i32) -> bool) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = owner_pid(&name.to_string_lossy(), prefix) else {
            continue;
        };
        if gone(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The pid in a scratch directory's name: `<prefix><pid>`, alone or
/// followed by `-<random>`.
fn owner_pid(name: &str, prefix: &str) -> Option<i32> {
    let rest = name.strip_prefix(prefix)?;
    let pid = rest.split_once('-').map_or(rest, |(pid, _random)| pid);
    pid.parse().ok().filter(|&pid| pid > 0)
}

fn process_exists(pid: i32) -> bool {
    // No signal only checks; EPERM means it exists under another user.
    kill(Pid::from_raw(pid), None) != Err(Errno::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_pid() -> i32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        pid
    }

    #[test]
    fn reads_the_pid_from_scratch_directory_names_only() {
        assert_eq!(owner_pid("unibeam-run-4242-Ab3dEf", PREFIX), Some(4242));
        assert_eq!(owner_pid("unibeam-run-Ab3dEf", PREFIX), None);
        assert_eq!(owner_pid("unibeam-run-0-x", PREFIX), None);
        assert_eq!(owner_pid("other-4242-x", PREFIX), None);
        let (_, staging) = staging_parts(Path::new("out/hello.unibeam"));
        assert_eq!(owner_pid(".hello.unibeam.partial-77", &staging), Some(77));
        assert_eq!(owner_pid(".other.unibeam.partial-77", &staging), None);
        assert_eq!(owner_pid("tarball-77-xYz", UNPACKED_PREFIX), Some(77));
    }

    #[test]
    fn sweeps_the_directories_of_dead_runs_and_keeps_live_ones() {
        let base = tempfile::tempdir().unwrap();
        let dead = base.path().join(format!("{PREFIX}{}-abc", dead_pid()));
        let live = base.path().join(format!("{PREFIX}{}-def", std::process::id()));
        let unrelated = base.path().join("unibeam-run-nopid");
        for dir in [&dead, &live, &unrelated] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join("initrd.img"), b"x").unwrap();
        }
        sweep(base.path(), PREFIX, &|pid| !process_exists(pid));
        assert!(!dead.exists(), "a dead run's directory stayed");
        assert!(live.exists(), "a live run's directory was removed");
        assert!(unrelated.exists(), "a directory without a pid was removed");
    }

    #[test]
    fn staging_dirs_of_dead_builds_are_swept() {
        let base = tempfile::tempdir().unwrap();
        let output = base.path().join("hello.unibeam");
        let dead = base.path().join(staging_name(&output, dead_pid() as u32));
        let live = base.path().join(staging_name(&output, std::process::id()));
        std::fs::create_dir(&dead).unwrap();
        std::fs::create_dir(&live).unwrap();
        let (parent, prefix) = staging_parts(&output);
        sweep(&parent, &prefix, &|pid| !process_exists(pid));
        assert!(!dead.exists() && live.exists());
    }
}
