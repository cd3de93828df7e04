//! A `run --snapshot` guest's RAM as a file, so a warm start maps it
//! instead of streaming it.
//!
//! Streaming hello's 61 MB of RAM through QEMU's migration took about
//! 0.13 s of every warm start, and as much CPU, which eight members of a
//! cluster restored side by side had to share. So the first boot keeps
//! its RAM in a shared file (an unnamed tmpfs file, [`LiveRam`]), and the
//! save leaves the RAM out of the migration stream (QEMU's
//! `x-ignore-shared`): the stream holds only the devices (about 0.2 MB).
//! The RAM goes, compressed, into the cache entry ([`RAM_ZST`], what the
//! snapshot costs on disk), and uncompressed into a private tmpfs
//! directory, where every later start maps it copy-on-write
//! (`share=off`): a restored guest reads its pages from the one copy in
//! the host's memory and copies only those it writes. A copy that is
//! gone (the host rebooted) is decompressed again from the entry.
//!
//! The tmpfs directory is `/dev/shm/unibeam-<uid>`, 0700 and ours, or
//! else the entry itself. Copies whose entry is gone or names another
//! copy are swept.

use crate::snapstream::Hashing;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use thiserror::Error;
use unibeam_spec::hostfs::{at, PathIo};

/// The guest's RAM in a cache entry, zstd-compressed.
pub const RAM_ZST: &str = "ram.zst";
/// The RAM copy's record of the entry it belongs to, for the sweep.
const OWNER_SUFFIX: &str = ".owner";
/// QEMU's page size: the unit of a sparse copy.
const PAGE: usize = 4096;
/// Read and written this much at a time.
const CHUNK: usize = 1 << 21;
/// A copy with no entry naming it is swept once it is this old: a save
/// writes its copy before the record that names it.
const SWEEP_AGE: Duration = Duration::from_secs(300);

#[derive(Debug, Error)]
pub enum RamFileError {
    #[error(transparent)]
    File(#[from] PathIo),
    #[error("{}: truncated or damaged (its sha256 is not the one recorded)", .0.display())]
    Damaged(PathBuf),
    #[error("{name:?}: not a RAM file name unibeam writes")]
    BadName { name: String },
}

/// A saved guest's RAM, as its entry's record holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RamInfo {
    /// The guest's RAM size: the uncompressed file's length.
    pub bytes: u64,
    /// sha256 of [`RAM_ZST`] as stored, in hex.
    pub sha256: String,
    pub compressed_bytes: u64,
    /// The uncompressed copy's file name (see [`copy_path`]).
    pub copy: String,
}

/// The private tmpfs directory for RAM copies, if this host has one we
/// may use: made 0700 if missing, and refused unless it is a directory
/// of ours that nobody else can enter (/dev/shm is world-writable).
pub fn shared_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(format!("/dev/shm/unibeam-{}", nix::unistd::geteuid()));
    let _ = unibeam_spec::hostfs::create_private_dir(&dir);
    let st = fs::symlink_metadata(&dir).ok()?;
    let ours = st.is_dir() && st.uid() == nix::unistd::geteuid().as_raw() && st.mode() & 0o077 == 0;
    ours.then_some(dir)
}

/// Where `info`'s copy lives for the entry `entry`. The name comes from a
/// record on disk: only names [`new_copy_name`] makes are taken.
pub fn copy_path(entry: &Path, info: &RamInfo) -> Result<PathBuf, RamFileError> {
    let name = &info.copy;
    let plain = name.len() <= 80
        && name.ends_with(".ram")
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !plain {
        return Err(RamFileError::BadName { name: name.clone() });
    }
    Ok(copy_dir(entry).join(name))
}

/// Where `entry`'s RAM copies go: the shared tmpfs directory, else the
/// entry itself.
pub fn copy_dir(entry: &Path) -> PathBuf {
    shared_dir().unwrap_or_else(|| entry.to_path_buf())
}

