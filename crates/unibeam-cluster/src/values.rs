//! The values users write, in unibeam.toml and on `run`'s command line:
//! memory sizes, published port pairs and IPv4 networks. One parser each,
//! so the file and the flags accept exactly the same things.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The smallest guest the kernel and the BEAM boot in.
pub const MIN_MEMORY_MIB: u32 = 24;

/// The prefix lengths unibeam takes for a network: a /8 is the most any
/// private range needs, and a /30 is the least that holds a gateway and
/// one VM.
pub const PREFIX_RANGE: std::ops::RangeInclusive<u8> = 8..=30;

/// `256M`, `1G`, `512` (MiB) → MiB, at least [`MIN_MEMORY_MIB`].
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
    if mib < MIN_MEMORY_MIB {
        return Err(format!(
            "{s:?} is too little memory; the guest needs at least {MIN_MEMORY_MIB}M"
        ));
    }
    Ok(mib)
}

/// `18080:8080` → (18080, 8080): a host port and a guest port, neither 0.
pub fn parse_port_pair(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?}: expected \"HOST:GUEST\", e.g. \"18080:8080\"");
    let (host, guest) = s.split_once(':').ok_or_else(bad)?;
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
    Ok((port(host)?, port(guest)?))
}

/// An IPv4 address with a prefix length, `10.77.0.2/24`: a VM's address
/// on a network, or (with [`Cidr::network`]) the network itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RawCidr")]
pub struct Cidr {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

/// A [`Cidr`] as a file keeps it, before its prefix is checked: a record
/// with a /0 or a /40 is refused as it is read.
#[derive(serde::Deserialize)]
struct RawCidr {
    address: Ipv4Addr,
    prefix_len: u8,
}

impl TryFrom<RawCidr> for Cidr {
    type Error = String;
    fn try_from(raw: RawCidr) -> Result<Cidr, String> {
        format!("{}/{}", raw.address, raw.prefix_len).parse()
    }
}

/// Ranges no network of VMs can use: "this network" (0/8), loopback
/// (127/8), multicast and the reserved class E with the broadcast address
/// (224/3).
const UNUSABLE: [(u32, u8, &str); 3] = [
    (0x0000_0000, 8, "0.0.0.0/8, addresses no host may take"),
    (0x7f00_0000, 8, "loopback addresses (127.0.0.0/8)"),
    (0xe000_0000, 3, "multicast and reserved addresses (224.0.0.0/3)"),
];

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX, e.g. 10.77.0.0/24"))?;
        let address: Ipv4Addr = ip.parse().map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|p| PREFIX_RANGE.contains(p))
            .ok_or_else(|| {
                format!(
                    "prefix {prefix:?}: expected {} to {}",
                    PREFIX_RANGE.start(),
                    PREFIX_RANGE.end()
                )
            })?;
        Ok(Cidr { address, prefix_len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl Cidr {
    fn mask(self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len.min(32)))
            .unwrap_or(0)
    }

    /// The first and last address, as integers.
    pub fn bounds(self) -> (u32, u32) {
        let first = u32::from(self.address) & self.mask();
        (first, first | !self.mask())
    }

    /// Whether the two share any address.
    pub fn overlaps(self, other: Cidr) -> bool {
        let ((a1, a2), (b1, b2)) = (self.bounds(), other.bounds());
        a1 <= b2 && b1 <= a2
    }

    /// `10.77.0.0/24` as a network: refused when host bits are set, the
    /// usual typo for the network's own address.
    pub fn network(s: &str) -> Result<Cidr, String> {
        let cidr: Cidr = s.parse()?;
        let base = Ipv4Addr::from(u32::from(cidr.address) & cidr.mask());
        if base != cidr.address {
            return Err(format!(
                "{s}: host bits are set; did you mean {base}/{}?",
                cidr.prefix_len
            ));
        }
        for (start, prefix_len, what) in UNUSABLE {
            let unusable = Cidr {
                address: Ipv4Addr::from(start),
                prefix_len,
            };
            if cidr.overlaps(unusable) {
                return Err(format!(
                    "{s}: holds {what}, which VMs cannot use; give a private range such as 10.88.0.0/24"
                ));
            }
        }
        Ok(cidr)
    }

    /// How many VMs fit: all addresses but the network's, the gateway's
    /// (.1) and the broadcast address.
    pub fn vm_capacity(self) -> u64 {
        (1u64 << (32 - u32::from(self.prefix_len))) - 3
    }
}

/// Longest network name: it becomes the bridge `ub-<name>`, and Linux
/// interface names hold 15 bytes.
pub const NETWORK_NAME_MAX: usize = 12;

/// A network's name: a-z, 0-9 and '-', starting with a letter, at most
/// [`NETWORK_NAME_MAX`].
pub fn valid_network_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NETWORK_NAME_MAX
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

