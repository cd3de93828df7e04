//! `unibeam down`: stops and removes everything `unibeam up` started.

use crate::progress::Console;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use unibeam_lifecycle::{down, paths};

pub const FAILURE_EXIT: u8 = 1;

/// Stop and remove every instance of a cluster, and its state.
///
/// Each instance gets the power button (a graceful `init:stop()`) and
/// `--time` seconds before it is killed; then its directory, the cluster's
/// cookie and its images are removed. Volumes stay unless `--volumes`.
#[derive(Args)]
pub struct DownArgs {
    /// The cluster file `unibeam up` was given
    #[arg(short = 'f', long = "file", default_value = "unibeam.toml")]
    file: PathBuf,
    /// Seconds each instance gets to power off before it is killed
    #[arg(short = 't', long = "time", default_value_t = 30)]
    time: u64,
    /// Remove the replicas' volumes too (they are kept by default, for
    /// the next `up`)
    #[arg(long)]
    volumes: bool,
}

pub fn down(args: DownArgs) -> Result<ExitCode> {
    let grace = Duration::from_secs(args.time);
    let volumes = if args.volumes {
        down::Volumes::Remove
    } else {
        down::Volumes::Keep
    };
    let (cluster, removed) =
        down::down_file(&paths::store()?, &args.file, grace, volumes, &Console::default())?;
    println!("cluster {cluster}: removed {removed} instances");
    Ok(ExitCode::SUCCESS)
}
