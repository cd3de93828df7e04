//! `unibeam up`: every service of a unibeam.toml, started detached, on a
//! private network, meshed into one Erlang cluster.

use crate::instances::store;
use crate::run::RunLine;
use crate::{build, detach, down, paths};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use unibeam_cluster::{plan, secret, Compose, Member, Plan};
use unibeam_vmm::state::{write_atomic, Status, Store};

pub const FAILURE_EXIT: u8 = 1;
pub const PLAN_FILE: &str = "plan.json";
const COOKIE_FILE: &str = "cookie";
/// What init prints once the release's applications have started.
const READY_LINE: &str = "unibeam-init: applications started";

/// Start the services of a unibeam.toml as one cluster.
///
/// Each service is built (or taken as an image) once, then started as
/// `replicas` detached instances named `<cluster>-<service>-<i>` (or
/// `<cluster>-<i>` when the service is named like the cluster). The VMs
/// share a private network that QEMU carries over multicast on the host's
/// loopback (no root, no tap), take static addresses from the cluster's
/// subnet, and run as Erlang nodes `<service>-<i>@<address>` with no EPMD.
/// Each node connects to all its peers at boot and reconnects whenever a
/// connection drops. The cookie is generated once per cluster, kept 0600
/// on the host, and reaches the guests only inside their config layer.
///
/// `up` returns when every instance has started its applications.
/// See the README's "Clusters" section for the file format.
#[derive(Args)]
pub struct UpArgs {
    /// The cluster file
    #[arg(short = 'f', long = "file", default_value = "unibeam.toml")]
    file: PathBuf,
    /// Seconds to wait for every instance to start its applications
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    timeout: u64,
}

/// `$XDG_STATE_HOME/unibeam/clusters/<name>`.
pub fn cluster_dir(store: &Store, name: &str) -> PathBuf {
    store.root.with_file_name("clusters").join(name)
}

