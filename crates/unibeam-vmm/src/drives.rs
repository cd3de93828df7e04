//! Volume disks as QEMU attaches them: raw files holding ext4, over
//! virtio-blk, each checked and repaired on the host (`e2fsck -p`, never a
//! mount) before a boot, and locked by the one process that owns the VM.

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use thiserror::Error;
use unibeam_spec::hostfs::{self, PathIo};

#[derive(Debug, Error)]
pub enum DriveError {
    #[error("volume {name} is in use by {holder}; stop that first")]
    InUse { name: String, holder: String },
    #[error("volume {name}: locking {}", .lock.display())]
    Lock {
        name: String,
        lock: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error("volume {name}: {} has errors e2fsck -p cannot repair ({detail}); repair it by hand with `e2fsck -f {}`, or restore it from an export", .file.display(), .file.display())]
    Damaged {
        name: String,
        file: PathBuf,
        detail: String,
    },
    #[error("volume {name}: running e2fsck on {} (apt-get install e2fsprogs)", .file.display())]
    Fsck {
        name: String,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One volume's disk in a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drive {
    /// The volume's name, for messages.
    pub name: String,
    /// The raw file that holds its ext4 filesystem.
    pub file: PathBuf,
    /// The file whose lock says who uses the volume.
    pub lock: PathBuf,
    /// The virtio serial init finds it by (`vol0`, ...).
    pub serial: String,
    pub read_only: bool,
}

/// QEMU's option syntax doubles a comma inside a value.
fn qemu_value(path: &Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut bytes = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        bytes.push(b);
        if b == b',' {
            bytes.push(b',');
        }
    }
    OsString::from_vec(bytes)
}

impl Drive {
    /// `-drive` and `-device` for this disk as the `index`th, on a machine
    /// whose virtio devices end in `virtio` (`device` or `pci`).
    /// cache=writeback honours the guest's flushes (each becomes an
    /// fdatasync of the file), so an fsync in the guest reaches the host's
    /// disk; only cache=unsafe would drop them.
    pub fn qemu_args(&self, index: usize, virtio: &str) -> Vec<OsString> {
        let mut drive = OsString::from("file=");
        drive.push(qemu_value(&self.file));
        let readonly = if self.read_only { "on" } else { "off" };
        drive.push(format!(
            ",if=none,id=vol{index},format=raw,cache=writeback,aio=threads,readonly={readonly}"
        ));
        vec![
            "-drive".into(),
            drive,
            "-device".into(),
            format!("virtio-blk-{virtio},drive=vol{index},serial={}", self.serial).into(),
        ]
    }

    /// Takes the volume for `holder`: alone for read-write, shared with
    /// other readers for read-only. Held until the lock is dropped, which
    /// the kernel does for a process that dies however it dies.
    pub fn lock(&self, holder: &str) -> Result<DriveLock, DriveError> {
        let file = self.open_lock()?;
        let failed = |(_, errno): (File, nix::errno::Errno)| self.lock_failed(errno);
        let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            // Alone with a read-only volume: repaired like a read-write
            // one (a guest killed while writing it left a journal that a
            // read-only mount cannot replay), then shared with readers.
            Ok(alone) if self.read_only => {
                // Readers name no holder: a writer's name left from before
                // must not be blamed for what readers hold now.
                alone.set_len(0).map_err(hostfs::at::<PathIo>(&self.lock))?;
                let repaired = self.repair();
                alone
                    .relock(FlockArg::LockSharedNonblock)
                    .map_err(|errno| self.lock_failed(errno))?;
                repaired?;
                alone
            }
            Err((file, nix::errno::Errno::EWOULDBLOCK)) if self.read_only => {
                Flock::lock(file, FlockArg::LockSharedNonblock).map_err(failed)?
            }
            locked => locked.map_err(failed)?,
        };
        if !self.read_only {
            let mut name_holder = || {
                locked.set_len(0)?;
                locked.rewind()?;
                locked.write_all(holder.as_bytes())
            };
            name_holder().map_err(hostfs::at::<PathIo>(&self.lock))?;
        }
        Ok(DriveLock(locked))
    }

    /// Whether [`Drive::lock`] would get the volume now, without taking
    /// it: so a volume in use is refused before anything is prepared.
    pub fn probe(&self) -> Result<(), DriveError> {
        let how = if self.read_only {
            FlockArg::LockSharedNonblock
        } else {
            FlockArg::LockExclusiveNonblock
        };
        match Flock::lock(self.open_lock()?, how) {
            Ok(_) => Ok(()),
            Err((_, errno)) => Err(self.lock_failed(errno)),
        }
    }

    fn open_lock(&self) -> Result<File, DriveError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock)
            .map_err(hostfs::at::<PathIo>(&self.lock))?;
        Ok(file)
    }

    /// Why the lock was not had: someone holds it (named), or the OS said no.
    fn lock_failed(&self, errno: nix::errno::Errno) -> DriveError {
        match errno {
            nix::errno::Errno::EWOULDBLOCK => DriveError::InUse {
                name: self.name.clone(),
                holder: holder_of(&self.lock),
            },
            source => DriveError::Lock {
                name: self.name.clone(),
                lock: self.lock.clone(),
                source,
            },
        }
    }

    /// `e2fsck -p` on a read-write disk before a boot: replays the journal
    /// and fixes what is safe to fix; refuses a filesystem it cannot. A
    /// read-only disk was repaired when it was locked, if no one else
    /// had it.
    pub fn check_and_repair(&self) -> Result<(), DriveError> {
        if self.read_only {
            return Ok(());
        }
        self.repair()
    }

    fn repair(&self) -> Result<(), DriveError> {
        let out = Command::new(fsck_program())
            .arg("-p")
            .arg(&self.file)
            .env("LC_ALL", "C")
            .output()
            .map_err(|source| DriveError::Fsck {
                name: self.name.clone(),
                file: self.file.clone(),
                source,
            })?;
        // 0: clean; 1: errors fixed; 2: fixed, and a mounted root would
        // need a reboot (ours is not mounted). 4 and up: not fixed.
        match out.status.code() {
            Some(0..=2) => Ok(()),
            _ => Err(DriveError::Damaged {
                name: self.name.clone(),
                file: self.file.clone(),
                detail: one_line(&out.stdout, &out.stderr),
            }),
        }
    }
}

