//! From a unibeam.toml to the instances to start: names, node names,
//! private addresses, published ports and the cluster's network segment.

use crate::config::Compose;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// `10.77.0.0/24` → base address and prefix length.
pub fn parse_subnet(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX, e.g. 10.77.0.0/24"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (8..=28).contains(p))
        .ok_or_else(|| format!("prefix {prefix:?}: expected 8 to 28"))?;
    if u32::from(ip) & !unibeam_mask(prefix) != 0 {
        return Err(format!(
            "{s}: host bits are set; did you mean {}/{prefix}?",
            network(ip, prefix)
        ));
    }
    Ok((ip, prefix))
}

fn unibeam_mask(prefix: u8) -> u32 {
    u32::MAX << (32 - u32::from(prefix))
}

fn network(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip) & unibeam_mask(prefix))
}

/// `18080:8080` → (18080, 8080).
pub fn parse_port(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?}: expected \"HOST:GUEST\", e.g. \"18080:8080\"");
    let (host, guest) = s.split_once(':').ok_or_else(bad)?;
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
    Ok((port(host)?, port(guest)?))
}

/// `256M`, `1G`, `512` (MiB) → MiB, at least the 24 MiB a guest needs;
/// `run --memory` and unibeam.toml's `memory` both read it.
pub fn parse_memory(s: &str) -> Result<u32, String> {
    let upper = s.trim().to_ascii_uppercase();
    let (digits, factor) = match upper.strip_suffix('G') {
        Some(d) => (d, 1024),
        None => (upper.strip_suffix('M').unwrap_or(&upper), 1),
    };
    let mib = digits
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("{s:?} is not a memory size; use e.g. 256M or 1G"))?;
    if mib < 24 {
        return Err(format!(
            "{s:?} is too little memory; the guest needs at least 24M"
        ));
    }
    Ok(mib)
}

/// One VM to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub service: String,
    /// 1-based replica number.
    pub index: u32,
    /// Instance name, as `ps` shows it: `<cluster>-<service>-<i>`, or
    /// `<cluster>-<i>` when the service is named like the cluster.
    pub instance: String,
    /// `<service>-<i>@<private ip>`.
    pub node: String,
    pub address: Ipv4Addr,
    /// `-p` values, the host port shifted by the replica number.
    pub ports: Vec<String>,
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

fn instance_name(cluster: &str, service: &str, index: u32) -> String {
    if cluster == service {
        format!("{cluster}-{index}")
    } else {
        format!("{cluster}-{service}-{index}")
    }
}

/// Lays out every replica of every service.
pub fn plan(compose: &Compose, state_dir: &Path) -> Plan {
    let c = &compose.file.cluster;
    let (base, prefix_len) = parse_subnet(c.subnet.get_ref()).expect("checked by config::parse");
    let (group, port) = segment(&compose.name, state_dir);
    let mut members = Vec::new();
    // .1 is left for a gateway, as on most subnets.
    let mut next = u32::from(base) + 2;
    for (service, spanned) in &compose.file.services {
        let svc = spanned.get_ref();
        for index in 1..=*svc.replicas.get_ref() {
            let address = Ipv4Addr::from(next);
            next += 1;
            let ports = svc
                .ports
                .iter()
                .map(|p| {
                    let (host, guest) = parse_port(p.get_ref()).expect("checked by config::parse");
                    format!("{}:{guest}", u32::from(host) + index - 1)
                })
                .collect();
            members.push(Member {
                service: service.clone(),
                index,
                instance: instance_name(&compose.name, service, index),
                node: format!("{service}-{index}@{address}"),
                address,
                ports,
                meshed: svc.cluster,
            });
        }
    }
    Plan {
        name: compose.name.clone(),
        file: compose.path.clone(),
        prefix_len,
        group,
        port,
        net_ticktime_s: *c.net_ticktime.get_ref(),
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
        assert_eq!(p.members[2].instance, "shop-web-3");
        assert_eq!(p.members[2].ports, ["18082:8080"]);
        assert_eq!(p.peers().len(), 3);
        assert!(p.group.is_multicast());
        assert!(fits(&p));
    }

    #[test]
    fn a_service_named_like_its_cluster_is_not_repeated() {
        assert_eq!(instance_name("counter", "counter", 2), "counter-2");
        assert_eq!(instance_name("shop", "web", 2), "shop-web-2");
    }

    #[test]
    fn segments_differ_by_cluster_and_state_dir() {
        let a = segment("shop", Path::new("/home/a/.local/state/unibeam"));
        assert_eq!(a, segment("shop", Path::new("/home/a/.local/state/unibeam")));
        assert_ne!(a, segment("shop", Path::new("/home/b/.local/state/unibeam")));
        assert_ne!(a, segment("blog", Path::new("/home/a/.local/state/unibeam")));
    }

    #[test]
    fn subnets_and_ports_are_checked() {
        assert_eq!(
            parse_subnet("10.77.0.0/24"),
            Ok((Ipv4Addr::new(10, 77, 0, 0), 24))
        );
        assert!(parse_subnet("10.77.0.5/24").unwrap_err().contains("10.77.0.0/24"));
        assert!(parse_subnet("10.77.0.0").is_err());
        assert_eq!(parse_port("18080:8080"), Ok((18080, 8080)));
        assert!(parse_port("8080").is_err());
        assert!(parse_port("0:80").is_err());
    }
}
