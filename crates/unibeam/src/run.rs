//! `unibeam run`: boot an image (building it first from a release) in the
//! foreground and exit with the app's own status.

use crate::timeline::TimelineWriter;
use crate::{build, instance, paths};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use unibeam_image::kpatch::APIC_BUS_KHZ_PARAM;
use unibeam_image::manifest::KernelInfo;
use unibeam_image::{append_config_layer, bootfiles, ImageManifest, MANIFEST_FILE};
use unibeam_spec::BootSpec;
use unibeam_vmm::{
    check_cpus, choose_accel, default_kernel_args, find_qemu, run_foreground, Accel, AccelChoice, Machine,
    Outcome, PortForward, QemuCommand, APIC_BUS_KHZ,
};

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
    pub(crate) target: PathBuf,
    /// Publish a guest TCP port: [IP:]HOST_PORT:GUEST_PORT (IP defaults to 127.0.0.1)
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOST:GUEST")]
    pub(crate) publish: Vec<PortForward>,
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
    /// Print the full QEMU command line
    #[arg(short, long)]
    verbose: bool,
    /// Print the boot timeline once the release's applications have started
    #[arg(long)]
    timings: bool,
    /// Run in the background as a named instance; see `ps`, `logs`, `stop`
    #[arg(short = 'd', long)]
    pub(crate) detach: bool,
    /// With -d: restart policy: no, on-failure[:N] or always
    #[arg(long, value_name = "POLICY", default_value = "no", value_parser = crate::detach::parse_restart)]
    pub(crate) restart: unibeam_vmm::state::Restart,
    #[command(flatten)]
    pub(crate) instance: instance::InstanceArgs,
    #[command(flatten)]
    build: build::BuildFlags,
}

/// `run`'s arguments parsed from a list, for verbs that start instances
/// the way `run -d` does (`up`).
#[derive(clap::Parser)]
#[command(no_binary_name = true)]
pub(crate) struct RunLine {
    #[command(flatten)]
    pub(crate) args: RunArgs,
}

/// `256M`, `1G`, `512` (MiB) → MiB.
fn parse_memory(s: &str) -> Result<u32, String> {
    unibeam_cluster::values::parse_memory(s)
}

/// An image dir as given, or a release built into `scratch` (layers come
/// from the cache, so this is quick after the first build, and runs of
/// different releases never share a half-replaced image).
fn resolve_image(target: &Path, flags: &build::BuildFlags, scratch: &Path) -> Result<PathBuf> {
    if target.join(MANIFEST_FILE).is_file() {
        return Ok(target.to_path_buf());
    }
    let not_runnable = || format!("{} is neither a unibeam image nor a release", target.display());
    let input = build::resolve(target, flags).with_context(not_runnable)?;
    build::flags_release(&input.dir, flags).with_context(not_runnable)?;
    let output = scratch.join("image");
    build::build_to(&input.dir, &output, flags)?;
    Ok(output)
}

/// Every value of `run` that can be wrong on its own, checked before
/// anything is built, claimed or started.
pub(crate) fn check_run_args(args: &RunArgs) -> Result<()> {
    for p in &args.publish {
        if p.host_ip.is_ipv6() {
            bail!(
                "-p {}:{}:{}: IPv6 is not supported; publish on an IPv4 address such as 127.0.0.1 or 0.0.0.0",
                p.host_ip,
                p.host_port,
                p.guest_port
            );
        }
    }
    args.instance.check()
}

/// The image's layers, unpacked (cached), plus this instance's config
/// layer, as one file: QEMU takes a single initrd.
fn instance_initrd(mut layers: Vec<u8>, boot: &BootSpec, runtime: &Path) -> Result<PathBuf> {
    append_config_layer(&mut layers, boot);
    let initrd = runtime.join("initrd.img");
    std::fs::write(&initrd, layers).with_context(|| format!("writing {}", initrd.display()))?;
    Ok(initrd)
}

