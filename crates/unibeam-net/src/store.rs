//! Named networks and their address leases, kept under
//! `$XDG_STATE_HOME/unibeam/networks/<name>/`: `network.json`, and one
//! file per instance in `leases/`. One lock file serialises every change,
//! so two `run`s never get the same address.

use crate::names::{valid_network_name, NetworkName};
use serde::{Deserialize, Serialize};
use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_cluster::values::Cidr;
use unibeam_spec::hostfs::{self, PathIo};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error("network {0}: no such network (`unibeam network ls` lists them)")]
    NoSuchNetwork(String),
    #[error("network {0} exists already")]
    Exists(String),
    #[error("{}: not a network record unibeam wrote; remove that directory", .0.display())]
    Corrupt(PathBuf, #[source] serde_json::Error),
    #[error("network {network}: every address of {range} is taken")]
    Full { network: String, range: Cidr },
    #[error("locking {}", .0.display())]
    Lock(PathBuf, #[source] nix::Error),
}

/// How a network's VMs reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// A segment QEMU carries over UDP multicast on the host's loopback:
    /// rootless, one host.
    User,
    /// A Linux bridge with one tap per VM: root, and it can reach other
    /// hosts through an uplink on the bridge.
    Bridge,
}

impl std::str::FromStr for Driver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "user" => Ok(Driver::User),
            "bridge" => Ok(Driver::Bridge),
            _ => Err(format!("driver {s:?}: expected user or bridge")),
        }
    }
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::User => "user",
            Driver::Bridge => "bridge",
        })
    }
}

/// One network, as `network create` made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub driver: Driver,
    pub subnet: Cidr,
    /// The host's address on the bridge; reserved on a user network.
    pub gateway: Ipv4Addr,
    /// Where VM addresses come from: the subnet, or a part of it (one
    /// range per host when several hosts share one L2).
    pub range: Cidr,
    /// The DNS server the guests ask (DNS discovery).
    pub dns: Option<Ipv4Addr>,
    /// The Linux bridge (bridge driver).
    pub bridge: Option<String>,
    /// A host interface enslaved to the bridge, e.g. the veth or NIC that
    /// leads to other hosts.
    pub uplink: Option<String>,
    /// The multicast group and port (user driver).
    pub segment: Option<SocketAddrV4>,
}

impl Network {
    /// What `network create` would never have written: a range or
    /// gateway outside the subnet, a bridge other than `ub-NAME` (which
    /// `network rm` would delete), a segment off multicast.
    fn inconsistency(&self, name: &NetworkName) -> Option<&'static str> {
        let (first, last) = self.subnet.bounds();
        let (r1, r2) = self.range.bounds();
        let gateway = u32::from(self.gateway);
        if r1 < first || r2 > last {
            Some("its range is outside its subnet")
        } else if gateway <= first || gateway >= last {
            Some("its gateway is not a host address of its subnet")
        } else if self.driver == Driver::Bridge && self.bridge.as_deref() != Some(name.bridge().as_str()) {
            Some("its bridge is not ub-NAME")
        } else if self.driver == Driver::User
            && (self.bridge.is_some() || !self.segment.is_some_and(|s| s.ip().is_multicast()))
        {
            Some("a user network needs a multicast segment and no bridge")
        } else {
            None
        }
    }
}

/// One instance's place on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub instance: String,
    pub address: Ipv4Addr,
    /// The tap's interface name (bridge driver).
    pub tap: Option<String>,
}

/// Where networks are kept.
#[derive(Debug, Clone)]
pub struct NetworkStore {
    pub root: PathBuf,
}

