//! File-system helpers every host crate shares (behind the `host`
//! feature, so the guest's PID 1 does not build them): the one error type
//! for an I/O failure on a named path, and the one atomic write.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An I/O error on a file. It shows as the path alone: the OS error is
/// its source, so an error chain prints the path and the OS error on
/// separate lines.
#[derive(Debug, thiserror::Error)]
#[error("{}", path.display())]
pub struct PathIo {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl PathIo {
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

/// For `map_err`: turns an I/O error on `path` into a [`PathIo`], or into
/// any module error that wraps one.
pub fn at<E: From<PathIo>>(path: &Path) -> impl FnOnce(io::Error) -> E + '_ {
    move |source| {
        E::from(PathIo {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Writes `data` to `path` so that readers see the old file or the whole
/// new one, never a part: a uniquely named temporary file beside it,
/// flushed to disk and renamed over it. Racing writers each use their own
/// temporary file, so the last rename wins whole.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), PathIo> {
    write_via_temporary(path, data, tempfile::Builder::new())
}

/// [`write_atomic`], with the file's mode set before it appears: secrets
/// are never readable by others, not even for a moment.
pub fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> Result<(), PathIo> {
    use std::os::unix::fs::PermissionsExt;
    let mut builder = tempfile::Builder::new();
    builder.permissions(fs::Permissions::from_mode(mode));
    write_via_temporary(path, data, builder)
}

fn write_via_temporary(path: &Path, data: &[u8], mut builder: tempfile::Builder) -> Result<(), PathIo> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = builder
        .prefix(".unibeam-write-")
        .tempfile_in(dir)
        .map_err(at(path))?;
    tmp.write_all(data).map_err(at(path))?;
    tmp.as_file().sync_all().map_err(at(path))?;
    tmp.persist(path).map_err(|e| e.error).map_err(at(path))?;
    Ok(())
}

/// Reads `path` whole, refusing more than `limit` bytes: for the small
/// files users name (a cookie, a certificate), so that `/dev/zero` or a
/// huge file by mistake is an error instead of memory filled. Pipes
/// (`<(command)`) are read like files.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, PathIo> {
    use std::io::Read;
    let file = fs::File::open(path).map_err(at(path))?;
    let mut data = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(at(path))?;
    if data.len() as u64 > limit {
        return Err(at::<PathIo>(path)(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("more than {limit} bytes, far more than such a file holds"),
        )));
    }
    Ok(data)
}

/// Creates `dir` and any missing parents, 0700 (those that exist keep
/// their mode): for directories of secrets and state.
pub fn create_private_dir(dir: &Path) -> Result<(), PathIo> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(at(dir))
}

/// `program` in one of `path`'s directories (a `PATH` value), as an
/// executable file: the one lookup of host programs.
pub fn find_program(path: &std::ffi::OsStr, program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn an_io_error_names_the_path_and_keeps_the_os_error_as_its_source() {
        let missing = Path::new("/nonexistent-unibeam/x/y");
        let err = write_atomic(missing, b"data").unwrap_err();
        assert_eq!(err.to_string(), "/nonexistent-unibeam/x/y");
        assert!(err.source().unwrap().to_string().contains("No such file"));
    }

    #[test]
    fn atomic_writes_replace_whole_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_limited_read_stops_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        fs::write(&path, b"12345").unwrap();
        assert_eq!(read_limited(&path, 5).unwrap(), b"12345");
        let err = read_limited(&path, 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert!(err.source.to_string().contains("more than 4 bytes"));
        let endless = read_limited(Path::new("/dev/zero"), 1 << 16).unwrap_err();
        assert_eq!(endless.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn a_secret_is_written_with_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        write_atomic_mode(&path, b"s3cret", 0o600).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
