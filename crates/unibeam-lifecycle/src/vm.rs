//! One VM from an image (or a release, built first): its settings as
//! values, the checks made before anything starts, the QEMU command
//! prepared in a work directory, and a foreground boot.

use crate::images::{self, BuildSettings, ImagesError};
use crate::paths::{self, PathsError};
use crate::progress::Progress;
use crate::scratch::{self, ScratchError};
use crate::settings::{InstanceSettings, SettingsError};
use crate::volumes::{self, VolumesError};
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_cluster::volume::VolumeRequest;
use unibeam_image::bootfiles::{self, BootFilesError};
use unibeam_image::kpatch::APIC_BUS_KHZ_PARAM;
use unibeam_image::manifest::{KernelInfo, ManifestError};
use unibeam_image::{append_config_layer, ImageManifest, MANIFEST_FILE};
use unibeam_spec::hostfs::{self, PathIo};
use unibeam_spec::BootSpec;
use unibeam_vmm::drives::{self, DriveError};
use unibeam_vmm::state::{Restart, INITRD_FILE, QMP_SOCKET};
use unibeam_vmm::{
    check_cpus, choose_accel, default_kernel_args, find_qemu, run_foreground, Accel, AccelChoice, Machine,
    Outcome, PortForward, QemuCommand, QemuError, RunError, APIC_BUS_KHZ,
};

