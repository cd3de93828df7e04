//! Into a running instance over its node's distribution: `rpc`, the
//! figures `top` and the monitor read, and `remsh`'s target.

use std::path::Path;
use std::time::Duration;
use thiserror::Error;
use unibeam_dist::metrics::{self, Sample};
use unibeam_dist::{DistError, Lang, Node, Target};
use unibeam_spec::hostfs::{self, PathIo};
use unibeam_vmm::state::{DistEndpoint, InstanceName, StateError, Store};

#[derive(Debug, Error)]
pub enum RemoteError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("instance {0} is not running; `unibeam start {0}` starts it again")]
    NotRunning(InstanceName),
    #[error("instance {0} has no distribution (it was run with --no-dist, or by an older unibeam); run it again without --no-dist")]
    NoDist(InstanceName),
    #[error("reading the node's cookie")]
    Cookie(#[source] PathIo),
    #[error("instance {name} ({node})")]
    Dist {
        name: InstanceName,
        node: String,
        #[source]
        source: DistError,
    },
}

/// A running instance's distribution endpoint and cookie.
pub fn target(store: &Store, name: &InstanceName) -> Result<(DistEndpoint, Target), RemoteError> {
    let record = store.load(name)?;
    if record.observed_status().is_down() {
        return Err(RemoteError::NotRunning(name.clone()));
    }
    let dist = record.dist.ok_or_else(|| RemoteError::NoDist(name.clone()))?;
    let cookie = read_cookie(&dist.cookie_file)?;
    let target = Target {
        port: dist.port,
        cookie,
        tls: dist.tls.as_ref().map(|t| unibeam_dist::TlsClient {
            ca: t.ca.clone(),
            cert: t.cert.clone(),
            key: t.key.clone(),
            server_name: t.server_name.clone(),
        }),
    };
    Ok((dist, target))
}

fn read_cookie(path: &Path) -> Result<String, RemoteError> {
    let bytes = hostfs::read_limited(path, crate::settings::COOKIE_FILE_MAX).map_err(RemoteError::Cookie)?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_string())
}

/// A connection to `name`'s node; each call may take `timeout`.
pub fn connect(store: &Store, name: &InstanceName, timeout: Duration) -> Result<Node, RemoteError> {
    let (dist, target) = target(store, name)?;
    Node::connect(&target, timeout).map_err(|source| RemoteError::Dist {
        name: name.clone(),
        node: dist.node,
        source,
    })
}

/// Evaluates `expr` on `name`'s node; its value as the node prints it.
pub fn rpc(
    store: &Store,
    name: &InstanceName,
    lang: Lang,
    expr: &str,
    timeout: Duration,
) -> Result<String, RemoteError> {
    let node = connect(store, name, timeout)?;
    node.eval(lang, expr).map_err(|source| RemoteError::Dist {
        name: name.clone(),
        node: node.name().to_string(),
        source,
    })
}

/// `name`'s figures now.
pub fn sample(store: &Store, name: &InstanceName, timeout: Duration) -> Result<Sample, RemoteError> {
    sample_on(name, &connect(store, name, timeout)?)
}

/// `name`'s figures, over a connection already open to its node.
pub fn sample_on(name: &InstanceName, node: &Node) -> Result<Sample, RemoteError> {
    metrics::sample(node).map_err(|source| RemoteError::Dist {
        name: name.clone(),
        node: node.name().to_string(),
        source,
    })
}
