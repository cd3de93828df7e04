//! `unibeam.toml`: the services to run, how many of each, and the cluster
//! they form. Every error names the file, the line and the column.

use crate::values::{self, parse_memory, parse_port_pair, Cidr};
use crate::volume::VolumeRequest;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use thiserror::Error;
use toml::Spanned;
use unibeam_spec::hostfs::{self, PathIo};
use unibeam_vmm::state::Restart;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// The whole file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    #[serde(default)]
    cluster: ClusterSection,
    services: BTreeMap<String, Spanned<RawService>>,
}

/// `[cluster]`: settings shared by every member.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSection {
    /// Default: the name of the directory holding unibeam.toml.
    name: Option<Spanned<String>>,
    /// The private network's addresses, e.g. "10.77.0.0/24".
    #[serde(default = "default_subnet")]
    subnet: Spanned<String>,
    #[serde(default = "default_ticktime")]
    net_ticktime: Spanned<u32>,
    /// TLS distribution (`inet_tls_dist`), certificates from the cluster's CA.
    #[serde(default = "no_tls")]
    tls: Spanned<bool>,
    /// The cookie, from a file shared by every host of a cluster that
    /// spans hosts; default: one made for this cluster on this host.
    cookie_file: Option<Spanned<PathBuf>>,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            name: None,
            subnet: default_subnet(),
            net_ticktime: default_ticktime(),
            tls: Spanned::new(0..0, false),
            cookie_file: None,
        }
    }
}

fn default_subnet() -> Spanned<String> {
    Spanned::new(0..0, "10.77.0.0/24".into())
}

fn no_tls() -> Spanned<bool> {
    Spanned::new(0..0, false)
}

fn default_ticktime() -> Spanned<u32> {
    Spanned::new(0..0, 10)
}

/// `[services.<name>]`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    /// A release directory, tarball or project to build.
    release: Option<Spanned<PathBuf>>,
    /// An image directory from `unibeam build`.
    image: Option<Spanned<PathBuf>>,
    #[serde(default = "one")]
    replicas: Spanned<u32>,
    /// `HOST:GUEST`; replica i publishes HOST + i - 1.
    #[serde(default)]
    ports: Vec<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, String>,
    /// e.g. "128M".
    memory: Option<Spanned<String>>,
    /// `no`, `on-failure[:N]` or `always`.
    #[serde(default = "always")]
    restart: Spanned<String>,
    /// Whether the replicas join the cluster's mesh.
    #[serde(default = "yes")]
    cluster: bool,
    /// `NAME:/path[:ro]`: each replica gets its own volume NAME.
    #[serde(default)]
    volumes: Vec<Spanned<String>>,
    /// A named network (`unibeam network create`) instead of the cluster's
    /// own segment.
    network: Option<Spanned<String>>,
    /// `dns:NAME`: peers are the A records of NAME, nodes `<service>@<ip>`.
    discovery: Option<Spanned<String>>,
    /// Start from a saved state (`run --snapshot`); each replica its own.
    #[serde(default = "no_snapshot")]
    snapshot: Spanned<bool>,
}

/// Where a service's image comes from; paths are relative to the
/// directory of unibeam.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A release directory, tarball or project, built by `up`.
    Release(PathBuf),
    /// An image directory from `unibeam build`.
    Image(PathBuf),
}

/// A service, checked and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub source: Source,
    pub replicas: u32,
    /// (host, guest); replica i publishes host + i - 1.
    pub ports: Vec<(u16, u16)>,
    pub env: Vec<(String, String)>,
    pub memory_mib: Option<u32>,
    pub restart: Restart,
    /// Whether the replicas join the cluster's mesh.
    pub meshed: bool,
    /// Volumes; replica i attaches `<instance>-<NAME>`, its own.
    pub volumes: Vec<VolumeRequest>,
    /// A named network the replicas join.
    pub network: Option<String>,
    /// The DNS name whose A records are the service's members.
    pub discovery: Option<String>,
    /// Replicas start from their own saved state after their first boot.
    pub snapshot: bool,
}

fn no_snapshot() -> Spanned<bool> {
    Spanned::new(0..0, false)
}

fn one() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

fn yes() -> bool {
    true
}

fn always() -> Spanned<String> {
    Spanned::new(0..0, "always".into())
}

/// A parsed and checked unibeam.toml: every value already in its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compose {
    pub path: PathBuf,
    pub name: String,
    /// The private network, e.g. 10.77.0.0/24.
    pub subnet: Cidr,
    pub net_ticktime_s: u32,
    pub services: BTreeMap<String, Service>,
    /// Distribution over TLS (`tls = true`).
    pub tls: bool,
    /// `cookie_file`, relative to the file's directory.
    pub cookie_file: Option<PathBuf>,
}

