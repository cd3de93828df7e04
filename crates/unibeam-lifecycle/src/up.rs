//! `up`: every service of a unibeam.toml, started detached, on a private
//! network, meshed into one Erlang cluster. What fails half-way is torn
//! down again.

use crate::clusters::{cluster_dir, kept_log, COOKIE_FILE, IMAGES_DIR, PLAN_FILE};
use crate::down::tear_down;
use crate::images::{self, BuildSettings, ImagesError};
use crate::instances::{self, InstancesError};
use crate::progress::Progress;
use crate::progress::Recorded;
use crate::settings::{LinkCarrier, Membership, PrivateLink};
use crate::vm::{VmError, VmSpec};
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;
use unibeam_cluster::secret::{self, SecretError};
use unibeam_cluster::values::Cidr;
use unibeam_cluster::volume::VolumeRequest;
use unibeam_cluster::{plan, Compose, Member, Plan, Service, Source};
use unibeam_spec::hostfs::{self, PathIo};
use unibeam_spec::milestone;
use unibeam_vmm::runner::check_ports;
use unibeam_vmm::state::{InstanceName, StateError, Status, Store, CONSOLE_LOG};
use unibeam_vmm::RunError;

#[derive(Debug, Error)]
pub enum UpError {
    #[error("cluster {cluster} is already up (state in {}); `unibeam down -f {}` first", dir.display(), file.display())]
    AlreadyUp {
        cluster: String,
        dir: PathBuf,
        file: PathBuf,
    },
    #[error("{}: the subnet is too small for {members} instances", file.display())]
    SubnetTooSmall { file: PathBuf, members: usize },
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Config(#[from] unibeam_cluster::ConfigError),
    #[error("service {0}")]
    Build(String, #[source] ImagesError),
    #[error("{0}")]
    Member(InstanceName, #[source] VmError),
    #[error("{0}: {1}; shorten the cluster, service or volume name")]
    MemberVolume(InstanceName, String),
    #[error("{0}")]
    MemberPorts(InstanceName, #[source] RunError),
    #[error("starting {0}")]
    Start(InstanceName, #[source] InstancesError),
    #[error("{member} exited with status {code} while starting{}", kept.as_ref().map(|k| format!("; its console log is kept in {}", k.display())).unwrap_or_default())]
    ExitedWhileStarting {
        member: InstanceName,
        code: i32,
        kept: Option<PathBuf>,
    },
    #[error("only {ready} of {total} instances started within {timeout:?}; see `unibeam logs`")]
    NotReady {
        ready: usize,
        total: usize,
        timeout: Duration,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Networks(#[from] crate::networks::NetworksError),
    #[error(transparent)]
    DistTls(#[from] crate::dist_tls::DistTlsError),
}

/// [`up`] for the cluster file at `file`.
pub fn up_file(
    store: &Store,
    file: &Path,
    build: &BuildSettings,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<Plan, UpError> {
    let compose = unibeam_cluster::load(file)?;
    up(store, &compose, build, timeout, progress)
}

/// Starts every member of `compose` and waits until each has started its
/// applications, or `timeout` passes. Services given as releases are
/// built with `build`. Nothing is left behind on failure but the console
/// log of a member that exited while starting.
pub fn up(
    store: &Store,
    compose: &Compose,
    build: &BuildSettings,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<Plan, UpError> {
    let dir = cluster_dir(store, &compose.name);
    if dir.join(PLAN_FILE).exists() {
        return Err(UpError::AlreadyUp {
            cluster: compose.name.clone(),
            dir,
            file: compose.path.clone(),
        });
    }
    let plan = crate::up_networks::place(compose, plan::plan(compose, &store.root))?;
    if !plan::fits(&plan) {
        return Err(UpError::SubnetTooSmall {
            file: compose.path.clone(),
            members: plan.members.len(),
        });
    }
    hostfs::create_private_dir(&dir)?;
    let specs = hostfs::write_atomic(&dir.join(PLAN_FILE), &plan_json(&plan))
        .map_err(UpError::from)
        .and_then(|()| prepare_all(compose, &plan, &dir, build, progress));
    let specs = match specs {
        Ok(specs) => specs,
        Err(e) => {
            // Nothing started: only the cluster's directory goes.
            let _ = tear_down(store, &compose.name, progress);
            return Err(e);
        }
    };
    if let Err(e) = start_all(store, &plan, &specs, timeout, progress) {
        progress.warn("up failed; removing what it started");
        let _ = tear_down(store, &compose.name, progress);
        return Err(e);
    }
    Ok(plan)
}

fn plan_json(plan: &Plan) -> Vec<u8> {
    serde_json::to_vec_pretty(plan).expect("a plan serialises")
}

/// Builds what needs building and works out every member's VM, checked,
/// with its host ports found free: a mistake found here leaves no VM.
fn prepare_all(
    compose: &Compose,
    plan: &Plan,
    dir: &Path,
    build: &BuildSettings,
    progress: &dyn Progress,
) -> Result<Vec<VmSpec>, UpError> {
    let snapshots = compose.services.values().any(|s| s.snapshot);
    let cookie = match crate::up_networks::shared_cookie(compose) {
        Some(shared) => shared,
        None if snapshots => secret::ensure_cookie(&crate::clusters::snapshot_cookie(dir))?,
        None => secret::ensure_cookie(&dir.join(COOKIE_FILE))?,
    };
    let mut images = std::collections::BTreeMap::new();
    for (name, svc) in &compose.services {
        let image = match &svc.source {
            Source::Image(image) => compose.base_dir().join(image),
            Source::Release(release) => {
                let release = compose.base_dir().join(release);
                build_service(name, &release, dir, build, progress)
                    .map_err(|e| UpError::Build(name.clone(), e))?
            }
        };
        images.insert(name.as_str(), image);
    }
    let tls = cluster_tls(compose, plan, dir, &images)?;
    let mut specs = Vec::new();
    for (i, member) in plan.members.iter().enumerate() {
        let svc = &compose.services[&member.service];
        let mut spec = member_spec(plan, member, svc, &images[member.service.as_str()], &cookie)?;
        spec.instance.dist_tls_files = tls.get(i).cloned();
        spec.check()
            .map_err(|e| UpError::Member(member.instance.clone(), e))?;
        check_ports(&spec.publish).map_err(|e| UpError::MemberPorts(member.instance.clone(), e))?;
        specs.push(spec);
    }
    Ok(specs)
}

/// With `tls = true`: every image checked for ssl, and every member's
/// certificate from the cluster's CA, in the members' order.
fn cluster_tls(
    compose: &Compose,
    plan: &Plan,
    dir: &Path,
    images: &std::collections::BTreeMap<&str, PathBuf>,
) -> Result<Vec<unibeam_cluster::tls::NodeTls>, UpError> {
    if !compose.tls {
        return Ok(Vec::new());
    }
    for image in images.values() {
        crate::dist_tls::check_image(image)?;
    }
    let members: Vec<(String, String)> = plan
        .members
        .iter()
        .map(|m| {
            let host = m.node.split_once('@').map_or(m.node.as_str(), |(_, h)| h);
            (m.instance.to_string(), host.to_string())
        })
        .collect();
    Ok(crate::dist_tls::for_cluster(dir, &members)?)
}

/// Builds a service's release into the cluster's directory.
fn build_service(
    name: &str,
    release: &Path,
    dir: &Path,
    settings: &BuildSettings,
    progress: &dyn Progress,
) -> Result<PathBuf, ImagesError> {
    progress.note(&format!("building {name} from {}", release.display()));
    let input = images::resolve(release, settings)?;
    let image = dir.join(IMAGES_DIR).join(name);
    images::build_to(&input.dir, &image, settings, progress)?;
    Ok(image)
}

/// One member's VM: its service's settings plus its place in the cluster.
pub fn member_spec(
    plan: &Plan,
    m: &Member,
    svc: &Service,
    image: &Path,
    cookie: &Path,
) -> Result<VmSpec, UpError> {
    let mut spec = VmSpec::new(image);
    spec.volumes = svc
        .volumes
        .iter()
        .map(|v| member_volume(m, v))
        .collect::<Result<_, _>>()?;
    spec.publish = m.ports.clone();
    spec.restart = svc.restart;
    spec.snapshot = svc.snapshot;
    if let Some(mib) = svc.memory_mib {
        spec.memory_mib = mib;
    }
    let inst = &mut spec.instance;
    inst.name = Some(m.instance.to_string());
    inst.hostname = Some(format!("{}-{}", m.service, m.index));
    inst.node_name = Some(m.node.clone());
    inst.cookie_file = Some(cookie.to_path_buf());
    inst.env = svc.env.clone();
    inst.membership = Some(Membership {
        cluster: plan.name.clone(),
        peers: if m.meshed { plan.peers() } else { Vec::new() },
        net_ticktime_s: plan.net_ticktime_s,
        discovery: None,
    });
    inst.private_link = Some(PrivateLink {
        carrier: LinkCarrier::Multicast(SocketAddrV4::new(plan.group, plan.port)),
        address: Cidr {
            address: m.address,
            prefix_len: plan.prefix_len,
        },
    });
    crate::up_networks::apply(&m.service, svc, &mut spec.instance)?;
    Ok(spec)
}

/// The replica's own copy of a service volume: `<instance>-<NAME>`.
fn member_volume(m: &Member, v: &VolumeRequest) -> Result<VolumeRequest, UpError> {
    let name = format!("{}-{}", m.instance, v.name);
    Ok(VolumeRequest {
        name: name
            .parse()
            .map_err(|why| UpError::MemberVolume(m.instance.clone(), why))?,
        ..v.clone()
    })
}

fn start_all(
    store: &Store,
    plan: &Plan,
    specs: &[VmSpec],
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<(), UpError> {
    let total = plan.members.len();
    for (i, member) in plan.members.iter().enumerate() {
        progress.note(&format!(
            "starting {} ({}/{total}) as {}",
            member.instance,
            i + 1,
            member.node
        ));
    }
    // Side by side: each create waits until its QEMU runs (a restore until
    // the state is loaded), and eight in a row would add up.
    // Their notes are told after, member by member.
    let started: Vec<(Result<(), UpError>, Recorded)> = std::thread::scope(|s| {
        let handles: Vec<_> = plan
            .members
            .iter()
            .zip(specs)
            .map(|(member, spec)| {
                s.spawn(move || {
                    let said = Recorded::default();
                    let result = instances::create(store, spec, &said)
                        .map(drop)
                        .map_err(|e| UpError::Start(member.instance.clone(), e));
                    (result, said)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    let mut first_error = None;
    for (result, said) in started {
        for line in said.all() {
            match line.strip_prefix("warning: ") {
                Some(warning) => progress.warn(warning),
                None => progress.note(&line),
            }
        }
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    progress.begin("up");
    let ready = wait_ready(store, plan, timeout, progress);
    progress.end();
    ready
}

/// Waits until every member's console says its applications started.
fn wait_ready(store: &Store, plan: &Plan, timeout: Duration, progress: &dyn Progress) -> Result<(), UpError> {
    let deadline = Instant::now() + timeout;
    let total = plan.members.len();
    // A console that showed the line once need not be read again.
    let mut seen = vec![false; total];
    loop {
        for (m, seen) in plan.members.iter().zip(&mut seen) {
            if let Status::Exited { code } = store.load(&m.instance)?.observed_status() {
                return Err(exited_while_starting(store, plan, &m.instance, code));
            }
            if !*seen {
                let log = std::fs::read(store.dir(&m.instance).join(CONSOLE_LOG)).unwrap_or_default();
                *seen = String::from_utf8_lossy(&log).contains(milestone::APPS_STARTED);
            }
        }
        let ready = seen.iter().filter(|s| **s).count();
        progress.step(&format!("{ready}/{total} instances ready"));
        if ready == total {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(UpError::NotReady {
                ready,
                total,
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `up` removes what it started; the log that says why stays.
fn exited_while_starting(store: &Store, plan: &Plan, member: &InstanceName, code: i32) -> UpError {
    let kept = kept_log(store, &plan.name, member);
    let log = store.dir(member).join(CONSOLE_LOG);
    UpError::ExitedWhileStarting {
        member: member.clone(),
        code,
        kept: std::fs::copy(&log, &kept).ok().map(|_| kept),
    }
}
