//! `unibeam run -d`: claims the instance name, prepares the VM in the
//! instance's state directory and hands it to a detached monitor process.

use crate::instances::store;
use crate::run::{prepare, RunArgs};
use anyhow::{bail, Context, Result};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use unibeam_vmm::monitor::now_secs;
use unibeam_vmm::runner::check_ports;
use unibeam_vmm::state::{
    write_atomic, InstanceName, InstanceRecord, ProcessId, Restart, Status, Store, QEMU_FILE,
};

/// `no`, `always`, `on-failure` or `on-failure:N`.
pub fn parse_restart(s: &str) -> Result<Restart, String> {
    match s.split_once(':') {
        None if s == "no" => Ok(Restart::No),
        None if s == "always" => Ok(Restart::Always),
        None if s == "on-failure" => Ok(Restart::OnFailure { max: None }),
        Some(("on-failure", n)) => n
            .parse()
            .map(|max| Restart::OnFailure { max: Some(max) })
            .map_err(|_| format!("{s:?}: the restart count must be a number")),
        _ => Err(format!(
            "{s:?} is not a restart policy: use no, on-failure[:N] or always"
        )),
    }
}

/// A default instance name: the target's file name plus 4 random hex digits.
fn generated_name(args: &RunArgs) -> Result<InstanceName> {
    let base = args
        .target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or("vm".into());
    let base: String = base
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

pub fn run_detached(args: &RunArgs) -> Result<ExitCode> {
    println!("{}", start_detached(args)?);
    Ok(ExitCode::SUCCESS)
}

/// Starts the instance and returns its name once QEMU runs.
pub fn start_detached(args: &RunArgs) -> Result<String> {
    let store = store()?;
    let name = match args.instance.name() {
        Some(name) => name.parse()?,
        None => generated_name(args)?,
    };
    let image = std::fs::canonicalize(&args.target).unwrap_or_else(|_| args.target.clone());
    // The record is JSON: it holds UTF-8 paths only.
    if image.to_str().is_none() {
        bail!(
            "{}: the image path is not UTF-8, which an instance record cannot hold; rename it",
            image.display()
        );
    }
    let record = InstanceRecord {
        name: name.clone(),
        image,
        release: String::new(),
        created: now_secs(),
        started: None,
        ports: args
            .publish
            .iter()
            .map(|p| format!("{}:{}->{}", p.host_ip, p.host_port, p.guest_port))
            .collect(),
        accel: String::new(),
        restart: args.restart,
        restarts: 0,
        status: Status::Starting,
        qemu: None,
        // We own it until the monitor takes over: `ps` shows it starting.
        monitor: ProcessId::of(std::process::id()),
        cluster: args.instance.cluster().map(String::from),
    };
    // Claiming the name first makes two racing `run --name X` safe.
    let dir = store.create(&record)?;
    let started = start(args, &store, record, &dir);
    if started.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    started.map(String::from)
}

fn start(
    args: &RunArgs,
    store: &Store,
    mut record: InstanceRecord,
    dir: &std::path::Path,
) -> Result<InstanceName> {
    check_ports(&args.publish)?;
    let (cmd, manifest) = prepare(args, dir, Some(record.name.as_str()))?;
    record.release = format!("{} {}", manifest.release.name, manifest.release.version);
    record.accel = cmd.accel.to_string();
    store.save(&record)?;
    write_atomic(&dir.join(QEMU_FILE), &serde_json::to_vec_pretty(&cmd)?)?;
    spawn_monitor(&record.name)?;
    let running = wait_until_running(store, &record.name, Duration::from_secs(30))?;
    if let Status::Exited { code } = running.observed_status() {
        bail!(
            "instance {} exited at once with status {code}; `unibeam logs {}` shows why",
            record.name,
            record.name
        );
    }
    Ok(record.name)
}

/// `unibeam monitor NAME`, detached from our session.
pub(crate) fn spawn_monitor(name: &InstanceName) -> Result<()> {
    let exe = std::env::current_exe().context("locating the unibeam binary")?;
    let mut monitor = Command::new(exe);
    monitor
        .arg("monitor")
        .arg(name.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; it detaches the monitor from our
    // session, so closing the terminal does not stop the instance.
    unsafe {
        monitor.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    monitor.spawn().context("starting the instance monitor")?;
    Ok(())
}

/// Waits until the monitor has started QEMU or given up.
pub(crate) fn wait_until_running(
    store: &Store,
    name: &InstanceName,
    limit: Duration,
) -> Result<InstanceRecord> {
    let deadline = Instant::now() + limit;
    loop {
        let record = store.load(name)?;
        let settled = record.qemu.is_some() || matches!(record.status, Status::Exited { .. });
        if settled || Instant::now() > deadline {
            return Ok(record);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `unibeam monitor NAME`: the detached process that owns one instance.
pub fn monitor(name: &InstanceName) -> Result<ExitCode> {
    let store = store()?;
    let path = store.dir(name).join(QEMU_FILE);
    let cmd = serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("{}", path.display()))?)
        .with_context(|| format!("{}", path.display()))?;
    unibeam_vmm::monitor::monitor(&store, name, &cmd)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse() {
        assert_eq!(parse_restart("no"), Ok(Restart::No));
        assert_eq!(parse_restart("always"), Ok(Restart::Always));
        assert_eq!(
            parse_restart("on-failure:2"),
            Ok(Restart::OnFailure { max: Some(2) })
        );
        assert_eq!(parse_restart("on-failure"), Ok(Restart::OnFailure { max: None }));
        assert!(parse_restart("sometimes").unwrap_err().contains("sometimes"));
        assert!(parse_restart("on-failure:x").is_err());
    }
}
