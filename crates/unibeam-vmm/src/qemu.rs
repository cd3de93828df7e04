//! The QEMU command line as typed data, so it can be unit-tested, printed
//! with `--verbose`, and later extended without string surgery.

use crate::drives::Drive;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;
use thiserror::Error;
use unibeam_spec::{DEBUG_EXIT_PORT, VERDICT_PORT};

pub const QEMU_BINARY: &str = "qemu-system-x86_64";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum QemuError {
    #[error("{QEMU_BINARY} not found in PATH; install it with `apt-get install qemu-system-x86`")]
    NotInstalled,
    #[error("bad port mapping {0:?}: expected [IP:]HOST_PORT:GUEST_PORT, e.g. 8080:8080")]
    BadPortMapping(String),
    #[error(
        "--cpus {0} on --machine pc needs a kernel with ACPI: this image's kernel has none, and \
         pc's MP table lists one CPU; use --machine microvm (the default) or build with --kernel debian"
    )]
    PcSmpWithoutAcpi(u32),
}

/// Finds `qemu-system-x86_64` on PATH.
pub fn find_qemu() -> Result<PathBuf, QemuError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    unibeam_spec::hostfs::find_program(&path, QEMU_BINARY).ok_or(QemuError::NotInstalled)
}

/// Which QEMU accelerator runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// TCG's translation cache in MiB (`-accel tcg,tb-size=`). QEMU 7.2's
/// default is 1 GiB, and the pages it has filled stay resident: most of an
/// idle VM's host memory beyond the guest's own. Hello with `--memory 64M`,
/// one VM at a time, settings interleaved (QEMU RSS once HTTP answers; run
/// → first HTTP 200, medians of 4 on 2 busy cores): default 200 MB, 6.5 s;
/// 64: 186 MB, 6.3 s; 32: 151 MB, 5.6 s; 16: 130 MB, 7.4 s; 8: 120 MB,
/// 27.7 s. Below 32 the boot's code no longer fits and is translated again
/// after each flush; an idle VM's CPU is the same at 16, 32 and the default
/// (docs/benchmarks.md, Density). KVM has no translation cache.
pub const TCG_TB_SIZE_MIB: u32 = 32;

/// `-accel` value: TCG gets a bounded translation cache, see [`TCG_TB_SIZE_MIB`].
fn accel_arg(accel: Accel) -> String {
    match accel {
        Accel::Kvm => accel.to_string(),
        Accel::Tcg => format!("tcg,tb-size={TCG_TB_SIZE_MIB}"),
    }
}

/// QEMU's machine type. `microvm` has no PCI bus and no firmware to
/// emulate, so the kernel reaches init sooner; `pc` is the fallback for
/// kernels without virtio-mmio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Machine {
    #[default]
    Microvm,
    Pc,
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Machine::Microvm => "microvm",
            Machine::Pc => "pc",
        })
    }
}

impl Machine {
    /// `-machine` value. For an ACPI kernel, microvm's ACPI tables describe
    /// its virtio-mmio devices and carry the power button that
    /// `system_powerdown` presses. Without ACPI, QEMU lists the devices on
    /// the kernel command line instead (`virtio_mmio.device=`). pc's PS/2
    /// keyboard would take the keys meant for the virtio keyboard (QMP
    /// sends keys to the first keyboard), so it goes.
    fn qemu_arg(self, acpi: bool) -> &'static str {
        match (self, acpi) {
            (Machine::Microvm, true) => "microvm,acpi=on",
            (Machine::Microvm, false) => "microvm,acpi=off",
            (Machine::Pc, _) => "pc,i8042=off",
        }
    }

    /// The virtio transport's device suffix: `virtio-net-device` on MMIO.
    fn virtio_suffix(self) -> &'static str {
        match self {
            Machine::Microvm => "device",
            Machine::Pc => "pci",
        }
    }

    /// Whether the guest must load this module (a path or name) on this
    /// machine: the other machine's virtio transport is dead weight.
    pub fn needs_module(self, module: &str) -> bool {
        let name = module.rsplit('/').next().unwrap_or(module);
        let name = name.strip_suffix(".ko").unwrap_or(name);
        match self {
            Machine::Microvm => !name.starts_with("virtio_pci"),
            Machine::Pc => name != "virtio_mmio",
        }
    }
}

/// A TCP port published from the host to the guest (`-p`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortForward {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub guest_port: u16,
}

impl FromStr for PortForward {
    type Err = QemuError;

