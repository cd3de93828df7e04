//! Clusters of unibeam instances described by a `unibeam.toml`: parsing
//! and checking it, laying out replicas on a private network, and the
//! per-cluster secrets kept on the host.

#![forbid(unsafe_code)]

pub mod config;
pub mod plan;
pub mod secret;
pub mod tls;
pub mod values;
pub mod volume;

pub use config::{load, Compose, ConfigError, Service, Source};
pub use plan::{plan, Member, Plan};
