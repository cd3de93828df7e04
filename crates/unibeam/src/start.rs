//! `unibeam start NAME`: boots an exited instance again from what its
//! directory holds (the record, `qemu.json` and the instance's initrd),
//! the way `docker start` does. systemd units (`generate systemd`) run it
//! with `--foreground` after a host reboot.

use anyhow::Result;
use clap::Args;
use std::process::ExitCode;
use unibeam_lifecycle::{instances, paths};
use unibeam_vmm::state::{InstanceName, InstanceRecord, Status};

/// unibeam's own failures; `--foreground` otherwise exits with the guest's.
pub const FAILURE_EXIT: u8 = 125;

/// Start an exited instance again, with the settings it was run with.
///
/// The instance keeps its name, image, ports, restart policy and config
/// (the initrd `run -d` made for it); its restart count starts again at 0
/// and its console log continues. A running instance is refused.
#[derive(Args)]
pub struct StartArgs {
    /// The instance, as `unibeam ps -a` lists it
    name: InstanceName,
    /// Own the instance from this process until it exits for good (its
    /// restart policy applied), then exit with its status: what a systemd
    /// unit runs (see `unibeam generate systemd --help`)
    #[arg(long)]
    foreground: bool,
}

pub fn start(args: StartArgs) -> Result<ExitCode> {
    let store = paths::store()?;
    if args.foreground {
        eprintln!(
            "unibeam: starting {0}; `unibeam logs {0}` shows its console",
            args.name
        );
        let record = instances::start_foreground(&store, &args.name)?;
        return Ok(exit_code(&record));
    }
    instances::start(&store, &args.name)?;
    println!("{}", args.name);
    Ok(ExitCode::SUCCESS)
}

/// The instance's last status as a process exit status (125 when it does
/// not fit one, as for unibeam's own failures).
fn exit_code(record: &InstanceRecord) -> ExitCode {
    match record.observed_status() {
        Status::Exited { code } => ExitCode::from(u8::try_from(code).unwrap_or(125)),
        _ => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unibeam_vmm::state::Restart;

    fn record(status: Status) -> InstanceRecord {
        InstanceRecord {
            name: InstanceName::parse("a").unwrap(),
            image: "/img".into(),
            release: "hello 0.1.0".into(),
            created: 1,
            started: Some(2),
            ports: vec![],
            accel: "tcg".into(),
            restart: Restart::Always,
            restarts: 7,
            status,
            qemu: None,
            monitor: None,
            cluster: None,
            dist: None,
            foreground: false,
        }
    }

    #[test]
    fn exit_statuses_map_to_process_codes() {
        assert_eq!(exit_code(&record(Status::Exited { code: 3 })), ExitCode::from(3));
        assert_eq!(
            exit_code(&record(Status::Exited { code: 300 })),
            ExitCode::from(125)
        );
    }
}