#[derive(Debug, Error)]
pub enum VmError {
    #[error("--snapshot cannot be used with volumes (-v): a saved guest's memory would not match what the disk holds by its next start; use `unibeam suspend` for a VM with volumes")]
    SnapshotWithVolumes,
    #[error("--snapshot: the cache entry")]
    SnapshotCache(#[source] unibeam_vmm::snapshot::SnapshotError),
    #[error(
        "-p {0}:{1}:{2}: IPv6 is not supported; publish on an IPv4 address such as 127.0.0.1 or 0.0.0.0"
    )]
    Ipv6Publish(std::net::IpAddr, u16, u16),
    #[error("-p: host port {0} is published twice; give each mapping a host port of its own")]
    HostPortTwice(u16),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("{} is neither a unibeam image nor a release", .0.display())]
    NotRunnable(PathBuf, #[source] ImagesError),
    #[error(transparent)]
    Images(#[from] ImagesError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Qemu(#[from] QemuError),
    #[error(transparent)]
    BootFiles(#[from] BootFilesError),
    #[error(transparent)]
    Paths(#[from] PathsError),
    #[error(transparent)]
    Scratch(#[from] ScratchError),
    #[error(transparent)]
    Accel(#[from] unibeam_vmm::accel::AccelError),
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Volumes(#[from] VolumesError),
    #[error(transparent)]
    Drive(#[from] DriveError),
    #[error(transparent)]
    Networks(#[from] crate::networks::NetworksError),
}

/// Everything `run` needs to boot one VM, as values.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// An image directory, or a release (directory, tarball or project)
    /// to build first.
    pub target: PathBuf,
    pub publish: Vec<PortForward>,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: AccelChoice,
    pub machine: Machine,
    /// Boot the bzImage as it is instead of the kernel's PVH ELF.
    pub bzimage: bool,
    /// Restart policy of a detached instance.
    pub restart: Restart,
    /// Make the node reachable from the host over Erlang distribution
    /// (`remsh`, `rpc`, `top`); off with `--no-dist`.
    pub dist: bool,
    /// Volumes to attach (`-v NAME:/path[:ro]`), made on first use.
    pub volumes: Vec<VolumeRequest>,
    /// `run --snapshot`: boot from the cached state saved at "applications
    /// started" by the first boot with these settings (snapshots.rs).
    pub snapshot: bool,
    pub instance: InstanceSettings,
    pub build: BuildSettings,
}

impl VmSpec {
    /// `target` with the defaults of a plain `unibeam run TARGET`.
    pub fn new(target: impl Into<PathBuf>) -> VmSpec {
        VmSpec {
            target: target.into(),
            publish: Vec::new(),
            memory_mib: 128,
            cpus: 1,
            accel: AccelChoice::Auto,
            machine: Machine::Microvm,
            bzimage: false,
            restart: Restart::No,
            dist: true,
            volumes: Vec::new(),
            snapshot: false,
            instance: InstanceSettings::default(),
            build: BuildSettings::default(),
        }
    }

    /// Every value that can be wrong on its own, checked before anything
    /// is built, claimed or started.
    pub fn check(&self) -> Result<(), VmError> {
        if self.snapshot && !self.volumes.is_empty() {
            return Err(VmError::SnapshotWithVolumes);
        }
        if let Some(p) = self.publish.iter().find(|p| p.host_ip.is_ipv6()) {
            return Err(VmError::Ipv6Publish(p.host_ip, p.host_port, p.guest_port));
        }
        // Two binds of one port clash on one address, or when either is
        // the wildcard.
        for (i, p) in self.publish.iter().enumerate() {
            let clash = |q: &&PortForward| {
                q.host_port == p.host_port
                    && (q.host_ip == p.host_ip || q.host_ip.is_unspecified() || p.host_ip.is_unspecified())
            };
            if self.publish[..i].iter().any(|q| clash(&q)) {
                return Err(VmError::HostPortTwice(p.host_port));
            }
        }
        let tls = self.instance.dist_tls || self.instance.dist_tls_files.is_some();
        crate::dist_tls::check_dist(tls, self.dist).map_err(SettingsError::from)?;
        Ok(self.instance.check()?)
    }

    /// The fix for a guest that ran out of memory, with what its files
    /// take: they live in RAM, and twice over while the kernel unpacks them.
    pub fn more_memory_advice(&self, manifest: &ImageManifest) -> String {
        format!(
            "give it more with --memory (now {} MiB; the image's files take {:.1} MB of it)",
            self.memory_mib,
            manifest.initramfs.uncompressed_bytes as f64 / 1e6
        )
    }
}

/// A VM ready to boot: its QEMU command and the image it boots.
pub struct Prepared {
    pub cmd: QemuCommand,
    pub manifest: ImageManifest,
    /// The node's full name (`name@host`), if it is distributed.
    pub node: Option<String>,
}

/// An image dir as given, or a release built into `scratch` (layers come
/// from the cache, so this is quick after the first build, and runs of
/// different releases never share a half-replaced image).
fn resolve_image(spec: &VmSpec, scratch: &Path, progress: &dyn Progress) -> Result<PathBuf, VmError> {
    let target = &spec.target;
    if target.join(MANIFEST_FILE).is_file() {
        return Ok(target.to_path_buf());
    }
    let not_runnable = |e| VmError::NotRunnable(target.clone(), e);
    let input = images::resolve(target, &spec.build).map_err(not_runnable)?;
    images::release_of(&input.dir, &spec.build).map_err(not_runnable)?;
    let output = scratch.join("image");
    images::build_to(&input.dir, &output, &spec.build, progress)?;
    Ok(output)
}

/// The image's layers, unpacked (cached), plus this instance's config
/// layer, as one file: QEMU takes a single initrd. The layers are copied
/// by the kernel (`io::copy` between files is copy_file_range): through
/// user space, hello's 14 MB took about 40 ms of every start.
fn instance_initrd(mut layers: std::fs::File, boot: &BootSpec, workdir: &Path) -> Result<PathBuf, VmError> {
    use std::io::Write;
    let initrd = workdir.join(INITRD_FILE);
    let failed = |e| VmError::from(hostfs::at::<PathIo>(&initrd)(e));
    let mut out = std::fs::File::create(&initrd).map_err(failed)?;
    let copied = std::io::copy(&mut layers, &mut out).map_err(failed)?;
    // The config layer starts 4-byte aligned, as the kernel wants.
    let mut tail = vec![0u8; (copied.next_multiple_of(4) - copied) as usize];
    let mut config = Vec::new();
    append_config_layer(&mut config, boot);
    tail.extend_from_slice(&config);
    out.write_all(&tail).map_err(failed)?;
    Ok(initrd)
}

/// The instance's boot spec: the image's, with `spec`'s settings applied
/// and the BEAM's command line planned on the host.
fn boot_spec(
    spec: &VmSpec,
    manifest: &ImageManifest,
    default_hostname: Option<&str>,
    progress: &dyn Progress,
) -> Result<BootSpec, VmError> {
    let mut boot = manifest.boot.clone();
    if let Some(name) = default_hostname {
        boot.hostname = name.to_string();
    }
    spec.instance.apply(&mut boot, progress)?;
    boot.instance.memory_mib = spec.memory_mib;
    // Before planning: the BEAM's command line differs (quiesce.rs).
    boot.instance.freeze_for_snapshot = spec.snapshot;
    let mut warnings = boot.plan_launch();
    if spec.dist && planned_node(&boot).is_none() {
        // A release that names no node gets one, so the host can reach it.
        boot.instance.node_name = Some(default_node_name(&boot.release.name));
        warnings = boot.plan_launch();
    }
    for warning in warnings {
        progress.warn(&warning);
    }
    boot.modules.retain(|m| spec.machine.needs_module(m));
    Ok(boot)
}

/// The node's full name as the guest will know it: a short name takes
/// the guest's hostname (up to its first dot).
pub fn planned_node(boot: &BootSpec) -> Option<String> {
    let node = boot.launch.as_ref()?.node.clone()?;
    if node.contains('@') {
        return Some(node);
    }
    let host = boot.hostname.split('.').next().unwrap_or(&boot.hostname);
    Some(format!("{node}@{host}"))
}

/// A short node name from the release's name: letters, digits, '_' and
/// '-' only.
fn default_node_name(release: &str) -> String {
    let name: String = release
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "node".into()
    } else {
        name
    }
}

/// Builds the image if needed and prepares the VM in `workdir`: the
/// instance's initrd, the QMP socket, the accelerator.
pub fn prepare(
    spec: &VmSpec,
    workdir: &Path,
    default_hostname: Option<&str>,
    progress: &dyn Progress,
) -> Result<Prepared, VmError> {
    let qemu = find_qemu()?;
    let joined = joined_network(spec, default_hostname)?;
    let spec = joined.as_ref().unwrap_or(spec);
    let image_dir = resolve_image(spec, workdir, progress)?;
    let manifest = ImageManifest::read(&image_dir)?;
    let tls = spec.instance.dist_tls || spec.instance.dist_tls_files.is_some();
    crate::dist_tls::check_release(tls, &manifest).map_err(SettingsError::from)?;
    check_cpus(spec.machine, spec.cpus, manifest.kernel.acpi)?;
    let mut boot = boot_spec(spec, &manifest, default_hostname, progress)?;
    let (drives, mounts) = volumes::attach(&paths::store()?, &spec.volumes, default_hostname, progress)?;
    boot.instance.volumes = mounts;
    let node = spec.dist.then(|| planned_node(&boot)).flatten();
    let cache = paths::cache_dir()?;
    let files = bootfiles::prepare(&image_dir, &manifest, &cache, !spec.bzimage)?;
    let decision = choose_accel(spec.accel, &qemu, &files.kernel, &cache)?;
    progress.note(&format!("accelerator {}: {}", decision.accel, decision.reason));
    let cmd = QemuCommand {
        binary: qemu,
        accel: decision.accel,
        machine: spec.machine,
        memory_mib: spec.memory_mib,
        cpus: spec.cpus,
        kernel: files.kernel,
        initrd: instance_initrd(files.layers, &boot, workdir)?,
        kernel_args: kernel_args(spec.machine, decision.accel, &manifest.kernel),
        forwards: spec.publish.clone(),
        qmp_socket: workdir.join(QMP_SOCKET),
        private_net: spec.instance.private_net(),
        acpi: manifest.kernel.acpi,
        drives,
        snapshots: Default::default(),
    };
    let mut cmd = cmd;
    if spec.snapshot {
        let manifest_json =
            std::fs::read(image_dir.join(MANIFEST_FILE)).map_err(hostfs::at::<PathIo>(&image_dir))?;
        let entry =
            crate::snapshots::entry(&cache, &cmd, &boot, &manifest_json).map_err(VmError::SnapshotCache)?;
        cmd.snapshots.cache = Some(entry);
    }
    Ok(Prepared { cmd, manifest, node })
}

/// `spec` with `--network`'s link: the instance's address on it, taken
/// now (or kept from an earlier start).
fn joined_network(spec: &VmSpec, instance: Option<&str>) -> Result<Option<VmSpec>, VmError> {
    let Some(network) = spec
        .instance
        .network
        .as_deref()
        .filter(|_| spec.instance.private_link.is_none())
    else {
        return Ok(None);
    };
    let (link, _) = crate::networks::join(network, &crate::networks::lease_key(instance))?;
    let mut joined = spec.clone();
    joined.instance.private_link = Some(link);
    Ok(Some(joined))
}

/// The defaults, plus QEMU's APIC bus frequency for a kernel that reads it.
fn kernel_args(machine: Machine, accel: Accel, kernel: &KernelInfo) -> Vec<String> {
    let mut args = default_kernel_args(machine, accel);
    if kernel.apic_bus_khz {
        args.push(format!("{APIC_BUS_KHZ_PARAM}={APIC_BUS_KHZ}"));
    }
    args
}

/// How a foreground run ended, with the advice for a guest that ran out
/// of memory.
pub struct Finished {
    pub outcome: Outcome,
    pub more_memory_advice: String,
}

/// `run` in the foreground: builds the image if needed, prepares the VM
/// in a scratch directory, and boots it with the console going to
/// `console` until it powers off; Ctrl-C presses its power button. With
/// `show_command` the QEMU command line is noted first.
pub fn run_attached(
    spec: &VmSpec,
    console: Box<dyn Write + Send>,
    show_command: bool,
    progress: &dyn Progress,
) -> Result<Finished, VmError> {
    spec.check()?;
    // Before any slow build: without QEMU nothing else matters.
    find_qemu()?;
    let runtime = scratch::runtime_dir()?;
    let prepared = prepare(spec, runtime.path(), None, progress)?;
    let holder = format!("a foreground `unibeam run` (pid {})", std::process::id());
    let _held = drives::lock_all(&prepared.cmd.drives, &holder)?;
    let finished = boot_prepared(spec, &prepared, console, show_command, progress, |_| ());
    crate::networks::leave(&crate::networks::lease_key(None));
    finished
}

/// Boots a prepared VM in the foreground until it powers off; `started`
/// is told QEMU's pid once it runs.
pub fn boot_prepared(
    spec: &VmSpec,
    prepared: &Prepared,
    console: Box<dyn Write + Send>,
    show_command: bool,
    progress: &dyn Progress,
    started: impl FnOnce(u32),
) -> Result<Finished, VmError> {
    if show_command {
        progress.note(&prepared.cmd.display_line());
    }
    let manifest = &prepared.manifest;
    progress.note(&format!(
        "booting {} {} ({})",
        manifest.release.name,
        manifest.release.version,
        manifest.size_summary()
    ));
    let mut cmd = prepared.cmd.clone();
    let _tap = crate::networks::open_tap(&mut cmd)?;
    let outcome = run_foreground(&cmd, console, spec.instance.stop_grace(), started)?;
    Ok(Finished {
        outcome,
        more_memory_advice: spec.more_memory_advice(manifest),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn ipv6_publishing_is_refused_before_anything_starts() {
        let mut spec = VmSpec::new("/nonexistent");
        spec.publish = vec!["[::1]:8080:80".parse().unwrap_or(PortForward {
            host_ip: "::1".parse().unwrap(),
            host_port: 8080,
            guest_port: 80,
        })];
        let err = spec.check().unwrap_err().to_string();
        assert!(err.contains("IPv6 is not supported"), "{err}");
    }

    #[test]
    fn a_host_port_published_twice_is_refused_before_anything_starts() {
        let mut spec = VmSpec::new("/nonexistent");
        let p = |s: &str| s.parse::<PortForward>().unwrap();
        spec.publish = vec![p("8080:8080"), p("8081:8081"), p("10.0.0.1:8080:80")];
        spec.check().unwrap();
        for twice in [p("8080:8081"), p("0.0.0.0:8081:80")] {
            spec.publish = vec![p("8080:8080"), p("8081:8081"), twice];
            let err = spec.check().unwrap_err().to_string();
            assert!(
                err.contains("host port") && err.contains("published twice"),
                "{err}"
            );
        }
    }
}
