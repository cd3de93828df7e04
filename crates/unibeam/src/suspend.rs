//! `unibeam suspend NAME`, and the two hidden verbs QEMU runs at the ends
//! of its `exec:` migration pipe to write and read a saved state.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use unibeam_lifecycle::{paths, suspend};
use unibeam_vmm::state::InstanceName;

pub const FAILURE_EXIT: u8 = 125;

/// Save a running instance's whole state and stop its VM.
///
/// The state (QEMU's migration stream, compressed) goes into the
/// instance's directory; `ps` shows the instance as `suspended`, and
/// `unibeam start NAME` resumes it where it was, its ports published
/// again and its clocks moved on by the time it spent suspended. A state
/// that no longer loads (damaged, or saved by another QEMU version) is
/// dropped with a warning, and the instance boots cold instead.
///
/// Example: unibeam suspend web && unibeam start web
#[derive(Args)]
pub struct SuspendArgs {
    /// The instance, as `unibeam ps` lists it
    name: InstanceName,
}

pub fn suspend(args: SuspendArgs) -> Result<ExitCode> {
    let meta = suspend::suspend(&paths::store()?, &args.name)?;
    eprintln!(
        "unibeam: {} suspended ({:.1} MB saved); `unibeam start {}` resumes it",
        args.name,
        meta.stream.compressed_bytes as f64 / 1e6,
        args.name
    );
    println!("{}", args.name);
    Ok(ExitCode::SUCCESS)
}

/// `unibeam snapshot-write DIR`: QEMU's outgoing migration, from stdin.
pub fn write_state(dir: PathBuf, level: &str) -> Result<ExitCode> {
    use unibeam_vmm::snapstream::Compression;
    let compression =
        Compression::from_arg(level).with_context(|| format!("--level {level}: not fast or small"))?;
    unibeam_vmm::snapstream::write(std::io::stdin().lock(), &dir, compression)?;
    Ok(ExitCode::SUCCESS)
}

/// `unibeam snapshot-read DIR`: QEMU's incoming migration, to stdout.
pub fn read_state(dir: PathBuf) -> Result<ExitCode> {
    unibeam_vmm::snapshot::read_to_stdout(&dir)?;
    Ok(ExitCode::SUCCESS)
}
