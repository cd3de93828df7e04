//! The export's output directory. An export is written into a staging
//! directory beside it and renamed into place at the end, so a failed
//! export leaves nothing half-made. `-o` may name a new path, an empty
//! directory, or an earlier export (which has [`MARKER_FILE`]); anything
//! else is refused before any work: unibeam never deletes a user's files.

use std::fs;
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::hostfs::{at, PathIo};

/// Written into every export; its presence lets a later export replace it.
pub const MARKER_FILE: &str = ".unibeam-export";

#[derive(Debug, Error)]
pub enum OutDirError {
    #[error("-o {0}: not empty and not made by `unibeam export` (no {MARKER_FILE}); choose another -o, unibeam never deletes files it did not make")]
    NotOurs(PathBuf),
    #[error("-o {0}: exists and is not a directory")]
    NotADir(PathBuf),
    #[error(transparent)]
    Io(#[from] PathIo),
}

/// What `out` holds now.
enum Existing {
    Nothing,
    Empty,
    Export,
}

fn existing(out: &Path) -> Result<Existing, OutDirError> {
    let meta = match fs::symlink_metadata(out) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(e) => return Err(at::<PathIo>(out)(e).into()),
    };
    if !meta.is_dir() {
        return Err(OutDirError::NotADir(out.to_path_buf()));
    }
    if out.join(MARKER_FILE).is_file() {
        return Ok(Existing::Export);
    }
    let mut entries = fs::read_dir(out).map_err(at::<PathIo>(out))?;
    match entries.next() {
        None => Ok(Existing::Empty),
        Some(_) => Err(OutDirError::NotOurs(out.to_path_buf())),
    }
}

/// A staging directory that becomes `out` on [`Staging::commit`], and is
/// removed if the export fails first.
pub struct Staging {
    dir: PathBuf,
    out: PathBuf,
    done: bool,
}

impl Staging {
    /// Checks `out` and makes the staging directory beside it.
    pub fn claim(out: &Path) -> Result<Staging, OutDirError> {
        existing(out)?;
        let name = out.file_name().map(|n| n.to_string_lossy().into_owned());
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(at::<PathIo>(&parent))?;
        let dir = parent.join(format!(
            ".{}.partial-{}",
            name.unwrap_or_else(|| "export".into()),
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).map_err(at::<PathIo>(&dir))?;
        Ok(Staging {
            dir,
            out: out.to_path_buf(),
            done: false,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Marks the export as unibeam's, replaces `out` (checked again: it
    /// may have changed meanwhile) and returns the files, sorted.
    pub fn commit(mut self) -> Result<Vec<String>, OutDirError> {
        let mut files = Vec::new();
        list(&self.dir, Path::new(""), &mut files)?;
        files.sort();
        let marker = self.dir.join(MARKER_FILE);
        fs::write(&marker, files.join("\n") + "\n").map_err(at::<PathIo>(&marker))?;
        match existing(&self.out)? {
            Existing::Nothing => {}
            Existing::Empty => fs::remove_dir(&self.out).map_err(at::<PathIo>(&self.out))?,
            Existing::Export => fs::remove_dir_all(&self.out).map_err(at::<PathIo>(&self.out))?,
        }
        fs::rename(&self.dir, &self.out).map_err(at::<PathIo>(&self.out))?;
        self.done = true;
        Ok(files)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Every file under `dir`, as paths relative to the export.
fn list(dir: &Path, rel: &Path, out: &mut Vec<String>) -> Result<(), OutDirError> {
    for entry in fs::read_dir(dir).map_err(at::<PathIo>(dir))? {
        let entry = entry.map_err(at::<PathIo>(dir))?;
        let path = entry.path();
        let rel = rel.join(entry.file_name());
        if path.is_dir() {
            list(&path, &rel, out)?;
        } else {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_directory_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("mine");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("notes.txt"), "keep me").unwrap();
        let err = Staging::claim(&out).err().unwrap();
        assert!(matches!(err, OutDirError::NotOurs(_)), "{err}");
        assert_eq!(fs::read_to_string(out.join("notes.txt")).unwrap(), "keep me");
    }

    #[test]
    fn an_earlier_export_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("exp");
        for content in ["one", "two"] {
            let staging = Staging::claim(&out).unwrap();
            fs::write(staging.dir().join("f"), content).unwrap();
            assert_eq!(staging.commit().unwrap(), vec!["f".to_string()]);
        }
        assert_eq!(fs::read_to_string(out.join("f")).unwrap(), "two");
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "no staging dir is left"
        );
    }
}
