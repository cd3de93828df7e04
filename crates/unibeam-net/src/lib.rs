//! Named networks for unibeam instances (`unibeam network create|ls|rm`,
//! `run --network`): a rootless `user` driver, where QEMU carries the
//! segment over multicast on the host's loopback, and a `bridge` driver
//! (root), a Linux bridge with one tap per VM made over netlink, which an
//! uplink can join to other hosts.

pub mod names;
pub mod netlink;
pub mod networks;
pub mod store;
pub mod tap;

pub use names::NetworkName;
pub use networks::{create, join, leave, open_tap, remove, sweep, CreateRequest, Joined, NetworkError};
pub use store::{Driver, Lease, Network, NetworkStore};
