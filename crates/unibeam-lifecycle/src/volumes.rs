//! Volumes: named ext4 filesystems on sparse raw files, made on the host
//! by mkfs.ext4 and attached to VMs over virtio-blk (unibeam_vmm::drives).
//! Each is a directory under `$XDG_STATE_HOME/unibeam/volumes/<name>/`:
//! `volume.json`, `disk.ext4` and `lock`. The host never mounts one.

use crate::progress::Progress;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use thiserror::Error;
use unibeam_cluster::volume::{
    VolumeName, VolumeRequest, DEFAULT_VOLUME_BYTES, MAX_VOLUME_BYTES, MIN_VOLUME_BYTES,
};
use unibeam_spec::hostfs::{self, PathIo};
use unibeam_spec::{VolumeMount, BEAM_UID};
use unibeam_vmm::drives::{sbin_program, Drive, DriveError};
use unibeam_vmm::monitor::now_secs;
use unibeam_vmm::state::{InstanceName, Store, QEMU_FILE};
use unibeam_vmm::QemuCommand;

const INFO_FILE: &str = "volume.json";
const DISK_FILE: &str = "disk.ext4";
const LOCK_FILE: &str = "lock";
/// ext4's superblock magic, 0xEF53 little-endian, at byte 1080.
const EXT4_MAGIC: (u64, [u8; 2]) = (1080, [0x53, 0xEF]);

#[derive(Debug, Error)]
pub enum VolumesError {
    #[error("no volume named {0}; `unibeam volume ls` lists them")]
    NoSuchVolume(VolumeName),
    #[error("volume {0} already exists; `unibeam volume rm {0}` first, or pick another name")]
    Exists(VolumeName),
    #[error("volume {name} is held by suspended instance {holder}: its saved memory expects the disk as it left it; `unibeam start {holder}` and stop it, or `unibeam rm {holder}`, first")]
    HeldSuspended { name: VolumeName, holder: String },
    #[error("volume {name} is used by {users}; `unibeam rm` them first")]
    Used { name: VolumeName, users: String },
    #[error("volume {0} is asked for twice; attach each volume once")]
    Twice(VolumeName),
    #[error("two volumes are mounted on {0}; give each its own directory")]
    SamePath(String),
    #[error("volume {name}: {} is not an ext4 filesystem (or not a plain file); `unibeam volume rm {name}` it, or import a backup", .file.display())]
    NotAFilesystem { name: VolumeName, file: PathBuf },
    #[error("volume {name}: {} is corrupt; `unibeam volume rm {name}` removes the volume", .file.display())]
    BadInfo {
        name: VolumeName,
        file: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("volume {name}: mkfs.ext4 failed: {detail}")]
    Mkfs { name: VolumeName, detail: String },
    #[error("volume {name}: running {program} (apt-get install e2fsprogs)")]
    Tool {
        name: VolumeName,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {name}: {} GiB is more than the filesystem holding {} takes in one file; give a smaller --size", .bytes >> 30, .root.display())]
    TooLargeForHost {
        name: VolumeName,
        bytes: u64,
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Drive(#[from] DriveError),
    #[error(transparent)]
    Io(#[from] PathIo),
}

/// What `volume.json` keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: VolumeName,
    /// The filesystem's size.
    pub bytes: u64,
    /// Seconds since the epoch.
    pub created: u64,
}

/// The directory of all volumes.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    pub root: PathBuf,
}

impl VolumeStore {
    /// The volumes beside an instance store: `.../unibeam/volumes`.
    pub fn beside(store: &Store) -> VolumeStore {
        let parent = store.root.parent().unwrap_or(&store.root);
        VolumeStore {
            root: parent.join("volumes"),
        }
    }

    pub fn dir(&self, name: &VolumeName) -> PathBuf {
        self.root.join(name.as_str())
    }

    pub fn disk(&self, name: &VolumeName) -> PathBuf {
        self.dir(name).join(DISK_FILE)
    }

    /// The drive QEMU attaches for `name`, as the `index`th.
    fn drive(&self, name: &VolumeName, index: usize, read_only: bool) -> Drive {
        Drive {
            name: name.to_string(),
            file: self.disk(name),
            lock: self.dir(name).join(LOCK_FILE),
            serial: format!("vol{index}"),
            read_only,
        }
    }

    pub fn load(&self, name: &VolumeName) -> Result<VolumeInfo, VolumesError> {
        let file = self.dir(name).join(INFO_FILE);
        let text = match std::fs::read(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VolumesError::NoSuchVolume(name.clone()))
            }
            Err(e) => return Err(hostfs::at::<PathIo>(&file)(e).into()),
        };
        let bad = |source| VolumesError::BadInfo {
            name: name.clone(),
            file: file.clone(),
            source,
        };
        let info: VolumeInfo = serde_json::from_slice(&text).map_err(bad)?;
        // What `create` would never have written.
        let why = if info.name != *name {
            Some("its name differs from its directory")
        } else if !(MIN_VOLUME_BYTES..=MAX_VOLUME_BYTES).contains(&info.bytes) {
            Some("its size is outside what a volume can have")
        } else {
            None
        };
        match why {
            Some(why) => Err(bad(serde_json::Error::io(std::io::Error::other(why)))),
            None => Ok(info),
        }
    }

