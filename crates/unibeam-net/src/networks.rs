//! What the network commands do, checked before anything changes: the
//! driver's needs, the subnet against every other network, the bridge
//! and its uplink; and an instance joining and leaving.

use crate::names::{tap_name, NetworkName};
use crate::netlink::{self, NetlinkError};
use crate::store::{Driver, Lease, Locked, Network, NetworkStore, StoreError};
use crate::tap::{self, TapError};
use sha2::{Digest, Sha256};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use thiserror::Error;
use unibeam_cluster::values::Cidr;

#[derive(Debug, Error)]
pub enum NetworkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("network {0}: the bridge driver needs root (it makes a Linux bridge and taps); run as root, or use --driver user, which needs none")]
    NeedsRoot(String),
    #[error("network {name}: subnet {subnet} overlaps {other}")]
    Overlap {
        name: String,
        subnet: Cidr,
        other: String,
    },
    #[error("network {name}: {what} {value} is outside its subnet {subnet}")]
    Outside {
        name: String,
        what: &'static str,
        value: String,
        subnet: Cidr,
    },
    #[error("network {name}: --subnet {subnet}: {why}")]
    BadSubnet { name: String, subnet: Cidr, why: String },
    #[error("network {0}: {1} is only for the bridge driver")]
    BridgeOnly(String, &'static str),
    #[error("network {name}: bridge {bridge} exists already, and unibeam did not make it; remove it (`ip link del {bridge}`) or choose another name")]
    BridgeTaken { name: String, bridge: String },
    #[error("network {name}: --uplink {uplink}: no such interface (`ip link` lists them)")]
    NoUplink { name: String, uplink: String },
    #[error("network {name} is in use by instance {instance}; remove it first (`unibeam rm -f {instance}`)")]
    InUse { name: String, instance: String },
    #[error("no free /24 under 10.88.0.0/16 for network {0}; give one with --subnet")]
    NoFreeSubnet(String),
}

/// `network create`, as asked.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub name: NetworkName,
    pub driver: Driver,
    pub subnet: Option<Cidr>,
    pub gateway: Option<Ipv4Addr>,
    pub range: Option<Cidr>,
    pub dns: Option<Ipv4Addr>,
    pub uplink: Option<String>,
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Makes a network's record, once every value is checked. A bridge
/// network's bridge is made by its first `join` and removed with its last
/// lease (as netavark does): the host carries nothing of unibeam's while
/// no instance uses the network.
pub fn create(store: &NetworkStore, req: &CreateRequest) -> Result<Network, NetworkError> {
    let name = req.name.to_string();
    if req.driver == Driver::Bridge && !is_root() {
        return Err(NetworkError::NeedsRoot(name));
    }
    if req.driver == Driver::User && req.uplink.is_some() {
        return Err(NetworkError::BridgeOnly(name, "--uplink"));
    }
    let lock = store.lock()?;
    if store.exists(&req.name) {
        return Err(StoreError::Exists(name).into());
    }
    let taken = taken_networks(store, req.driver)?;
    let subnet = match req.subnet {
        Some(s) => s,
        None => default_subnet(&taken).ok_or_else(|| NetworkError::NoFreeSubnet(name.clone()))?,
    };
    let net = plan_network(req, subnet, store)?;
    if let Some((_, other)) = taken.iter().find(|(c, _)| c.overlaps(subnet)) {
        return Err(NetworkError::Overlap {
            name,
            subnet,
            other: other.clone(),
        });
    }
    if net.driver == Driver::Bridge {
        check_bridge_free(&net)?;
    }
    store.save(&net, &lock)?;
    Ok(net)
}

/// The network with its defaults filled in and every value checked.
fn plan_network(req: &CreateRequest, subnet: Cidr, store: &NetworkStore) -> Result<Network, NetworkError> {
    let name = req.name.to_string();
    let (first, last) = subnet.bounds();
    if last - first < 3 {
        return Err(NetworkError::BadSubnet {
            name,
            subnet,
            why: "too small: it needs a gateway and at least one VM (at most /30)".into(),
        });
    }
    let gateway = req.gateway.unwrap_or(Ipv4Addr::from(first + 1));
    let range = req.range.unwrap_or(subnet);
    let inside = |a: Ipv4Addr| (first + 1..last).contains(&u32::from(a));
    let outside = |what: &'static str, value: String| NetworkError::Outside {
        name: name.clone(),
        what,
        value,
        subnet,
    };
    if !inside(gateway) {
        return Err(outside("--gateway", gateway.to_string()));
    }
    let (r1, r2) = range.bounds();
    if r1 < first || r2 > last {
        return Err(outside("--ip-range", range.to_string()));
    }
    let bridge = (req.driver == Driver::Bridge).then(|| req.name.bridge());
    let segment = (req.driver == Driver::User).then(|| segment(&name, store));
    Ok(Network {
        name,
        driver: req.driver,
        subnet,
        gateway,
        range,
        dns: req.dns,
        bridge,
        uplink: req.uplink.clone(),
        segment,
    })
}