impl Compose {
    /// The directory relative paths in the file start from.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Checker<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// A cluster or service name: lowercase letters, digits and `-`, starting
/// with a letter, at most 24 characters (it becomes part of instance and
/// node names, and of paths).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 24
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Reads and checks `path`, and that every image and release it names is
/// there; relative paths inside stay relative to it.
pub fn load(path: &Path) -> Result<Compose, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(hostfs::at::<PathIo>(path))?;
    let (compose, file) = parse_file(path, &text)?;
    check_sources(&Checker { path, text: &text }, &compose, &file)?;
    Ok(compose)
}

/// An image must hold image.json; a release must at least exist (building
/// it says what else is wrong, still before any VM starts).
fn check_sources(check: &Checker, compose: &Compose, file: &ClusterFile) -> Result<(), ConfigError> {
    let base = compose.base_dir();
    if let Some(cookie) = &file.cluster.cookie_file {
        let path = base.join(cookie.get_ref());
        if let Err(e) = std::fs::metadata(&path) {
            return Err(check.error(cookie.span(), format!("cookie_file: {}: {e}", path.display())));
        }
    }
    for (name, svc) in &file.services {
        let svc = svc.get_ref();
        if let Some(image) = &svc.image {
            let dir = base.join(image.get_ref());
            if !dir.join("image.json").is_file() {
                return Err(check.error(
                    image.span(),
                    format!(
                        "service {name}: image: {} is not a unibeam image (no image.json); build it with `unibeam build`",
                        dir.display()
                    ),
                ));
            }
        }
        if let Some(release) = &svc.release {
            let path = base.join(release.get_ref());
            if let Err(e) = std::fs::metadata(&path) {
                return Err(check.error(
                    release.span(),
                    format!("service {name}: release: {}: {e}", path.display()),
                ));
            }
        }
    }
    Ok(())
}

/// Parses and checks `text` (the contents of `path`) without looking at
/// the files it names.
pub fn parse(path: &Path, text: &str) -> Result<Compose, ConfigError> {
    parse_file(path, text).map(|(compose, _)| compose)
}

fn parse_file(path: &Path, text: &str) -> Result<(Compose, ClusterFile), ConfigError> {
    let check = Checker { path, text };
    let file: ClusterFile = toml::from_str(text).map_err(|e| {
        // toml's message repeats the snippet over several lines; keep the
        // last line, which says what was expected.
        let message = e.message().lines().last().unwrap_or("invalid TOML").to_string();
        check.error(e.span().unwrap_or(0..0), message)
    })?;
    let name = match &file.cluster.name {
        Some(n) if !valid_name(n.get_ref()) => {
            return Err(check.error(
                n.span(),
                "cluster name: use a-z, 0-9 and '-', at most 24, starting with a letter",
            ))
        }
        Some(n) => n.get_ref().clone(),
        None => default_name(path),
    };
    let subnet = check_cluster(&check, &file.cluster)?;
    if file.services.is_empty() {
        return Err(check.error(0..0, "no [services.<name>] table: expected at least one service"));
    }
    let mut services = BTreeMap::new();
    for (svc, spanned) in &file.services {
        services.insert(svc.clone(), check_service(&check, svc, spanned)?);
    }
    check_host_ports(&check, &file)?;
    let compose = Compose {
        path: path.to_path_buf(),
        name,
        subnet,
        net_ticktime_s: *file.cluster.net_ticktime.get_ref(),
        services,
        tls: *file.cluster.tls.get_ref(),
        cookie_file: file.cluster.cookie_file.as_ref().map(|f| f.get_ref().clone()),
    };
    Ok((compose, file))
}

