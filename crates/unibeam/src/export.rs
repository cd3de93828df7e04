//! `unibeam export`: parses the flags and hands them to unibeam-export.

use anyhow::{Context, Result};
use clap::Args;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use unibeam_export::{Settings, Target};

pub const FAILURE_EXIT: u8 = 1;

/// Export an image for another engine: OCI, KubeVirt, Nomad, Firecracker, cloud-hypervisor.
///
/// Writes, into DIR, what that engine runs the image from, with no unibeam
/// on the running side: the image's kernel and layers, plus one small
/// initrd layer with this VM's settings (network, memory, ports, node
/// name). The cookie is never written: the engine hands it to the guest
/// at boot, and init reads it from there.
///
///   oci               an OCI image layout: /boot/vmlinuz and
///                     /boot/initramfs.img owned by UID 107, as KubeVirt's
///                     kernelBoot takes them (check: skopeo inspect oci:DIR)
///   kubevirt          oci/ plus kubevirt.yaml: a VirtualMachine booting
///                     that image's kernel (masquerade net, DHCP), a headless
///                     Service for DNS, a Service for -p ports; the cookie
///                     is a Secret (key "cookie") attached as a disk
///   nomad             nomad.json (Nomad's JSON job spec, qemu driver) and
///                     NAME.tar.gz, its artifact (sha256 in the job); the
///                     cookie comes from the Nomad variable nomad/jobs/NAME
///                     through a template
///   firecracker       firecracker.json (--config-file), vmlinux, initrd;
///                     static --address on a tap; the cookie is the drive
///                     cookie.img you create
///   cloud-hypervisor  cloud-hypervisor.sh (its command line), vmlinux,
///                     initrd; static --address on a tap; COOKIE_DISK
///                     names the cookie's file
///
/// DIR must be new, empty, or an earlier export (replaced whole); unibeam
/// never deletes a directory it did not make.
///
/// Examples:
///   unibeam export hello.unibeam --to kubevirt -o deploy/k8s -p 8080
///   unibeam export hello.unibeam --to nomad -o deploy/nomad -p 8080 \
///       --artifact-url https://files.internal/hello.tar.gz
///   unibeam export hello.unibeam --to firecracker -o fc --memory 256M \
///       --address 172.16.0.2/24 --gateway 172.16.0.1 --tap tap0
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct ExportArgs {
    /// The image directory (`unibeam build` output)
    image: PathBuf,
    /// The engine: oci, kubevirt, nomad, firecracker or cloud-hypervisor
    #[arg(long = "to", value_name = "TARGET", value_parser = parse_target)]
    to: Target,
    /// Where to write the export
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    output: PathBuf,
    /// The VM's, job's and services' name, and the guest's hostname
    /// [default: the release's name]
    #[arg(long)]
    name: Option<String>,
    /// The guest's memory, e.g. 128M or 1G
    #[arg(long, default_value = "128M", value_parser = unibeam_cluster::values::parse_memory)]
    memory: u32,
    /// Virtual CPUs
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    cpus: u32,
    /// A guest TCP port the engine publishes (repeatable), e.g. -p 8080
    #[arg(short = 'p', long = "publish", value_name = "PORT")]
    ports: Vec<u16>,
    /// The node name, `name` or `name@host` [default: the release's]
    #[arg(long)]
    node_name: Option<String>,
    /// firecracker, cloud-hypervisor: the guest's address on its tap
    #[arg(long, default_value = "172.16.0.2/24", value_name = "IP/PREFIX", value_parser = parse_cidr)]
    address: (Ipv4Addr, u8),
    /// firecracker, cloud-hypervisor: the tap's (the host's) address
    #[arg(long, default_value = "172.16.0.1")]
    gateway: Ipv4Addr,
    /// firecracker, cloud-hypervisor: the host's tap device
    #[arg(long, default_value = "tap0")]
    tap: String,
    /// kubevirt: where the image will be pushed [default: localhost/NAME:VERSION]
    #[arg(long, value_name = "REF")]
    image_ref: Option<String>,
    /// nomad: the URL the artifact archive will be served from
    #[arg(long, value_name = "URL")]
    artifact_url: Option<String>,
}

fn parse_target(s: &str) -> Result<Target, String> {
    s.parse()
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad = || format!("{s:?}: expected IP/PREFIX, e.g. 172.16.0.2/24");
    let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&prefix) {
        return Err(bad());
    }
    Ok((ip.parse().map_err(|_| bad())?, prefix))
}

pub fn export(args: ExportArgs) -> Result<ExitCode> {
    let settings = Settings {
        name: args.name,
        memory_mib: args.memory,
        cpus: args.cpus,
        ports: args.ports,
        node_name: args.node_name,
        address: args.address.0,
        prefix_len: args.address.1,
        gateway: args.gateway,
        tap: args.tap,
        image_ref: args.image_ref,
        artifact_url: args.artifact_url,
    };
    let done = unibeam_export::export(&args.image, args.to, &args.output, &settings)
        .with_context(|| format!("export {} --to {}", args.image.display(), args.to))?;
    println!(
        "exported {} for {} into {}:",
        args.image.display(),
        args.to,
        done.dir.display()
    );
    for file in &done.files {
        println!("  {file}");
    }
    let dir = done.dir.display().to_string();
    for step in &done.next_steps {
        println!("next: {}", step.replace("DIR", &dir));
    }
    Ok(ExitCode::SUCCESS)
}
