//! Secrets an engine hands an exported VM (`unibeam export`): the cookie
//! arrives as a read-only virtio-blk disk found by its serial, either raw
//! (Nomad renders a file that QEMU attaches; Firecracker and
//! cloud-hypervisor take a file as a drive) or as the ISO 9660 image that
//! KubeVirt builds from a Secret's keys. Init copies it to
//! [`SECRET_COOKIE_PATH`], where the launch plan's `CopyOf` picks it up.
//!
//! A disk read from /sys/block needs no kernel option (fw_cfg's sysfs
//! would need one the specialised kernel does not build), and the ISO
//! reader is a few dozen lines over the one directory KubeVirt writes:
//! the Rust ISO 9660 crates read through `std::fs::File` and pull in far
//! more than PID 1, which ships in every image, should carry.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;
use unibeam_spec::{SecretDisk, SecretFormat, SecretSource, SECRET_COOKIE_PATH};

/// How long the disk may take to appear: built-in virtio-blk probes before
/// init runs, but a slow engine may hot-plug it a moment later.
const APPEAR_LIMIT: Duration = Duration::from_secs(10);

/// ISO 9660 logical sector size.
const SECTOR: u64 = 2048;

/// The most of a raw secret disk read: a cookie is a few hundred bytes.
const RAW_LIMIT: u64 = 4096;

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("cookie: no disk {disk} after {limit:?} (the engine's secret disk is missing)")]
    NoDisk { disk: String, limit: Duration },
    #[error("cookie: reading {device}")]
    Read {
        device: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cookie: {device} is not an ISO 9660 image holding a file {file}")]
    NoFile { device: String, file: String },
    #[error("cookie: the secret on {device} is empty")]
    Empty { device: String },
    #[error("cookie: writing {SECRET_COOKIE_PATH}")]
    Write(#[source] std::io::Error),
}

/// Reads the cookie the spec says the engine delivers, if any, and leaves
/// it where the launch plan copies it from. A failure names the disk.
pub fn fetch(source: Option<&SecretSource>) -> Result<(), SecretError> {
    let Some(source) = source else { return Ok(()) };
    let device = wait_for_disk(&source.disk)?;
    let name = device.display().to_string();
    let read = |source| SecretError::Read {
        device: name.clone(),
        source,
    };
    let mut disk = fs::File::open(&device).map_err(read)?;
    let secret = match &source.format {
        SecretFormat::Raw => raw_secret(&mut disk).map_err(read)?,
        SecretFormat::Iso9660 { file } => {
            iso_file(&mut disk, file)
                .map_err(read)?
                .ok_or_else(|| SecretError::NoFile {
                    device: name.clone(),
                    file: file.clone(),
                })?
        }
    };
    let secret = trim(&secret);
    if secret.is_empty() {
        return Err(SecretError::Empty { device: name });
    }
    write_private(secret).map_err(SecretError::Write)
}

fn wait_for_disk(disk: &SecretDisk) -> Result<PathBuf, SecretError> {
    let deadline = Instant::now() + APPEAR_LIMIT;
    loop {
        let found = match disk {
            SecretDisk::Serial(serial) => find_disk(serial),
            SecretDisk::Name(name) => {
                let sys = Path::new("/sys/block").join(name);
                sys.exists().then(|| Path::new("/dev").join(name))
            }
        };
        if let Some(found) = found {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            return Err(SecretError::NoDisk {
                disk: match disk {
                    SecretDisk::Serial(serial) => format!("with serial {serial}"),
                    SecretDisk::Name(name) => format!("named {name}"),
                },
                limit: APPEAR_LIMIT,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The block device whose virtio serial is `serial`.
fn find_disk(serial: &str) -> Option<PathBuf> {
    let entries = fs::read_dir("/sys/block").ok()?;
    entries.filter_map(|e| e.ok()).find_map(|e| {
        let found = fs::read_to_string(e.path().join("serial")).ok()?;
        (found.trim() == serial).then(|| Path::new("/dev").join(e.file_name()))
    })
}

/// The secret without the padding and line end a file or a sector adds.
fn trim(data: &[u8]) -> &[u8] {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    data[..end].trim_ascii()
}

fn raw_secret(disk: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    disk.take(RAW_LIMIT).read_to_end(&mut data)?;
    Ok(data)
}

fn write_private(secret: &[u8]) -> std::io::Result<()> {
    let path = Path::new(SECRET_COOKIE_PATH);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    fs::write(path, secret)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o400))
}

fn read_at(disk: &mut (impl Read + Seek), at: u64, len: usize) -> std::io::Result<Vec<u8>> {
    disk.seek(SeekFrom::Start(at))?;
    let mut buf = vec![0; len];
    disk.read_exact(&mut buf)?;
    Ok(buf)
}

fn u32_le(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The content of the file `wanted` in the root directory of the ISO 9660
/// image on `disk`, or `None` when the image has no such file.
fn iso_file(disk: &mut (impl Read + Seek), wanted: &str) -> std::io::Result<Option<Vec<u8>>> {
    // The primary volume descriptor: sector 16, type 1, "CD001".
    let pvd = read_at(disk, 16 * SECTOR, SECTOR as usize)?;
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return Ok(None);
    }
    // Its root directory record starts at byte 156.
    let root = &pvd[156..190];
    let (extent, size) = (u32_le(root, 2), u32_le(root, 10));
    let dir = read_at(disk, u64::from(extent) * SECTOR, size.min(1 << 20) as usize)?;
    match find_entry(&dir, wanted) {
        Some((at, len)) => read_at(disk, u64::from(at) * SECTOR, len.min(1 << 20) as usize).map(Some),
        None => Ok(None),
    }
}

/// Walks a directory's records for `wanted`; returns its extent and size.
fn find_entry(dir: &[u8], wanted: &str) -> Option<(u32, u32)> {
    let mut pos = 0;
    while pos < dir.len() {
        let len = usize::from(dir[pos]);
        if len == 0 {
            // Records never cross a sector: the rest of this one is padding.
            pos = (pos / SECTOR as usize + 1) * SECTOR as usize;
            continue;
        }
        let record = dir.get(pos..pos + len)?;
        let is_dir = record.get(25).is_some_and(|f| f & 2 != 0);
        if !is_dir && entry_name_matches(record, wanted) {
            return Some((u32_le(record, 2), u32_le(record, 10)));
        }
        pos += len;
    }
    None
}

/// A record's name is `wanted` by its Rock Ridge `NM` entry (exact), else
/// by its ISO 9660 name (upper case, with `.` and `;1` appended).
fn entry_name_matches(record: &[u8], wanted: &str) -> bool {
    let name_len = usize::from(record.get(32).copied().unwrap_or(0));
    let Some(iso_name) = record.get(33..33 + name_len) else {
        return false;
    };
    // The System Use area follows the name, padded to an even offset.
    let system_use = 33 + name_len + (1 - name_len % 2);
    if let Some(rr) = rock_ridge_name(record.get(system_use..).unwrap_or(&[])) {
        return rr == wanted.as_bytes();
    }
    let iso = String::from_utf8_lossy(iso_name);
    let iso = iso.split(';').next().unwrap_or("").trim_end_matches('.');
    iso.eq_ignore_ascii_case(wanted)
}

/// The name in a Rock Ridge `NM` entry (SUSP: signature, length, version).
fn rock_ridge_name(mut area: &[u8]) -> Option<&[u8]> {
    while area.len() >= 4 {
        let len = usize::from(area[2]);
        if len < 4 || len > area.len() {
            return None;
        }
        if &area[..2] == b"NM" && len >= 5 {
            return Some(&area[5..len]);
        }
        area = &area[len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_secret_loses_its_padding_and_newline() {
        assert_eq!(trim(b"s3cret\n\0\0\0"), b"s3cret");
        assert_eq!(trim(b"\0\0"), b"");
    }

    #[test]
    fn rock_ridge_names_win_over_iso_names() {
        // A record: len, ext-attr, extent (8), size (8), date (7), flags,
        // unit, gap, volume seq (4), name len, name, pad, NM entry.
        let mut rec = vec![0u8; 33];
        rec[32] = 9;
        rec.extend_from_slice(b"COOKIE.;1");
        rec.extend_from_slice(b"NM\x0b\x01\x00cookie");
        rec[0] = rec.len() as u8;
        assert!(entry_name_matches(&rec, "cookie"));
        assert!(!entry_name_matches(&rec, "COOKIE"));
        rec.truncate(33 + 9);
        assert!(entry_name_matches(&rec, "cookie"));
    }
}
