//! `unibeam ps`, `logs`, `stop`, `kill` and `rm`: detached instances,
//! managed the way Docker users expect, with no daemon.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use unibeam_vmm::control;
use unibeam_vmm::logfile::rotated;
use unibeam_vmm::monitor::now_secs;
use unibeam_vmm::state::{InstanceName, InstanceRecord, StateError, Status, Store, CONSOLE_LOG};

pub const FAILURE_EXIT: u8 = 1;

pub fn store() -> Result<Store> {
    let root = Store::default_root().context("neither XDG_STATE_HOME nor HOME is set")?;
    Ok(Store { root })
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// List instances: name, image, state, uptime, ports, accelerator, QEMU pid.
#[derive(Args)]
pub struct PsArgs {
    /// Show exited instances too
    #[arg(short, long)]
    all: bool,
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

fn status_text(status: &Status) -> String {
    match status {
        Status::Exited { code } => format!("exited ({code})"),
        Status::Starting => "starting".into(),
        Status::Running => "running".into(),
        Status::Restarting => "restarting".into(),
    }
}

fn uptime(record: &InstanceRecord, status: &Status) -> String {
    match (status, record.started) {
        (Status::Running, Some(started)) => format!("{}s", now_secs().saturating_sub(started)),
        _ => "-".into(),
    }
}

/// The record as `inspect` and `ps --format json` show it, liveness checked.
pub fn observed_json(record: &InstanceRecord) -> serde_json::Value {
    let mut value = serde_json::to_value(record).expect("record serialises");
    let observed = serde_json::to_value(record.observed_status()).expect("status serialises");
    if let (Some(v), Some(o)) = (value.as_object_mut(), observed.as_object()) {
        v.remove("code");
        v.extend(o.clone());
    }
    value
}

/// Why an instance directory has no usable record, as `ps -a` shows it.
fn broken_why(e: &StateError) -> String {
    match e {
        StateError::Broken { why, .. } => why.clone(),
        other => other.to_string(),
    }
}

pub fn ps(args: PsArgs) -> Result<ExitCode> {
    let mut records: Vec<InstanceRecord> = Vec::new();
    // A broken instance is dead as far as anyone can tell: -a shows it.
    let mut broken: Vec<(InstanceName, String)> = Vec::new();
    for (name, loaded) in store()?.list_all() {
        match loaded {
            Ok(r) if args.all || !matches!(r.observed_status(), Status::Exited { .. }) => records.push(r),
            Ok(_) => {}
            Err(e) if args.all => broken.push((name, broken_why(&e))),
            Err(_) => {}
        }
    }
    // Standalone instances first, then one group per cluster.
    records.sort_by(|a, b| (&a.cluster, &a.name).cmp(&(&b.cluster, &b.name)));
    if args.format == Format::Json {
        let mut all: Vec<_> = records.iter().map(observed_json).collect();
        all.extend(
            broken.iter().map(
                |(name, why)| serde_json::json!({ "name": name.as_str(), "state": "broken", "why": why }),
            ),
        );
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<22} {:<14} {:<8} {:<24} {:<6} PID",
        "NAME", "IMAGE", "STATE", "UPTIME", "PORTS", "ACCEL"
    );
    let mut group: Option<&str> = None;
    for r in &records {
        if r.cluster.is_some() && r.cluster.as_deref() != group {
            group = r.cluster.as_deref();
            let members = records.iter().filter(|m| m.cluster.as_deref() == group).count();
            println!("cluster {} ({members} instances)", group.unwrap_or_default());
        }
        let status = r.observed_status();
        let pid = match status {
            Status::Exited { .. } => "-".to_string(),
            _ => r.qemu.map(|q| q.pid.to_string()).unwrap_or("-".into()),
        };
        println!(
            "{:<20} {:<22} {:<14} {:<8} {:<24} {:<6} {pid}",
            r.name,
            r.release,
            status_text(&status),
            uptime(r, &status),
            r.ports.join(","),
            r.accel
        );
    }
    for (name, why) in &broken {
        println!("{:<20} {:<22} broken: {why}", name.as_str(), "-");
    }
    Ok(ExitCode::SUCCESS)
}

/// Show an instance's console log.
#[derive(Args)]
pub struct LogsArgs {
    name: InstanceName,
    /// Keep printing new output until the instance exits
    #[arg(short, long)]
    follow: bool,
    /// Only the last K lines
    #[arg(long, value_name = "K")]
    tail: Option<usize>,
}

fn read_logs(dir: &Path) -> Vec<u8> {
    let log = dir.join(CONSOLE_LOG);
    let mut all = std::fs::read(rotated(&log)).unwrap_or_default();
    all.extend(std::fs::read(&log).unwrap_or_default());
    all
}

fn tail_lines(data: &[u8], k: usize) -> &[u8] {
    let mut newlines = 0;
    for (i, b) in data.iter().enumerate().rev().skip(1) {
        if *b == b'\n' {
            newlines += 1;
            if newlines == k {
                return &data[i + 1..];
            }
        }
    }
    data
}

pub fn logs(args: LogsArgs) -> Result<ExitCode> {
    let store = store()?;
    store.load(&args.name)?;
    let dir = store.dir(&args.name);
    let data = read_logs(&dir);
    let shown = match args.tail {
        Some(k) => tail_lines(&data, k),
        None => &data,
    };
    std::io::stdout().write_all(shown)?;
    if args.follow {
        follow(&store, &args.name, &dir.join(CONSOLE_LOG))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints what is appended to the log, across rotations, until the
/// instance has exited and nothing is left to read.
fn follow(store: &Store, name: &InstanceName, log: &Path) -> Result<()> {
    let mut file = std::fs::File::open(log).ok();
    let mut pos = file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .map_or(0, |m| m.len());
    let mut out = std::io::stdout();
    loop {
        let len = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        if len < pos {
            // Rotated: the old file became .1, this is a new one.
            file = std::fs::File::open(log).ok();
            pos = 0;
        }
        if let Some(f) = file.as_mut() {
            f.seek(SeekFrom::Start(pos))?;
            let mut buf = Vec::new();
            pos += f.read_to_end(&mut buf)? as u64;
            out.write_all(&buf)?;
            out.flush()?;
        } else {
            file = std::fs::File::open(log).ok();
        }
        let exited = matches!(
            store.load(name).map(|r| r.observed_status()),
            Ok(Status::Exited { .. }) | Err(_)
        );
        if exited && std::fs::metadata(log).map(|m| m.len()).unwrap_or(0) <= pos {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stop an instance: power button, then QMP quit, then SIGKILL.
#[derive(Args)]
pub struct StopArgs {
    name: InstanceName,
    /// Seconds to wait for the guest to power off before forcing it
    #[arg(short = 't', long = "time", default_value_t = 30)]
    time: u64,
}

pub fn stop(args: StopArgs) -> Result<ExitCode> {
    let record = control::stop(&store()?, &args.name, Duration::from_secs(args.time))?;
    println!("{} {}", record.name, status_text(&record.observed_status()));
    Ok(ExitCode::SUCCESS)
}

/// Kill an instance's QEMU at once (SIGKILL); it is not restarted.
#[derive(Args)]
pub struct KillArgs {
    name: InstanceName,
}

pub fn kill(args: KillArgs) -> Result<ExitCode> {
    let record = control::kill(&store()?, &args.name)?;
    println!("{} {}", record.name, status_text(&record.observed_status()));
    Ok(ExitCode::SUCCESS)
}

/// Remove an exited instance and everything it left on disk.
#[derive(Args)]
pub struct RmArgs {
    name: InstanceName,
    /// Kill it first if it is still running
    #[arg(short, long)]
    force: bool,
}

pub fn rm(args: RmArgs) -> Result<ExitCode> {
    remove(&store()?, &args.name, args.force)?;
    println!("{}", args.name);
    Ok(ExitCode::SUCCESS)
}

/// Removes an instance's directory, killing it first when `force`. A
/// broken instance (record missing or corrupt) goes only with `force`:
/// nothing tells whether its VM still runs.
pub fn remove(store: &Store, name: &InstanceName, force: bool) -> Result<()> {
    let record = match store.load(name) {
        Err(StateError::Broken { .. }) if force => {
            control::kill_unrecorded(store, name);
            store.remove(name)?;
            return Ok(());
        }
        loaded => loaded?,
    };
    if !matches!(record.observed_status(), Status::Exited { .. }) {
        if !force {
            bail!("instance {name} is running; `unibeam stop {name}` first, or `unibeam rm -f`");
        }
        control::kill(store, name)?;
    }
    // A monitor that is still winding down must not write into a removed dir.
    if let Some(m) = store.load(name)?.monitor.filter(|m| m.alive()) {
        // SAFETY: kill(2) on a pid verified to be this instance's monitor.
        unsafe { libc::kill(m.pid as libc::pid_t, libc::SIGKILL) };
    }
    store.remove(name)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc\n", 5), b"a\nb\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc", 1), b"c");
    }

    #[test]
    fn exited_status_shows_its_code() {
        assert_eq!(status_text(&Status::Exited { code: 3 }), "exited (3)");
    }
}