/// Held while a change is made; dropping it unlocks.
pub struct Locked(#[allow(dead_code)] nix::fcntl::Flock<fs::File>);

impl NetworkStore {
    /// `networks/` beside the instances' directory.
    pub fn beside(instances_root: &Path) -> NetworkStore {
        let parent = instances_root.parent().unwrap_or(instances_root);
        NetworkStore {
            root: parent.join("networks"),
        }
    }

    pub fn dir(&self, name: &NetworkName) -> PathBuf {
        self.root.join(name.as_str())
    }

    /// An exclusive lock over every network of this store.
    pub fn lock(&self) -> Result<Locked, StoreError> {
        hostfs::create_private_dir(&self.root)?;
        let path = self.root.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(hostfs::at::<StoreError>(&path))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map(Locked)
            .map_err(|(_, e)| StoreError::Lock(path, e))
    }

    pub fn exists(&self, name: &NetworkName) -> bool {
        self.dir(name).join("network.json").exists()
    }

    pub fn save(&self, net: &Network, _lock: &Locked) -> Result<(), StoreError> {
        let name = NetworkName::parse(&net.name).map_err(|_| StoreError::NoSuchNetwork(net.name.clone()))?;
        let dir = self.dir(&name);
        hostfs::create_private_dir(&dir.join("leases"))?;
        let json = serde_json::to_vec_pretty(net).expect("a network serialises");
        Ok(hostfs::write_atomic(&dir.join("network.json"), &json)?)
    }

    pub fn load(&self, name: &NetworkName) -> Result<Network, StoreError> {
        let path = self.dir(name).join("network.json");
        let text = match fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NoSuchNetwork(name.to_string()))
            }
            other => other.map_err(hostfs::at::<StoreError>(&path))?,
        };
        let net: Network = serde_json::from_slice(&text).map_err(|e| StoreError::Corrupt(path.clone(), e))?;
        let why = if net.name != name.as_str() {
            Some("its name differs from its directory")
        } else {
            net.inconsistency(name)
        };
        if let Some(why) = why {
            let e = serde_json::Error::io(std::io::Error::other(why));
            return Err(StoreError::Corrupt(path, e));
        }
        Ok(net)
    }

    /// Every network, by name; unreadable records are skipped here and
    /// named by `load`.
    pub fn list(&self) -> Vec<Network> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut names: Vec<NetworkName> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| NetworkName::parse(n).ok()))
            .collect();
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.iter().filter_map(|n| self.load(n).ok()).collect()
    }

    pub fn remove(&self, name: &NetworkName, _lock: &Locked) -> Result<(), StoreError> {
        let dir = self.dir(name);
        fs::remove_dir_all(&dir).map_err(hostfs::at::<StoreError>(&dir))
    }

    pub fn leases(&self, name: &NetworkName) -> Vec<Lease> {
        let dir = self.dir(name).join("leases");
        let Ok(entries) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        // A lease is `<instance>.json` holding that instance: one that
        // names another (say `../../x`, which `release` would make a path
        // of) is not one unibeam wrote, and is passed over.
        let mut leases: Vec<Lease> = entries
            .flatten()
            .filter_map(|e| {
                let lease: Lease = serde_json::from_slice(&fs::read(e.path()).ok()?).ok()?;
                (e.file_name().to_str()? == format!("{}.json", lease.instance)).then_some(lease)
            })
            .collect();
        leases.sort_by_key(|l| l.address);
        leases
    }

    /// `instance`'s lease on `net`, made if it has none: the first free
    /// address of the range, never the network's, the broadcast or the
    /// gateway's. `tap` names the tap for a bridge network.
    pub fn lease(
        &self,
        net: &Network,
        instance: &str,
        tap: Option<String>,
        _lock: &Locked,
    ) -> Result<Lease, StoreError> {
        let name = NetworkName::parse(&net.name).map_err(|_| StoreError::NoSuchNetwork(net.name.clone()))?;
        let leases = self.leases(&name);
        if let Some(held) = leases.iter().find(|l| l.instance == instance) {
            return Ok(held.clone());
        }
        let taken: Vec<Ipv4Addr> = leases.iter().map(|l| l.address).collect();
        let address = free_address(net, &taken).ok_or_else(|| StoreError::Full {
            network: net.name.clone(),
            range: net.range,
        })?;
        let lease = Lease {
            instance: instance.to_string(),
            address,
            tap,
        };
        let path = self.lease_path(&name, instance);
        let json = serde_json::to_vec_pretty(&lease).expect("a lease serialises");
        hostfs::write_atomic(&path, &json)?;
        Ok(lease)
    }

    pub fn release(&self, name: &NetworkName, instance: &str, _lock: &Locked) -> Result<(), StoreError> {
        let path = self.lease_path(name, instance);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(hostfs::at::<StoreError>(&path)(e)),
            _ => Ok(()),
        }
    }

    fn lease_path(&self, name: &NetworkName, instance: &str) -> PathBuf {
        // Instance names are checked by the instances' store (letters,
        // digits, '-', '_', '.'), so the name is one path component.
        debug_assert!(valid_network_name(name.as_str()));
        self.dir(name).join("leases").join(format!("{instance}.json"))
    }
}

