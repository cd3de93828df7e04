//! `--to cloud-hypervisor`: `cloud-hypervisor.sh`, the command line in a
//! script, beside the ELF `vmlinux` (entered at its PVH note) and the
//! initrd. Devices are virtio-pci; the guest takes `Settings::address` on
//! a tap the operator creates. The cookie is a read-only disk with a
//! serial, from a file the operator names in `COOKIE_DISK` when running
//! the script: the script holds no secret.

use crate::instance::{self, mac_for, Addressing, Guest, COOKIE_SERIAL};
use crate::job::{Job, TargetError};
use std::os::unix::fs::PermissionsExt;
use unibeam_spec::hostfs::{at, PathIo};
use unibeam_spec::{SecretDisk, SecretFormat, SecretSource};
use unibeam_vmm::qemu::Machine;

pub const SCRIPT: &str = "cloud-hypervisor.sh";
pub const KERNEL: &str = "vmlinux";
pub const INITRD: &str = "initramfs.img";

pub fn guest() -> Guest {
    Guest {
        machine: Machine::Pc,
        addressing: Addressing::Static,
        cookie: SecretSource {
            disk: SecretDisk::Serial(COOKIE_SERIAL.into()),
            format: SecretFormat::Raw,
        },
    }
}

/// Single-quoted for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub fn export(job: &Job) -> Result<Vec<String>, TargetError> {
    let s = job.settings;
    job.write(KERNEL, &job.source.vmlinux()?)?;
    job.write(INITRD, &instance::initrd(job, &guest()))?;
    // One option per line, `--flag value`, so the line is easy to read
    // and to check (the export test maps each to QEMU's).
    let options = [
        ("--kernel", "\"$here/vmlinux\"".to_string()),
        ("--initramfs", "\"$here/initramfs.img\"".to_string()),
        ("--cmdline", quote(&instance::kernel_args(job, Machine::Pc))),
        ("--cpus", format!("boot={}", s.cpus)),
        ("--memory", format!("size={}M", s.memory_mib)),
        (
            "--net",
            format!("\"tap=${{TAP:-{}}},mac={}\"", s.tap, mac_for(s.address)),
        ),
        (
            "--disk",
            format!("\"path=$COOKIE_DISK,readonly=on,serial={COOKIE_SERIAL}\""),
        ),
        ("--serial", "tty".to_string()),
        ("--console", "off".to_string()),
    ];
    let mut script = format!(
        "#!/bin/sh\n\
         # {name} {version} on cloud-hypervisor, made by `unibeam export`.\n\
         # COOKIE_DISK: a file holding the Erlang cookie (kept out of version\n\
         # control; it is read as a disk). TAP: the host's tap device, with\n\
         # {gw}/{prefix} on it (default {tap}); the guest is {addr}.\n\
         set -eu\n\
         here=$(cd \"$(dirname \"$0\")\" && pwd)\n\
         : \"${{COOKIE_DISK:?set COOKIE_DISK to a file holding the cookie}}\"\n\
         exec cloud-hypervisor",
        name = job.name,
        version = job.source.manifest.release.version,
        gw = s.gateway,
        prefix = s.prefix_len,
        tap = s.tap,
        addr = s.address,
    );
    for (flag, value) in options {
        script.push_str(&format!(" \\\n    {flag} {value}"));
    }
    script.push('\n');
    job.write(SCRIPT, script.as_bytes())?;
    let path = job.dir.join(SCRIPT);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(at::<PathIo>(&path))?;
    Ok(vec![
        format!(
            "the tap: ip tuntap add {} mode tap && ip addr add {}/{} dev {} && ip link set {} up",
            s.tap, s.gateway, s.prefix_len, s.tap, s.tap
        ),
        format!("run it: COOKIE_DISK=PATH DIR/{SCRIPT}"),
    ])
}
