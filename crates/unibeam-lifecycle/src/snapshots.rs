//! `run --snapshot`: where a VM's cached state lives, keyed by everything
//! that decides what the saved guest holds. A key that differs in any of
//! them names another entry, so a changed image, setting, QEMU or machine
//! gets a cold boot and a fresh snapshot, never a stale state.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use unibeam_spec::BootSpec;
use unibeam_vmm::qemu::QemuCommand;
use unibeam_vmm::snapshot::{qemu_version_memo, SnapshotError};

/// In the cache, beside `snapshots/`: the cookies of `--snapshot` instances given none, one
/// per instance name (see instances.rs).
pub const COOKIES_DIR: &str = "snapshot-cookies";

/// The cache entry for `cmd` booting `boot` from the image whose
/// `image.json` is `manifest_json`: a directory under
/// `<cache>/snapshots/`, named by the key.
pub fn entry(
    cache: &Path,
    cmd: &QemuCommand,
    boot: &BootSpec,
    manifest_json: &[u8],
) -> Result<PathBuf, SnapshotError> {
    let mut key = Sha256::new();
    let snapshots = cache.join("snapshots");
    std::fs::create_dir_all(&snapshots).map_err(unibeam_spec::hostfs::at::<unibeam_spec::hostfs::PathIo>(
        &snapshots,
    ))?;
    key.update(qemu_version_memo(&cmd.binary, &snapshots)?);
    key.update([0]);
    // image.json records every layer's and the kernel's sha256.
    key.update(manifest_json);
    key.update([0]);
    key.update(serde_json::to_vec(boot).expect("plain data"));
    key.update([0]);
    key.update(serde_json::to_vec(&machine(cmd)).expect("plain data"));
    let hex: String = key
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(snapshots.join(hex))
}

/// `cmd` without what changes from run to run but not in the guest: the
/// run's own paths, the TSC rate measured on this boot (the restored
/// guest keeps the one it was told), and the host side of published ports
/// (the node's distribution port gets a free one each run; the guest only
/// ever sees its own port, and QEMU opens the host's afresh on a load).
fn machine(cmd: &QemuCommand) -> QemuCommand {
    let mut m = cmd.clone();
    for f in &mut m.forwards {
        f.host_ip = std::net::Ipv4Addr::UNSPECIFIED.into();
        f.host_port = 0;
    }
    m.qmp_socket = PathBuf::new();
    m.initrd = PathBuf::new();
    m.kernel = PathBuf::new();
    m.snapshots = Default::default();
    m.kernel_args.retain(|a| !a.starts_with("tsc_early_khz="));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_paths_and_the_measured_tsc_rate_are_not_part_of_the_key() {
        let mut a = QemuCommand {
            binary: "/usr/bin/qemu-system-x86_64".into(),
            accel: unibeam_vmm::Accel::Tcg,
            machine: unibeam_vmm::Machine::Microvm,
            memory_mib: 128,
            cpus: 1,
            kernel: "/cache/vmlinux".into(),
            initrd: "/run/a/initrd".into(),
            kernel_args: vec!["console=ttyS0".into()],
            forwards: Vec::new(),
            qmp_socket: "/run/a/qmp.sock".into(),
            private_net: None,
            acpi: false,
            drives: Vec::new(),
            snapshots: Default::default(),
        };
        a.kernel_args.push("tsc_early_khz=2000000".into());
        let mut b = a.clone();
        b.qmp_socket = "/elsewhere/qmp.sock".into();
        b.initrd = "/elsewhere/initrd".into();
        b.kernel_args.retain(|k| !k.starts_with("tsc_early_khz"));
        b.kernel_args.push("tsc_early_khz=2000123".into());
        a.forwards.push("127.0.0.1:40779:4370".parse().unwrap());
        b.forwards.push("127.0.0.1:38297:4370".parse().unwrap());
        assert_eq!(machine(&a), machine(&b));
        b.forwards[0].guest_port = 4371;
        assert_ne!(machine(&a), machine(&b), "the guest's ports are");
        b.memory_mib += 1;
        assert_ne!(machine(&a), machine(&b), "memory decides the saved guest");
    }
}