    /// Every volume with a readable `volume.json`, by name.
    pub fn list(&self) -> Vec<VolumeInfo> {
        let mut names: Vec<VolumeName> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        names.sort();
        names.iter().filter_map(|n| self.load(n).ok()).collect()
    }
}

/// Makes a volume of `bytes`: a sparse file formatted as ext4 whose root
/// belongs to the BEAM's user, filled from `content` if given. Made in a
/// staging directory renamed into place, so a failure leaves nothing.
pub fn create(
    volumes: &VolumeStore,
    name: &VolumeName,
    bytes: u64,
    content: Option<&Path>,
    progress: &dyn Progress,
) -> Result<VolumeInfo, VolumesError> {
    std::fs::create_dir_all(&volumes.root).map_err(hostfs::at::<PathIo>(&volumes.root))?;
    let dir = volumes.dir(name);
    if dir.exists() {
        return Err(VolumesError::Exists(name.clone()));
    }
    let staging = volumes.root.join(format!(".{name}.new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    progress.begin("volume");
    progress.step(&format!("{name}: formatting {} MiB of ext4", bytes >> 20));
    let made = format_in(&staging, name, bytes, content).and_then(|info| {
        match nix::fcntl::renameat2(
            None,
            &staging,
            None,
            &dir,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => Ok(info),
            Err(nix::errno::Errno::EEXIST | nix::errno::Errno::ENOTEMPTY) => {
                Err(VolumesError::Exists(name.clone()))
            }
            Err(e) => Err(hostfs::at::<PathIo>(&dir)(e.into()).into()),
        }
    });
    let _ = std::fs::remove_dir_all(&staging);
    progress.end();
    made
}

fn format_in(
    staging: &Path,
    name: &VolumeName,
    bytes: u64,
    content: Option<&Path>,
) -> Result<VolumeInfo, VolumesError> {
    std::fs::create_dir(staging).map_err(hostfs::at::<PathIo>(staging))?;
    let disk = staging.join(DISK_FILE);
    let file = std::fs::File::create(&disk).map_err(hostfs::at::<PathIo>(&disk))?;
    file.set_len(bytes)
        .map_err(|source| match source.raw_os_error() {
            Some(nix::libc::EFBIG) => VolumesError::TooLargeForHost {
                name: name.clone(),
                bytes,
                root: staging.parent().unwrap_or(staging).to_path_buf(),
                source,
            },
            _ => hostfs::at::<PathIo>(&disk)(source).into(),
        })?;
    drop(file);
    let label: String = name.as_str().chars().take(16).collect();
    let mkfs = sbin_program("mkfs.ext4");
    let mut cmd = Command::new(&mkfs);
    // -m 0: no blocks kept for root, the BEAM is not root. Eager inode
    // table and journal init: done once here rather than by a kernel
    // thread that would keep every idle guest busy after boot.
    cmd.args(["-q", "-F", "-m", "0", "-L", &label, "-E"])
        .arg(format!(
            "root_owner={BEAM_UID}:{BEAM_UID},lazy_itable_init=0,lazy_journal_init=0"
        ))
        .env("LC_ALL", "C");
    if let Some(dir) = content {
        cmd.arg("-d").arg(dir);
    }
    let out = cmd.arg(&disk).output().map_err(|source| VolumesError::Tool {
        name: name.clone(),
        program: mkfs.display().to_string(),
        source,
    })?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let detail: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        return Err(VolumesError::Mkfs {
            name: name.clone(),
            detail: detail.join("; "),
        });
    }
    let info = VolumeInfo {
        name: name.clone(),
        bytes,
        created: now_secs(),
    };
    let json = serde_json::to_vec_pretty(&info).expect("volume info serialises");
    hostfs::write_atomic(&staging.join(INFO_FILE), &json)?;
    Ok(info)
}

/// The volume, made with the default size if it does not exist yet.
fn ensure(volumes: &VolumeStore, name: &VolumeName, progress: &dyn Progress) -> Result<(), VolumesError> {
    match volumes.load(name) {
        Ok(_) => Ok(()),
        Err(VolumesError::NoSuchVolume(_)) => {
            match create(volumes, name, DEFAULT_VOLUME_BYTES, None, progress) {
                // Someone else made it meanwhile.
                Ok(_) | Err(VolumesError::Exists(_)) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Whether `file` is a plain file (not a link to elsewhere, which the
/// host's e2fsck would then write) that starts like ext4.
fn is_ext4(file: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    if !std::fs::symlink_metadata(file).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut magic = [0u8; 2];
    std::fs::File::open(file)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(EXT4_MAGIC.0))?;
            f.read_exact(&mut magic)
        })
        .is_ok()
        && magic == EXT4_MAGIC.1
}

/// The drives QEMU attaches and the mounts init makes for `requests`,
/// each volume made first if it does not exist yet.
pub fn attach(
    store: &Store,
    requests: &[VolumeRequest],
    me: Option<&str>,
    progress: &dyn Progress,
) -> Result<(Vec<Drive>, Vec<VolumeMount>), VolumesError> {
    let volumes = &VolumeStore::beside(store);
    // Every request is checked before any volume is made.
    for (i, request) in requests.iter().enumerate() {
        if requests[..i].iter().any(|r| r.name == request.name) {
            return Err(VolumesError::Twice(request.name.clone()));
        }
        if requests[..i].iter().any(|r| r.path == request.path) {
            return Err(VolumesError::SamePath(request.path.clone()));
        }
    }
    let mut drives = Vec::new();
    let mut mounts: Vec<VolumeMount> = Vec::new();
    for (index, request) in requests.iter().enumerate() {
        ensure(volumes, &request.name, progress)?;
        refuse_suspended_holder(store, volumes, &request.name, me)?;
        let drive = volumes.drive(&request.name, index, request.read_only);
        if !is_ext4(&drive.file) {
            return Err(VolumesError::NotAFilesystem {
                name: request.name.clone(),
                file: drive.file,
            });
        }
        // The owner takes it for good later; in use now is said now.
        drive.probe()?;
        mounts.push(VolumeMount {
            name: request.name.to_string(),
            serial: drive.serial.clone(),
            path: request.path.clone(),
            read_only: request.read_only,
        });
        drives.push(drive);
    }
    Ok((drives, mounts))
}

/// The volumes instance `name`'s VM attaches.
pub fn attached(store: &Store, name: &InstanceName) -> Vec<VolumeName> {
    read_command(store, name)
        .map(|cmd| cmd.drives.iter().filter_map(|d| d.name.parse().ok()).collect())
        .unwrap_or_default()
}

fn read_command(store: &Store, name: &InstanceName) -> Option<QemuCommand> {
    let json = std::fs::read(store.dir(name).join(QEMU_FILE)).ok()?;
    serde_json::from_slice(&json).ok()
}

/// The instances whose VM attaches volume `name`, running or not.
pub fn users(store: &Store, volumes: &VolumeStore, name: &VolumeName) -> Vec<String> {
    let disk = volumes.disk(name);
    store
        .list_all()
        .into_iter()
        .filter(|(instance, _)| {
            read_command(store, instance).is_some_and(|cmd| cmd.drives.iter().any(|d| d.file == disk))
        })
        .map(|(instance, _)| instance.to_string())
        .collect()
}

/// Refuses a volume that a suspended instance other than `me` attaches:
/// no monitor holds its lock while it is suspended, but its saved memory
/// has the filesystem mounted.
pub fn refuse_suspended_holder(
    store: &Store,
    volumes: &VolumeStore,
    name: &VolumeName,
    me: Option<&str>,
) -> Result<(), VolumesError> {
    let suspended = |instance: &str| {
        instance
            .parse::<InstanceName>()
            .ok()
            .and_then(|n| store.load(&n).ok())
            .is_some_and(|r| r.observed_status() == unibeam_vmm::state::Status::Suspended)
    };
    match users(store, volumes, name)
        .into_iter()
        .find(|u| Some(u.as_str()) != me && suspended(u))
    {
        Some(holder) => Err(VolumesError::HeldSuspended {
            name: name.clone(),
            holder,
        }),
        None => Ok(()),
    }
}

/// Removes a volume no instance uses, and that no VM holds.
pub fn remove(store: &Store, volumes: &VolumeStore, name: &VolumeName) -> Result<(), VolumesError> {
    match volumes.load(name) {
        // A corrupt record goes with its volume: nothing else removes it.
        Ok(_) | Err(VolumesError::BadInfo { .. }) => {}
        Err(e) => return Err(e),
    }
    let users = users(store, volumes, name);
    if !users.is_empty() {
        return Err(VolumesError::Used {
            name: name.clone(),
            users: format!("instance {}", users.join(", ")),
        });
    }
    // A foreground run without a name keeps no record; its lock tells.
    let held = volumes.drive(name, 0, false).lock("unibeam volume rm")?;
    let dir = volumes.dir(name);
    let removed = std::fs::remove_dir_all(&dir).map_err(hostfs::at::<PathIo>(&dir));
    drop(held);
    Ok(removed?)
}

/// `volume inspect`: the record, where it lives, its users and the bytes
/// it takes on the host's disk (the file is sparse).
pub fn inspect(
    store: &Store,
    volumes: &VolumeStore,
    name: &VolumeName,
) -> Result<serde_json::Value, VolumesError> {
    let info = volumes.load(name)?;
    let disk = volumes.disk(name);
    let allocated = std::fs::metadata(&disk)
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .unwrap_or(0);
    Ok(serde_json::json!({
        "name": info.name,
        "bytes": info.bytes,
        "created": info.created,
        "file": disk,
        "allocated_bytes": allocated,
        "used_by": users(store, volumes, name),
    }))
}

/// A drive to read `name` whole (export): shared with read-only users,
/// refused while a VM writes it.
pub(crate) fn read_drive(volumes: &VolumeStore, name: &VolumeName) -> Result<Drive, VolumesError> {
    volumes.load(name)?;
    let drive = volumes.drive(name, 0, true);
    // Locking runs e2fsck -p on it, which must never follow a link out.
    if !is_ext4(&drive.file) {
        return Err(VolumesError::NotAFilesystem {
            name: name.clone(),
            file: drive.file,
        });
    }
    Ok(drive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, VolumeStore, VolumeName) {
        let dir = tempfile::tempdir().unwrap();
        let volumes = VolumeStore {
            root: dir.path().join("volumes"),
        };
        let name: VolumeName = "data".parse().unwrap();
        std::fs::create_dir_all(volumes.dir(&name)).unwrap();
        (dir, volumes, name)
    }

    #[test]
    fn a_record_create_would_not_write_is_corrupt_and_rm_removes_it() {
        let (_dir, volumes, name) = store();
        let info = volumes.dir(&name).join(INFO_FILE);
        for json in [
            r#"{"name":"other","bytes":16777216,"created":1}"#,
            r#"{"name":"data","bytes":1,"created":1}"#,
            r#"{"name":"data","bytes":"x","created":1}"#,
        ] {
            std::fs::write(&info, json).unwrap();
            let err = volumes.load(&name).unwrap_err();
            assert!(matches!(err, VolumesError::BadInfo { .. }), "{json}: {err}");
            assert!(err.to_string().contains("`unibeam volume rm data`"), "{err}");
        }
        let instances = Store {
            root: volumes.root.with_file_name("instances"),
        };
        remove(&instances, &volumes, &name).unwrap();
        assert!(!volumes.dir(&name).exists());
    }

    #[test]
    fn a_disk_that_links_elsewhere_is_not_read() {
        let (_dir, volumes, name) = store();
        let info = VolumeInfo {
            name: name.clone(),
            bytes: MIN_VOLUME_BYTES,
            created: 1,
        };
        std::fs::write(
            volumes.dir(&name).join(INFO_FILE),
            serde_json::to_vec(&info).unwrap(),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", volumes.disk(&name)).unwrap();
        let err = read_drive(&volumes, &name).unwrap_err().to_string();
        assert!(
            err.contains("not an ext4 filesystem (or not a plain file)"),
            "{err}"
        );
    }
}
