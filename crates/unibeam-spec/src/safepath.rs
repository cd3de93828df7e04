//! The one safe path join for names that come from outside: a release's
//! files, a tarball's members, an instance record. Such a name may only go
//! down: no root, no `..`, and it must be UTF-8, because the image stores
//! UTF-8 names and the BEAM runs with `+fnu` (a non-UTF-8 name would be
//! mangled, and two of them could collapse into one file).

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Why an outside name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsafePath {
    /// Starts at `/`: it would land outside, or under a path nobody meant.
    Absolute,
    /// Holds `..`: it would climb out.
    Parent,
    /// Not UTF-8.
    NotUtf8,
    /// Empty, or only `.`.
    Empty,
}

impl fmt::Display for UnsafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnsafePath::Absolute => "an absolute path, which would land outside",
            UnsafePath::Parent => "a path with '..', which would climb out",
            UnsafePath::NotUtf8 => "a name that is not UTF-8, which the image cannot hold unchanged",
            UnsafePath::Empty => "an empty path",
        })
    }
}

impl std::error::Error for UnsafePath {}

/// The `/`-separated UTF-8 form of a relative path that stays inside
/// whatever it is joined to; `.` components are dropped.
pub fn relative(path: &Path) -> Result<String, UnsafePath> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => parts.push(part.to_str().ok_or(UnsafePath::NotUtf8)?),
            Component::CurDir => {}
            Component::ParentDir => return Err(UnsafePath::Parent),
            Component::RootDir | Component::Prefix(_) => return Err(UnsafePath::Absolute),
        }
    }
    if parts.is_empty() {
        return Err(UnsafePath::Empty);
    }
    Ok(parts.join("/"))
}

/// `root` joined with an outside name, refused unless it stays under `root`.
pub fn join(root: &Path, rel: &Path) -> Result<PathBuf, UnsafePath> {
    Ok(root.join(relative(rel)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn only_downward_utf8_names_join() {
        let root = Path::new("/r");
        assert_eq!(
            join(root, Path::new("./lib/a-1/ebin")).unwrap(),
            Path::new("/r/lib/a-1/ebin")
        );
        assert_eq!(join(root, Path::new("/etc/passwd")), Err(UnsafePath::Absolute));
        assert_eq!(join(root, Path::new("lib/../../x")), Err(UnsafePath::Parent));
        assert_eq!(join(root, Path::new("..")), Err(UnsafePath::Parent));
        assert_eq!(join(root, Path::new(".")), Err(UnsafePath::Empty));
        assert_eq!(join(root, Path::new("")), Err(UnsafePath::Empty));
        let latin1 = Path::new(OsStr::from_bytes(b"priv/caf\xe9"));
        assert_eq!(join(root, latin1), Err(UnsafePath::NotUtf8));
        assert_eq!(relative(Path::new("a//b/./c")).unwrap(), "a/b/c");
    }
}
