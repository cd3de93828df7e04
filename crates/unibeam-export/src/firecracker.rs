//! `--to firecracker`: `firecracker.json` for `firecracker --no-api
//! --config-file`, beside the ELF `vmlinux` (Firecracker loads no bzImage)
//! and the initrd. The guest takes `Settings::address` on eth0, a tap the
//! operator creates (`host_dev_name`). Firecracker adds the
//! `virtio_mmio.device=` entries to the command line itself.
//!
//! The cookie: a read-only drive, `cookie.img`, holding the cookie (padded
//! to 512 bytes: Firecracker sizes disks in whole sectors). Firecracker
//! answers a serial request with an id it derives from the file, not
//! the `drive_id`, so init finds it as the first disk, `vda`: it is the
//! only drive. It is never written here.

use crate::instance::{self, mac_for, Addressing, Guest};
use crate::job::{Job, TargetError};
use serde_json::json;
use unibeam_spec::{SecretDisk, SecretFormat, SecretSource};
use unibeam_vmm::qemu::Machine;

pub const CONFIG_FILE: &str = "firecracker.json";
pub const KERNEL: &str = "vmlinux";
pub const INITRD: &str = "initramfs.img";
pub const COOKIE_DISK: &str = "cookie.img";

pub fn guest() -> Guest {
    Guest {
        machine: Machine::Microvm,
        addressing: Addressing::Static,
        cookie: SecretSource {
            disk: SecretDisk::Name("vda".into()),
            format: SecretFormat::Raw,
        },
    }
}

pub fn export(job: &Job) -> Result<Vec<String>, TargetError> {
    let s = job.settings;
    job.write(KERNEL, &job.source.vmlinux()?)?;
    job.write(INITRD, &instance::initrd(job, &guest()))?;
    let config = json!({
        "boot-source": {
            "kernel_image_path": KERNEL,
            "initrd_path": INITRD,
            "boot_args": instance::kernel_args(job, Machine::Microvm),
        },
        "drives": [{
            "drive_id": "cookie",
            "path_on_host": COOKIE_DISK,
            "is_root_device": false,
            "is_read_only": true,
        }],
        "machine-config": { "vcpu_count": s.cpus, "mem_size_mib": s.memory_mib, "smt": false },
        "network-interfaces": [{
            "iface_id": "eth0",
            "guest_mac": mac_for(s.address),
            "host_dev_name": s.tap,
        }],
    });
    job.write(CONFIG_FILE, &serde_json::to_vec_pretty(&config)?)?;
    Ok(vec![
        format!(
            "the cookie: printf %s VALUE > DIR/{COOKIE_DISK} && truncate -s 512 DIR/{COOKIE_DISK} (keep it out of version control)"
        ),
        format!(
            "the tap: ip tuntap add {} mode tap && ip addr add {}/{} dev {} && ip link set {} up",
            s.tap, s.gateway, s.prefix_len, s.tap, s.tap
        ),
        format!("run it: cd DIR && firecracker --no-api --config-file {CONFIG_FILE}"),
    ])
}