    /// `8080:80` or `0.0.0.0:8080:80`. Without an IP the port is published
    /// on 127.0.0.1 only: a dev VM should not face the network by surprise.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || QemuError::BadPortMapping(s.to_string());
        let (ip, rest) = match s.rsplitn(3, ':').collect::<Vec<_>>().as_slice() {
            [guest, host] => (IpAddr::V4(Ipv4Addr::LOCALHOST), (*host, *guest)),
            [guest, host, ip] => (ip.parse().map_err(|_| bad())?, (*host, *guest)),
            _ => return Err(bad()),
        };
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
        Ok(PortForward {
            host_ip: ip,
            host_port: port(rest.0)?,
            guest_port: port(rest.1)?,
        })
    }
}

/// A second NIC on a private L2 segment: a cluster's or a named network's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrivateNet {
    #[serde(flatten)]
    pub carrier: Carrier,
    /// Unique on the segment: QEMU would give every VM the same default.
    pub mac: String,
}

/// What carries the private segment's frames.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Carrier {
    /// QEMU itself, over UDP multicast on the host's loopback: no tap, no
    /// bridge, no root. Every VM of the segment joins the same group and port.
    Multicast { group: std::net::Ipv4Addr, port: u16 },
    /// A tap that is a port of a Linux bridge (a `bridge` network).
    Tap {
        tap: String,
        bridge: String,
        /// The tap's descriptor, once its owner opened it; QEMU inherits
        /// it. Never recorded: it means something only in one process.
        #[serde(skip)]
        fd: Option<i32>,
    },
}

impl PrivateNet {
    fn netdev(&self) -> String {
        match &self.carrier {
            Carrier::Multicast { group, port } => {
                format!("socket,id=net1,mcast={group}:{port},localaddr=127.0.0.1")
            }
            Carrier::Tap { fd: Some(fd), .. } => format!("tap,id=net1,fd={fd}"),
            // Only shown (`--show-command`) before the owner opens the tap.
            Carrier::Tap { tap, .. } => format!("tap,id=net1,ifname={tap},script=no,downscript=no"),
        }
    }
}

/// The user-mode NIC's MAC, explicit once a second NIC exists.
pub const USER_NIC_MAC: &str = "52:54:00:12:34:56";

/// Everything that decides how QEMU boots one image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QemuCommand {
    pub binary: PathBuf,
    pub accel: Accel,
    #[serde(default)]
    pub machine: Machine,
    pub memory_mib: u32,
    pub cpus: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub kernel_args: Vec<String>,
    pub forwards: Vec<PortForward>,
    pub qmp_socket: PathBuf,
    #[serde(default)]
    pub private_net: Option<PrivateNet>,
    /// Whether the kernel has ACPI: it decides the power button (see
    /// [`PowerButton`]). Records from before this field booted ACPI kernels.
    #[serde(default = "yes")]
    pub acpi: bool,
    /// Volumes, in the order the VM was asked for them.
    #[serde(default)]
    pub drives: Vec<Drive>,
    /// Saved states this VM boots from (snapshot.rs).
    #[serde(default, skip_serializing_if = "Snapshots::is_empty")]
    pub snapshots: Snapshots,
}

/// Where a VM's saved states are, and the one being loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshots {
    /// `run --snapshot`: the cached state for this image and these
    /// settings, saved by the first boot and loaded by later ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<PathBuf>,
    /// A suspended instance's state, loaded once by its next boot; the
    /// monitor sets it.
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// `-incoming`, while the runner loads a state.
    #[serde(skip)]
    pub incoming: Option<OsString>,
    /// The guest's RAM as a file (ramfile.rs), when `run --snapshot`
    /// saves or loads it that way; else QEMU's own anonymous memory.
    #[serde(skip)]
    pub ram: Option<RamBacking>,
}

/// A file that holds the guest's RAM: `shared` for the boot that saves
/// it, private (copy-on-write) for those that load it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamBacking {
    pub path: PathBuf,
    pub shared: bool,
}

impl RamBacking {
    /// QEMU's `-object` value; its id is what `-machine` names.
    fn object(&self, mib: u32) -> String {
        // QEMU's option syntax doubles a comma inside a value.
        let path = self.path.to_string_lossy().replace(',', ",,");
        let share = if self.shared { "on" } else { "off" };
        format!("memory-backend-file,id={RAM_BACKEND_ID},size={mib}M,mem-path={path},share={share}")
    }
}

const RAM_BACKEND_ID: &str = "ram0";

impl Snapshots {
    fn is_empty(&self) -> bool {
        self.cache.is_none()
    }
}

fn yes() -> bool {
    true
}

/// The file QEMU copies init's verdict port into, beside the QMP socket in
/// the run's own directory (see `unibeam_spec::VERDICT_PORT`).
pub const VERDICT_FILE: &str = "verdict";

/// The QEMU id of the virtio keyboard that carries the power key for
/// kernels without ACPI.
pub const POWER_KEY_DEVICE: &str = "power-key";

