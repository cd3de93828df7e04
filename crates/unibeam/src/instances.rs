//! `unibeam ps`, `logs`, `stop`, `kill` and `rm`: detached instances,
//! managed the way Docker users expect, with no daemon.

use anyhow::Result;
use clap::{Args, ValueEnum};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use unibeam_lifecycle::instances::{self, Listed};
use unibeam_lifecycle::{logs as log_files, overview, paths};
use unibeam_vmm::monitor::now_secs;
use unibeam_vmm::state::{InstanceName, InstanceRecord, Status};

pub const FAILURE_EXIT: u8 = 1;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// List instances: name, image, state, uptime, ports, accelerator, the
/// BEAM's memory (from the monitor's last sample: `unibeam stats`) and
/// QEMU's pid.
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
    status.to_string()
}

fn uptime(record: &InstanceRecord, status: &Status) -> String {
    match (status, record.started) {
        (Status::Running, Some(started)) => format!("{}s", now_secs().saturating_sub(started)),
        _ => "-".into(),
    }
}

pub fn ps(args: PsArgs) -> Result<ExitCode> {
    let store = paths::store()?;
    if args.format == Format::Json {
        let all = overview::instances_json(&store, args.all);
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    let listed = instances::list(&store, args.all);
    print!("{}", ps_table(&listed, |r| overview::beam_memory(&store, r)));
    Ok(ExitCode::SUCCESS)
}

fn ps_table(listed: &[Listed], memory: impl Fn(&InstanceRecord) -> Option<u64>) -> String {
    let mut out = format!(
        "{:<20} {:<22} {:<14} {:<8} {:<24} {:<6} {:<8} PID\n",
        "NAME", "IMAGE", "STATE", "UPTIME", "PORTS", "ACCEL", "MEM"
    );
    let records: Vec<&InstanceRecord> = listed
        .iter()
        .filter_map(|l| match l {
            Listed::Instance(r) => Some(r),
            Listed::Broken { .. } => None,
        })
        .collect();
    let mut group: Option<&str> = None;
    for r in &records {
        if r.cluster.is_some() && r.cluster.as_deref() != group {
            group = r.cluster.as_deref();
            let members = records.iter().filter(|m| m.cluster.as_deref() == group).count();
            out.push_str(&format!(
                "cluster {} ({members} instances)\n",
                group.unwrap_or_default()
            ));
        }
        let status = r.observed_status();
        let pid = match status {
            Status::Exited { .. } => "-".to_string(),
            _ => r.qemu.map(|q| q.pid.to_string()).unwrap_or("-".into()),
        };
        out.push_str(&format!(
            "{:<20} {:<22} {:<14} {:<8} {:<24} {:<6} {:<8} {pid}\n",
            r.name,
            r.release,
            status_text(&status),
            uptime(r, &status),
            r.ports.join(","),
            r.accel,
            memory(r).map(crate::stats::mib).unwrap_or_else(|| "-".into()),
        ));
    }
    for l in listed {
        if let Listed::Broken { name, why } = l {
            out.push_str(&format!("{:<20} {:<22} broken: {why}\n", name.as_str(), "-"));
        }
    }
    out
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

pub fn logs(args: LogsArgs) -> Result<ExitCode> {
    let store = paths::store()?;
    let mut out = std::io::stdout();
    out.write_all(&log_files::read(&store, &args.name, args.tail)?)?;
    if args.follow {
        log_files::follow(&store, &args.name, &mut out)?;
    }
    Ok(ExitCode::SUCCESS)
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
    let record = instances::stop(&paths::store()?, &args.name, Duration::from_secs(args.time))?;
    println!("{} {}", record.name, status_text(&record.observed_status()));
    Ok(ExitCode::SUCCESS)
}

/// Kill an instance's QEMU at once (SIGKILL); it is not restarted.
#[derive(Args)]
pub struct KillArgs {
    name: InstanceName,
}

pub fn kill(args: KillArgs) -> Result<ExitCode> {
    let record = instances::kill(&paths::store()?, &args.name)?;
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
    instances::remove(&paths::store()?, &args.name, args.force)?;
    println!("{}", args.name);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exited_status_shows_its_code() {
        assert_eq!(status_text(&Status::Exited { code: 3 }), "exited (3)");
    }
}
