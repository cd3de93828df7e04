//! The exported VM's own settings: the boot spec in one more initrd layer,
//! and the kernel command line. What `run` works out per instance on the
//! host is worked out here once, at export, for the engine's network and
//! secret delivery.

use crate::job::Job;
use std::net::Ipv4Addr;
use unibeam_image::append_config_layer;
use unibeam_image::kpatch::APIC_BUS_KHZ_PARAM;
use unibeam_spec::{BootSpec, NetworkSpec, SecretSource};
use unibeam_vmm::qemu::{default_kernel_args, Accel, Machine, APIC_BUS_KHZ};

/// The virtio serial of the disk that carries the cookie, where the
/// engine lets us name one.
pub const COOKIE_SERIAL: &str = "unibeam-cookie";

/// How the guest gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// The engine serves DHCP: KubeVirt's masquerade, QEMU's user network.
    Dhcp,
    /// `Settings::address` on a tap the operator sets up.
    Static,
}

/// What an engine gives the guest.
pub struct Guest {
    /// `Pc` for virtio-pci engines, `Microvm` for virtio-mmio ones: it
    /// decides which virtio transport module loads (Debian kernels).
    pub machine: Machine,
    pub addressing: Addressing,
    pub cookie: SecretSource,
}

/// The image's boot spec with the export's settings, and the launch
/// planned from it as `run` plans it.
pub fn boot_spec(job: &Job, guest: &Guest) -> BootSpec {
    let s = job.settings;
    let mut boot = job.source.manifest.boot.clone();
    boot.hostname = job.name.to_string();
    let gateway = s.gateway;
    boot.network = match guest.addressing {
        Addressing::Dhcp => NetworkSpec {
            dhcp: true,
            ..NetworkSpec::qemu_user()
        },
        Addressing::Static => NetworkSpec {
            interface: "eth0".into(),
            dhcp: false,
            address: s.address,
            prefix_len: s.prefix_len,
            gateway,
            dns: gateway,
            private: None,
        },
    };
    boot.instance.memory_mib = s.memory_mib;
    if s.node_name.is_some() {
        boot.instance.node_name = s.node_name.clone();
    }
    boot.instance.cookie = None;
    boot.instance.cookie_from = Some(guest.cookie.clone());
    boot.plan_launch();
    boot.modules.retain(|m| guest.machine.needs_module(m));
    boot
}

/// The initrd the engine loads: the image's compressed layers as built
/// (the kernel unpacks them, so the artifact stays small) and the boot
/// spec as the last, uncompressed layer.
pub fn initrd(job: &Job, guest: &Guest) -> Vec<u8> {
    let mut initrd = job.source.initramfs.clone();
    append_config_layer(&mut initrd, &boot_spec(job, guest));
    initrd
}

/// The kernel command line, as `run` gives it for `machine` under KVM
/// (the engines run on KVM; nothing host-specific like the TSC rate of
/// this machine). QEMU's microvm and Firecracker add their
/// `virtio_mmio.device=` entries themselves.
pub fn kernel_args(job: &Job, machine: Machine) -> String {
    let mut args = default_kernel_args(machine, Accel::Kvm);
    if job.source.manifest.kernel.apic_bus_khz {
        // KVM's local APIC timer counts nanoseconds as QEMU's TCG one does.
        args.push(format!("{APIC_BUS_KHZ_PARAM}={APIC_BUS_KHZ}"));
    }
    args.join(" ")
}

/// A locally administered MAC derived from the guest's address, so two
/// exports for two addresses never share one.
pub fn mac_for(address: Ipv4Addr) -> String {
    let [a, b, c, d] = address.octets();
    format!("06:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}
