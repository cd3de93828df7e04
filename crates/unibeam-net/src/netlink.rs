//! The host side of a bridge network, over rtnetlink: the bridge, its
//! address, its uplink, and taps made bridge ports. Each call runs on a
//! short-lived current-thread runtime: callers are synchronous, and a
//! network command makes a handful of requests.

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec};
use std::net::{IpAddr, Ipv4Addr};
use thiserror::Error;
use unibeam_cluster::values::Cidr;

#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error("opening a netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("{what}")]
    Request {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("no interface {0} on this host (`ip link` lists them)")]
    NoSuchLink(String),
}

fn failed(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request { what, source }
}

/// Runs `f` with a netlink handle.
fn with_handle<T, F, Fut>(f: F) -> Result<T, NetlinkError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: std::future::Future<Output = Result<T, NetlinkError>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(NetlinkError::Socket)?;
    runtime.block_on(async move {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        tokio::spawn(connection);
        f(handle).await
    })
}

async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>, NetlinkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        // The kernel answers ENODEV for a name it does not know.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(failed(format!("looking up interface {name}"))(e)),
    }
}

/// Whether an interface of that name exists.
pub fn link_exists(name: &str) -> Result<bool, NetlinkError> {
    let name = name.to_string();
    with_handle(|h| async move { Ok(index_of(&h, &name).await?.is_some()) })
}

/// Makes bridge `name` with the host address `gateway`/prefix, up, with
/// `uplink` (if any) as a port.
pub fn create_bridge(name: &str, gateway: Cidr, uplink: Option<&str>) -> Result<(), NetlinkError> {
    let (name, uplink) = (name.to_string(), uplink.map(str::to_string));
    with_handle(|h| async move {
        h.link()
            .add(LinkBridge::new(&name).build())
            .execute()
            .await
            .map_err(failed(format!("creating bridge {name}")))?;
        let index = index_of(&h, &name)
            .await?
            .ok_or_else(|| NetlinkError::NoSuchLink(name.clone()))?;
        h.address()
            .add(index, IpAddr::V4(gateway.address), gateway.prefix_len)
            .execute()
            .await
            .map_err(failed(format!("adding {gateway} to bridge {name}")))?;
        if let Some(uplink) = uplink {
            make_port(&h, &uplink, index).await?;
        }
        Ok(())
    })
}

async fn make_port(h: &Handle, port: &str, bridge: u32) -> Result<(), NetlinkError> {
    let index = index_of(h, port)
        .await?
        .ok_or_else(|| NetlinkError::NoSuchLink(port.to_string()))?;
    h.link()
        .set(LinkUnspec::new_with_index(index).controller(bridge).up().build())
        .execute()
        .await
        .map_err(failed(format!("adding {port} to the bridge")))
}

/// Makes `port` (a tap) a port of `bridge`, and up.
pub fn attach(port: &str, bridge: &str) -> Result<(), NetlinkError> {
    let (port, bridge) = (port.to_string(), bridge.to_string());
    with_handle(|h| async move {
        let index = index_of(&h, &bridge)
            .await?
            .ok_or(NetlinkError::NoSuchLink(bridge))?;
        make_port(&h, &port, index).await
    })
}

/// Deletes interface `name`; one that is gone already is fine.
pub fn delete_link(name: &str) -> Result<(), NetlinkError> {
    let name = name.to_string();
    with_handle(|h| async move {
        let Some(index) = index_of(&h, &name).await? else {
            return Ok(());
        };
        h.link()
            .del(index)
            .execute()
            .await
            .map_err(failed(format!("deleting interface {name}")))
    })
}

/// Names of every interface whose name starts with `prefix`, with the
/// index of its bridge (controller) if it has one.
pub fn links_named(prefix: &str) -> Result<Vec<(String, Option<u32>, u32)>, NetlinkError> {
    let prefix = prefix.to_string();
    with_handle(|h| async move {
        let mut links = h.link().get().execute();
        let mut found = Vec::new();
        while let Some(link) = links.try_next().await.map_err(failed("listing interfaces"))? {
            if let Some(name) = link_name(&link).filter(|n| n.starts_with(&prefix)) {
                found.push((name, controller(&link), link.header.index));
            }
        }
        Ok(found)
    })
}

fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn controller(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

/// Every IPv4 network configured on this host's interfaces, with the
/// interface's index: a new network must not overlap one of them.
pub fn host_networks() -> Result<Vec<(Cidr, u32)>, NetlinkError> {
    with_handle(|h| async move {
        let mut addresses = h.address().get().execute();
        let mut found = Vec::new();
        while let Some(a) = addresses.try_next().await.map_err(failed("listing addresses"))? {
            let ip = a.attributes.iter().find_map(|at| match at {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if let Some(address) = ip.filter(|ip| !ip.is_loopback()) {
                found.push((
                    Cidr {
                        address,
                        prefix_len: a.header.prefix_len.max(1),
                    },
                    a.header.index,
                ));
            }
        }
        Ok(found)
    })
}

/// The host's own address on a network: the bridge's.
pub fn gateway_cidr(gateway: Ipv4Addr, subnet: Cidr) -> Cidr {
    Cidr {
        address: gateway,
        prefix_len: subnet.prefix_len,
    }
}
