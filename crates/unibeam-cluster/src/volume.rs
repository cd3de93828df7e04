//! Volume values as users write them, on `run -v`, `volume create` and
//! in unibeam.toml: a volume's name, a mount request `NAME:/path[:ro]`
//! and a size. Checked once here, so the flags and the file accept the
//! same things and nothing hostile reaches a path or the guest.

use std::fmt;
use std::str::FromStr;

/// The smallest volume: ext4 with its journal needs a few MiB, and the
/// rest must hold data.
pub const MIN_VOLUME_BYTES: u64 = 16 << 20;
/// The largest: 16383 GiB. A volume is one file on the host, and ext4 (the
/// usual host filesystem) takes files of at most 16 TiB less one 4 KiB
/// block, so a 16T volume could never be made there.
pub const MAX_VOLUME_BYTES: u64 = (16 << 40) - (1 << 30);
/// What `volume create` and a first `run -v` make without `--size`.
pub const DEFAULT_VOLUME_BYTES: u64 = 1 << 30;

/// A volume's name: one directory under the volume store, so letters,
/// digits, '-', '_' and '.', not starting with '.', at most 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VolumeName(String);

impl VolumeName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for VolumeName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if s.is_empty() || s.len() > 64 || s.starts_with('.') || !s.chars().all(allowed) {
            return Err(format!(
                "volume name {s:?}: use letters, digits, '-', '_' and '.', at most 64, not starting with '.'"
            ));
        }
        Ok(VolumeName(s.to_string()))
    }
}

impl TryFrom<String> for VolumeName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<VolumeName> for String {
    fn from(n: VolumeName) -> String {
        n.0
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `NAME:/path[:ro]`: a volume mounted in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRequest {
    pub name: VolumeName,
    /// Absolute and normalised.
    pub path: String,
    pub read_only: bool,
}

/// Guest directories a volume must not hide: the pseudo-filesystems init
/// mounts there, and the root itself.
const RESERVED: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Checks a guest mount point: absolute, normalised, printable, not `/`
/// and not under what init mounts itself.
pub fn check_mount_path(path: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("mount point {path:?}: {why}"));
    if !path.starts_with('/') {
        return bad("not an absolute path; use e.g. /var/lib/app");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/-_.@+".contains(c);
    if path.len() > 255 || !path.chars().all(allowed) {
        return bad("at most 255 of letters, digits, '/', '-', '_', '.', '@' and '+'");
    }
    let parts: Vec<&str> = path[1..].split('/').collect();
    if path == "/" || parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        return bad("give a normalised directory other than / (no '.', '..', '//' or trailing '/')");
    }
    if RESERVED
        .iter()
        .any(|r| path == *r || path.starts_with(&format!("{r}/")))
    {
        return bad("inside /proc, /sys or /dev, which init mounts itself");
    }
    Ok(())
}

impl FromStr for VolumeRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected NAME:/path[:ro], e.g. data:/var/lib/app"))?;
        if rest.matches(':').count() > 1 {
            return Err(format!(
                "{s:?}: give one mode at most: NAME:/path, NAME:/path:ro or NAME:/path:rw"
            ));
        }
        let (path, read_only) = match rest.rsplit_once(':') {
            Some((path, "ro")) => (path, true),
            Some((path, "rw")) => (path, false),
            Some((_, mode)) => {
                return Err(format!(
                    "{s:?}: {mode:?} is not a mode; end with :ro for read-only, or :rw (the default)"
                ))
            }
            None => (rest, false),
        };
        let name: VolumeName = name.parse()?;
        check_mount_path(path)?;
        Ok(VolumeRequest {
            name,
            path: path.to_string(),
            read_only,
        })
    }
}

/// `512M`, `1G`, `2T`, plain bytes → bytes, between the limits above.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let upper = s.trim().to_ascii_uppercase();
    let (digits, shift) = match upper.chars().last() {
        Some('K') => (&upper[..upper.len() - 1], 10),
        Some('M') => (&upper[..upper.len() - 1], 20),
        Some('G') => (&upper[..upper.len() - 1], 30),
        Some('T') => (&upper[..upper.len() - 1], 40),
        _ => (upper.as_str(), 0),
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("{s:?} is not a size; use e.g. 512M or 1G"))?;
    if bytes < MIN_VOLUME_BYTES {
        return Err(format!("{s:?} is too small for a volume; give at least 16M"));
    }
    if bytes > MAX_VOLUME_BYTES {
        return Err(format!(
            "{s:?} is too large for a volume; at most 16383G (a host's ext4 takes no 16T file)"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_their_mode() {
        let r: VolumeRequest = "data:/var/lib/app".parse().unwrap();
        assert_eq!(
            (r.name.as_str(), r.path.as_str(), r.read_only),
            ("data", "/var/lib/app", false)
        );
        assert!("data:/srv:ro".parse::<VolumeRequest>().unwrap().read_only);
        assert!(!"data:/srv:rw".parse::<VolumeRequest>().unwrap().read_only);
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let err = |s: &str| s.parse::<VolumeRequest>().unwrap_err();
        assert!(err("data").contains("NAME:/path"));
        assert!(err("../x:/srv").contains("volume name"));
        assert!(err("data:srv").contains("absolute"));
        assert!(err("data:/srv:RO").contains("not a mode"));
        assert!(err("data:/srv:r0").contains("not a mode"));
        assert!(err("data:/srv:rw:ro").contains("one mode at most"));
        assert!(err("data:/").contains("other than /"));
        assert!(err("data:/srv/../etc").contains("normalised"));
        assert!(err("data:/proc/x").contains("/proc"));
        assert!(err("data:/a\nb").contains("at most 255"));
        assert!(err("data:/a b").contains("at most 255"));
    }

    #[test]
    fn sizes_have_limits() {
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("16m").unwrap(), 16 << 20);
        assert!(parse_size("1M").unwrap_err().contains("too small"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("99999999999T").unwrap_err().contains("not a size"));
        assert!(parse_size("17T").unwrap_err().contains("too large"));
        assert!(parse_size("16T").unwrap_err().contains("at most 16383G"));
        assert_eq!(parse_size("16383G").unwrap(), MAX_VOLUME_BYTES);
    }
}