pub fn network_name(s: &str) -> Result<String, String> {
    if valid_network_name(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?}: use a-z, 0-9 and '-', starting with a letter, at most {NETWORK_NAME_MAX} (it names the bridge ub-NAME)"
        ))
    }
}

/// `dns:NAME` with NAME a DNS name (labels of letters, digits and '-',
/// at most 63 each, 253 in all); returns NAME.
pub fn dns_discovery(s: &str) -> Result<String, String> {
    let Some(name) = s.strip_prefix("dns:") else {
        return Err(format!("{s:?}: expected dns:NAME, e.g. dns:web.internal"));
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{s:?}: {name:?} is not a DNS name (labels of letters, digits and '-', joined by dots)"
        ));
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("256M"), Ok(256));
        assert_eq!(parse_memory("1g"), Ok(1024));
        assert_eq!(parse_memory("512"), Ok(512));
        assert!(parse_memory("12M").unwrap_err().contains("too little"));
        assert!(parse_memory("lots").unwrap_err().contains("\"lots\""));
        assert!(parse_memory("5000000G").is_err(), "overflow is refused");
    }

    #[test]
    fn port_pairs() {
        assert_eq!(parse_port_pair("18080:8080"), Ok((18080, 8080)));
        assert!(parse_port_pair("8080").is_err());
        assert!(parse_port_pair("0:80").is_err());
        assert!(parse_port_pair("80:70000").is_err());
    }

    #[test]
    fn one_prefix_range_for_addresses_and_networks() {
        let c: Cidr = "10.77.0.2/24".parse().unwrap();
        assert_eq!((c.address, c.prefix_len), (Ipv4Addr::new(10, 77, 0, 2), 24));
        assert_eq!(c.to_string(), "10.77.0.2/24");
        for bad in ["10.77.0.2", "10.77.0.2/40", "10.77.0.2/7", "10.77.0.2/31", "x/24"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
            assert!(Cidr::network(bad).is_err(), "{bad}");
        }
        assert!("10.77.0.0/30".parse::<Cidr>().is_ok());
        assert!(Cidr::network("10.77.0.0/30").is_ok());
        let err = Cidr::network("10.77.0.5/24").unwrap_err();
        assert!(err.contains("did you mean 10.77.0.0/24"), "{err}");
        assert_eq!(Cidr::network("10.77.0.0/24").unwrap().vm_capacity(), 253);
        assert_eq!(Cidr::network("10.77.0.0/30").unwrap().vm_capacity(), 1);
    }

    #[test]
    fn overlap_is_any_shared_address() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        assert!(c("10.88.0.0/16").overlaps(c("10.88.4.0/24")));
        assert!(!c("10.88.0.0/24").overlaps(c("10.88.1.0/24")));
        assert!(c("10.0.0.0/8").overlaps(c("10.1.2.0/30")));
    }

    #[test]
    fn networks_vms_cannot_use_are_refused() {
        for (bad, what) in [
            ("0.0.0.0/8", "0.0.0.0/8"),
            ("127.0.0.0/8", "loopback"),
            ("127.1.0.0/16", "loopback"),
            ("224.0.0.0/24", "multicast"),
            ("255.255.255.0/24", "reserved"),
        ] {
            let err = Cidr::network(bad).unwrap_err();
            assert!(err.contains(what) && err.contains("10.88.0.0/24"), "{bad}: {err}");
        }
        for good in [
            "10.0.0.0/8",
            "192.168.1.0/24",
            "172.16.0.0/12",
            "1.0.0.0/8",
            "223.255.255.0/24",
        ] {
            assert!(Cidr::network(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_record_with_an_impossible_prefix_is_refused_as_it_is_read() {
        let read = |json: &str| serde_json::from_str::<Cidr>(json);
        let ok = read(r#"{"address":"10.0.0.0","prefix_len":24}"#).unwrap();
        assert_eq!(ok.to_string(), "10.0.0.0/24");
        for bad in [0, 7, 31, 40, 255] {
            let json = format!(r#"{{"address":"10.0.0.0","prefix_len":{bad}}}"#);
            let err = read(&json).unwrap_err().to_string();
            assert!(err.contains("expected 8 to 30"), "{err}");
        }
    }

    #[test]
    fn discovery_names() {
        assert_eq!(dns_discovery("dns:Web.mh.test."), Ok("web.mh.test".into()));
        for bad in [
            "web.mh.test",
            "dns:",
            "dns:a..b",
            "dns:-a.b",
            "dns:a b",
            "dns:a\"b",
        ] {
            assert!(dns_discovery(bad).is_err(), "{bad}");
        }
        assert!(network_name("lan").is_ok());
        assert!(network_name("a-very-long-name").is_err());
    }
}
