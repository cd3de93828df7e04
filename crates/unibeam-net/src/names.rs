//! Names: of networks (they become bridge names and paths), and of the
//! interfaces unibeam makes, which must fit Linux's 15 bytes.

use sha2::{Digest, Sha256};

/// Linux's interface names hold at most 15 bytes (IFNAMSIZ less the NUL).
pub const IFNAME_MAX: usize = 15;
/// Every bridge unibeam makes: `ub-<network>`.
pub const BRIDGE_PREFIX: &str = "ub-";
/// Every tap unibeam makes: `ubt<12 hex>`.
pub const TAP_PREFIX: &str = "ubt";
const NAME_MAX: usize = unibeam_cluster::values::NETWORK_NAME_MAX;
const _: () = assert!(BRIDGE_PREFIX.len() + NAME_MAX == IFNAME_MAX);

/// A network's name: a-z, 0-9 and '-', starting with a letter, at most 12
/// (it becomes the bridge's name, `ub-<name>`, and a directory).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetworkName(String);

impl NetworkName {
    pub fn parse(name: &str) -> Result<NetworkName, String> {
        if valid_network_name(name) {
            Ok(NetworkName(name.to_string()))
        } else {
            Err(format!(
                "network name {name:?}: use a-z, 0-9 and '-', starting with a letter, at most {NAME_MAX} (it names the bridge ub-NAME)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn bridge(&self) -> String {
        format!("{BRIDGE_PREFIX}{}", self.0)
    }
}

impl std::fmt::Display for NetworkName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for NetworkName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        NetworkName::parse(s)
    }
}

pub use unibeam_cluster::values::valid_network_name;

/// The tap of `instance` on `network`, unique per state directory: two
/// users' instances of one name must not fight over one tap.
pub fn tap_name(state_root: &std::path::Path, network: &NetworkName, instance: &str) -> String {
    let mut h = Sha256::new();
    h.update(state_root.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(network.as_str());
    h.update([0]);
    h.update(instance);
    let hex: String = h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{TAP_PREFIX}{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_interface_names() {
        let n = NetworkName::parse("abcdefghijkl").unwrap();
        assert_eq!(n.bridge().len(), IFNAME_MAX);
        assert!(NetworkName::parse("abcdefghijklm").is_err());
        for bad in ["", "Lan", "1lan", "la n", "../x", "lan_1"] {
            assert!(NetworkName::parse(bad).is_err(), "{bad:?}");
        }
        let tap = tap_name(std::path::Path::new("/s"), &n, "web-1");
        assert_eq!(tap.len(), IFNAME_MAX);
        assert_ne!(tap, tap_name(std::path::Path::new("/t"), &n, "web-1"));
    }
}