/// e2fsck, where Debian puts it even when /sbin is not on PATH.
pub fn fsck_program() -> PathBuf {
    sbin_program("e2fsck")
}

/// An e2fsprogs program: on PATH, else in /usr/sbin or /sbin, which a
/// user's PATH often lacks; else the bare name, whose spawn error then
/// says it is missing.
pub fn sbin_program(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = std::env::split_paths(&path).collect::<Vec<_>>();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    let dirs = std::env::join_paths(dirs).unwrap_or(path);
    hostfs::find_program(&dirs, program).unwrap_or_else(|| PathBuf::from(program))
}

fn one_line(stdout: &[u8], stderr: &[u8]) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr)
    );
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.join("; ")
}

/// Who holds a volume, as its lock file says.
fn holder_of(lock: &Path) -> String {
    let mut text = String::new();
    let _ = File::open(lock).and_then(|f| f.take(200).read_to_string(&mut text));
    // Shown on a terminal: nothing in the file may steer it.
    let text: String = text.chars().filter(|c| !c.is_control()).collect();
    let text = text.trim();
    if text.is_empty() {
        "an instance that has it read-only".into()
    } else {
        text.to_string()
    }
}

/// A volume held for one VM; dropping it lets the volume go.
pub struct DriveLock(#[allow(dead_code)] Flock<File>);

/// Locks every drive for `holder`; all or none.
pub fn lock_all(drives: &[Drive], holder: &str) -> Result<Vec<DriveLock>, DriveError> {
    drives.iter().map(|d| d.lock(holder)).collect()
}

/// Whether every drive could be locked now (see [`Drive::probe`]).
pub fn probe_all(drives: &[Drive]) -> Result<(), DriveError> {
    drives.iter().try_for_each(Drive::probe)
}

/// Checks and repairs every read-write drive.
pub fn check_all(drives: &[Drive]) -> Result<(), DriveError> {
    drives.iter().try_for_each(Drive::check_and_repair)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive(dir: &Path, read_only: bool) -> Drive {
        Drive {
            name: "data".into(),
            file: dir.join("disk,1.ext4"),
            lock: dir.join("lock"),
            serial: "vol0".into(),
            read_only,
        }
    }

    #[test]
    fn a_damaged_filesystem_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let d = drive(dir.path(), false);
        std::fs::write(&d.file, vec![0x5a; 1 << 20]).unwrap();
        let err = d.check_and_repair().unwrap_err().to_string();
        assert!(err.contains("e2fsck -f") && err.contains("disk,1.ext4"), "{err}");
    }

    #[test]
    fn commas_in_the_file_are_doubled_and_flushes_are_honoured() {
        let args = drive(Path::new("/v"), true).qemu_args(2, "device");
        let drive_arg = args[1].to_string_lossy().into_owned();
        assert!(
            drive_arg.starts_with("file=/v/disk,,1.ext4,if=none,id=vol2"),
            "{drive_arg}"
        );
        assert!(drive_arg.contains("cache=writeback") && drive_arg.contains("readonly=on"));
        assert_eq!(args[3], "virtio-blk-device,drive=vol2,serial=vol0");
    }

    #[test]
    fn one_writer_names_the_holder_and_readers_share() {
        let dir = tempfile::tempdir().unwrap();
        // A reader alone repairs the filesystem: it must be a real one.
        let disk = drive(dir.path(), true).file;
        std::fs::File::create(&disk).unwrap().set_len(16 << 20).unwrap();
        let made = Command::new(sbin_program("mkfs.ext4"))
            .args(["-q", "-F"])
            .arg(&disk)
            .status();
        assert!(made.unwrap().success(), "mkfs.ext4 (e2fsprogs) is needed");
        let writer = drive(dir.path(), false).lock("instance web").unwrap();
        let err = drive(dir.path(), false).lock("instance api").err().unwrap();
        assert_eq!(
            err.to_string(),
            "volume data is in use by instance web; stop that first"
        );
        assert!(drive(dir.path(), true).lock("instance ro").is_err());
        drop(writer);
        let reader = drive(dir.path(), true).lock("instance ro").unwrap();
        let _second = drive(dir.path(), true).lock("instance ro2").unwrap();
        let err = drive(dir.path(), false).lock("instance api").err().unwrap();
        assert!(err.to_string().contains("in use by"), "{err}");
        drop(reader);
    }
}
