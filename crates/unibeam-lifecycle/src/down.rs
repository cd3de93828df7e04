//! `down`: stops and removes every instance of a cluster, and its state.

use crate::clusters::{cluster_dir, members};
use crate::instances::{self, InstancesError};
use crate::progress::Progress;
use crate::volumes::{VolumeStore, VolumesError};
use std::time::Duration;
use thiserror::Error;
use unibeam_cluster::volume::VolumeName;
use unibeam_spec::hostfs::{self, PathIo};
use unibeam_vmm::state::{InstanceName, Store};

#[derive(Debug, Error)]
pub enum DownError {
    #[error("removing instance {0}")]
    Remove(InstanceName, #[source] InstancesError),
    #[error("removing volume {0}")]
    Volume(VolumeName, #[source] VolumesError),
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
    down_keeping(store, cluster, grace, Volumes::Keep, progress)
}

/// What `down` does with the members' volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Volumes {
    /// Kept, for the next `up` (the default).
    Keep,
    /// Removed with the members (`down --volumes`).
    Remove,
}

/// [`down`], removing the members' volumes too if `volumes` says so.
pub fn down_keeping(
    store: &Store,
    cluster: &str,
    grace: Duration,
    volumes: Volumes,
    progress: &dyn Progress,
) -> Result<usize, DownError> {
    let names = members(store, cluster);
    let attached: Vec<VolumeName> = names
        .iter()
        .flat_map(|n| crate::volumes::attached(store, n))
        .collect();
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
    if volumes == Volumes::Remove {
        let volume_store = VolumeStore::beside(store);
        for v in &attached {
            crate::volumes::remove(store, &volume_store, v).map_err(|e| DownError::Volume(v.clone(), e))?;
            progress.note(&format!("removed volume {v}"));
        }
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
    volumes: Volumes,
    progress: &dyn Progress,
) -> Result<(String, usize), DownError> {
    let compose = unibeam_cluster::load(file)?;
    let removed = down_keeping(store, &compose.name, grace, volumes, progress)?;
    Ok((compose.name, removed))
}

/// Kills and removes at once: for an `up` that failed half-way.
pub fn tear_down(store: &Store, cluster: &str, progress: &dyn Progress) -> Result<usize, DownError> {
    down(store, cluster, Duration::ZERO, progress)
}