/// Builds the image if needed and prepares the VM in `workdir`: the
/// instance's initrd, the QMP socket, the accelerator. Shared by the
/// foreground and detached paths.
pub(crate) fn prepare(
    args: &RunArgs,
    workdir: &Path,
    default_hostname: Option<&str>,
) -> Result<(QemuCommand, ImageManifest)> {
    let qemu = find_qemu()?;
    let image_dir = resolve_image(&args.target, &args.build, workdir)?;
    let manifest = ImageManifest::read(&image_dir)?;
    let mut boot = manifest.boot.clone();
    if let Some(name) = default_hostname {
        boot.hostname = name.to_string();
    }
    args.instance.apply(&mut boot)?;
    boot.instance.memory_mib = args.memory;
    for warning in boot.plan_launch() {
        eprintln!("warning: {warning}");
    }
    let machine = match args.machine {
        MachineArg::Microvm => Machine::Microvm,
        MachineArg::Pc => Machine::Pc,
    };
    check_cpus(machine, args.cpus, manifest.kernel.acpi)?;
    boot.modules.retain(|m| machine.needs_module(m));
    let cache = paths::cache_dir()?;
    let files = bootfiles::prepare(&image_dir, &manifest, &cache, !args.bzimage)?;
    let kernel = files.kernel;
    let choice = match args.accel {
        AccelArg::Auto => AccelChoice::Auto,
        AccelArg::Kvm => AccelChoice::Force(Accel::Kvm),
        AccelArg::Tcg => AccelChoice::Force(Accel::Tcg),
    };
    let decision = choose_accel(choice, &qemu, &kernel, &cache).map_err(anyhow::Error::msg)?;
    eprintln!("unibeam: accelerator {}: {}", decision.accel, decision.reason);
    let cmd = QemuCommand {
        binary: qemu,
        accel: decision.accel,
        machine,
        memory_mib: args.memory,
        cpus: args.cpus,
        kernel,
        initrd: instance_initrd(files.layers, &boot, workdir)?,
        kernel_args: kernel_args(machine, decision.accel, &manifest.kernel),
        forwards: args.publish.clone(),
        qmp_socket: workdir.join("qmp.sock"),
        private_net: args.instance.private_net(),
        acpi: manifest.kernel.acpi,
    };
    if args.verbose {
        eprintln!("unibeam: {}", cmd.display_line());
    }
    Ok((cmd, manifest))
}

/// The defaults, plus QEMU's APIC bus frequency for a kernel that reads it.
fn kernel_args(machine: Machine, accel: Accel, kernel: &KernelInfo) -> Vec<String> {
    let mut args = default_kernel_args(machine, accel);
    if kernel.apic_bus_khz {
        args.push(format!("{APIC_BUS_KHZ_PARAM}={APIC_BUS_KHZ}"));
    }
    args
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    // Before anything is built, claimed or started.
    check_run_args(&args)?;
    if args.detach {
        return crate::detach::run_detached(&args);
    }
    let started = std::time::Instant::now();
    // Before any slow build: without QEMU nothing else matters.
    find_qemu()?;
    let runtime = crate::scratch::runtime_dir()?;
    let (cmd, manifest) = prepare(&args, runtime.path(), None)?;
    eprintln!(
        "unibeam: booting {} {} ({})",
        manifest.release.name,
        manifest.release.version,
        manifest.size_summary()
    );
    let grace = args.instance.stop_grace();
    let outcome = if args.timings {
        run_foreground(&cmd, TimelineWriter::new(std::io::stdout(), started), grace)?
    } else {
        run_foreground(&cmd, std::io::stdout(), grace)?
    };
    match outcome {
        Outcome::Exited(status) => Ok(ExitCode::from(status)),
        Outcome::KernelPanic(line) => bail!("guest kernel panic: {line}"),
        Outcome::NoStatus { detail } => bail!("{detail}"),
        Outcome::OutOfMemory(line) => bail!(
            "the guest ran out of memory ({line}); {}",
            more_memory(&args, &manifest)
        ),
        Outcome::OomKilled { status } => {
            eprintln!(
                "unibeam: the guest's OOM killer ended the BEAM; {}",
                more_memory(&args, &manifest)
            );
            Ok(ExitCode::from(status))
        }
        Outcome::InitFailed(reason) => bail!("the guest's init failed: {reason}"),
    }
}

/// The fix for a guest that ran out of memory, with what its files take:
/// they live in RAM, and twice over while the kernel unpacks them.
fn more_memory(args: &RunArgs, manifest: &ImageManifest) -> String {
    format!(
        "give it more with --memory (now {} MiB; the image's files take {:.1} MB of it)",
        args.memory,
        manifest.initramfs.uncompressed_bytes as f64 / 1e6
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("256M"), Ok(256));
        assert_eq!(parse_memory("1g"), Ok(1024));
        assert_eq!(parse_memory("512"), Ok(512));
        assert!(parse_memory("12M").unwrap_err().contains("too little"));
        assert!(parse_memory("lots").unwrap_err().contains("\"lots\""));
    }

    #[test]
    fn only_a_kernel_that_reads_it_is_told_the_apic_bus_frequency() {
        let mut kernel: KernelInfo = serde_json::from_str(
            r#"{"origin": {"kind": "file", "path": "/k"}, "release": "6.1", "file": "vmlinuz", "bytes": 1}"#,
        )
        .unwrap();
        let told = |k: &KernelInfo| {
            kernel_args(Machine::Microvm, Accel::Tcg, k).contains(&"apic_bus_khz=1000000".to_string())
        };
        assert!(
            !told(&kernel),
            "images from before the field boot kernels without it"
        );
        kernel.apic_bus_khz = true;
        assert!(told(&kernel));
    }
}
