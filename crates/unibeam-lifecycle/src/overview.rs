//! What `ps --format json` and the control plane show of the host's
//! instances and clusters: one shape for both, built here so they cannot
//! drift apart. A cluster's mesh is read from its nodes, each asked for
//! `erlang:nodes()` over unibeam's hidden connection.

use crate::clusters::{self, cluster_dir};
use crate::instances::{self, observed_json, Listed};
use crate::logs::{self, LogsError};
use crate::remote;
use crate::stats;
use crate::timeline;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use thiserror::Error;
use unibeam_vmm::state::{InstanceName, InstanceRecord, Status, Store};

/// How long each node may take to say whom it is connected to, when the
/// mesh is asked for.
pub const MESH_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Error)]
pub enum OverviewError {
    #[error("{0:?} is not a cluster name: lowercase letters, digits and '-', starting with a letter, at most 24 characters")]
    BadClusterName(String),
    #[error("no cluster named {0} (`unibeam up` starts one)")]
    NoSuchCluster(String),
    #[error(transparent)]
    Logs(#[from] LogsError),
}

/// Every instance as `ps --format json` shows it: the record with its
/// observed state, plus `beam_memory` from the newest metrics sample;
/// a directory whose record is broken as `{name, state: "broken", why}`.
pub fn instances_json(store: &Store, all: bool) -> Vec<Value> {
    instances::list(store, all)
        .iter()
        .map(|listed| match listed {
            Listed::Instance(r) => instance_json(store, r),
            Listed::Broken { name, why } => json!({ "name": name.as_str(), "state": "broken", "why": why }),
        })
        .collect()
}

/// One instance, as in [`instances_json`].
pub fn instance_json(store: &Store, record: &InstanceRecord) -> Value {
    let mut value = observed_json(record);
    if let Some(object) = value.as_object_mut() {
        object.insert("beam_memory".into(), beam_memory(store, record).into());
    }
    value
}

/// A running instance's `erlang:memory(total)` in its newest sample, if
/// that sample is of the current boot (after a restart, the last figure
/// of the node before is no longer true).
pub fn beam_memory(store: &Store, record: &InstanceRecord) -> Option<u64> {
    let started_ms = record.started?.saturating_mul(1000);
    match record.observed_status() {
        Status::Running => stats::last(store, &record.name)
            .filter(|s| s.time_ms >= started_ms)?
            .beam_memory(),
        _ => None,
    }
}

/// A cluster in the list: its name, members and how many run.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSummary {
    pub name: String,
    pub members: Vec<String>,
    pub running: usize,
}

/// Every cluster that has members: those `up` keeps a directory for, and
/// those only named by their members' records (a plan lost in a crash).
pub fn clusters(store: &Store) -> Vec<ClusterSummary> {
    let mut names: BTreeSet<String> = std::fs::read_dir(cluster_dir(store, ""))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| unibeam_cluster::config::valid_name(n))
        .collect();
    names.extend(store.list().into_iter().filter_map(|r| r.cluster));
    names
        .into_iter()
        .filter_map(|name| summary(store, &name))
        .collect()
}

fn summary(store: &Store, name: &str) -> Option<ClusterSummary> {
    let members = clusters::members(store, name);
    if members.is_empty() {
        return None;
    }
    let running = members
        .iter()
        .filter(|m| {
            store
                .load(m)
                .is_ok_and(|r| r.observed_status() == Status::Running)
        })
        .count();
    Some(ClusterSummary {
        name: name.to_string(),
        members: members.iter().map(|m| m.to_string()).collect(),
        running,
    })
}

/// A node of a cluster's mesh: `up` when its instance runs and its node
/// answered.
#[derive(Debug, Clone, Serialize)]
pub struct MeshNode {
    pub name: String,
    pub instance: String,
    pub up: bool,
}

/// A cluster's mesh: its nodes, and a link for each pair of up nodes of
/// which one lists the other in `erlang:nodes()`.
#[derive(Debug, Clone, Serialize)]
pub struct Mesh {
    pub nodes: Vec<MeshNode>,
    pub links: Vec<[usize; 2]>,
}

/// A cluster as the control plane shows it: members as `ps` shows them,
/// and the mesh.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub name: String,
    pub members: Vec<Value>,
    #[serde(flatten)]
    pub mesh: Mesh,
}

