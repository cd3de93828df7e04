//! Detached instances, the way Docker users expect them and with no
//! daemon: create (`run -d`), start, stop, kill, remove, list and inspect.
//! Each instance is a directory in the [`Store`]; a detached monitor
//! process (`unibeam monitor NAME`) owns its QEMU.

use crate::progress::Progress;
use crate::vm::{self, VmError, VmSpec};
use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use thiserror::Error;
use unibeam_spec::hostfs::{self, PathIo};
use unibeam_spec::DIST_PORT;
use unibeam_vmm::control;
use unibeam_vmm::drives::{self, DriveError};
use unibeam_vmm::logfile::{BoundedLog, DEFAULT_CAP};
use unibeam_vmm::monitor::now_secs;
use unibeam_vmm::runner::check_ports;
use unibeam_vmm::state::{
    DistEndpoint, InstanceName, InstanceRecord, ProcessId, StateError, Status, Store, CONSOLE_LOG, QEMU_FILE,
    STOP_REQUESTED,
};
use unibeam_vmm::{PortForward, QemuCommand, RunError};

/// The instance's own cookie, when it has no other.
pub const COOKIE_FILE: &str = "cookie";

/// How long `create` and `start` wait for the monitor to start QEMU.
const START_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum InstancesError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Networks(#[from] crate::networks::NetworksError),
    #[error(transparent)]
    Ports(#[from] RunError),
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error("{}: the image path is not UTF-8, which an instance record cannot hold; rename it", .0.display())]
    NonUtf8Image(PathBuf),
    #[error("instance {0} exited at once with status {1}; `unibeam logs {0}` shows why")]
    ExitedAtOnce(InstanceName, i32),
    #[error("instance {0} is running; `unibeam stop {0}` first, or `unibeam rm -f`")]
    Running(InstanceName),
    #[error("instance {0} is already running; `unibeam stop {0}` first")]
    AlreadyRunning(InstanceName),
    #[error("instance {0} is a foreground `unibeam run`'s; it cannot be started from elsewhere")]
    Foreground(InstanceName),
    #[error("{}: missing, so the instance cannot start again; `unibeam rm` it and `unibeam run -d` anew", .0.display())]
    BootFileMissing(PathBuf),
    #[error("{}: corrupt", .0.display())]
    CorruptQemuFile(PathBuf, #[source] serde_json::Error),
    #[error("locating the unibeam binary")]
    CurrentExe(#[source] std::io::Error),
    #[error("starting the instance monitor")]
    SpawnMonitor(#[source] std::io::Error),
    #[error("finding a free port on 127.0.0.1 for the node's distribution")]
    NoFreePort(#[source] std::io::Error),
    #[error(transparent)]
    Cookie(#[from] unibeam_cluster::secret::SecretError),
    #[error(transparent)]
    Drive(#[from] DriveError),
}

/// The cookie of a `--snapshot` instance that was given none. A saved
/// state holds the node's cookie, and the cache key covers it, so a new
/// random cookie per instance would make every `run --snapshot --name N`
/// after an `rm N` boot cold. So the cookie is kept per name beside the
/// saved states, which hold it anyway (0600, in a 0700 directory).
fn snapshot_cookie(instance_dir: &Path) -> Result<PathBuf, InstancesError> {
    let cookies = crate::paths::cache_dir()
        .map_err(VmError::from)?
        .join(crate::snapshots::COOKIES_DIR);
    hostfs::create_private_dir(&cookies)?;
    Ok(cookies.join(instance_dir.file_name().unwrap_or_default()))
}

/// A default instance name: the target's file name plus 4 random hex digits.
fn generated_name(target: &Path) -> Result<InstanceName, InstancesError> {
    let base: String = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(20)
        .collect();
    let mut byte = [0u8; 2];
    let _ =
        std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut byte));
    let base = if base.is_empty() { "vm".into() } else { base };
    Ok(format!("{base}-{:02x}{:02x}", byte[0], byte[1]).parse()?)
}

/// The record a new instance starts with: `starting`, owned by us until
/// the monitor takes over.
pub(crate) fn new_record(spec: &VmSpec, name: InstanceName) -> Result<InstanceRecord, InstancesError> {
    let image = std::fs::canonicalize(&spec.target).unwrap_or_else(|_| spec.target.clone());
    // The record is JSON: it holds UTF-8 paths only.
    if image.to_str().is_none() {
        return Err(InstancesError::NonUtf8Image(image));
    }
    Ok(InstanceRecord {
        name,
        image,
        release: String::new(),
        created: now_secs(),
        started: None,
        ports: spec
            .publish
            .iter()
            .map(|p| format!("{}:{}->{}", p.host_ip, p.host_port, p.guest_port))
            .collect(),
        accel: String::new(),
        restart: spec.restart,
        restarts: 0,
        status: Status::Starting,
        qemu: None,
        monitor: ProcessId::of(std::process::id()),
        cluster: spec.instance.membership.as_ref().map(|m| m.cluster.clone()),
        dist: None,
        foreground: false,
    })
}

/// `run -d`: claims the instance's name, prepares the VM in its directory
/// and hands it to a detached monitor; returns once QEMU runs. A failure
/// before the monitor starts leaves nothing behind. Once it has started,
/// the instance is the monitor's: a VM that exits at once stays, exited,
/// with the log that says why.
pub fn create(store: &Store, spec: &VmSpec, progress: &dyn Progress) -> Result<InstanceName, InstancesError> {
    spec.check()?;
    let name = match &spec.instance.name {
        Some(name) => name.parse()?,
        None => generated_name(&spec.target)?,
    };
    let record = new_record(spec, name)?;
    // Claiming the name first makes two racing `run --name X` safe.
    let dir = store.create(&record)?;
    let handed_over = prepare_and_hand_over(store, spec, record, &dir, progress);
    match handed_over {
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
        Ok(name) => {
            let running = wait_until_running(store, &name, START_LIMIT)?;
            match running.observed_status() {
                Status::Exited { code } => Err(InstancesError::ExitedAtOnce(name, code)),
                _ => Ok(name),
            }
        }
    }
}

/// Everything up to a spawned monitor; after it, the instance exists.
fn prepare_and_hand_over(
    store: &Store,
    spec: &VmSpec,
    record: InstanceRecord,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<InstanceName, InstancesError> {
    // A volume in use was refused while preparing (volumes::attach probes
    // each); the monitor takes them for good.
    let (_, _, record) = prepare_recorded(store, spec, record, dir, progress)?;
    spawn_monitor(&record.name)?;
    Ok(record.name)
}

/// Prepares the VM in the instance's directory `dir`, reachable over
/// distribution unless `--no-dist`, and records what it will run: the
/// record (node, release, accelerator) and QEMU's command. Returns the
/// spec as prepared (with its distribution port and cookie), the VM and
/// the record.
pub(crate) fn prepare_recorded(
    store: &Store,
    spec: &VmSpec,
    mut record: InstanceRecord,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<(VmSpec, vm::Prepared, InstanceRecord), InstancesError> {
    check_ports(&spec.publish)?;
    let (spec, dist_port) = with_distribution(spec, dir)?;
    let prepared = vm::prepare(&spec, dir, Some(record.name.as_str()), progress)?;
    record.dist = dist_port
        .zip(prepared.node.clone())
        .map(|(port, node)| DistEndpoint {
            node,
            port,
            cookie_file: spec
                .instance
                .cookie_file
                .as_deref()
                .map(|c| std::fs::canonicalize(c).unwrap_or_else(|_| c.to_path_buf()))
                .unwrap_or_default(),
            tls: spec
                .instance
                .dist_tls_files
                .as_ref()
                .map(crate::dist_tls::record_paths),
        });
    let release = &prepared.manifest.release;
    record.release = format!("{} {}", release.name, release.version);
    record.accel = prepared.cmd.accel.to_string();
    store.save(&record)?;
    let qemu_json = serde_json::to_vec_pretty(&prepared.cmd).expect("a QemuCommand serialises");
    hostfs::write_atomic(&dir.join(QEMU_FILE), &qemu_json)?;
    Ok((spec, prepared, record))
}

/// The unibeam binary, which runs `unibeam monitor NAME`: this program,
/// unless `$UNIBEAM_EXE` names it for a program that embeds this library
/// without being unibeam (the library's tests do).
pub(crate) fn unibeam_exe() -> Result<PathBuf, InstancesError> {
    match std::env::var_os("UNIBEAM_EXE") {
        Some(exe) => Ok(PathBuf::from(exe)),
        None => std::env::current_exe().map_err(InstancesError::CurrentExe),
    }
}

/// `spec` with the node reachable from the host, unless `--no-dist`: the
/// guest's distribution port forwarded from a free port on 127.0.0.1 (never
/// another address), and a cookie: the user's `--cookie-file`, a cluster's,
/// or else a random one of the instance's own, 0600 in its directory (under
/// `--snapshot`, one kept per instance name in the snapshot cache).
fn with_distribution(spec: &VmSpec, dir: &Path) -> Result<(VmSpec, Option<u16>), InstancesError> {
    let mut spec = spec.clone();
    if !spec.dist {
        return Ok((spec, None));
    }
    if spec.instance.cookie_file.is_none() {
        let file = if spec.snapshot {
            snapshot_cookie(dir)?
        } else {
            dir.join(COOKIE_FILE)
        };
        spec.instance.cookie_file = Some(unibeam_cluster::secret::ensure_cookie(&file)?);
    }
    if spec.instance.dist_tls && spec.instance.dist_tls_files.is_none() {
        let store = Store {
            root: dir.parent().unwrap_or(dir).to_path_buf(),
        };
        let inst = &spec.instance;
        let instance = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hostname = inst.hostname.as_deref().or(inst.name.as_deref());
        let host = crate::dist_tls::node_host(inst.node_name.as_deref(), hostname, &instance);
        let files = crate::dist_tls::for_instance(&store, &host, dir)
            .map_err(|e| InstancesError::Vm(VmError::Settings(e.into())))?;
        spec.instance.dist_tls_files = Some(files);
    }
    let port = free_loopback_port()?;
    spec.publish.push(PortForward {
        host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        host_port: port,
        guest_port: DIST_PORT,
    });
    Ok((spec, Some(port)))
}

/// A port nothing listens on now, on 127.0.0.1. QEMU binds it moments
/// later; a port taken in between fails the start with QEMU's message.
fn free_loopback_port() -> Result<u16, InstancesError> {
    let listener =
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(InstancesError::NoFreePort)?;
    Ok(listener.local_addr().map_err(InstancesError::NoFreePort)?.port())
}

/// `unibeam monitor NAME`, detached from our session.
fn spawn_monitor(name: &InstanceName) -> Result<(), InstancesError> {
    let mut monitor = Command::new(unibeam_exe()?);
    monitor
        .arg("monitor")
        .arg(name.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of ours;
    // it detaches the monitor from our session, so closing the terminal
    // does not stop the instance.
    unsafe {
        monitor.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = monitor.spawn().map_err(InstancesError::SpawnMonitor)?;
    // A long-lived caller (the dashboard's restart) must not keep an exited
    // monitor as a zombie: it is reaped whenever it ends.
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// Waits until the monitor has started QEMU or given up.
fn wait_until_running(
    store: &Store,
    name: &InstanceName,
    limit: Duration,
) -> Result<InstanceRecord, InstancesError> {
    let deadline = Instant::now() + limit;
    loop {
        let record = store.load(name)?;
        let settled = record.qemu.is_some() || matches!(record.status, Status::Exited { .. });
        if settled || Instant::now() > deadline {
            return Ok(record);
        }
        // A warm start runs QEMU within 0.2 s; a coarse poll would show.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `unibeam monitor NAME`: owns one instance until it exits for good.
pub fn monitor(store: &Store, name: &InstanceName) -> Result<(), InstancesError> {
    let mut cmd = read_qemu_command(&store.dir(name))?;
    // The tap, like the drives' locks, is held for as long as the monitor
    // owns the VM, restarts included; it goes when the monitor does.
    let _tap = crate::networks::open_tap(&mut cmd)?;
    // Held for as long as the monitor owns the VM, restarts included.
    let _held = match drives::lock_all(&cmd.drives, &holder(name)) {
        Ok(held) => held,
        Err(e) => {
            refuse_start(store, name, &e)?;
            return Err(e.into());
        }
    };
    // The metrics history (crate::stats), sampled beside QEMU for as long
    // as the monitor owns it; UNIBEAM_SAMPLE_SECS=0 turns it off.
    let sampler =
        crate::stats::interval_from_env().map(|every| crate::stats::Sampler::start(store, name, every));
    let outcome = unibeam_vmm::monitor::monitor(store, name, &cmd);
    drop(sampler);
    outcome?;
    Ok(())
}

/// Who holds an instance's volumes, as `volume` errors name it.
pub(crate) fn holder(name: &InstanceName) -> String {
    format!("instance {name}")
}

/// An instance that cannot start (its volume taken meanwhile): exited,
/// with why in its log.
fn refuse_start(store: &Store, name: &InstanceName, why: &DriveError) -> Result<(), InstancesError> {
    let log_path = store.dir(name).join(CONSOLE_LOG);
    if let Ok(mut log) = BoundedLog::open(&log_path, DEFAULT_CAP) {
        let _ = writeln!(log, "unibeam: {}", unibeam_vmm::error_chain(why));
    }
    let mut record = store.load(name)?;
    record.status = Status::Exited { code: 125 };
    record.monitor = None;
    Ok(store.save(&record)?)
}

fn read_qemu_command(dir: &Path) -> Result<QemuCommand, InstancesError> {
    let path = dir.join(QEMU_FILE);
    let json = std::fs::read(&path).map_err(hostfs::at::<PathIo>(&path))?;
    serde_json::from_slice(&json).map_err(|e| InstancesError::CorruptQemuFile(path, e))
}

/// Starts an exited instance again in the background, with the settings
/// it was run with; returns once QEMU runs.
pub fn start(store: &Store, name: &InstanceName) -> Result<(), InstancesError> {
    reset(store, name, None)?;
    // A volume in use is told here; the monitor takes them for good.
    drives::probe_all(&read_qemu_command(&store.dir(name))?.drives)?;
    spawn_monitor(name)?;
    let record = wait_until_running(store, name, START_LIMIT)?;
    match record.observed_status() {
        Status::Exited { code } => Err(InstancesError::ExitedAtOnce(name.clone(), code)),
        _ => Ok(()),
    }
}

/// Starts an exited instance and owns it from this process until it
/// exits for good (its restart policy applied); returns its last record.
/// What a systemd unit runs.
pub fn start_foreground(store: &Store, name: &InstanceName) -> Result<InstanceRecord, InstancesError> {
    // This process is the monitor from the start, so `ps` never sees a
    // starting instance with no live owner.
    reset(store, name, ProcessId::of(std::process::id()))?;
    monitor(store, name)?;
    Ok(store.load(name)?)
}

/// Checks that `name` can start again and puts its record back to
/// `starting`: no QEMU, `monitor` as its owner, no stop request, no
/// restarts yet.
fn reset(
    store: &Store,
    name: &InstanceName,
    monitor: Option<ProcessId>,
) -> Result<InstanceRecord, InstancesError> {
    let mut record = store.load(name)?;
    if record.foreground {
        return Err(InstancesError::Foreground(name.clone()));
    }
    if !record.observed_status().is_down() {
        return Err(InstancesError::AlreadyRunning(name.clone()));
    }
    check_boot_files(&store.dir(name))?;
    // The stop request of the last `unibeam stop` must not stop this run.
    let stop_file = store.dir(name).join(STOP_REQUESTED);
    if let Err(e) = std::fs::remove_file(&stop_file) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(hostfs::at::<PathIo>(&stop_file)(e).into());
        }
    }
    record.status = Status::Starting;
    record.qemu = None;
    record.monitor = monitor;
    record.started = None;
    record.restarts = 0;
    store.save(&record)?;
    Ok(record)
}

/// The files the monitor boots must still be there: a kernel in a cache
/// that was cleaned, or an instance dir emptied by hand, is named here
/// rather than by QEMU in the console log.
fn check_boot_files(dir: &Path) -> Result<(), InstancesError> {
    let cmd = read_qemu_command(dir)?;
    let missing = [cmd.binary, cmd.kernel, cmd.initrd]
        .into_iter()
        .find(|f| !f.is_file());
    match missing {
        Some(missing) => Err(InstancesError::BootFileMissing(missing)),
        None => Ok(()),
    }
}

/// Stops an instance: power button, then QMP quit after `grace`, then
/// SIGKILL.
pub fn stop(store: &Store, name: &InstanceName, grace: Duration) -> Result<InstanceRecord, InstancesError> {
    Ok(control::stop(store, name, grace)?)
}

/// Kills an instance's QEMU at once; it is not restarted.
pub fn kill(store: &Store, name: &InstanceName) -> Result<InstanceRecord, InstancesError> {
    Ok(control::kill(store, name)?)
}

/// Removes an instance's directory, killing it first when `force`. A
/// broken instance (record missing or corrupt) goes only with `force`:
/// nothing tells whether its VM still runs.
pub fn remove(store: &Store, name: &InstanceName, force: bool) -> Result<(), InstancesError> {
    let record = match store.load(name) {
        Err(StateError::Broken { .. }) if force => {
            control::kill_unrecorded(store, name);
            store.remove(name)?;
            return Ok(());
        }
        loaded => loaded?,
    };
    if !record.observed_status().is_down() {
        if !force {
            return Err(InstancesError::Running(name.clone()));
        }
        control::kill(store, name)?;
    }
    let record = match store.load(name) {
        // A foreground run that ended and removed itself meanwhile.
        Err(StateError::NoSuchInstance(_)) if record.foreground => return Ok(()),
        loaded => loaded?,
    };
    if record.foreground {
        // The foreground run removes its own directory once its QEMU is
        // gone; it is the user's `unibeam run`, which must not be killed.
        wait_for_owner(&record, Duration::from_secs(5));
    } else if let Some(m) = record.monitor.filter(|m| m.alive()) {
        // A monitor that is still winding down must not write into a removed dir.
        let _ = send_signal(Pid::from_raw(m.pid as i32), Signal::SIGKILL);
    }
    let removed = match store.remove(name) {
        Err(StateError::NoSuchInstance(_)) if record.foreground => Ok(()),
        removed => removed,
    };
    crate::networks::leave(name.as_str());
    Ok(removed?)
}

fn wait_for_owner(record: &InstanceRecord, limit: Duration) {
    let deadline = Instant::now() + limit;
    while record.monitor.is_some_and(|m| m.alive()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `record` is a foreground run's that outlived its run (killed
/// with SIGKILL, or the host went down): nothing owns it any more, so it
/// is removed rather than shown, and its name is free again.
pub(crate) fn is_abandoned_foreground(record: &InstanceRecord) -> bool {
    record.foreground && !record.monitor.is_some_and(|m| m.alive())
}

/// One entry of `list`: an instance with its record, or a directory
/// whose record is missing or corrupt, with why.
// Nearly every entry is an instance: boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Listed {
    Instance(InstanceRecord),
    Broken { name: InstanceName, why: String },
}

/// Every instance (exited ones only with `all`), standalone ones first,
/// then one group per cluster; broken ones (only with `all`) last.
pub fn list(store: &Store, all: bool) -> Vec<Listed> {
    let mut records = Vec::new();
    let mut broken = Vec::new();
    for (name, loaded) in store.list_all() {
        match loaded {
            Ok(r) if is_abandoned_foreground(&r) => {
                let _ = store.remove(&name);
            }
            Ok(r) if all || !matches!(r.observed_status(), Status::Exited { .. }) => records.push(r),
            Ok(_) => {}
            Err(StateError::Broken { why, .. }) if all => broken.push(Listed::Broken { name, why }),
            Err(e) if all => broken.push(Listed::Broken {
                name,
                why: e.to_string(),
            }),
            Err(_) => {}
        }
    }
    records.sort_by(|a, b| (&a.cluster, &a.name).cmp(&(&b.cluster, &b.name)));
    records.into_iter().map(Listed::Instance).chain(broken).collect()
}

/// The record as `inspect` and `ps --format json` show it, liveness checked.
pub fn observed_json(record: &InstanceRecord) -> serde_json::Value {
    let mut value = serde_json::to_value(record).expect("a record serialises");
    let observed = serde_json::to_value(record.observed_status()).expect("a status serialises");
    if let (Some(v), Some(o)) = (value.as_object_mut(), observed.as_object()) {
        v.remove("code");
        v.extend(o.clone());
    }
    value
}

/// `name`'s record, liveness checked, as JSON.
pub fn inspect(store: &Store, name: &InstanceName) -> Result<serde_json::Value, InstancesError> {
    let mut value = observed_json(&store.load(name)?);
    // The volumes it attaches, as its QEMU command has them.
    let drives = read_qemu_command(&store.dir(name))
        .map(|cmd| cmd.drives)
        .unwrap_or_default();
    if let (Some(object), false) = (value.as_object_mut(), drives.is_empty()) {
        let volumes: Vec<serde_json::Value> = drives
            .iter()
            .map(|d| serde_json::json!({ "name": d.name, "read_only": d.read_only }))
            .collect();
        object.insert("volumes".into(), volumes.into());
    }
    Ok(value)
}