/// The lowest address of the range that is a host address of the subnet,
/// not the gateway and not taken.
pub fn free_address(net: &Network, taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    let (first, last) = net.range.bounds();
    let (net_first, net_last) = net.subnet.bounds();
    (first..=last)
        .filter(|a| *a != net_first && *a != net_last)
        .map(Ipv4Addr::from)
        .find(|a| *a != net.gateway && !taken.contains(a) && u32::from(*a) & 0xff != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Network {
        Network {
            name: "lan".into(),
            driver: Driver::User,
            subnet: "10.88.0.0/16".parse().unwrap(),
            gateway: "10.88.1.1".parse().unwrap(),
            range: "10.88.1.0/24".parse().unwrap(),
            dns: None,
            bridge: None,
            uplink: None,
            segment: Some("239.255.1.1:40000".parse().unwrap()),
        }
    }

    /// A store in a directory of its own, removed with the guard.
    fn temp_store() -> (tempfile::TempDir, NetworkStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore {
            root: dir.path().join("networks"),
        };
        (dir, store)
    }

    #[test]
    fn addresses_skip_the_gateway_and_taken_ones() {
        let n = net();
        assert_eq!(free_address(&n, &[]), Some("10.88.1.2".parse().unwrap()));
        let taken = ["10.88.1.2".parse().unwrap()];
        assert_eq!(free_address(&n, &taken), Some("10.88.1.3".parse().unwrap()));
        let mut small = net();
        small.range = "10.88.1.0/30".parse().unwrap();
        // .0 ends in zero, .1 is the gateway, .2 is free, .3 is fine in a /16.
        assert_eq!(free_address(&small, &taken), Some("10.88.1.3".parse().unwrap()));
    }

    #[test]
    fn leases_are_kept_and_released() {
        let (_dir, store) = temp_store();
        let lock = store.lock().unwrap();
        let n = net();
        store.save(&n, &lock).unwrap();
        let a = store.lease(&n, "web", None, &lock).unwrap();
        let b = store.lease(&n, "db", None, &lock).unwrap();
        assert_ne!(a.address, b.address);
        assert_eq!(store.lease(&n, "web", None, &lock).unwrap(), a, "a lease is kept");
        let name = NetworkName::parse("lan").unwrap();
        store.release(&name, "web", &lock).unwrap();
        assert_eq!(store.leases(&name), vec![b]);
        assert_eq!(store.list(), vec![n]);
        assert!(matches!(
            store.load(&NetworkName::parse("nope").unwrap()),
            Err(StoreError::NoSuchNetwork(_))
        ));
    }

    #[test]
    fn a_lease_that_names_another_instance_than_its_file_is_passed_over() {
        let (_dir, store) = temp_store();
        let lock = store.lock().unwrap();
        let n = net();
        store.save(&n, &lock).unwrap();
        let web = store.lease(&n, "web", None, &lock).unwrap();
        let name = NetworkName::parse("lan").unwrap();
        let leases = store.dir(&name).join("leases");
        let evil = r#"{"instance":"../../x","address":"10.88.1.9","tap":null}"#;
        fs::write(leases.join("evil.json"), evil).unwrap();
        fs::write(leases.join("junk.json"), "junk").unwrap();
        assert_eq!(store.leases(&name), vec![web]);
    }

    #[test]
    fn a_record_network_create_would_not_write_is_corrupt() {
        let (_dir, store) = temp_store();
        let lock = store.lock().unwrap();
        let name = NetworkName::parse("lan").unwrap();
        let good = net();
        store.save(&good, &lock).unwrap();
        assert_eq!(store.load(&name).unwrap(), good);
        let path = store.dir(&name).join("network.json");
        let text = fs::read_to_string(&path).unwrap();
        for (from, to, why) in [
            ("\"prefix_len\": 16", "\"prefix_len\": 0", "expected 8 to 30"),
            ("\"10.88.1.1\"", "\"10.99.0.1\"", "gateway"),
            ("\"bridge\": null", "\"bridge\": \"eth0\"", "no bridge"),
            ("\"driver\": \"user\"", "\"driver\": \"bridge\"", "ub-NAME"),
        ] {
            assert!(text.contains(from), "{from} in {text}");
            fs::write(&path, text.replacen(from, to, 1)).unwrap();
            let err = store.load(&name).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt(..)), "{err}");
            let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
            assert!(
                chain.contains(why) && chain.contains("remove that directory"),
                "{chain}"
            );
        }
    }
}