/// A fresh copy name for `entry`: its key and a random part, so two
/// saves of one key never share a copy.
pub fn new_copy_name(entry: &Path) -> String {
    let key: String = entry
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(32)
                .collect()
        })
        .unwrap_or_default();
    let mut random = [0u8; 8];
    let _ = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random));
    format!("{key}-{}.ram", crate::snapstream::hex(&random))
}

/// The first boot's RAM: an unnamed tmpfs file (nothing to leave behind)
/// that QEMU maps shared through our descriptor's /proc path.
pub struct LiveRam {
    file: File,
}

impl LiveRam {
    pub fn create(bytes: u64) -> Result<LiveRam, RamFileError> {
        let dir = shared_dir().unwrap_or_else(std::env::temp_dir);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_TMPFILE.bits())
            .open(&dir)
            .map_err(at::<PathIo>(&dir))?;
        file.set_len(bytes).map_err(at::<PathIo>(&dir))?;
        Ok(LiveRam { file })
    }

    /// The path QEMU opens: this process's descriptor, alive for as long
    /// as the runner that starts QEMU.
    pub fn qemu_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
    }

    /// Copies the guest's RAM (stopped) to `to`, written whole or not at
    /// all. Pages of zeros are left as holes: a guest's untouched memory
    /// costs nothing.
    pub fn copy_to(&self, to: &Path) -> Result<(), RamFileError> {
        let partial = partial_of(to);
        let out = create_new(&partial)?;
        let len = self.file.metadata().map_err(at::<PathIo>(to))?.len();
        out.set_len(len).map_err(at::<PathIo>(&partial))?;
        let mut buf = vec![0u8; CHUNK];
        let mut offset = 0u64;
        while offset < len {
            let n = (len - offset).min(CHUNK as u64) as usize;
            self.file
                .read_exact_at(&mut buf[..n], offset)
                .map_err(at::<PathIo>(to))?;
            write_sparse(&out, &buf[..n], offset).map_err(at::<PathIo>(&partial))?;
            offset += n as u64;
        }
        fs::rename(&partial, to).map_err(at::<PathIo>(to))?;
        Ok(())
    }
}

fn partial_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn create_new(path: &Path) -> Result<File, RamFileError> {
    let _ = fs::remove_file(path);
    Ok(OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(at::<PathIo>(path))?)
}

/// Writes `data`'s pages that are not all zeros at `offset` on.
fn write_sparse(out: &File, data: &[u8], offset: u64) -> io::Result<()> {
    for (i, page) in data.chunks(PAGE).enumerate() {
        if page.iter().any(|&b| b != 0) {
            out.write_all_at(page, offset + (i * PAGE) as u64)?;
        }
    }
    Ok(())
}

