//! A minimal DHCPv4 client (RFC 2131): DISCOVER, OFFER, REQUEST, ACK.
//!
//! Our own rather than dhcproto: that crate brings a DNS library into PID 1,
//! which ships in every image, for four fixed-layout messages.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Why no lease. Display and Error by hand, not thiserror: the fuzz
/// target compiles this file in on its own.
#[derive(Debug)]
pub enum DhcpError {
    /// A socket call failed; `what` names it.
    Socket {
        what: String,
        source: io::Error,
    },
    NoAnswer,
    Refused(Ipv4Addr),
}

impl fmt::Display for DhcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DhcpError::Socket { what, .. } => write!(f, "dhcp: {what}"),
            DhcpError::NoAnswer => write!(f, "dhcp: no answer from a DHCP server"),
            DhcpError::Refused(address) => write!(f, "dhcp: server refused {address} (NAK)"),
        }
    }
}

impl std::error::Error for DhcpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DhcpError::Socket { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// For `map_err`: a failed socket call named `what`.
fn failed(what: impl Into<String>) -> impl FnOnce(io::Error) -> DhcpError {
    move |source| DhcpError::Socket {
        what: what.into(),
        source,
    }
}

const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;
const OPT_SUBNET: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_MSG_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMS: u8 = 55;
const OPT_END: u8 = 255;

/// What the server leased us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Option<Ipv4Addr>,
    pub server: Ipv4Addr,
}

fn message(kind: u8, xid: u32, mac: [u8; 6], request: Option<(Ipv4Addr, Ipv4Addr)>) -> Vec<u8> {
    let mut m = vec![0u8; 240];
    m[0] = 1; // BOOTREQUEST
    m[1] = 1; // Ethernet
    m[2] = 6; // MAC length
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[10] = 0x80; // broadcast flag: we cannot take unicast before we have an address
    m[28..34].copy_from_slice(&mac);
    m[236..240].copy_from_slice(&MAGIC_COOKIE);
    m.extend([OPT_MSG_TYPE, 1, kind]);
    if let Some((address, server)) = request {
        m.extend([OPT_REQUESTED_IP, 4]);
        m.extend(address.octets());
        m.extend([OPT_SERVER_ID, 4]);
        m.extend(server.octets());
    }
    m.extend([OPT_PARAMS, 3, OPT_SUBNET, OPT_ROUTER, OPT_DNS, OPT_END]);
    m
}

/// A reply for our `xid`: its type and the lease it describes.
/// `pub(crate)` for the fuzz target, which compiles this module in.
pub(crate) fn parse_reply(data: &[u8], xid: u32) -> Option<(u8, Lease)> {
    if data.len() < 240 || data[0] != 2 || data[4..8] != xid.to_be_bytes() || data[236..240] != MAGIC_COOKIE {
        return None;
    }
    let address = Ipv4Addr::new(data[16], data[17], data[18], data[19]);
    let (mut kind, mut mask, mut gateway, mut dns, mut server) = (0, None, None, None, None);
    let mut opts = &data[240..];
    while let [code, rest @ ..] = opts {
        match *code {
            0 => {
                opts = rest;
                continue;
            }
            OPT_END => break,
            _ => {}
        }
        let [len, rest @ ..] = rest else { break };
        let len = *len as usize;
        if rest.len() < len {
            break;
        }
        let value = &rest[..len];
        let ip = || (len >= 4).then(|| Ipv4Addr::new(value[0], value[1], value[2], value[3]));
        match *code {
            OPT_MSG_TYPE if len == 1 => kind = value[0],
            OPT_SUBNET => mask = ip(),
            OPT_ROUTER => gateway = ip(),
            OPT_DNS => dns = ip(),
            OPT_SERVER_ID => server = ip(),
            _ => {}
        }
        opts = &rest[len..];
    }
    let prefix_len = mask.map_or(24, |m| u32::from(m).count_ones() as u8);
    let server = server.unwrap_or(Ipv4Addr::BROADCAST);
    Some((
        kind,
        Lease {
            address,
            prefix_len,
            gateway,
            dns,
            server,
        },
    ))
}

fn socket(interface: &str) -> Result<UdpSocket, DhcpError> {
    let sock = UdpSocket::bind("0.0.0.0:68").map_err(failed("bind :68"))?;
    sock.set_broadcast(true).map_err(failed("SO_BROADCAST"))?;
    // SAFETY: setsockopt reads `interface.len()` bytes from a live buffer.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            interface.as_ptr().cast(),
            interface.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(failed(format!("SO_BINDTODEVICE {interface}"))(
            io::Error::last_os_error(),
        ));
    }
    Ok(sock)
}

