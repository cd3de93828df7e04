//! Volumes: virtio-blk disks holding ext4, mounted before the BEAM starts
//! and made writable by its user. The host checked and repaired each
//! filesystem (`e2fsck -p`) before QEMU attached it; the kernel replays
//! the journal at mount.

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::unistd::{Gid, Uid};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;
use unibeam_spec::{VolumeMount, BEAM_UID};

/// How long a disk may take to appear: built-in drivers probe before init
/// runs, a module's (the Debian kernel) just after it is loaded.
const APPEAR_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum VolumeError {
    #[error("volume {name}: no disk with serial {serial} after {limit:?}; is virtio-blk in the kernel?")]
    NoDisk {
        name: String,
        serial: String,
        limit: Duration,
    },
    #[error("volume {name}: creating the mount point {path}")]
    MountPoint {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {name}: mount {device} (ext4) on {path}")]
    Mount {
        name: String,
        device: String,
        path: String,
        #[source]
        source: Errno,
    },
    #[error("volume {name}: handing {path} to the BEAM's user")]
    Chown {
        name: String,
        path: String,
        #[source]
        source: Errno,
    },
}

/// The block device whose virtio serial is `serial`, e.g. `/dev/vdb`.
fn find_disk(serial: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir("/sys/block").ok()?;
    entries.filter_map(|e| e.ok()).find_map(|e| {
        let found = std::fs::read_to_string(e.path().join("serial")).ok()?;
        (found.trim() == serial).then(|| Path::new("/dev").join(e.file_name()))
    })
}

fn wait_for_disk(volume: &VolumeMount) -> Result<PathBuf, VolumeError> {
    let deadline = Instant::now() + APPEAR_LIMIT;
    loop {
        if let Some(disk) = find_disk(&volume.serial) {
            return Ok(disk);
        }
        if Instant::now() > deadline {
            return Err(VolumeError::NoDisk {
                name: volume.name.clone(),
                serial: volume.serial.clone(),
                limit: APPEAR_LIMIT,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mounts one volume; returns a line for the console.
pub fn mount(volume: &VolumeMount, run_as_root: bool) -> Result<String, VolumeError> {
    let disk = wait_for_disk(volume)?;
    let device = disk.display().to_string();
    std::fs::create_dir_all(&volume.path).map_err(|source| VolumeError::MountPoint {
        name: volume.name.clone(),
        path: volume.path.clone(),
        source,
    })?;
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if volume.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    nix::mount::mount(
        Some(&disk),
        volume.path.as_str(),
        Some("ext4"),
        flags,
        None::<&str>,
    )
    .map_err(|source| VolumeError::Mount {
        name: volume.name.clone(),
        device: device.clone(),
        path: volume.path.clone(),
        source,
    })?;
    // The volume's root belongs to whoever runs the BEAM, so the release
    // can write there whatever user made or last used the volume.
    if !volume.read_only && !run_as_root {
        let (uid, gid) = (Uid::from_raw(BEAM_UID), Gid::from_raw(BEAM_UID));
        nix::unistd::chown(volume.path.as_str(), Some(uid), Some(gid)).map_err(|source| {
            VolumeError::Chown {
                name: volume.name.clone(),
                path: volume.path.clone(),
                source,
            }
        })?;
    }
    let mode = if volume.read_only { "ro" } else { "rw" };
    Ok(format!(
        "volume {} ({device}) on {} ({mode})",
        volume.name, volume.path
    ))
}

/// Unmounts every ext4 filesystem (the volumes) before power-off, so the
/// next boot finds them clean. Processes just killed may still hold files
/// for a moment: each unmount is retried for up to a second; one that
/// still fails was synced, and the host's e2fsck replays its journal.
pub fn unmount_all() {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let targets: Vec<&str> = mounts
        .lines()
        .filter_map(|l| {
            let mut fields = l.split(' ');
            let (_, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "ext4").then_some(target)
        })
        .collect();
    for target in targets {
        let deadline = Instant::now() + Duration::from_secs(1);
        while let Err(e) = nix::mount::umount(target) {
            if e != Errno::EBUSY || Instant::now() > deadline {
                eprintln!("unibeam-init: unmounting {target}: {e}");
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