/// Compresses the copy at `copy` into `entry`'s [`RAM_ZST`].
pub fn compress(copy: &Path, entry: &Path, level: i32) -> Result<RamInfo, RamFileError> {
    let target = entry.join(RAM_ZST);
    let partial = partial_of(&target);
    let out = create_new(&partial)?;
    let io_err = at::<PathIo>(&partial);
    let mut input = File::open(copy).map_err(at::<PathIo>(copy))?;
    let bytes = input.metadata().map_err(at::<PathIo>(copy))?.len();
    let hashing = Hashing::new(io::BufWriter::new(out));
    let mut encoder = zstd::Encoder::new(hashing, level).map_err(at::<PathIo>(&partial))?;
    encoder.include_checksum(true).map_err(at::<PathIo>(&partial))?;
    io::copy(&mut input, &mut encoder).map_err(at::<PathIo>(&partial))?;
    let hashing = encoder.finish().map_err(at::<PathIo>(&partial))?;
    let (writer, sha256, compressed_bytes) = hashing.finish();
    let file = writer
        .into_inner()
        .map_err(|e| at::<PathIo>(&partial)(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    fs::rename(&partial, &target).map_err(at::<PathIo>(&target))?;
    Ok(RamInfo {
        bytes,
        sha256,
        compressed_bytes,
        copy: copy
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
    })
}

/// The copy QEMU maps for `entry`, decompressed from [`RAM_ZST`] first if
/// it is missing or not whole; a damaged [`RAM_ZST`] is an error.
pub fn materialize(entry: &Path, info: &RamInfo) -> Result<PathBuf, RamFileError> {
    let copy = copy_path(entry, info)?;
    if fs::metadata(&copy).is_ok_and(|m| m.is_file() && m.len() == info.bytes) {
        return Ok(copy);
    }
    let source = entry.join(RAM_ZST);
    let file = File::open(&source).map_err(at::<PathIo>(&source))?;
    let mut hashing = Hashing::new(file);
    let partial = partial_of(&copy);
    let out = create_new(&partial)?;
    out.set_len(info.bytes).map_err(at::<PathIo>(&partial))?;
    let written = decompress_sparse(&mut hashing, &out, info.bytes);
    // Read to the end, so the hash covers every stored byte.
    let drained = io::copy(&mut hashing, &mut io::sink());
    let (_, sha256, compressed_bytes) = hashing.finish();
    let whole = matches!(written, Ok(n) if n == info.bytes)
        && drained.is_ok()
        && compressed_bytes == info.compressed_bytes
        && sha256 == info.sha256;
    if !whole {
        let _ = fs::remove_file(&partial);
        return Err(RamFileError::Damaged(source));
    }
    fs::rename(&partial, &copy).map_err(at::<PathIo>(&copy))?;
    own(&copy, entry);
    Ok(copy)
}

/// Decompresses into `out`, sparse, at most `limit` bytes; the count.
fn decompress_sparse(input: &mut impl Read, out: &File, limit: u64) -> io::Result<u64> {
    let mut decoder = zstd::Decoder::new(input)?;
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let mut filled = 0;
        while filled < CHUNK {
            match decoder.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            return Ok(offset);
        }
        if offset + filled as u64 > limit {
            return Err(io::Error::other("longer than the guest's RAM"));
        }
        write_sparse(out, &buf[..filled], offset)?;
        offset += filled as u64;
    }
}

/// Records `entry` as the owner of `copy`, for [`sweep`].
pub fn own(copy: &Path, entry: &Path) {
    let mut owner = copy.as_os_str().to_os_string();
    owner.push(OWNER_SUFFIX);
    let _ = unibeam_spec::hostfs::write_atomic(Path::new(&owner), entry.as_os_str().as_encoded_bytes());
}

/// Removes `info`'s copy of `entry`, if any.
pub fn discard(entry: &Path, info: &RamInfo) {
    if let Ok(copy) = copy_path(entry, info) {
        remove_copy(&copy);
    }
}

fn remove_copy(copy: &Path) {
    let mut owner = copy.as_os_str().to_os_string();
    owner.push(OWNER_SUFFIX);
    let _ = fs::remove_file(copy);
    let _ = fs::remove_file(owner);
}

/// Removes what the shared directory holds that no entry names any more:
/// at once if the entry is gone, else once [`SWEEP_AGE`] old (an entry
/// saved again, or a save that never finished; a save writes its copy
/// before the record that names it). `names_copy(entry, name)` says
/// whether an entry's record names a copy.
pub fn sweep(names_copy: impl Fn(&Path, &str) -> bool) {
    let Some(dir) = shared_dir() else { return };
    let Ok(list) = fs::read_dir(&dir) else { return };
    let now = SystemTime::now();
    for item in list.flatten() {
        let path = item.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let old = || {
            fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > SWEEP_AGE)
        };
        let copy_name = name.strip_suffix(OWNER_SUFFIX).unwrap_or(name);
        let owner = fs::read(dir.join(format!("{copy_name}{OWNER_SUFFIX}")))
            .ok()
            .map(|b| PathBuf::from(String::from_utf8_lossy(&b).into_owned()));
        let remove = match owner {
            _ if name.ends_with(".partial") => old(),
            None => old(),
            Some(entry) if !entry.is_dir() => true,
            Some(entry) => !names_copy(&entry, copy_name) && old(),
        };
        if remove {
            // A copy goes with its owner record, whichever is seen first.
            let _ = fs::remove_file(&path);
            remove_copy(&dir.join(copy_name));
        }
    }
}

#[cfg(test)]
#[path = "ramfile_tests.rs"]
mod tests;
