//! Brings up `lo` and the NIC with the classic SIOCSIF*/SIOCADDRT ioctls.
//!
//! rtnetlink would pull an async runtime into PID 1 for five calls; the
//! ioctls are synchronous and need nothing but libc.

use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};
use thiserror::Error;
use unibeam_spec::{NetworkSpec, PrivateNic};

#[derive(Debug, Error)]
pub enum NetError {
    /// A socket call or ioctl failed; `what` names it.
    #[error("{what}")]
    Call {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("interface name too long: {0}")]
    NameTooLong(String),
    #[error("{name}: no such interface after {limit:?}; is virtio-net attached?")]
    NoInterface { name: String, limit: Duration },
    #[error("/sys/class/net/{0}/address: no MAC address")]
    NoMac(String),
    #[error("{0:?} is not a MAC address")]
    BadMac(String),
    #[error("no NIC with MAC {mac} after {limit:?}; is the private network attached?")]
    NoPrivateNic { mac: String, limit: Duration },
    #[error("no second NIC for the user network")]
    NoSecondNic,
    #[error(transparent)]
    Dhcp(#[from] crate::dhcp::DhcpError),
    #[error("sethostname {name}")]
    Hostname {
        name: String,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("{path}")]
    Write {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// For `map_err`: a failed call named `what`.
fn failed(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    move |source| NetError::Call {
        what: what.into(),
        source,
    }
}

struct Socket(OwnedFd);

impl Socket {
    fn new() -> Result<Socket, NetError> {
        // SAFETY: plain socket(2) call; the returned fd is checked before use
        // and owned by OwnedFd from then on.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(failed("socket")(std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        Ok(Socket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Issues an ioctl whose argument is a `T` that the kernel reads or fills.
    fn ioctl<T>(&self, request: libc::c_ulong, arg: &mut T, what: &str) -> Result<(), NetError> {
        // SAFETY: every request used here takes a pointer to a struct of
        // exactly type T (ifreq or rtentry), which lives for the whole call.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), request, arg as *mut T) };
        if rc < 0 {
            return Err(failed(what)(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

fn ifreq(name: &str) -> Result<libc::ifreq, NetError> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(NetError::NameTooLong(name.into()));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux, and the
    // kernel reads an AF_INET sockaddr as sockaddr_in.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn set_up(sock: &Socket, name: &str) -> Result<(), NetError> {
    let mut req = ifreq(name)?;
    sock.ioctl(libc::SIOCGIFFLAGS, &mut req, &format!("{name}: get flags"))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    sock.ioctl(libc::SIOCSIFFLAGS, &mut req, &format!("{name}: set up"))
}

fn set_addr(sock: &Socket, name: &str, request: libc::c_ulong, addr: Ipv4Addr) -> Result<(), NetError> {
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr(addr);
    sock.ioctl(request, &mut req, &format!("{name}: set {addr}"))
}

fn add_default_route(sock: &Socket, gateway: Ipv4Addr) -> Result<(), NetError> {
    // SAFETY: rtentry is plain old data; all-zero is a valid value.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_gateway = sockaddr(gateway);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    sock.ioctl(
        libc::SIOCADDRT,
        &mut route,
        &format!("default route via {gateway}"),
    )
}

/// Calls `probe` every 10 ms until it finds something or `limit` passes:
/// NICs appear only once their driver has probed.
fn poll<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for_interface(name: &str, limit: Duration) -> Result<(), NetError> {
    let path = Path::new("/sys/class/net").join(name);
    poll(limit, || path.exists().then_some(())).ok_or_else(|| NetError::NoInterface {
        name: name.into(),
        limit,
    })
}

/// The MAC address the kernel reports for `interface`.
fn mac_of(interface: &str) -> Option<[u8; 6]> {
    let text = fs::read_to_string(format!("/sys/class/net/{interface}/address")).ok()?;
    crate::dhcp::parse_mac(&text)
}

/// What the interface ends up with.
struct Addressing {
    address: Ipv4Addr,
    prefix_len: u8,
    gateway: Option<Ipv4Addr>,
    dns: Option<Ipv4Addr>,
    how: String,
}

fn lease(interface: &str) -> Result<Addressing, NetError> {
    let mac = mac_of(interface).ok_or_else(|| NetError::NoMac(interface.into()))?;
    let xid = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ std::process::id();
    let lease = crate::dhcp::lease(interface, mac, xid, Duration::from_secs(10))?;
    Ok(Addressing {
        address: lease.address,
        prefix_len: lease.prefix_len,
        gateway: lease.gateway,
        dns: lease.dns,
        how: format!("DHCP lease from {}", lease.server),
    })
}

/// Brings up `lo` and the NIC (static or DHCP), sets the hostname and
/// writes the resolver files. Returns a one-line description.
pub fn configure(net: &NetworkSpec, hostname: &str) -> Result<String, NetError> {
    let sock = Socket::new()?;
    set_up(&sock, "lo")?;
    let mut private_line = String::new();
    let mut main = net.interface.clone();
    if let Some(private) = &net.private {
        let name = configure_private(&sock, private)?;
        if name == main {
            // The private NIC probed first and took the main NIC's name.
            main = other_interface(&name).ok_or(NetError::NoSecondNic)?;
        }
        private_line = format!(", {name} {}/{} (private)", private.address, private.prefix_len);
    }
    let net = &NetworkSpec {
        interface: main,
        ..net.clone()
    };
    wait_for_interface(&net.interface, Duration::from_secs(5))?;
    let addressing = if net.dhcp {
        // DHCP talks over the interface before it has an address.
        set_up(&sock, &net.interface)?;
        lease(&net.interface)?
    } else {
        Addressing {
            address: net.address,
            prefix_len: net.prefix_len,
            gateway: Some(net.gateway),
            dns: Some(net.dns),
            how: "static".into(),
        }
    };
    set_addr(&sock, &net.interface, libc::SIOCSIFADDR, addressing.address)?;
    set_addr(
        &sock,
        &net.interface,
        libc::SIOCSIFNETMASK,
        unibeam_spec::netmask(addressing.prefix_len),
    )?;
    set_up(&sock, &net.interface)?;
    if let Some(gateway) = addressing.gateway {
        add_default_route(&sock, gateway)?;
    }
    nix::unistd::sethostname(hostname).map_err(|source| NetError::Hostname {
        name: hostname.into(),
        source,
    })?;
    write_resolver_files(addressing.address, addressing.dns, hostname)?;
    Ok(format!(
        "{} {}/{} ({}){private_line}",
        net.interface, addressing.address, addressing.prefix_len, addressing.how
    ))
}

/// Interface names other than `lo`, sorted.
fn interfaces() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/net")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n != "lo")
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn other_interface(not: &str) -> Option<String> {
    interfaces().into_iter().find(|n| n != not)
}

fn interface_with_mac(mac: &str, limit: Duration) -> Result<String, NetError> {
    let wanted = crate::dhcp::parse_mac(mac).ok_or_else(|| NetError::BadMac(mac.into()))?;
    poll(limit, || {
        interfaces().into_iter().find(|name| mac_of(name) == Some(wanted))
    })
    .ok_or_else(|| NetError::NoPrivateNic {
        mac: mac.into(),
        limit,
    })
}

/// Gives the cluster NIC its static address; no route beyond its subnet.
fn configure_private(sock: &Socket, private: &PrivateNic) -> Result<String, NetError> {
    let name = interface_with_mac(&private.mac, Duration::from_secs(5))?;
    set_addr(sock, &name, libc::SIOCSIFADDR, private.address)?;
    set_addr(
        sock,
        &name,
        libc::SIOCSIFNETMASK,
        unibeam_spec::netmask(private.prefix_len),
    )?;
    set_up(sock, &name)?;
    Ok(name)
}

/// /etc/hosts and /etc/resolv.conf, so the BEAM's native resolver works
/// without any helper daemon.
fn write_resolver_files(address: Ipv4Addr, dns: Option<Ipv4Addr>, hostname: &str) -> Result<(), NetError> {
    let write = |path: &'static str, text: String| {
        fs::write(path, text).map_err(|source| NetError::Write { path, source })
    };
    write(
        "/etc/hosts",
        format!("127.0.0.1\tlocalhost\n{address}\t{hostname}\n"),
    )?;
    write(
        "/etc/resolv.conf",
        dns.map(|d| format!("nameserver {d}\n")).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_is_network_order_inet() {
        let sa = sockaddr(Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        // sin_port (2 bytes) then the address bytes in network order.
        let bytes: Vec<u8> = sa.sa_data.iter().map(|b| *b as u8).collect();
        assert_eq!(&bytes[2..6], &[10, 0, 2, 15]);
    }

    #[test]
    fn long_interface_names_are_refused() {
        assert!(ifreq("eth0").is_ok());
        assert!(ifreq("a-very-long-interface-name").is_err());
    }
}
