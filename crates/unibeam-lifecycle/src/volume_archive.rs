//! `volume export` and `volume import`: a volume's files as a tar, read
//! with debugfs and written with `mkfs.ext4 -d`, so the host never mounts
//! a guest filesystem. Ownership and modes travel with the files.

use crate::progress::Progress;
use crate::volumes::{self, VolumeStore, VolumesError};
use std::path::{Path, PathBuf};
use std::process::Command;
use thiserror::Error;
use unibeam_cluster::volume::{VolumeName, DEFAULT_VOLUME_BYTES, MAX_VOLUME_BYTES};
use unibeam_spec::hostfs::{self, PathIo};
use unibeam_vmm::drives::sbin_program;

#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Volumes(#[from] VolumesError),
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error("volume {name}: debugfs could not read it: {detail}")]
    Debugfs { name: VolumeName, detail: String },
    #[error("running {program} (apt-get install e2fsprogs)")]
    Tool {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a tar archive, or a damaged one", .0.display())]
    NotATar(PathBuf, #[source] std::io::Error),
    #[error("{}: member {member:?} {why}", .file.display())]
    BadMember {
        file: PathBuf,
        member: String,
        why: &'static str,
    },
    #[error("{}: member {member:?} could not be unpacked (a damaged archive?)", .file.display())]
    Unpack {
        file: PathBuf,
        member: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {} of files do not fit in --size {}", .file.display(), human(*.content), human(*.size))]
    TooSmall { file: PathBuf, content: u64, size: u64 },
}

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Writes `name`'s files to `file` (a tar), complete or not at all.
pub fn export(volumes: &VolumeStore, name: &VolumeName, file: &Path) -> Result<u64, ArchiveError> {
    let drive = volumes::read_drive(volumes, name)?;
    // Shared with read-only users; refused while a VM writes the volume,
    // whose files would be caught half-written.
    let _held = drive.lock("unibeam volume export").map_err(VolumesError::from)?;
    let dump = tempfile::tempdir_in(&volumes.root).map_err(hostfs::at::<PathIo>(&volumes.root))?;
    let debugfs = sbin_program("debugfs");
    let out = Command::new(&debugfs)
        .arg("-R")
        .arg(format!("rdump / {}", dump.path().display()))
        .arg(&drive.file)
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| ArchiveError::Tool {
            program: debugfs.display().to_string(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // debugfs prints its version first and exits 0 even when it fails.
    let errors: Vec<&str> = stderr.lines().skip(1).filter(|l| !l.trim().is_empty()).collect();
    if !out.status.success() || !errors.is_empty() {
        return Err(ArchiveError::Debugfs {
            name: name.clone(),
            detail: errors.join("; "),
        });
    }
    let _ = std::fs::remove_dir_all(dump.path().join("lost+found"));
    write_tar(dump.path(), file)
}

/// Tars `dir` into `file` through a temporary file beside it.
fn write_tar(dir: &Path, file: &Path) -> Result<u64, ArchiveError> {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let partial = tempfile::Builder::new()
        .prefix(".unibeam-export-")
        .tempfile_in(&parent)
        .map_err(hostfs::at::<PathIo>(&parent))?;
    let mut tar = tar::Builder::new(partial.as_file());
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    tar.append_dir_all(".", dir).map_err(hostfs::at::<PathIo>(dir))?;
    tar.finish().map_err(hostfs::at::<PathIo>(file))?;
    drop(tar);
    partial.as_file().sync_all().map_err(hostfs::at::<PathIo>(file))?;
    let bytes = partial.as_file().metadata().map(|m| m.len()).unwrap_or(0);
    partial
        .persist(file)
        .map_err(|e| hostfs::at::<PathIo>(file)(e.error))?;
    Ok(bytes)
}

/// Makes volume `name` from `file` (a tar of its files), `size` bytes or
/// enough for them. Only plain files, directories and links inside the
/// archive are taken.
pub fn import(
    volumes: &VolumeStore,
    name: &VolumeName,
    file: &Path,
    size: Option<u64>,
    progress: &dyn Progress,
) -> Result<(), ArchiveError> {
    if volumes.dir(name).exists() {
        return Err(VolumesError::Exists(name.clone()).into());
    }
    std::fs::create_dir_all(&volumes.root).map_err(hostfs::at::<PathIo>(&volumes.root))?;
    let unpacked = tempfile::tempdir_in(&volumes.root).map_err(hostfs::at::<PathIo>(&volumes.root))?;
    let content = unpack(file, unpacked.path())?;
    // Twice the files plus room for the journal and metadata, at least
    // the default size.
    let enough = (content.saturating_mul(2) + (64 << 20)).max(DEFAULT_VOLUME_BYTES);
    let bytes = size.unwrap_or(enough.min(MAX_VOLUME_BYTES));
    if bytes < content {
        return Err(ArchiveError::TooSmall {
            file: file.to_path_buf(),
            content,
            size: bytes,
        });
    }
    volumes::create(volumes, name, bytes, Some(unpacked.path()), progress)?;
    Ok(())
}

/// Unpacks `file` into `into`; returns the bytes of its files.
fn unpack(file: &Path, into: &Path) -> Result<u64, ArchiveError> {
    let not_tar = |e| ArchiveError::NotATar(file.to_path_buf(), e);
    let archive_file = std::fs::File::open(file).map_err(hostfs::at::<PathIo>(file))?;
    let mut archive = tar::Archive::new(archive_file);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    let mut content = 0u64;
    for entry in archive.entries().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        let member = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let bad = |why| ArchiveError::BadMember {
            file: file.to_path_buf(),
            member: member.clone(),
            why,
        };
        use tar::EntryType::*;
        match entry.header().entry_type() {
            Regular | Directory | Symlink | Link | Continuous => {}
            _ => {
                return Err(bad(
                    "is a device, FIFO or other special file, which a volume does not take",
                ))
            }
        }
        content = content.saturating_add(entry.header().size().unwrap_or(0));
        let path = entry.path().map_err(not_tar)?.into_owned();
        if under_symlink(into, &path) {
            return Err(bad(
                "lies under a symbolic link the archive made, so it would land outside it",
            ));
        }
        if entry.header().entry_type() == Link {
            let target = entry.link_name().map_err(not_tar)?;
            if !target.is_some_and(|t| stays_inside(&t)) {
                return Err(bad("is a hard link to a file outside the archive"));
            }
        }
        // unpack_in refuses what would land outside `into` (`..`, links).
        match entry.unpack_in(into) {
            Ok(true) => {}
            Ok(false) => return Err(bad("points outside the archive (absolute or ..)")),
            Err(source) => {
                return Err(ArchiveError::Unpack {
                    file: file.to_path_buf(),
                    member,
                    source,
                })
            }
        }
    }
    Ok(content)
}

/// Whether a directory above `member` (a path in the archive) is a
/// symbolic link that an earlier member made in `into`.
fn under_symlink(into: &Path, member: &Path) -> bool {
    let mut at = into.to_path_buf();
    let parts: Vec<_> = member
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect();
    parts.iter().take(parts.len().saturating_sub(1)).any(|part| {
        at.push(part);
        at.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink())
    })
}

/// Whether a relative path stays inside the directory it starts from.
fn stays_inside(path: &Path) -> bool {
    use std::path::Component::*;
    let mut depth = 0usize;
    path.components().all(|c| match c {
        Normal(_) => {
            depth += 1;
            true
        }
        CurDir => true,
        ParentDir if depth > 0 => {
            depth -= 1;
            true
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (name, kind, target) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            let data = if *kind == tar::EntryType::Regular {
                target.as_bytes()
            } else {
                &[][..]
            };
            h.set_size(data.len() as u64);
            if *kind != tar::EntryType::Regular {
                h.set_link_name(target).unwrap();
            }
            b.append_data(&mut h, name, data).unwrap();
        }
        b.finish().unwrap();
        (dir, path)
    }

    fn refused(entries: &[(&str, tar::EntryType, &str)]) -> String {
        let (_dir, tar) = tar_of(entries);
        let into = tempfile::tempdir().unwrap();
        unpack(&tar, into.path()).unwrap_err().to_string()
    }

    #[test]
    fn members_that_escape_through_links_are_named() {
        use tar::EntryType::*;
        let err = refused(&[("lnk", Symlink, "/etc"), ("lnk/passwd", Regular, "x")]);
        assert!(
            err.contains("\"lnk/passwd\"") && err.contains("symbolic link"),
            "{err}"
        );
        let err = refused(&[("hl", Link, "../../etc/passwd")]);
        assert!(err.contains("\"hl\"") && err.contains("hard link"), "{err}");
    }

    #[test]
    fn links_inside_the_archive_unpack() {
        use tar::EntryType::*;
        let (_dir, tar) = tar_of(&[
            ("d/f", Regular, "data"),
            ("d/again", Link, "d/f"),
            ("current", Symlink, "/var/lib/app/d"),
        ]);
        let into = tempfile::tempdir().unwrap();
        assert_eq!(unpack(&tar, into.path()).unwrap(), 4);
        assert_eq!(std::fs::read(into.path().join("d/again")).unwrap(), b"data");
        assert!(stays_inside(Path::new("a/../b")) && !stays_inside(Path::new("a/../../b")));
    }
}
