//! `unibeam run`: boot an image (building it first from a release) in the
//! foreground and exit with the app's own status.

use crate::progress::Console;
use crate::{build, instance};
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use unibeam_lifecycle::timeline::TimelineWriter;
use unibeam_lifecycle::vm::VmSpec;
use unibeam_lifecycle::{foreground, instances, paths, Progress};
use unibeam_vmm::{Accel, AccelChoice, Machine, Outcome, PortForward};

/// Exit code for failures of unibeam itself, as `docker run` uses 125.
pub const FAILURE_EXIT: u8 = 125;

#[derive(Clone, Copy, ValueEnum)]
enum AccelArg {
    /// KVM if a probe VM proves it works, else TCG
    Auto,
    Kvm,
    Tcg,
}

#[derive(Clone, Copy, ValueEnum)]
enum MachineArg {
    /// No PCI, no firmware: the fastest boot (virtio-mmio devices)
    Microvm,
    /// The classic PC: for kernels without virtio-mmio
    Pc,
}

/// Boot a release or an image as a microVM, in the foreground.
///
/// The guest console streams to stdout. unibeam exits with the BEAM's own
/// exit status (`erlang:halt(3)` gives 3), or 125 when unibeam itself fails.
/// Ctrl-C presses the VM's power button: the BEAM runs `init:stop()` and the
/// VM powers off; a second Ctrl-C kills it.
#[derive(Args)]
pub struct RunArgs {
    /// An image directory from `unibeam build`, or a release (directory,
    /// tarball or project) to build first
    target: PathBuf,
    /// Publish a guest TCP port: [IP:]HOST_PORT:GUEST_PORT (IP defaults to 127.0.0.1)
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOST:GUEST")]
    publish: Vec<PortForward>,
    /// Guest memory, e.g. 256M or 1G (plain numbers are MiB). The hello
    /// example needs 48M with the specialised kernel (docs/benchmarks.md);
    /// below 128M the BEAM gets fewer dirty I/O threads and allocator
    /// instances (+SDio 2 +MMmcs 0 +Mut false; --vm-arg overrides)
    #[arg(long, default_value = "128M", value_parser = parse_memory)]
    memory: u32,
    /// Virtual CPUs
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    cpus: u32,
    /// Accelerator
    #[arg(long, value_enum, default_value = "auto")]
    accel: AccelArg,
    /// QEMU machine type
    #[arg(long, value_enum, default_value = "microvm")]
    machine: MachineArg,
    /// Boot the image's bzImage as it is, where `run` would otherwise hand
    /// QEMU the kernel's ELF through its PVH entry (kept for comparison:
    /// under TCG the guest then spends about a second decompressing it)
    #[arg(long)]
    bzimage: bool,
    /// Start from a saved state: the first run with these settings boots
    /// cold and saves the VM at "applications started" (in
    /// ~/.cache/unibeam/snapshots/); later runs with the same image,
    /// settings and QEMU load it instead of booting, in a fraction of a
    /// second. The restored guest's random pool is reseeded and its clocks
    /// moved on. Not with volumes
    #[arg(long)]
    snapshot: bool,
    /// Print the full QEMU command line
    #[arg(long)]
    verbose: bool,
    /// Print the boot timeline once the release's applications have started
    #[arg(long)]
    timings: bool,
    /// Run in the background as a named instance; see `ps`, `logs`, `stop`
    #[arg(short = 'd', long)]
    detach: bool,
    /// With -d: restart policy: no, on-failure[:N] or always
    #[arg(long, value_name = "POLICY", default_value = "no")]
    restart: unibeam_vmm::state::Restart,
    /// With -d or --name: keep the node unreachable from the host. By
    /// default the node's distribution port is published on 127.0.0.1
    /// (only) and the node gets a random cookie of its own (or
    /// --cookie-file's), so `remsh`, `rpc` and `top` can reach it; a
    /// release that names no node is named after itself
    #[arg(long)]
    no_dist: bool,
    /// Attach a volume: NAME:/path[:ro] (repeatable). It is made (1G) if
    /// it does not exist; init mounts it before the BEAM starts, writable
    /// by the BEAM's user unless :ro. See `unibeam volume --help`
    #[arg(short = 'v', long = "volume", value_name = "NAME:/PATH[:ro]")]
    volumes: Vec<unibeam_cluster::volume::VolumeRequest>,
    #[command(flatten)]
    instance: instance::InstanceArgs,
    #[command(flatten)]
    build: build::BuildFlags,
}

/// `256M`, `1G`, `512` (MiB) → MiB.
fn parse_memory(s: &str) -> Result<u32, String> {
    unibeam_cluster::values::parse_memory(s)
}

impl RunArgs {
    /// The flags as the library takes them.
    fn spec(&self) -> VmSpec {
        VmSpec {
            target: self.target.clone(),
            publish: self.publish.clone(),
            memory_mib: self.memory,
            cpus: self.cpus,
            accel: match self.accel {
                AccelArg::Auto => AccelChoice::Auto,
                AccelArg::Kvm => AccelChoice::Force(Accel::Kvm),
                AccelArg::Tcg => AccelChoice::Force(Accel::Tcg),
            },
            machine: match self.machine {
                MachineArg::Microvm => Machine::Microvm,
                MachineArg::Pc => Machine::Pc,
            },
            bzimage: self.bzimage,
            restart: self.restart,
            // An unnamed foreground run keeps no record for remsh and
            // rpc to find, so it gets no distribution port either.
            dist: (self.detach || self.instance.named()) && !self.no_dist,
            volumes: self.volumes.clone(),
            snapshot: self.snapshot,
            instance: self.instance.settings(),
            build: self.build.settings(),
        }
    }
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let spec = args.spec();
    let progress = Console::default();
    if args.detach {
        println!("{}", instances::create(&paths::store()?, &spec, &progress)?);
        return Ok(ExitCode::SUCCESS);
    }
    let console: Box<dyn std::io::Write + Send> = if args.timings {
        let started = std::time::Instant::now();
        Box::new(TimelineWriter::new(
            std::io::stdout(),
            started,
            Box::new(|t| eprint!("{t}")),
        ))
    } else {
        Box::new(std::io::stdout())
    };
    let finished = foreground::run(&spec, console, args.verbose, &progress)?;
    let advice = finished.more_memory_advice;
    match finished.outcome {
        Outcome::Exited(status) => Ok(ExitCode::from(status)),
        Outcome::KernelPanic(line) => bail!("guest kernel panic: {line}"),
        Outcome::NoStatus { detail } => bail!("{detail}"),
        Outcome::OutOfMemory(line) => bail!("the guest ran out of memory ({line}); {advice}"),
        Outcome::OomKilled { status } => {
            progress.note(&format!("the guest's OOM killer ended the BEAM; {advice}"));
            Ok(ExitCode::from(status))
        }
        Outcome::InitFailed(reason) => bail!("the guest's init failed: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("256M"), Ok(256));
        assert!(parse_memory("12M").unwrap_err().contains("too little"));
    }
}
