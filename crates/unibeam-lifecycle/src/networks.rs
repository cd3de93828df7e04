//! Instances on named networks. `run --network NAME` and a service's
//! `network = "NAME"` take an address from the network, kept until the
//! instance is removed; the instance's owner (its monitor, or a
//! foreground run) opens its tap for as long as it runs.

use crate::paths::{self, PathsError};
use crate::settings::{LinkCarrier, PrivateLink};
use std::os::fd::{AsRawFd, OwnedFd};
use thiserror::Error;
use unibeam_cluster::values::Cidr;
use unibeam_net::{CreateRequest, Driver, Lease, Network, NetworkError, NetworkName, NetworkStore};
use unibeam_vmm::state::Store;
use unibeam_vmm::{Carrier, QemuCommand};

#[derive(Debug, Error)]
pub enum NetworksError {
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Paths(#[from] PathsError),
    #[error("--network {0}")]
    BadName(String, #[source] BadName),
}

#[derive(Debug, Error)]
#[error("{0}")]
pub struct BadName(String);

/// One network and who is on it, as `network ls` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NetworkInfo {
    #[serde(flatten)]
    pub network: Network,
    /// Who is on it, with their addresses.
    pub instances: Vec<Lease>,
}

pub fn store() -> Result<NetworkStore, PathsError> {
    Ok(NetworkStore::beside(&paths::store()?.root))
}

pub fn parse_name(name: &str) -> Result<NetworkName, NetworksError> {
    NetworkName::parse(name).map_err(|why| NetworksError::BadName(name.to_string(), BadName(why)))
}

/// Whether an instance still exists: a directory in the store, or an
/// unnamed foreground run (`run-<pid>`) whose process lives.
fn instance_exists(instances: &Store) -> impl Fn(&str) -> bool + '_ {
    move |instance: &str| {
        if let Some(pid) = instance.strip_prefix("run-").and_then(|p| p.parse::<i32>().ok()) {
            return nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        }
        instances.root.join(instance).exists()
    }
}

/// Drops leases whose instance is gone (after a crash, or an `rm` that
/// died half-way); every network command and every join does it first.
fn sweep(nets: &NetworkStore, instances: &Store) -> Result<(), NetworksError> {
    Ok(unibeam_net::sweep(nets, &instance_exists(instances))?)
}

/// `network create`.
pub fn create(req: &CreateRequest) -> Result<Network, NetworksError> {
    Ok(unibeam_net::create(&store()?, req)?)
}

/// `network ls`.
pub fn list() -> Result<Vec<NetworkInfo>, NetworksError> {
    let nets = store()?;
    sweep(&nets, &paths::store()?)?;
    Ok(nets
        .list()
        .into_iter()
        .map(|network| {
            let instances = NetworkName::parse(&network.name)
                .map(|n| nets.leases(&n))
                .unwrap_or_default();
            NetworkInfo { network, instances }
        })
        .collect())
}

/// `network rm`: refused while an instance that exists is on it.
pub fn remove(name: &NetworkName) -> Result<(), NetworksError> {
    let nets = store()?;
    let instances = paths::store()?;
    sweep(&nets, &instances)?;
    let exists = instance_exists(&instances);
    unibeam_net::remove(&nets, name, &exists)?;
    Ok(())
}

/// The network called `name`.
pub fn load(name: &str) -> Result<Network, NetworksError> {
    let name = parse_name(name)?;
    Ok(store()?.load(&name).map_err(NetworkError::from)?)
}

/// `instance`'s link on network `name`: its address (kept from an
/// earlier join) and what carries the segment; and the network.
pub fn join(name: &str, instance: &str) -> Result<(PrivateLink, Network), NetworksError> {
    let name = parse_name(name)?;
    let nets = store()?;
    let instances = paths::store()?;
    sweep(&nets, &instances)?;
    let joined = unibeam_net::join(&nets, &name, instance, &instances.root)?;
    let net = joined.network;
    let carrier = match (net.driver, &net.segment, &joined.lease.tap, &net.bridge) {
        (Driver::User, Some(segment), _, _) => LinkCarrier::Multicast(*segment),
        (_, _, Some(tap), Some(bridge)) => LinkCarrier::Tap {
            tap: tap.clone(),
            bridge: bridge.clone(),
        },
        _ => unreachable!("networks::create gives user networks a segment and bridge ones a bridge"),
    };
    let link = PrivateLink {
        carrier,
        address: Cidr {
            address: joined.lease.address,
            prefix_len: net.subnet.prefix_len,
        },
    };
    Ok((link, net))
}

/// Gives up `instance`'s addresses; for `rm` and the end of an unnamed
/// foreground run. A failure only delays it until the next sweep.
pub fn leave(instance: &str) {
    if let Ok(nets) = store() {
        let _ = unibeam_net::leave(&nets, instance);
    }
}

/// The key an instance's lease is held under: its name, or `run-<pid>`
/// for an unnamed foreground run.
pub fn lease_key(instance: Option<&str>) -> String {
    match instance {
        Some(name) => name.to_string(),
        None => format!("run-{}", std::process::id()),
    }
}

/// Opens the tap of a VM on a bridge network and puts its descriptor in
/// `cmd`, for QEMU to inherit. Hold the result for as long as the VM may
/// run (restarts included); the tap goes with it.
pub fn open_tap(cmd: &mut QemuCommand) -> Result<Option<OwnedFd>, NetworksError> {
    let Some(net) = cmd.private_net.as_mut() else {
        return Ok(None);
    };
    let Carrier::Tap { tap, bridge, fd } = &mut net.carrier else {
        return Ok(None);
    };
    let owned = unibeam_net::open_tap(tap, bridge)?;
    *fd = Some(owned.as_raw_fd());
    Ok(Some(owned))
}