/// Every network a new one must not overlap: the other networks, and for
/// a bridge (whose address the host takes) every address on the host.
fn taken_networks(store: &NetworkStore, driver: Driver) -> Result<Vec<(Cidr, String)>, NetworkError> {
    let mut taken: Vec<(Cidr, String)> = store
        .list()
        .into_iter()
        .map(|n| (n.subnet, format!("network {}'s subnet {}", n.name, n.subnet)))
        .collect();
    if driver == Driver::Bridge {
        for (cidr, index) in netlink::host_networks()? {
            let net = Cidr::network(&format!("{}/{}", masked(cidr), cidr.prefix_len)).unwrap_or(cidr);
            taken.push((net, format!("address {cidr} of this host's interface #{index}")));
        }
    }
    Ok(taken)
}

fn masked(c: Cidr) -> Ipv4Addr {
    Ipv4Addr::from(c.bounds().0)
}

/// The first 10.88.N.0/24 that overlaps nothing.
fn default_subnet(taken: &[(Cidr, String)]) -> Option<Cidr> {
    (0..=255u8)
        .map(|n| Cidr {
            address: Ipv4Addr::new(10, 88, n, 0),
            prefix_len: 24,
        })
        .find(|c| !taken.iter().any(|(t, _)| t.overlaps(*c)))
}

/// A multicast group and port from the network's name and the store, so
/// two users' networks of one name never share a segment by accident.
fn segment(name: &str, store: &NetworkStore) -> SocketAddrV4 {
    let mut h = Sha256::new();
    h.update(b"network\0");
    h.update(name);
    h.update(store.root.as_os_str().as_encoded_bytes());
    let d = h.finalize();
    let group = Ipv4Addr::new(239, 255, d[0], d[1].max(1));
    SocketAddrV4::new(group, 40000 + u16::from_be_bytes([d[2], d[3]]) % 20000)
}

fn check_bridge_free(net: &Network) -> Result<(), NetworkError> {
    let bridge = net.bridge.clone().unwrap_or_default();
    if netlink::link_exists(&bridge)? {
        return Err(NetworkError::BridgeTaken {
            name: net.name.clone(),
            bridge,
        });
    }
    if let Some(uplink) = &net.uplink {
        if !netlink::link_exists(uplink)? {
            return Err(NetworkError::NoUplink {
                name: net.name.clone(),
                uplink: uplink.clone(),
            });
        }
    }
    Ok(())
}

/// The bridge of a bridge network, made if it is missing: at the first
/// `join`, or after a reboot.
fn ensure_bridge(net: &Network) -> Result<(), NetworkError> {
    let Some(bridge) = &net.bridge else {
        return Ok(());
    };
    if !netlink::link_exists(bridge)? {
        let gateway = netlink::gateway_cidr(net.gateway, net.subnet);
        netlink::create_bridge(bridge, gateway, net.uplink.as_deref())?;
    }
    Ok(())
}

/// `network rm`: refused while an instance that exists holds a lease;
/// leases of instances that are gone are dropped.
pub fn remove(
    store: &NetworkStore,
    name: &NetworkName,
    exists: &dyn Fn(&str) -> bool,
) -> Result<(), NetworkError> {
    let lock = store.lock()?;
    let net = store.load(name)?;
    if let Some(lease) = store.leases(name).into_iter().find(|l| exists(&l.instance)) {
        return Err(NetworkError::InUse {
            name: name.to_string(),
            instance: lease.instance,
        });
    }
    if let Some(bridge) = &net.bridge {
        netlink::delete_link(bridge)?;
    }
    store.remove(name, &lock)?;
    Ok(())
}

/// An instance's place on a network, for its VM.
#[derive(Debug, Clone)]
pub struct Joined {
    pub network: Network,
    pub lease: Lease,
}

/// Gives `instance` an address on `name` (the one it has, if any), making
/// the bridge if it is missing.
pub fn join(
    store: &NetworkStore,
    name: &NetworkName,
    instance: &str,
    state_root: &std::path::Path,
) -> Result<Joined, NetworkError> {
    let lock: Locked = store.lock()?;
    let network = store.load(name)?;
    let tap = match network.driver {
        Driver::Bridge if !is_root() => return Err(NetworkError::NeedsRoot(name.to_string())),
        Driver::Bridge => Some(tap_name(state_root, name, instance)),
        Driver::User => None,
    };
    ensure_bridge(&network)?;
    let lease = store.lease(&network, instance, tap, &lock)?;
    Ok(Joined { network, lease })
}