pub fn up(args: UpArgs) -> Result<ExitCode> {
    let compose = unibeam_cluster::load(&args.file)?;
    let store = store()?;
    let dir = cluster_dir(&store, &compose.name);
    if dir.join(PLAN_FILE).exists() {
        bail!(
            "cluster {} is already up (state in {}); `unibeam down -f {}` first",
            compose.name,
            dir.display(),
            args.file.display()
        );
    }
    let plan = plan::plan(&compose, &store.root);
    if !plan::fits(&plan) {
        bail!(
            "{}: the subnet is too small for {} instances",
            args.file.display(),
            plan.members.len()
        );
    }
    create_private_dir(&dir)?;
    write_atomic(&dir.join(PLAN_FILE), &serde_json::to_vec_pretty(&plan)?)?;
    let lines = match prepare_all(&compose, &plan, &dir) {
        Ok(lines) => lines,
        Err(e) => {
            // Nothing started: only the cluster's directory goes.
            let _ = down::tear_down(&store, &compose.name);
            return Err(e);
        }
    };
    let started = start_all(&plan, lines, &store, Duration::from_secs(args.timeout));
    if let Err(e) = started {
        eprintln!("unibeam: up failed; removing what it started");
        let _ = down::tear_down(&store, &compose.name);
        return Err(e);
    }
    println!("cluster {} is up: {} instances", plan.name, plan.members.len());
    Ok(ExitCode::SUCCESS)
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Builds what needs building and works out every member's `run -d`
/// settings, checked, with its host ports found free: a mistake found here
/// leaves no VM behind.
fn prepare_all(compose: &Compose, plan: &Plan, dir: &Path) -> Result<Vec<RunLine>> {
    let cookie = secret::ensure_cookie(&dir.join(COOKIE_FILE))?;
    let base = compose.base_dir();
    let mut images = std::collections::BTreeMap::new();
    for (name, svc) in &compose.services {
        let image = match &svc.source {
            unibeam_cluster::Source::Image(image) => base.join(image),
            unibeam_cluster::Source::Release(release) => build_service(name, &base.join(release), dir)?,
        };
        images.insert(name.clone(), image);
    }
    let mut lines = Vec::new();
    for member in &plan.members {
        let svc = &compose.services[&member.service];
        let line = run_line(plan, member, svc, &images[&member.service], &cookie);
        let parsed = RunLine::try_parse_from(&line)
            .map_err(|e| anyhow::anyhow!("{}: {}", member.instance, crate::clap_one_line(&e)))?;
        crate::run::check_run_args(&parsed.args).with_context(|| member.instance.clone())?;
        unibeam_vmm::runner::check_ports(&parsed.args.publish).with_context(|| member.instance.clone())?;
        lines.push(parsed);
    }
    Ok(lines)
}

fn start_all(plan: &Plan, lines: Vec<RunLine>, store: &Store, timeout: Duration) -> Result<()> {
    let total = plan.members.len();
    for (i, (member, parsed)) in plan.members.iter().zip(lines).enumerate() {
        eprintln!(
            "unibeam: starting {} ({}/{total}) as {}",
            member.instance,
            i + 1,
            member.node
        );
        detach::start_detached(&parsed.args)?;
    }
    wait_ready(store, plan, timeout)
}

/// Builds a service's release into the cluster's directory.
fn build_service(name: &str, release: &Path, dir: &Path) -> Result<PathBuf> {
    eprintln!("unibeam: building {name} from {}", release.display());
    let flags = build::BuildFlags::defaults();
    let input = build::resolve(release, &flags).with_context(|| format!("service {name}"))?;
    let image = dir.join("images").join(name);
    build::build_to(&input.dir, &image, &flags)?;
    Ok(image)
}

/// The `run -d` command line of one member.
fn run_line(
    plan: &Plan,
    m: &Member,
    svc: &unibeam_cluster::config::Service,
    image: &Path,
    cookie: &Path,
) -> Vec<String> {
    let mut line: Vec<String> = vec![image.display().to_string(), "-d".into()];
    let mut add = |flag: &str, value: String| line.extend([flag.to_string(), value]);
    add("--name", m.instance.to_string());
    add("--hostname", format!("{}-{}", m.service, m.index));
    add("--node-name", m.node.clone());
    add("--cookie-file", cookie.display().to_string());
    add("--cluster", plan.name.clone());
    add("--private-net", format!("{}:{}", plan.group, plan.port));
    add("--private-ip", format!("{}/{}", m.address, plan.prefix_len));
    add("--net-ticktime", plan.net_ticktime_s.to_string());
    add("--restart", restart_text(svc.restart));
    if let Some(memory) = svc.memory_mib {
        add("--memory", memory.to_string());
    }
    if m.meshed {
        for peer in plan.peers() {
            add("--peer", peer);
        }
    }
    for port in &m.ports {
        add("-p", format!("{}:{}", port.host_port, port.guest_port));
    }
    for (k, v) in &svc.env {
        add("-e", format!("{k}={v}"));
    }
    line
}

fn restart_text(r: unibeam_vmm::state::Restart) -> String {
    use unibeam_vmm::state::Restart;
    match r {
        Restart::No => "no".into(),
        Restart::Always => "always".into(),
        Restart::OnFailure { max: None } => "on-failure".into(),
        Restart::OnFailure { max: Some(n) } => format!("on-failure:{n}"),
    }
}

/// Waits until every member's console says its applications started.
fn wait_ready(store: &Store, plan: &Plan, timeout: Duration) -> Result<()> {
    let bar = paths::spinner("up");
    let deadline = Instant::now() + timeout;
    // A console that showed the line once need not be read again.
    let mut seen = vec![false; plan.members.len()];
    loop {
        for (m, seen) in plan.members.iter().zip(&mut seen) {
            let instance = m.instance.clone();
            if let Status::Exited { code } = store.load(&instance)?.observed_status() {
                bar.finish_and_clear();
                // `up` removes what it started; the log that says why stays.
                let kept = cluster_dir(store, &plan.name).with_extension(format!("{}.log", m.instance));
                let log = store.dir(&instance).join(unibeam_vmm::state::CONSOLE_LOG);
                match std::fs::copy(&log, &kept) {
                    Ok(_) => bail!(
                        "{} exited with status {code} while starting; its console log is kept in {}",
                        m.instance,
                        kept.display()
                    ),
                    Err(_) => bail!("{} exited with status {code} while starting", m.instance),
                }
            }
            if !*seen {
                let log = std::fs::read(store.dir(&instance).join(unibeam_vmm::state::CONSOLE_LOG))
                    .unwrap_or_default();
                *seen = String::from_utf8_lossy(&log).contains(READY_LINE);
            }
        }
        let ready = seen.iter().filter(|s| **s).count();
        bar.set_message(format!("{ready}/{} instances ready", plan.members.len()));
        if ready == plan.members.len() {
            bar.finish_and_clear();
            return Ok(());
        }
        if Instant::now() > deadline {
            bar.finish_and_clear();
            bail!(
                "only {ready} of {} instances started within {timeout:?}; see `unibeam logs`",
                plan.members.len()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