/// `name`'s members and mesh; each node may take `timeout` to answer.
pub fn cluster(store: &Store, name: &str, timeout: Duration) -> Result<ClusterView, OverviewError> {
    if !unibeam_cluster::config::valid_name(name) {
        return Err(OverviewError::BadClusterName(name.to_string()));
    }
    let records: Vec<InstanceRecord> = clusters::members(store, name)
        .iter()
        .filter_map(|m| store.load(m).ok())
        .collect();
    if records.is_empty() {
        return Err(OverviewError::NoSuchCluster(name.to_string()));
    }
    let members: Vec<Value> = records.iter().map(|r| instance_json(store, r)).collect();
    Ok(ClusterView {
        name: name.to_string(),
        members,
        mesh: mesh(store, &records, timeout),
    })
}

/// Asks every running member for its peers, all at once: a node that
/// does not answer within `timeout` counts as down.
pub fn mesh(store: &Store, records: &[InstanceRecord], timeout: Duration) -> Mesh {
    let peers: Vec<Option<Vec<String>>> = std::thread::scope(|scope| {
        let asks: Vec<_> = records
            .iter()
            .map(|r| scope.spawn(move || ask_peers(store, r, timeout)))
            .collect();
        asks.into_iter().map(|a| a.join().ok().flatten()).collect()
    });
    let nodes: Vec<MeshNode> = records
        .iter()
        .zip(&peers)
        .map(|(r, p)| MeshNode {
            name: r
                .dist
                .as_ref()
                .map_or_else(|| r.name.to_string(), |d| d.node.clone()),
            instance: r.name.to_string(),
            up: p.is_some(),
        })
        .collect();
    let links = links(&nodes, &peers);
    Mesh { nodes, links }
}

fn ask_peers(store: &Store, record: &InstanceRecord, timeout: Duration) -> Option<Vec<String>> {
    if record.observed_status() != Status::Running {
        return None;
    }
    let node = remote::connect(store, &record.name, timeout).ok()?;
    unibeam_dist::metrics::peers(&node).ok()
}

/// Pairs of up nodes where either lists the other.
fn links(nodes: &[MeshNode], peers: &[Option<Vec<String>>]) -> Vec<[usize; 2]> {
    let mut links = Vec::new();
    for i in 0..nodes.len() {
        for j in i + 1..nodes.len() {
            let sees = |a: usize, b: usize| peers[a].as_ref().is_some_and(|p| p.contains(&nodes[b].name));
            if nodes[i].up && nodes[j].up && (sees(i, j) || sees(j, i)) {
                links.push([i, j]);
            }
        }
    }
    links
}

/// One step of an instance's boot timeline, on the guest's clock.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineStep {
    pub at: f64,
    pub step: &'static str,
}

/// The boot timeline of `name`'s latest boot, from init's milestones in
/// its console log (a restart starts a new timeline).
pub fn boot_timeline(store: &Store, name: &InstanceName) -> Result<Vec<TimelineStep>, OverviewError> {
    let log = logs::read(store, name, None)?;
    let mut steps: Vec<TimelineStep> = Vec::new();
    for line in String::from_utf8_lossy(&log).lines() {
        if let Some((at, step)) = timeline::milestone(line) {
            if steps.last().is_some_and(|last| at < last.at) {
                steps.clear();
            }
            steps.push(TimelineStep { at, step });
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, up: bool) -> MeshNode {
        MeshNode {
            name: name.into(),
            instance: name.into(),
            up,
        }
    }

    #[test]
    fn a_link_needs_both_ends_up_and_one_seeing_the_other() {
        let nodes = [node("a@x", true), node("b@x", true), node("c@x", false)];
        let peers = vec![
            Some(vec!["b@x".to_string(), "c@x".to_string()]),
            Some(vec![]),
            None,
        ];
        assert_eq!(links(&nodes, &peers), vec![[0, 1]]);
    }

    #[test]
    fn a_full_mesh_of_three_has_three_links() {
        let nodes = [node("a@x", true), node("b@x", true), node("c@x", true)];
        let all = |me: &str| {
            Some(
                ["a@x", "b@x", "c@x"]
                    .iter()
                    .filter(|n| **n != me)
                    .map(|n| n.to_string())
                    .collect(),
            )
        };
        let peers = vec![all("a@x"), all("b@x"), all("c@x")];
        assert_eq!(links(&nodes, &peers), vec![[0, 1], [0, 2], [1, 2]]);
    }

    #[test]
    fn cluster_names_that_are_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store {
            root: dir.path().join("instances"),
        };
        for bad in ["../x", "/etc", "a/b", "", "UP"] {
            let err = cluster(&store, bad, Duration::from_secs(1)).unwrap_err();
            assert!(matches!(err, OverviewError::BadClusterName(_)), "{bad}: {err}");
        }
        let err = cluster(&store, "nosuch", Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, OverviewError::NoSuchCluster(_)), "{err}");
    }
}
