//! Where unibeam keeps things on the host: the cache, the state of
//! instances and clusters, and the guest's PID 1 binary.

use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_vmm::state::Store;

#[derive(Debug, Error)]
pub enum PathsError {
    #[error("neither {0} nor HOME is set, so unibeam has nowhere to keep its files")]
    NoHome(&'static str),
    #[error("locating the unibeam binary")]
    CurrentExe(#[source] std::io::Error),
}

/// `$XDG_CACHE_HOME/unibeam`, else `~/.cache/unibeam`.
pub fn cache_dir() -> Result<PathBuf, PathsError> {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("unibeam"));
    }
    let home = std::env::var_os("HOME").ok_or(PathsError::NoHome("XDG_CACHE_HOME"))?;
    Ok(PathBuf::from(home).join(".cache/unibeam"))
}

/// The instances' store: `$XDG_STATE_HOME/unibeam/instances`, else
/// `~/.local/state/unibeam/instances`.
pub fn store() -> Result<Store, PathsError> {
    let root = Store::default_root().ok_or(PathsError::NoHome("XDG_STATE_HOME"))?;
    Ok(Store { root })
}

/// The guest PID 1: `$UNIBEAM_INIT`, else `unibeam-init` beside this binary,
/// where `cargo build` puts it. In a Cargo target directory the smaller
/// build of Cargo.toml's `guest` profile (`target/guest/`, which `make
/// build` makes) wins, unless the one beside is newer: then init's code
/// changed since, and a stale init must not reach images.
pub fn init_binary() -> Result<PathBuf, PathsError> {
    if let Some(path) = std::env::var_os("UNIBEAM_INIT") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(PathsError::CurrentExe)?;
    let beside = exe.with_file_name("unibeam-init");
    let guest = exe
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("guest/unibeam-init"));
    Ok(match guest {
        Some(guest) if built_since(&guest, &beside) => guest,
        _ => beside,
    })
}

/// Whether `candidate` exists and `other` is missing or not newer.
fn built_since(candidate: &Path, other: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(candidate), modified(other)) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(c), Some(o)) => c >= o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn the_guest_build_wins_unless_older() {
        let dir = tempfile::tempdir().unwrap();
        let (guest, beside) = (dir.path().join("guest"), dir.path().join("beside"));
        assert!(!built_since(&guest, &beside), "a missing guest build never wins");
        std::fs::write(&guest, b"").unwrap();
        assert!(built_since(&guest, &beside));
        std::fs::write(&beside, b"").unwrap();
        let at = |p: &Path, secs| {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        };
        at(&guest, 2_000);
        at(&beside, 1_000);
        assert!(built_since(&guest, &beside));
        at(&beside, 3_000);
        assert!(!built_since(&guest, &beside), "a stale guest build loses");
    }
}
