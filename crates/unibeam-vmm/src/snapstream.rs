//! A VM's saved state on disk: QEMU's migration stream, zstd-compressed,
//! written and read by unibeam itself at the other end of QEMU's `exec:`
//! migration (`unibeam snapshot-write DIR` / `snapshot-read DIR`).
//!
//! Written to a temporary file and renamed, with its sha256 and length
//! beside it, so a snapshot is whole or absent. On the way back the reader
//! moves the guest's clocks on by the time the state spent on disk (see
//! [`ClockAdvance`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::hostfs::{at, PathIo};

/// The compressed stream.
pub const STATE_FILE: &str = "state.zst";
/// What the writer learnt of the stream: [`StreamInfo`].
pub const STREAM_FILE: &str = "stream.json";

#[derive(Debug, Error)]
pub enum SnapStreamError {
    #[error(transparent)]
    File(#[from] PathIo),
    #[error("reading QEMU's migration stream")]
    Input(#[source] io::Error),
    #[error("writing the migration stream to QEMU")]
    Output(#[source] io::Error),
    #[error("{}: not a whole snapshot (its stream record is unreadable)", .0.display())]
    BadInfo(PathBuf, #[source] serde_json::Error),
}

/// The stream as written: enough to check it before QEMU reads it, and
/// where its clock fields are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// sha256 of [`STATE_FILE`] as stored (compressed), in hex.
    pub sha256: String,
    pub compressed_bytes: u64,
    /// Length of the uncompressed stream.
    pub stream_bytes: u64,
    /// Offset, in the uncompressed stream, of QEMU's `timer` section's
    /// fields (`cpu_ticks_offset`, 8 unused bytes, `cpu_clock_offset`,
    /// big-endian i64), if it was found.
    pub timer_fields: Option<u64>,
}

/// QEMU's `timer` section header as `savevm` writes a whole section:
/// `QEMU_VM_SECTION_FULL` (4), a be32 section id (any), then the id string
/// with its length byte, be32 instance 0 and be32 version 2 of
/// `vmstate_timers`. The fields follow at once.
const TIMER_IDSTR: &[u8] = b"\x05timer\x00\x00\x00\x00\x00\x00\x00\x02";
const SECTION_FULL: u8 = 4;
/// Bytes of the section type and id before the id string.
const HEADER_LEAD: usize = 5;
/// The fields that [`ClockAdvance`] moves: 24 bytes from the start.
const TIMER_FIELDS_LEN: usize = 24;

/// Finds the last `timer` section in a stream read in pieces. The last,
/// because the guest's RAM comes first and could hold the same bytes; the
/// device sections come after it.
#[derive(Default)]
struct TimerFinder {
    /// The tail of what was seen, long enough to hold a header across a
    /// piece boundary.
    tail: Vec<u8>,
    seen: u64,
    found: Option<u64>,
}

impl TimerFinder {
    fn feed(&mut self, piece: &[u8]) {
        let start = self.seen - self.tail.len() as u64;
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(piece);
        let mut from = 0;
        while let Some(i) = find(&window[from..], TIMER_IDSTR) {
            let at = from + i;
            if at >= HEADER_LEAD && window[at - HEADER_LEAD] == SECTION_FULL {
                self.found = Some(start + (at + TIMER_IDSTR.len()) as u64);
            }
            from = at + 1;
        }
        self.seen += piece.len() as u64;
        let keep = (HEADER_LEAD + TIMER_IDSTR.len()).min(window.len());
        self.tail = window[window.len() - keep..].to_vec();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A writer, or a reader, that hashes and counts what passes through it.
pub(crate) struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W> Hashing<W> {
    pub(crate) fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }

    /// The writer or reader, the sha256 (hex) and the count of what
    /// passed.
    pub(crate) fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hash.finalize()), self.bytes)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// How hard the writer compresses. Loading costs the same either way
/// (zstd decompresses at one speed whatever the level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd level 1, for `suspend`, which the user waits for: hello's
    /// 51 MB stream in about 0.1 s, to 14.6 MB.
    Fast,
    /// zstd level 6, for `run --snapshot`'s cache entry, saved once and
    /// loaded by every later start, and which holds every module of the
    /// started applications: hello's 61 MB stream in about 0.6 s, to
    /// 14.5 MB where level 1 gives 16.9 MB.
    Small,
}

impl Compression {
    pub(crate) fn level(self) -> i32 {
        match self {
            Compression::Fast => 1,
            Compression::Small => 6,
        }
    }

    /// The hidden `snapshot-write` verb's `--level` value.
    pub fn as_arg(self) -> &'static str {
        match self {
            Compression::Fast => "fast",
            Compression::Small => "small",
        }
    }

    pub fn from_arg(arg: &str) -> Option<Compression> {
        [Compression::Fast, Compression::Small]
            .into_iter()
            .find(|c| c.as_arg() == arg)
    }
}

/// Compresses QEMU's stream from `input` into `dir`, atomically.
pub fn write(
    mut input: impl Read,
    dir: &Path,
    compression: Compression,
) -> Result<StreamInfo, SnapStreamError> {
    fs::create_dir_all(dir).map_err(at::<PathIo>(dir))?;
    let partial = dir.join(format!("{STATE_FILE}.partial"));
    // 0600: the state holds the guest's memory, cookie and secrets too.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(at::<PathIo>(&partial))?;
    let hashing = Hashing::new(BufWriter::new(file));
    let io_err = |e: io::Error| SnapStreamError::File(at::<PathIo>(&partial)(e));
    let mut encoder = zstd::Encoder::new(hashing, compression.level()).map_err(io_err)?;
    encoder.include_checksum(true).map_err(io_err)?;
    let mut finder = TimerFinder::default();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SnapStreamError::Input(e)),
        };
        finder.feed(&buf[..n]);
        encoder.write_all(&buf[..n]).map_err(io_err)?;
    }
    let (writer, sha256, compressed_bytes) = encoder.finish().map_err(io_err)?.finish();
    let file = writer.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    let info = StreamInfo {
        sha256,
        compressed_bytes,
        stream_bytes: finder.seen,
        timer_fields: finder.found,
    };
    let state = dir.join(STATE_FILE);
    fs::rename(&partial, &state).map_err(at::<PathIo>(&state))?;
    let json = serde_json::to_vec_pretty(&info).expect("plain data");
    unibeam_spec::hostfs::write_atomic(&dir.join(STREAM_FILE), &json)?;
    Ok(info)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The stream record in `dir`.