fn default_name(path: &Path) -> String {
    let dir = std::fs::canonicalize(path)
        .ok()
        .and_then(|p| p.parent()?.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let name: String = dir
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(24)
        .collect();
    if valid_name(&name) {
        name
    } else {
        "cluster".into()
    }
}

/// The subnet, once `[cluster]` is checked.
fn check_cluster(check: &Checker, c: &ClusterSection) -> Result<Cidr, ConfigError> {
    let subnet = Cidr::network(c.subnet.get_ref())
        .map_err(|m| check.error(c.subnet.span(), format!("subnet: {m}")))?;
    let ticktime = &c.net_ticktime;
    if !(2..=600).contains(ticktime.get_ref()) {
        let message = format!(
            "net_ticktime: expected seconds between 2 and 600, found {}",
            ticktime.get_ref()
        );
        return Err(check.error(ticktime.span(), message));
    }
    Ok(subnet)
}

fn check_service(check: &Checker, name: &str, spanned: &Spanned<RawService>) -> Result<Service, ConfigError> {
    let s = spanned.get_ref();
    let at = spanned.span();
    if !valid_name(name) {
        return Err(check.error(
            at,
            format!("service {name:?}: use a-z, 0-9 and '-', at most 24, starting with a letter"),
        ));
    }
    let source = match (&s.release, &s.image) {
        (Some(release), None) => Source::Release(release.get_ref().clone()),
        (None, Some(image)) => Source::Image(image.get_ref().clone()),
        _ => {
            return Err(check.error(
                at,
                format!("service {name}: expected exactly one of `release` or `image`"),
            ))
        }
    };
    if !(1..=64).contains(s.replicas.get_ref()) {
        let message = format!(
            "service {name}: replicas: expected 1 to 64, found {}",
            s.replicas.get_ref()
        );
        return Err(check.error(s.replicas.span(), message));
    }
    let ports = s
        .ports
        .iter()
        .map(|port| {
            parse_port_pair(port.get_ref())
                .map_err(|m| check.error(port.span(), format!("service {name}: ports: {m}")))
        })
        .collect::<Result<_, _>>()?;
    let memory_mib = match &s.memory {
        Some(memory) => Some(
            parse_memory(memory.get_ref())
                .map_err(|m| check.error(memory.span(), format!("service {name}: memory: {m}")))?,
        ),
        None => None,
    };
    let volumes = s
        .volumes
        .iter()
        .map(|v| {
            v.get_ref()
                .parse::<VolumeRequest>()
                .map_err(|m| check.error(v.span(), format!("service {name}: volumes: {m}")))
        })
        .collect::<Result<_, _>>()?;
    let env = check_env(check, name, &s.env)?;
    let (network, discovery) = check_network(check, name, s)?;
    let snapshot = *s.snapshot.get_ref();
    if snapshot && !s.volumes.is_empty() {
        return Err(check.error(
            s.snapshot.span(),
            format!(
                "service {name}: snapshot = true with volumes: a saved state would not match \
                 the volume's later contents; drop one of them"
            ),
        ));
    }
    let restart = s
        .restart
        .get_ref()
        .parse()
        .map_err(|e: unibeam_vmm::state::StateError| {
            check.error(s.restart.span(), format!("service {name}: restart: {e}"))
        })?;
    Ok(Service {
        source,
        replicas: *s.replicas.get_ref(),
        ports,
        env,
        memory_mib,
        restart,
        meshed: s.cluster,
        volumes,
        network,
        discovery,
        snapshot,
    })
}

/// `network` names a network; `discovery` is `dns:NAME` and needs one (the
/// cluster's own segment has no DNS server).
fn check_network(
    check: &Checker,
    name: &str,
    s: &RawService,
) -> Result<(Option<String>, Option<String>), ConfigError> {
    let network = match &s.network {
        Some(n) => Some(
            values::network_name(n.get_ref())
                .map_err(|m| check.error(n.span(), format!("service {name}: network: {m}")))?,
        ),
        None => None,
    };
    let discovery = match &s.discovery {
        Some(d) if network.is_none() => {
            return Err(check.error(
                d.span(),
                format!("service {name}: discovery needs `network = \"NAME\"`, a network whose --dns answers the name"),
            ))
        }
        Some(d) => Some(
            values::dns_discovery(d.get_ref())
                .map_err(|m| check.error(d.span(), format!("service {name}: discovery: {m}")))?,
        ),
        None => None,
    };
    Ok((network, discovery))
}

fn check_env(
    check: &Checker,
    name: &str,
    env: &BTreeMap<Spanned<String>, String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    env.iter()
        .map(|(key, value)| {
            let k = key.get_ref();
            if k.is_empty() || k.contains(|c: char| c.is_whitespace() || c == '=' || c == '\0') {
                return Err(check.error(
                    key.span(),
                    format!("service {name}: env: key {k:?}: a variable name has no white space, '=' or NUL"),
                ));
            }
            Ok((k.clone(), value.clone()))
        })
        .collect()
}

/// Every host port each replica publishes must be a port, and only one
/// service's: QEMU would fail on the second, after the first VMs started.
fn check_host_ports(check: &Checker, file: &ClusterFile) -> Result<(), ConfigError> {
    // In file order, so the second of two users is the one named.
    let mut ports: Vec<(&str, u32, &Spanned<String>)> = file
        .services
        .iter()
        .flat_map(|(name, svc)| {
            let replicas = *svc.get_ref().replicas.get_ref();
            svc.get_ref()
                .ports
                .iter()
                .map(move |p| (name.as_str(), replicas, p))
        })
        .collect();
    ports.sort_by_key(|(_, _, p)| p.span().start);
    let mut taken: BTreeMap<u32, (&str, u32)> = BTreeMap::new();
    for (name, replicas, port) in ports {
        let (host, _) = parse_port_pair(port.get_ref()).map_err(|m| check.error(port.span(), m))?;
        let last = u32::from(host) + replicas - 1;
        if last > u32::from(u16::MAX) {
            return Err(check.error(
                port.span(),
                format!(
                    "service {name}: ports: {:?} with {replicas} replicas publishes up to port {last}, beyond 65535",
                    port.get_ref()
                ),
            ));
        }
        for (i, host) in (u32::from(host)..=last).enumerate() {
            if let Some((other, replica)) = taken.insert(host, (name, i as u32 + 1)) {
                return Err(check.error(
                    port.span(),
                    format!("service {name}: ports: host port {host} is already published by service {other} (replica {replica})"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
