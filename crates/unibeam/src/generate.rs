//! `unibeam generate systemd`: unit files that bring detached instances
//! back after a host reboot, the way `podman generate systemd` does for
//! containers. A unit starts the instance from its stored record
//! (`unibeam start --foreground`), so the unit holds no settings of its own
//! beyond the stop timeout, and stays right while the instance exists.

use crate::progress::Console;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use unibeam_lifecycle::{paths, systemd};
use unibeam_vmm::state::InstanceName;

/// Write files that other programs use to run instances
#[derive(Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    what: Generate,
}

#[derive(Subcommand)]
enum Generate {
    Systemd(SystemdArgs),
}

/// Write systemd units that start instances at boot (like `podman generate systemd`).
///
/// One service per instance, `unibeam-<name>.service`, which starts the
/// instance from its stored record: the image, ports, memory, restart
/// policy and config it was run with (`run -d` or `up`).
///
///   start    ExecStart=unibeam start --foreground NAME (Type=exec): the
///            service's main process is the instance's monitor, which
///            boots QEMU and applies the instance's own --restart policy
///            (its count and backoff). The restart count starts again at 0.
///   stop     ExecStop=unibeam stop -t SECS NAME, as `unibeam stop` does it:
///            the power button, so the BEAM runs init:stop(); then QMP quit,
///            then SIGKILL. SECS is the instance's --stop-timeout plus 15 s;
///            TimeoutStopSec= leaves 30 s more before systemd kills what is left.
///   restart  Restart=no for --restart no; for on-failure[:N] and always,
///            Restart=on-abnormal: the monitor already restarts the guest,
///            so systemd steps in only when the monitor itself is killed.
///            A `unibeam stop` outside systemd stops the service for good.
///
/// With --cluster, NAME is a cluster (`unibeam up`): one service per
/// instance, each PartOf= a `unibeam-cluster-<name>.target` that wants
/// them all. Units name unibeam by its absolute path and carry
/// XDG_STATE_HOME, so they find the instance whoever runs them. Stop the
/// instance before enabling its unit (`systemctl enable --now`); as a
/// normal user install units in ~/.config/systemd/user with
/// `systemctl --user`, and `loginctl enable-linger` so they start at boot.
#[derive(Args)]
#[command(verbatim_doc_comment)]
struct SystemdArgs {
    /// The instance, or with --cluster the cluster, to write units for
    name: String,
    /// NAME is a cluster started with `unibeam up`
    #[arg(long)]
    cluster: bool,
    /// Write the units into DIR and print their paths, instead of printing
    /// the units
    #[arg(long, value_name = "DIR")]
    files: Option<PathBuf>,
}

pub fn generate(args: GenerateArgs) -> Result<ExitCode> {
    let Generate::Systemd(args) = args.what;
    let store = paths::store()?;
    let console = Console::default();
    let units = if args.cluster {
        systemd::cluster_units(&store, &args.name, &console)?
    } else {
        systemd::instance_units(&store, &InstanceName::parse(&args.name)?, &console)?
    };
    match &args.files {
        Some(dir) => {
            for path in systemd::write_units(dir, &units)? {
                println!("{}", path.display());
            }
        }
        None => {
            for (file, text) in &units {
                println!("# {file}\n{text}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
