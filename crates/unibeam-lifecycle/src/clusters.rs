//! A cluster's state on the host: its directory (plan, cookie, images it
//! built) and its members, which `up` writes and `down` reads back.

use std::path::{Path, PathBuf};
use unibeam_cluster::Plan;
use unibeam_vmm::state::{InstanceName, Store};

/// The plan `up` started, kept for `down`.
pub const PLAN_FILE: &str = "plan.json";
/// The cluster's cookie, 0600.
pub const COOKIE_FILE: &str = "cookie";
/// Where `up` builds the services given as releases.
pub const IMAGES_DIR: &str = "images";

/// `$XDG_STATE_HOME/unibeam/clusters/<name>`.
pub fn cluster_dir(store: &Store, name: &str) -> PathBuf {
    store.root.with_file_name("clusters").join(name)
}

/// Where the console log of a member that failed to start is kept after
/// `up` removed what it started.
pub fn kept_log(store: &Store, cluster: &str, member: &InstanceName) -> PathBuf {
    cluster_dir(store, cluster).with_extension(format!("{member}.log"))
}

/// The cookie of a cluster with `snapshot = true` services, beside its
/// directory so that `down` keeps it: the members' saved states hold it,
/// and a new cookie would make every next `up` boot cold.
pub fn snapshot_cookie(cluster_dir: &Path) -> PathBuf {
    let mut name = cluster_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".snapshot-cookie");
    cluster_dir.with_file_name(name)
}

/// The plan in `dir`, if `up` wrote one that still reads.
pub fn read_plan(dir: &Path) -> Option<Plan> {
    let data = std::fs::read(dir.join(PLAN_FILE)).ok()?;
    serde_json::from_slice(&data).ok()
}

/// A cluster's members: those of its plan, plus any instance labelled
/// with the cluster (a plan lost in a crash still leaves them findable);
/// only those that exist.
pub fn members(store: &Store, name: &str) -> Vec<InstanceName> {
    let mut names: Vec<InstanceName> = read_plan(&cluster_dir(store, name))
        .map(|p| p.members.into_iter().map(|m| m.instance).collect())
        .unwrap_or_default();
    for r in store.list() {
        if r.cluster.as_deref() == Some(name) && !names.contains(&r.name) {
            names.push(r.name);
        }
    }
    names.retain(|n| store.load(n).is_ok());
    names
}