/// How the host asks the guest to stop: QMP presses it, the guest's init
/// reads `KEY_POWER` from whichever input device brings it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerButton {
    /// ACPI's power button, pressed with `system_powerdown`.
    Acpi,
    /// The power key of the virtio keyboard [`POWER_KEY_DEVICE`], pressed
    /// with `input-send-event`. A kernel without ACPI saves ~150 KB.
    VirtioKey,
}

/// Kernel arguments every image boots with: serial console, few messages
/// (each costs time on an emulated UART), and no reboot loop on panic.
/// microvm has no PCI bus, so the kernel is told not to look for one. It
/// still prints "PCI: Fatal: No config space access function found" (at
/// error level, whatever `pci=`), which the runner does not show.
///
/// microvm under TCG has no HPET or PM timer to calibrate the TSC against,
/// and on a busy host (3 VMs on 2 cores) the PIT-based fallbacks for the
/// TSC and then the local APIC timer spun for minutes before init. Under
/// TCG the guest's TSC is the host's, so its frequency is simply handed
/// over (`tsc_early_khz`). Under KVM, kvm-clock tells the guest instead.
///
/// `tsc=reliable` under TCG: the guest's TSC is the host's invariant TSC
/// plus QEMU's offset, but the kernel watches it against refined-jiffies
/// (microvm) or the HPET (pc), which lag on a busy host and stand still
/// across a snapshot restore that moves the TSC on; the watchdog then
/// marked the TSC unstable and timekeeping fell back to jiffies, which
/// lose the time a VM spent suspended (a resumed guest lagged by all of it).
///
/// No RCU stall warnings under TCG: a busy host starves the emulated CPU
/// for longer than the kernel's 21 s limit, and a restored guest sees its
/// jiffies jump by the time its state spent on disk; either way the
/// kernel printed a stall report and stack dump over the slow emulated
/// UART, just as a warm start should be answering.
///
/// `rootfstype=ramfs`: the kernel unpacks the initramfs into tmpfs by
/// default, capped at half the RAM it sees while the initrd still fills
/// some; a 13.8 MB image then failed to unpack below 56 MiB with memory
/// to spare. ramfs has no cap, and the guest has no swap for tmpfs to use.
pub fn default_kernel_args(machine: Machine, accel: Accel) -> Vec<String> {
    let mut args: Vec<String> = [
        "console=ttyS0",
        "quiet",
        "panic=-1",
        "rdinit=/init",
        "rootfstype=ramfs",
    ]
    .map(String::from)
    .to_vec();
    if accel == Accel::Tcg {
        args.push("tsc=reliable".into());
        args.push("rcupdate.rcu_cpu_stall_suppress=1".into());
    }
    if machine == Machine::Microvm {
        args.push("pci=off".into());
        if accel == Accel::Tcg {
            args.extend(host_tsc_khz().map(|khz| format!("tsc_early_khz={khz}")));
        }
    }
    args
}

/// QEMU's local APIC bus frequency, under TCG and KVM alike (its APIC
/// timer counts nanoseconds). A kernel that reads `apic_bus_khz=` (ours,
/// see unibeam-image's kpatch.rs) then skips calibrating its APIC timer.
pub const APIC_BUS_KHZ: u32 = 1_000_000;

/// The host's TSC frequency, measured against the monotonic clock over
/// 20 ms. /proc/cpuinfo's "cpu MHz" is the current core clock, which
/// frequency scaling moves away from the TSC's.
#[cfg(target_arch = "x86_64")]
pub fn host_tsc_khz() -> Option<u64> {
    use std::time::{Duration, Instant};
    // SAFETY: RDTSC exists on every x86_64 CPU and only reads a counter.
    let tsc = || unsafe { std::arch::x86_64::_rdtsc() };
    let (t0, c0) = (Instant::now(), tsc());
    std::thread::sleep(Duration::from_millis(20));
    let (c1, elapsed) = (tsc(), t0.elapsed());
    let khz = c1.checked_sub(c0)? as u128 * 1_000_000 / elapsed.as_micros().max(1) / 1000;
    u64::try_from(khz)
        .ok()
        .filter(|k| (100_000..20_000_000).contains(k))
}

#[cfg(not(target_arch = "x86_64"))]
pub fn host_tsc_khz() -> Option<u64> {
    None
}

/// Refuses CPUs the guest would not see: pc describes its CPUs in ACPI,
/// and the MP table its firmware adds for kernels without ACPI lists only
/// the boot CPU (microvm's lists them all).
pub fn check_cpus(machine: Machine, cpus: u32, acpi: bool) -> Result<(), QemuError> {
    if machine == Machine::Pc && !acpi && cpus > 1 {
        return Err(QemuError::PcSmpWithoutAcpi(cpus));
    }
    Ok(())
}

