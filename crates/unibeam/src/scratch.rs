//! The private directory of a foreground `run`: the instance's initrd
//! (about 12 MiB for hello), the QMP socket, and the image when `run` was
//! given a release. It is removed when `run` ends; a `run` killed with
//! SIGKILL cannot do that, so each new `run` first removes the
//! directories of runs whose process is gone.

use anyhow::{Context, Result};
use std::path::Path;
use tempfile::TempDir;

const PREFIX: &str = "unibeam-run-";

/// Creates this run's directory under the system's temporary directory,
/// after sweeping those that dead runs left there.
pub fn runtime_dir() -> Result<TempDir> {
    let base = std::env::temp_dir();
    sweep_stale(&base);
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .tempdir_in(&base)
        .with_context(|| format!("creating a runtime directory in {}", base.display()))
}

/// Removes `unibeam-run-<pid>-*` directories in `base` whose pid no longer
/// runs. A live pid keeps its directory even if it was reused by another
/// program: leaving a stale directory is harmless, removing a live one is
/// not. Failures are ignored; another user's directories are not ours.
fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = owner_pid(&name.to_string_lossy()) else {
            continue;
        };
        if !process_exists(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The pid in a runtime directory's name, if it is one.
fn owner_pid(name: &str) -> Option<i32> {
    let (pid, _random) = name.strip_prefix(PREFIX)?.split_once('-')?;
    pid.parse().ok().filter(|&pid| pid > 0)
}

fn process_exists(pid: i32) -> bool {
    // Signal 0 only checks; EPERM means it exists under another user.
    // SAFETY: kill(2) with signal 0 sends nothing and touches no memory.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
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
    fn reads_the_pid_from_runtime_directory_names_only() {
        assert_eq!(owner_pid("unibeam-run-4242-Ab3dEf"), Some(4242));
        assert_eq!(owner_pid("unibeam-run-Ab3dEf"), None);
        assert_eq!(owner_pid("unibeam-run-0-x"), None);
        assert_eq!(owner_pid("other-4242-x"), None);
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
        sweep_stale(base.path());
        assert!(!dead.exists(), "a dead run's directory stayed");
        assert!(live.exists(), "a live run's directory was removed");
        assert!(unrelated.exists(), "a directory without a pid was removed");
    }
}
