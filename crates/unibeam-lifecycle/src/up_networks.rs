//! Cluster members on named networks (`network = "NAME"` in a service):
//! their addresses come from the network, so their node names are known
//! only once `up` has taken them; with `discovery = "dns:NAME"` a member
//! is `<service>@<ip>` and finds its peers in DNS instead of a list.

use crate::networks::{self, NetworksError};
use crate::settings::InstanceSettings;
use unibeam_cluster::{Compose, Plan, Service};
use unibeam_spec::DnsDiscovery;

/// How often the guest asks DNS for its peers.
const DISCOVERY_INTERVAL_S: u32 = 2;

/// `plan` with the addresses and node names of members on named networks.
pub fn place(compose: &Compose, mut plan: Plan) -> Result<Plan, NetworksError> {
    for m in &mut plan.members {
        let svc = &compose.services[&m.service];
        let Some(network) = &svc.network else { continue };
        let (link, _) = networks::join(network, m.instance.as_str())?;
        m.address = link.address.address;
        m.node = match svc.discovery {
            Some(_) => format!("{}@{}", m.service, m.address),
            None => format!("{}-{}@{}", m.service, m.index, m.address),
        };
    }
    Ok(plan)
}

/// A member's settings on its service's network: the network instead of
/// the cluster's own segment and, with discovery, DNS instead of a peer
/// list.
pub fn apply(service: &str, svc: &Service, inst: &mut InstanceSettings) -> Result<(), NetworksError> {
    let Some(network) = &svc.network else {
        return Ok(());
    };
    inst.private_link = None;
    inst.network = Some(network.clone());
    if let (Some(name), Some(membership)) = (&svc.discovery, inst.membership.as_mut()) {
        let net = networks::load(network)?;
        membership.peers.clear();
        membership.discovery = Some(DnsDiscovery {
            name: name.clone(),
            basename: service.to_string(),
            nameserver: net.dns,
            interval_s: DISCOVERY_INTERVAL_S,
        });
    }
    Ok(())
}

/// `unibeam.toml`'s `cookie_file`, relative to the file, when given.
pub fn shared_cookie(compose: &Compose) -> Option<std::path::PathBuf> {
    compose.cookie_file.as_ref().map(|f| compose.base_dir().join(f))
}