/// Sends `request` until a reply of one of `wanted` kinds arrives.
fn exchange(
    sock: &UdpSocket,
    request: &[u8],
    xid: u32,
    wanted: &[u8],
    deadline: Instant,
) -> Result<(u8, Lease), DhcpError> {
    let server = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        sock.send_to(request, server).map_err(failed("send"))?;
        let resend_at = Instant::now() + Duration::from_millis(700);
        while Instant::now() < resend_at.min(deadline) {
            let wait = resend_at.min(deadline).saturating_duration_since(Instant::now());
            sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
                .map_err(failed("SO_RCVTIMEO"))?;
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                break;
            };
            if let Some((kind, lease)) = parse_reply(&buf[..n], xid) {
                if wanted.contains(&kind) {
                    return Ok((kind, lease));
                }
            }
        }
    }
    Err(DhcpError::NoAnswer)
}

/// Runs DISCOVER/OFFER/REQUEST/ACK on `interface` (up, no address yet).
pub fn lease(interface: &str, mac: [u8; 6], xid: u32, timeout: Duration) -> Result<Lease, DhcpError> {
    let sock = socket(interface)?;
    let deadline = Instant::now() + timeout;
    let (_, offer) = exchange(&sock, &message(DISCOVER, xid, mac, None), xid, &[OFFER], deadline)?;
    let request = message(REQUEST, xid, mac, Some((offer.address, offer.server)));
    match exchange(&sock, &request, xid, &[ACK, NAK], deadline)? {
        (ACK, lease) => Ok(lease),
        _ => Err(DhcpError::Refused(offer.address)),
    }
}

/// `52:54:00:12:34:56` → bytes; anything but six two-digit hex octets is
/// refused.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut octets = text.trim().split(':');
    for byte in &mut mac {
        let h = octets.next()?;
        if h.len() != 2 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(h, 16).ok()?;
    }
    octets.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(kind: u8, xid: u32) -> Vec<u8> {
        let mut m = message(kind, xid, [1, 2, 3, 4, 5, 6], None);
        m[0] = 2;
        m[16..20].copy_from_slice(&[10, 0, 2, 15]);
        m.truncate(240);
        m.extend([
            OPT_MSG_TYPE,
            1,
            kind,
            OPT_SUBNET,
            4,
            255,
            255,
            255,
            0,
            OPT_ROUTER,
            4,
            10,
            0,
            2,
            2,
        ]);
        m.extend([OPT_DNS, 4, 10, 0, 2, 3, OPT_SERVER_ID, 4, 10, 0, 2, 2, OPT_END]);
        m
    }

    #[test]
    fn discover_has_the_fixed_layout() {
        let m = message(DISCOVER, 0xdeadbeef, [0x52, 0x54, 0, 0x12, 0x34, 0x56], None);
        assert_eq!(&m[..4], &[1, 1, 6, 0]);
        assert_eq!(&m[4..8], &0xdeadbeefu32.to_be_bytes());
        assert_eq!(m[10], 0x80);
        assert_eq!(&m[28..34], &[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(&m[236..243], &[99, 130, 83, 99, OPT_MSG_TYPE, 1, DISCOVER]);
        assert_eq!(*m.last().unwrap(), OPT_END);
    }

    #[test]
    fn offers_parse_into_a_lease() {
        let (kind, lease) = parse_reply(&reply(OFFER, 7), 7).unwrap();
        assert_eq!(kind, OFFER);
        assert_eq!(
            lease,
            Lease {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: Some(Ipv4Addr::new(10, 0, 2, 3)),
                server: Ipv4Addr::new(10, 0, 2, 2),
            }
        );
        assert!(parse_reply(&reply(OFFER, 7), 8).is_none(), "other xid");
        assert!(parse_reply(&reply(OFFER, 7)[..100], 7).is_none(), "truncated");
    }

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("52:54:00:12:34:56\n"),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        assert_eq!(parse_mac("nope"), None);
    }

    #[test]
    fn macs_with_bad_octets_are_refused() {
        for bad in [
            "52:54:00:zz:00:01:02",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:5",
            "52:54:00:12:34:567",
            "52:54:00:12:34:+5",
            "52:54:00::12:34:56",
            "",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }
}
