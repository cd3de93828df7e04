//! `unibeam down`: stops and removes everything `unibeam up` started.

use crate::instances::{self, store};
use crate::up::{cluster_dir, PLAN_FILE};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use unibeam_cluster::Plan;
use unibeam_vmm::control;
use unibeam_vmm::state::{InstanceName, Store};

pub const FAILURE_EXIT: u8 = 1;

/// Stop and remove every instance of a cluster, and its state.
///
/// Each instance gets the power button (a graceful `init:stop()`) and
/// `--time` seconds before it is killed; then its directory, the cluster's
/// cookie and its images are removed.
#[derive(Args)]
pub struct DownArgs {
    /// The cluster file `unibeam up` was given
    #[arg(short = 'f', long = "file", default_value = "unibeam.toml")]
    file: PathBuf,
    /// Seconds each instance gets to power off before it is killed
    #[arg(short = 't', long = "time", default_value_t = 30)]
    time: u64,
}

pub fn down(args: DownArgs) -> Result<ExitCode> {
    let compose = unibeam_cluster::load(&args.file)?;
    let store = store()?;
    let removed = stop_and_remove(&store, &compose.name, Duration::from_secs(args.time))?;
    println!("cluster {}: removed {removed} instances", compose.name);
    Ok(ExitCode::SUCCESS)
}

/// Kills and removes at once; for an `up` that failed half-way.
pub fn tear_down(store: &Store, name: &str) -> Result<usize> {
    stop_and_remove(store, name, Duration::ZERO)
}

/// Members from the plan, plus any instance labelled with the cluster.
fn members(store: &Store, name: &str) -> Vec<InstanceName> {
    let plan_path = cluster_dir(store, name).join(PLAN_FILE);
    let mut names: Vec<InstanceName> = std::fs::read(&plan_path)
        .ok()
        .and_then(|data| serde_json::from_slice::<Plan>(&data).ok())
        .map(|p| p.members.iter().map(|m| m.instance.clone()).collect())
        .unwrap_or_default();
    for r in store.list() {
        if r.cluster.as_deref() == Some(name) && !names.contains(&r.name) {
            names.push(r.name);
        }
    }
    names.retain(|n| store.load(n).is_ok());
    names
}

fn stop_and_remove(store: &Store, name: &str, grace: Duration) -> Result<usize> {
    let names = members(store, name);
    // Stopped side by side: a cluster's shutdown takes one timeout, not N.
    std::thread::scope(|s| {
        for n in &names {
            s.spawn(move || {
                if grace.is_zero() {
                    let _ = control::kill(store, n);
                } else {
                    let _ = control::stop(store, n, grace);
                }
            });
        }
    });
    for n in &names {
        instances::remove(store, n, true).with_context(|| format!("removing instance {n}"))?;
        eprintln!("unibeam: removed {n}");
    }
    let dir = cluster_dir(store, name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(names.len())
}
