//! The way into a running unibeam VM: the BEAM's own distribution, over
//! the distribution port the VM publishes on the host's loopback. No
//! EPMD (the guest has none) and no host `erl`: the protocol is
//! `erl_dist`'s and the calls go through `erl_rpc` (`erpc` on the node).
//!
//! [`Node::connect`] opens a hidden connection; [`Node::eval`] evaluates
//! an Erlang or Elixir expression there; [`metrics::sample`] reads the
//! figures `unibeam top` and the monitor's history show.

#![forbid(unsafe_code)]

pub mod json;
pub mod metrics;
mod node;
mod tls;

pub use node::{DistError, Lang, Node, Target};
pub use tls::{TlsClient, TlsError};
