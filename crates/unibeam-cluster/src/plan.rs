//! From a unibeam.toml to the instances to start: names, node names,
//! private addresses, published ports and the cluster's network segment.

use crate::config::Compose;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use unibeam_vmm::state::InstanceName;
use unibeam_vmm::PortForward;

/// One VM to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub service: String,
    /// 1-based replica number.
    pub index: u32,
    /// Instance name, as `ps` shows it: `<cluster>-<service>-<i>`, or
    /// `<cluster>-<i>` when the service is named like the cluster.
    pub instance: InstanceName,
    /// `<service>-<i>@<private ip>`.
    pub node: String,
    pub address: Ipv4Addr,
    /// Published on the host's loopback, the host port shifted by the
    /// replica number.
    pub ports: Vec<PortForward>,
    pub meshed: bool,
}

/// Everything `up` needs and `down` reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub file: PathBuf,
    pub prefix_len: u8,
    /// The private segment: a multicast group and port on the host's loopback.
    pub group: Ipv4Addr,
    pub port: u16,
    pub net_ticktime_s: u32,
    pub members: Vec<Member>,
}

impl Plan {
    /// Node names of the members that form the mesh.
    pub fn peers(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.meshed)
            .map(|m| m.node.clone())
            .collect()
    }
}

/// A group and port derived from the cluster and the state directory, so
/// two clusters (or two users) on one host never share a segment by accident.
fn segment(name: &str, state_dir: &Path) -> (Ipv4Addr, u16) {
    let mut h = Sha256::new();
    h.update(name);
    h.update(state_dir.as_os_str().as_encoded_bytes());
    let d = h.finalize();
    let group = Ipv4Addr::new(239, 255, d[0], d[1].max(1));
    let port = 40000 + u16::from_be_bytes([d[2], d[3]]) % 20000;
    (group, port)
}

fn instance_name(cluster: &str, service: &str, index: u32) -> InstanceName {
    let name = if cluster == service {
        format!("{cluster}-{index}")
    } else {
        format!("{cluster}-{service}-{index}")
    };
    // Cluster and service names are a-z, 0-9 and '-', at most 24 each
    // (config::parse), so the name is always a valid instance name.
    InstanceName::parse(&name).expect("cluster and service names are checked by config::parse")
}

/// Lays out every replica of every service.
pub fn plan(compose: &Compose, state_dir: &Path) -> Plan {
    let (group, port) = segment(&compose.name, state_dir);
    let mut members = Vec::new();
    // .1 is left for a gateway, as on most subnets.
    let mut next = u32::from(compose.subnet.address) + 2;
    for (service, svc) in &compose.services {
        for index in 1..=svc.replicas {
            let address = Ipv4Addr::from(next);
            next += 1;
            let ports = svc
                .ports
                .iter()
                .map(|&(host, guest)| PortForward {
                    host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    // config::parse checked that the shifted port stays a port.
                    host_port: host.saturating_add((index - 1) as u16),
                    guest_port: guest,
                })
                .collect();
            members.push(Member {
                service: service.clone(),
                index,
                instance: instance_name(&compose.name, service, index),
                node: format!("{service}-{index}@{address}"),
                address,
                ports,
                meshed: svc.meshed,
            });
        }
    }
    Plan {
        name: compose.name.clone(),
        file: compose.path.clone(),
        prefix_len: compose.subnet.prefix_len,
        group,
        port,
        net_ticktime_s: compose.net_ticktime_s,
        members,
    }
}

/// Whether the subnet holds every member (and its network/broadcast).
pub fn fits(plan: &Plan) -> bool {
    let hosts = (1u64 << (32 - u32::from(plan.prefix_len))) - 3;
    plan.members.len() as u64 <= hosts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn compose(text: &str) -> Compose {
        parse(Path::new("/x/unibeam.toml"), text).unwrap()
    }

    #[test]
    fn replicas_get_addresses_names_and_shifted_ports() {
        let c = compose(
            "[cluster]\nname = \"shop\"\n[services.web]\nrelease = \"r\"\nreplicas = 3\nports = [\"18080:8080\"]\n",
        );
        let p = plan(&c, Path::new("/state"));
        let nodes: Vec<&str> = p.members.iter().map(|m| m.node.as_str()).collect();
        assert_eq!(nodes, ["web-1@10.77.0.2", "web-2@10.77.0.3", "web-3@10.77.0.4"]);
        assert_eq!(p.members[2].instance.as_str(), "shop-web-3");
        assert_eq!(p.members[2].ports, ["18082:8080".parse().unwrap()]);
        assert_eq!(p.peers().len(), 3);
        assert!(p.group.is_multicast());
        assert!(fits(&p));
    }

    #[test]
    fn a_service_named_like_its_cluster_is_not_repeated() {
        assert_eq!(instance_name("counter", "counter", 2).as_str(), "counter-2");
        assert_eq!(instance_name("shop", "web", 2).as_str(), "shop-web-2");
    }

    #[test]
    fn segments_differ_by_cluster_and_state_dir() {
        let a = segment("shop", Path::new("/home/a/.local/state/unibeam"));
        assert_eq!(a, segment("shop", Path::new("/home/a/.local/state/unibeam")));
        assert_ne!(a, segment("shop", Path::new("/home/b/.local/state/unibeam")));
        assert_ne!(a, segment("blog", Path::new("/home/a/.local/state/unibeam")));
    }
}