pub fn read_info(dir: &Path) -> Result<StreamInfo, SnapStreamError> {
    let path = dir.join(STREAM_FILE);
    let bytes = fs::read(&path).map_err(at::<PathIo>(&path))?;
    serde_json::from_slice(&bytes).map_err(|e| SnapStreamError::BadInfo(path, e))
}

/// Whether the state file is whole: its length and sha256 as recorded.
pub fn verify(dir: &Path, info: &StreamInfo) -> Result<bool, SnapStreamError> {
    let path = dir.join(STATE_FILE);
    let mut file = File::open(&path).map_err(at::<PathIo>(&path))?;
    let mut hash = Sha256::new();
    let copied = io::copy(&mut file, &mut hash).map_err(at::<PathIo>(&path))?;
    Ok(copied == info.compressed_bytes && hex(&hash.finalize()) == info.sha256)
}

/// Moves the guest's clocks on when its state is loaded. The guest's TSC
/// and QEMU's virtual clock (which drives the guest's timers) stand still
/// while a VM is stopped, and a migration carries them as they stood, so
/// a restored guest would believe no time had passed: its
/// CLOCK_MONOTONIC, and with it CLOCK_REALTIME and the BEAM's Erlang
/// system time (monotonic time plus an offset fixed at boot), would lag
/// by the whole time on disk. Adding that time to both fields makes the
/// guest see it pass, forwards only, as after a long pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockAdvance {
    pub nanos: u64,
    /// The TSC rate the guest was told (`tsc_early_khz`): its ticks.
    pub tsc_khz: u64,
}

impl ClockAdvance {
    fn ticks(self) -> i64 {
        let ticks = u128::from(self.nanos) * u128::from(self.tsc_khz) / 1_000_000;
        i64::try_from(ticks).unwrap_or(i64::MAX)
    }

    /// Moves `cpu_ticks_offset` (the guest's TSC) and `cpu_clock_offset`
    /// (QEMU's virtual clock, in ns) on; `fields` are the section's first
    /// [`TIMER_FIELDS_LEN`] bytes.
    fn apply(self, fields: &mut [u8]) {
        add_be(&mut fields[0..8], self.ticks());
        add_be(&mut fields[16..24], i64::try_from(self.nanos).unwrap_or(i64::MAX));
    }
}

fn add_be(field: &mut [u8], by: i64) {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(field);
    let value = i64::from_be_bytes(raw).saturating_add(by);
    field.copy_from_slice(&value.to_be_bytes());
}

/// Decompresses the state in `dir` into `out` (QEMU's `-incoming`), with
/// the clocks moved on by `advance` if the timer section was found. The
/// fields may straddle two pieces: the first is held back until the rest
/// arrives.
pub fn read(
    dir: &Path,
    info: &StreamInfo,
    advance: Option<ClockAdvance>,
    mut out: impl Write,
) -> Result<(), SnapStreamError> {
    let path = dir.join(STATE_FILE);
    let file = File::open(&path).map_err(at::<PathIo>(&path))?;
    let mut decoder = zstd::Decoder::new(file).map_err(at::<PathIo>(&path))?;
    let target = advance.zip(info.timer_fields);
    let mut held: Vec<u8> = Vec::new();
    let mut held_start = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SnapStreamError::File(at::<PathIo>(&path)(e))),
        };
        held.extend_from_slice(&buf[..n]);
        let end = held_start + held.len() as u64;
        if let Some((advance, fields)) = target.filter(|(_, f)| (held_start..end).contains(f)) {
            if end < fields + TIMER_FIELDS_LEN as u64 {
                continue; // hold on until the fields are whole
            }
            let at = (fields - held_start) as usize;
            advance.apply(&mut held[at..at + TIMER_FIELDS_LEN]);
        }
        out.write_all(&held).map_err(SnapStreamError::Output)?;
        held_start = end;
        held.clear();
    }
    out.write_all(&held).map_err(SnapStreamError::Output)?;
    out.flush().map_err(SnapStreamError::Output)
}

#[cfg(test)]
#[path = "snapstream_tests.rs"]
mod tests;
