//! The dashboard's access token: 32 random bytes as hex, made at first
//! start and kept in a file only its owner can read, so every later start
//! (and every browser tab the user opened) keeps working with it.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::hostfs::{self, PathIo};

/// Hex digits of a token.
const TOKEN_LEN: usize = 64;

#[derive(Debug, Error)]
pub enum TokenError {
    #[error("{}: readable by others (mode {mode:o}); `chmod 600 {}` it, or delete it for a new token", .path.display(), .path.display())]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{}: not a regular file; delete it and start the dashboard again for a new token", .0.display())]
    NotAFile(PathBuf),
    #[error("{}: not a token unibeam made (64 hex digits); delete it and start the dashboard again for a new one", .0.display())]
    Malformed(PathBuf),
    #[error("drawing random bytes for the token")]
    Random(#[source] getrandom::Error),
    #[error(transparent)]
    Io(#[from] PathIo),
}

/// A secret the dashboard compares requests against.
#[derive(Clone)]
pub struct Token(String);

/// Never shows the secret, not even in a debug print.
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    #[cfg(test)]
    pub fn for_tests(token: String) -> Token {
        Token(token)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `given` is the token, in time that does not depend on where
    /// they differ.
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// The token in `path`, made there (0600) when missing. A file that
/// others can read, that is not a plain file, or that holds something
/// else is refused, not repaired: someone else may have made it.
pub fn load_or_create(path: &Path) -> Result<Token, TokenError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(hostfs::at::<PathIo>(dir))?;
    }
    match read(path) {
        Err(TokenError::Io(e)) if e.source.kind() == std::io::ErrorKind::NotFound => {}
        read => return read,
    }
    let mut bytes = [0u8; TOKEN_LEN / 2];
    getrandom::fill(&mut bytes).map_err(TokenError::Random)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hostfs::write_atomic_mode(path, token.as_bytes(), 0o600)?;
    // Two dashboards starting at once: the file's token is the one.
    read(path)
}

fn read(path: &Path) -> Result<Token, TokenError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => TokenError::NotAFile(path.to_path_buf()),
            _ => hostfs::at::<PathIo>(path)(e).into(),
        })?;
    let meta = file.metadata().map_err(hostfs::at::<PathIo>(path))?;
    if !meta.is_file() {
        return Err(TokenError::NotAFile(path.to_path_buf()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(TokenError::Exposed {
            path: path.to_path_buf(),
            mode: meta.mode() & 0o777,
        });
    }
    let mut text = String::new();
    // A token file is small: read no more than a little past its size.
    (&file)
        .take(4096)
        .read_to_string(&mut text)
        .map_err(hostfs::at::<PathIo>(path))?;
    let token = text.trim();
    if token.len() != TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::Malformed(path.to_path_buf()));
    }
    Ok(Token(token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/token");
        let first = load_or_create(&path).unwrap();
        assert_eq!(first.as_str().len(), TOKEN_LEN);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create(&path).unwrap().as_str(), first.as_str());
    }

    #[test]
    fn matching_is_exact() {
        let token = Token("ab".repeat(32));
        assert!(token.matches(&"ab".repeat(32)));
        assert!(!token.matches(&"ab".repeat(31)));
        assert!(!token.matches(&format!("{}ac", "ab".repeat(31))));
        assert!(!token.matches(""));
    }

    #[test]
    fn an_exposed_token_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("token") && err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_symlink_or_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("token");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        assert!(matches!(load_or_create(&link), Err(TokenError::NotAFile(_))));
        let junk = dir.path().join("junk");
        hostfs::write_atomic_mode(&junk, b"not a token", 0o600).unwrap();
        assert!(matches!(load_or_create(&junk), Err(TokenError::Malformed(_))));
    }
}
