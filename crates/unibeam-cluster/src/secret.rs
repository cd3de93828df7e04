//! The cluster's Erlang cookie: random, stored 0600 on the host, and
//! handed to instances only as a file that goes into their config layer.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::hostfs::{self, PathIo};

#[derive(Debug, Error)]
pub enum SecretError {
    #[error(transparent)]
    Io(#[from] PathIo),
}

/// 32 letters from the kernel's CSPRNG: 150 bits, and a valid atom.
fn random_cookie() -> Result<String, SecretError> {
    let urandom = Path::new("/dev/urandom");
    let mut bytes = [0u8; 32];
    fs::File::open(urandom)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(hostfs::at::<SecretError>(urandom))?;
    Ok(bytes.iter().map(|b| char::from(b'A' + b % 26)).collect())
}

/// The cookie file at `path`, created (0600, atomically) if missing.
pub fn ensure_cookie(path: &Path) -> Result<PathBuf, SecretError> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    hostfs::write_atomic_mode(path, random_cookie()?.as_bytes(), 0o600)?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn cookie_is_private_random_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        ensure_cookie(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let first = fs::read_to_string(&path).unwrap();
        assert_eq!(first.len(), 32);
        assert!(first.chars().all(|c| c.is_ascii_uppercase()));
        ensure_cookie(&path).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            first,
            "an existing cookie is kept"
        );
        let other = dir.path().join("other");
        ensure_cookie(&other).unwrap();
        assert_ne!(fs::read_to_string(&other).unwrap(), first);
    }
}