impl QemuCommand {
    /// Where init's verdict lands: only PID 1 can write it, unlike the
    /// console, which the BEAM shares.
    pub fn verdict_file(&self) -> PathBuf {
        self.qmp_socket.with_file_name(VERDICT_FILE)
    }

    /// `-chardev file,...` for the verdict; QEMU reads a doubled comma in
    /// an option value as a literal one.
    fn verdict_chardev(&self) -> OsString {
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        let mut arg = b"file,id=verdict,path=".to_vec();
        for &b in self.verdict_file().as_os_str().as_bytes() {
            arg.push(b);
            if b == b',' {
                arg.push(b',');
            }
        }
        OsString::from_vec(arg)
    }

    pub fn power_button(&self) -> PowerButton {
        if self.acpi {
            PowerButton::Acpi
        } else {
            PowerButton::VirtioKey
        }
    }

    fn netdev(&self) -> String {
        let mut netdev = String::from("user,id=net0");
        for f in &self.forwards {
            netdev.push_str(&format!(
                ",hostfwd=tcp:{}:{}-:{}",
                f.host_ip, f.host_port, f.guest_port
            ));
        }
        netdev
    }

    pub fn args(&self) -> Vec<OsString> {
        let cpu = match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        };
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
        push(&["-nodefaults", "-no-user-config", "-display", "none"]);
        let mut machine = self.machine.qemu_arg(self.acpi).to_string();
        if self.snapshots.ram.is_some() {
            machine.push_str(&format!(",memory-backend={RAM_BACKEND_ID}"));
        }
        push(&[
            "-machine",
            &machine,
            "-accel",
            &accel_arg(self.accel),
            "-cpu",
            cpu,
        ]);
        if self.machine == Machine::Microvm {
            // microvm's virtio-mmio transports default to legacy virtio,
            // which the virtio keyboard refuses (it needs VIRTIO_F_VERSION_1).
            push(&["-global", "virtio-mmio.force-legacy=false"]);
        }
        push(&["-m", &self.memory_mib.to_string(), "-smp", &self.cpus.to_string()]);
        if let Some(ram) = &self.snapshots.ram {
            push(&["-object", &ram.object(self.memory_mib)]);
        }
        push(&["-serial", "stdio", "-no-reboot"]);
        let virtio = self.machine.virtio_suffix();
        // romfile= skips the PXE option ROM: the kernel is loaded directly.
        let rom = if self.machine == Machine::Pc {
            ",romfile="
        } else {
            ""
        };
        let user_mac = match self.private_net {
            Some(_) => format!(",mac={USER_NIC_MAC}"),
            None => String::new(),
        };
        push(&[
            "-netdev",
            &self.netdev(),
            "-device",
            &format!("virtio-net-{virtio},netdev=net0{rom}{user_mac}"),
        ]);
        if let Some(p) = &self.private_net {
            push(&[
                "-netdev",
                &p.netdev(),
                "-device",
                &format!("virtio-net-{virtio},netdev=net1,mac={}{rom}", p.mac),
            ]);
        }
        // Entropy for the guest's random pool, so crypto never waits.
        push(&["-object", "rng-random,id=rng0,filename=/dev/urandom"]);
        push(&["-device", &format!("virtio-rng-{virtio},rng=rng0")]);
        // Every guest gets the virtio keyboard, ACPI or not: it carries the
        // snapshot keys (saved, restored), and a running VM cannot gain a
        // device before `suspend` saves it.
        push(&[
            "-device",
            &format!("virtio-keyboard-{virtio},id={POWER_KEY_DEVICE}"),
        ]);
        push(&[
            "-device",
            &format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=1"),
            "-device",
            &format!("isa-debugcon,iobase={VERDICT_PORT:#x},chardev=verdict"),
        ]);
        push(&[
            "-qmp",
            &format!("unix:{},server=on,wait=off", self.qmp_socket.display()),
        ]);
        push(&["-append", &self.kernel_args.join(" ")]);
        for (index, drive) in self.drives.iter().enumerate() {
            args.extend(drive.qemu_args(index, virtio));
        }
        args.push("-kernel".into());
        args.push(self.kernel.clone().into_os_string());
        args.push("-initrd".into());
        args.push(self.initrd.clone().into_os_string());
        // QEMU creates every chardev before any device, wherever it stands.
        args.push("-chardev".into());
        args.push(self.verdict_chardev());
        if let Some(incoming) = &self.snapshots.incoming {
            args.push("-incoming".into());
            args.push(incoming.clone());
        }
        args
    }

    /// The command as one shell-pasteable line, for `--verbose`.
    pub fn display_line(&self) -> String {
        std::iter::once(self.binary.clone().into_os_string())
            .chain(self.args())
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
#[path = "qemu_tests.rs"]
mod tests;