/// Drops `instance`'s lease on every network, and the bridge of a
/// network it was the last user of.
pub fn leave(store: &NetworkStore, instance: &str) -> Result<(), NetworkError> {
    let lock = store.lock()?;
    for net in store.list() {
        if let Ok(name) = NetworkName::parse(&net.name) {
            store.release(&name, instance, &lock)?;
            retire_idle_bridge(store, &name, &net)?;
        }
    }
    Ok(())
}

/// Removes a bridge network's bridge once no instance holds a lease on
/// it. Only root made it, so only root tries; `join` makes it again.
fn retire_idle_bridge(store: &NetworkStore, name: &NetworkName, net: &Network) -> Result<(), NetworkError> {
    let Some(bridge) = &net.bridge else {
        return Ok(());
    };
    if is_root() && store.leases(name).is_empty() {
        netlink::delete_link(bridge)?;
    }
    Ok(())
}

/// Drops the leases of instances that no longer exist, and bridges no
/// instance uses: what a crash between an instance's removal and its
/// leave leaves behind.
pub fn sweep(store: &NetworkStore, exists: &dyn Fn(&str) -> bool) -> Result<(), NetworkError> {
    let lock = store.lock()?;
    for net in store.list() {
        let Ok(name) = NetworkName::parse(&net.name) else {
            continue;
        };
        for lease in store.leases(&name) {
            if !exists(&lease.instance) {
                store.release(&name, &lease.instance, &lock)?;
            }
        }
        retire_idle_bridge(store, &name, &net)?;
    }
    Ok(())
}

/// Creates the VM's tap as a port of its bridge; it lives as long as the
/// returned descriptor, which QEMU inherits.
pub fn open_tap(tap_ifname: &str, bridge: &str) -> Result<OwnedFd, NetworkError> {
    let fd = tap::open(tap_ifname)?;
    netlink::attach(tap_ifname, bridge)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, NetworkStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore {
            root: dir.path().join("networks"),
        };
        (dir, store)
    }

    fn user(name: &str, subnet: &str) -> CreateRequest {
        CreateRequest {
            name: NetworkName::parse(name).unwrap(),
            driver: Driver::User,
            subnet: Some(subnet.parse().unwrap()),
            gateway: None,
            range: None,
            dns: None,
            uplink: None,
        }
    }

    #[test]
    fn user_networks_are_made_checked_and_refuse_overlaps() {
        let (_d, store) = store();
        let net = create(&store, &user("a", "10.90.0.0/24")).unwrap();
        assert_eq!(net.gateway, "10.90.0.1".parse::<Ipv4Addr>().unwrap());
        assert!(net.segment.unwrap().ip().is_multicast());
        let e = create(&store, &user("b", "10.90.0.128/25"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlaps network a's subnet 10.90.0.0/24"), "{e}");
        let e = create(&store, &user("a", "10.91.0.0/24"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("exists already"), "{e}");
        let mut outside = user("c", "10.92.0.0/24");
        outside.gateway = Some("10.93.0.1".parse().unwrap());
        assert!(create(&store, &outside)
            .unwrap_err()
            .to_string()
            .contains("outside"));
        let mut up = user("d", "10.94.0.0/24");
        up.uplink = Some("eth0".into());
        assert!(create(&store, &up)
            .unwrap_err()
            .to_string()
            .contains("only for the bridge"));
        let defaulted = CreateRequest {
            subnet: None,
            ..user("e", "10.0.0.0/8")
        };
        assert_eq!(
            create(&store, &defaulted).unwrap().subnet.to_string(),
            "10.88.0.0/24"
        );
    }

    #[test]
    fn a_network_in_use_is_kept_and_stale_leases_go() {
        let (dir, store) = store();
        create(&store, &user("lan", "10.90.0.0/24")).unwrap();
        let name = NetworkName::parse("lan").unwrap();
        let joined = join(&store, &name, "web", dir.path()).unwrap();
        assert_eq!(joined.lease.address, "10.90.0.2".parse::<Ipv4Addr>().unwrap());
        let e = remove(&store, &name, &|i| i == "web").unwrap_err().to_string();
        assert!(e.contains("in use by instance web"), "{e}");
        sweep(&store, &|_| false).unwrap();
        assert!(store.leases(&name).is_empty());
        remove(&store, &name, &|_| true).unwrap();
        assert!(store.list().is_empty());
    }
}
