//! `unibeam up`: every service of a unibeam.toml, started detached, on a
//! private network, meshed into one Erlang cluster.

use crate::progress::Console;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use unibeam_image::KernelChoice;
use unibeam_lifecycle::images::BuildSettings;
use unibeam_lifecycle::{paths, up};

pub const FAILURE_EXIT: u8 = 1;

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
    /// Kernel for the services built from releases: `specialised`,
    /// `debian` or a path, as `unibeam build --kernel` takes it
    #[arg(long, value_name = "specialised|debian|PATH", value_parser = crate::build::parse_kernel, env = "UNIBEAM_KERNEL")]
    kernel: Option<KernelChoice>,
}

pub fn up(args: UpArgs) -> Result<ExitCode> {
    let build = BuildSettings {
        kernel: args.kernel.unwrap_or(KernelChoice::Auto),
        ..BuildSettings::default()
    };
    let timeout = Duration::from_secs(args.timeout);
    let plan = up::up_file(&paths::store()?, &args.file, &build, timeout, &Console::default())?;
    println!("cluster {} is up: {} instances", plan.name, plan.members.len());
    Ok(ExitCode::SUCCESS)
}
