//! `down`: stops and removes every instance of a cluster, and its state.

use crate::clusters::{cluster_dir, members};
use crate::instances::{self, InstancesError};
use crate::progress::Progress;
use std::time::Duration;
use thiserror::Error;
use unibeam_spec::hostfs::{self, PathIo};
use unibeam_vmm::state::{InstanceName, Store};

#[derive(Debug, Error)]
pub enum DownError {
    #[error("removing instance {0}")]
    Remove(InstanceName, #[source] InstancesError),
    #[error("removing the cluster's state")]
    State(#[source] PathIo),
    #[error(transparent)]
    Config(#[from] unibeam_cluster::ConfigError),
}

/// Stops each member (power button, `grace` to power off, then killed),
/// side by side, then removes the members, the cluster's cookie and the
/// images `up` built. Returns how many instances went.
pub fn down(
    store: &Store,
    cluster: &str,
    grace: Duration,
    progress: &dyn Progress,
) -> Result<usize, DownError> {
    let names = members(store, cluster);
    // Stopped side by side: a cluster's shutdown takes one timeout, not N.
    std::thread::scope(|s| {
        for n in &names {
            s.spawn(move || {
                if grace.is_zero() {
                    let _ = instances::kill(store, n);
                } else {
                    let _ = instances::stop(store, n, grace);
                }
            });
        }
    });
    for n in &names {
        instances::remove(store, n, true).map_err(|e| DownError::Remove(n.clone(), e))?;
        progress.note(&format!("removed {n}"));
    }
    let dir = cluster_dir(store, cluster);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| DownError::State(hostfs::at::<PathIo>(&dir)(e)))?;
    }
    Ok(names.len())
}

/// [`down`] for the cluster of the file at `file`; returns the cluster's
/// name and how many instances went.
pub fn down_file(
    store: &Store,
    file: &std::path::Path,
    grace: Duration,
    progress: &dyn Progress,
) -> Result<(String, usize), DownError> {
    let compose = unibeam_cluster::load(file)?;
    let removed = down(store, &compose.name, grace, progress)?;
    Ok((compose.name, removed))
}

/// Kills and removes at once: for an `up` that failed half-way.
pub fn tear_down(store: &Store, cluster: &str, progress: &dyn Progress) -> Result<usize, DownError> {
    down(store, cluster, Duration::ZERO, progress)
}
