//! Saving a running guest and booting from a saved one, host side:
//! QEMU's own migration (QMP `stop` + `migrate` to `exec:`), with unibeam
//! at the other end of the pipe (snapstream.rs) compressing the stream,
//! and `-incoming exec:` to load it, after which QMP `cont` runs the guest
//! and a key tells its init (thaw.rs in unibeam-init) what happened.
//!
//! Two users: `unibeam suspend` (one state per instance, loaded once by
//! the next `start`) and `run --snapshot` (a cached state per image and
//! settings, saved at "applications started" and loaded by every later
//! start). A state that cannot be loaded is never fatal: the guest boots
//! cold, with one line saying why.

use crate::qemu::{Accel, QemuCommand, RamBacking};
use crate::qmp::{Qmp, QmpError};
use crate::ramfile::{self, LiveRam, RamFileError, RamInfo};
use crate::snapstream::{self, Compression, SnapStreamError, StreamInfo};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use unibeam_spec::hostfs::{at, PathIo};
use unibeam_spec::snapshot_keys;

/// What a saved state records besides the stream: [`Meta`].
pub const META_FILE: &str = "snapshot.json";
/// The hidden verbs QEMU runs at the ends of its `exec:` pipe.
pub const WRITE_VERB: &str = "snapshot-write";
pub const READ_VERB: &str = "snapshot-read";
/// How long a save or a load may take before it counts as failed: a
/// 2 GiB guest under TCG, with room.
const TRANSFER_LIMIT: Duration = Duration::from_secs(120);
/// How long a QMP command may take while a state loads.
const QMP_PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error(transparent)]
    Stream(#[from] SnapStreamError),
    #[error(transparent)]
    Ram(#[from] RamFileError),
    #[error("its RAM file holds {saved} bytes, and this guest has {now}")]
    RamSize { saved: u64, now: u64 },
    #[error(transparent)]
    File(#[from] PathIo),
    #[error("{}: unreadable", .0.display())]
    BadMeta(PathBuf, #[source] serde_json::Error),
    #[error("saved by {saved}, and this is {now}: QEMU loads only its own version's state")]
    OtherQemu { saved: String, now: String },
    #[error("{}: truncated or damaged (its sha256 is not the one recorded)", .0.display())]
    Damaged(PathBuf),
    #[error("{}: asking its version", .0.display())]
    QemuVersion(PathBuf, #[source] std::io::Error),
    #[error("QEMU exited while loading the state: {0}")]
    LoadFailed(String),
    #[error("the state did not load within {0:?}")]
    LoadTimeout(Duration),
    #[error("finding unibeam itself, which QEMU runs to write and read the state")]
    SelfExe(#[source] std::io::Error),
}

/// A saved state's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// `qemu-system-x86_64 --version`'s first line at save time.
    pub qemu_version: String,
    /// Wall-clock time of the save, in ns since the epoch.
    pub saved_at_ns: u64,
    /// The TSC rate the guest was told, under TCG; `None` under KVM,
    /// whose clock QEMU does not hold in the stream the same way.
    pub tsc_khz: Option<u64>,
    pub stream: StreamInfo,
    /// The guest's RAM, when it is kept as a file beside a stream that
    /// holds only the devices (ramfile.rs); else the stream holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<RamInfo>,
}

impl Meta {
    /// What the state costs on disk: its stream and its RAM, compressed.
    pub fn bytes_on_disk(&self) -> u64 {
        self.stream.compressed_bytes + self.ram.as_ref().map_or(0, |r| r.compressed_bytes)
    }
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The QEMU binary's version line.
pub fn qemu_version(binary: &Path) -> Result<String, SnapshotError> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| SnapshotError::QemuVersion(binary.to_path_buf(), e))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// [`qemu_version`], remembered in `memo_dir` for as long as the binary's
/// file is the same one (device, inode, size, mtime): asking QEMU costs
/// ~30 ms, a tenth of a warm start.
pub fn qemu_version_memo(binary: &Path, memo_dir: &Path) -> Result<String, SnapshotError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(st) = std::fs::metadata(binary) else {
        return qemu_version(binary);
    };
    let id = format!(
        "{}:{}:{}:{}.{}",
        st.dev(),
        st.ino(),
        st.size(),
        st.mtime(),
        st.mtime_nsec()
    );
    let memo = memo_dir.join(QEMU_VERSION_MEMO);
    let known = std::fs::read_to_string(&memo).ok().and_then(|text| {
        let (file, version) = text.split_once('\n')?;
        (file == id).then(|| version.trim().to_string())
    });
    if let Some(version) = known.filter(|v| !v.is_empty()) {
        return Ok(version);
    }
    let version = qemu_version(binary)?;
    // A memo that cannot be written only costs the next start 30 ms. Its
    // temporary file is unique: `up` starts members side by side.
    let _ = unibeam_spec::hostfs::write_atomic(&memo, format!("{id}\n{version}\n").as_bytes());
    Ok(version)
}

/// [`qemu_version_memo`]'s file.
const QEMU_VERSION_MEMO: &str = "qemu-version";

/// `'...'` for /bin/sh, which runs QEMU's `exec:` command.
fn sh_quote(s: &std::ffi::OsStr) -> String {
    format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"))
}

fn exec_uri(verb: &str, dir: &Path) -> Result<String, SnapshotError> {
    let me = std::env::current_exe().map_err(SnapshotError::SelfExe)?;
    Ok(format!(
        "exec:exec {} {verb} {}",
        sh_quote(me.as_os_str()),
        sh_quote(dir.as_os_str())
    ))
}

/// The `exec:` URI that writes the state into `dir`.
fn write_uri(dir: &Path, compression: Compression) -> Result<String, SnapshotError> {
    Ok(format!(
        "{} --level {}",
        exec_uri(WRITE_VERB, dir)?,
        compression.as_arg()
    ))
}

fn tsc_khz(cmd: &QemuCommand) -> Option<u64> {
    if cmd.accel != Accel::Tcg {
        return None;
    }
    cmd.kernel_args
        .iter()
        .find_map(|a| a.strip_prefix("tsc_early_khz=")?.parse().ok())
}

/// Saves the guest of `cmd` into `dir` and leaves it paused; the caller
/// then quits QEMU ([`Qmp::quit`]) or lets the guest go on
/// ([`carry_on`]). `dir` is replaced whole: its old state goes first, so
/// a failed save leaves none.
pub fn save(cmd: &QemuCommand, dir: &Path, compression: Compression) -> Result<Meta, SnapshotError> {
    // A guest whose RAM is a shared file was saved once without it (its
    // `run --snapshot` boot); this stream must hold it all.
    let (version, saved_at_ns) = stop_and_migrate(cmd, dir, compression, false)?;
    let meta = Meta {
        qemu_version: version,
        saved_at_ns,
        tsc_khz: tsc_khz(cmd),
        stream: snapstream::read_info(dir)?,
        ram: None,
    };
    write_meta(dir, &meta)?;
    Ok(meta)
}

/// Replaces `dir`'s state with the paused guest's migration stream,
/// `ignore_shared` leaving out RAM that lives in a shared file; QEMU's
/// version and the time of the save.
fn stop_and_migrate(
    cmd: &QemuCommand,
    dir: &Path,
    compression: Compression,
    ignore_shared: bool,
) -> Result<(String, u64), SnapshotError> {
    let version = qemu_version(&cmd.binary)?;
    discard(dir);
    let mut qmp = Qmp::connect(&cmd.qmp_socket, Duration::from_secs(10))?;
    qmp.stop()?;
    let saved_at_ns = now_ns();
    qmp.ignore_shared_ram(ignore_shared)?;
    qmp.save(&write_uri(dir, compression)?, TRANSFER_LIMIT)?;
    Ok((version, saved_at_ns))
}

fn write_meta(dir: &Path, meta: &Meta) -> Result<(), SnapshotError> {
    let json = serde_json::to_vec_pretty(meta).expect("plain data");
    unibeam_spec::hostfs::write_atomic(&dir.join(META_FILE), &json)?;
    Ok(())
}

/// A `run --snapshot` save whose guest may go on: its devices are in the
/// stream and its RAM in a copy; [`finish_mapped`] makes the entry.
pub struct Paused {
    version: String,
    saved_at_ns: u64,
    copy: PathBuf,
}

/// Saves the guest of `cmd`, whose RAM is `live`, into `dir`: the devices
/// through QEMU's migration (the RAM left out), the RAM as a copy of
/// `live` (ramfile.rs). The guest stays paused; the caller lets it go on
/// ([`carry_on`]) and then calls [`finish_mapped`].
pub fn save_mapped(cmd: &QemuCommand, dir: &Path, live: &LiveRam) -> Result<Paused, SnapshotError> {
    let (version, saved_at_ns) = stop_and_migrate(cmd, dir, Compression::Small, true)?;
    let copy = ramfile::copy_dir(dir).join(ramfile::new_copy_name(dir));
    live.copy_to(&copy)?;
    ramfile::own(&copy, dir);
    Ok(Paused {
        version,
        saved_at_ns,
        copy,
    })
}

/// Compresses a [`save_mapped`] guest's RAM into `dir` and writes the
/// record that makes `dir` an entry. (The save's [`discard`] has swept
/// the copies no entry names.)
pub fn finish_mapped(cmd: &QemuCommand, dir: &Path, paused: Paused) -> Result<Meta, SnapshotError> {
    let ram = ramfile::compress(&paused.copy, dir, Compression::Small.level())?;
    let meta = Meta {
        qemu_version: paused.version,
        saved_at_ns: paused.saved_at_ns,
        tsc_khz: tsc_khz(cmd),
        stream: snapstream::read_info(dir)?,
        ram: Some(ram),
    };
    write_meta(dir, &meta)?;
    Ok(meta)
}

/// Whether the entry `dir`'s record names the RAM copy `name`.
fn names_copy(dir: &Path, name: &str) -> bool {
    read_meta(dir).is_ok_and(|m| m.ram.is_some_and(|r| r.copy == name))
}

fn read_meta(dir: &Path) -> Result<Meta, SnapshotError> {
    let path = dir.join(META_FILE);
    let bytes = std::fs::read(&path).map_err(at::<PathIo>(&path))?;
    serde_json::from_slice(&bytes).map_err(|e| SnapshotError::BadMeta(path, e))
}

/// Removes a saved state, if any, with its RAM copy.
pub fn discard(dir: &Path) {
    if let Ok(Meta { ram: Some(ram), .. }) = read_meta(dir) {
        ramfile::discard(dir, &ram);
    }
    let _ = std::fs::remove_dir_all(dir);
    ramfile::sweep(names_copy);
}

/// Lets a guest that was just saved run on, and its init let the BEAM go.
pub fn carry_on(cmd: &QemuCommand) -> Result<(), SnapshotError> {
    let mut qmp = Qmp::connect(&cmd.qmp_socket, Duration::from_secs(10))?;
    qmp.cont()?;
    qmp.press(key(snapshot_keys::SAVED))?;
    Ok(())
}

fn key(code: u16) -> qapi::qmp::QKeyCode {
    match code {
        snapshot_keys::SAVED => qapi::qmp::QKeyCode::sleep,
        _ => qapi::qmp::QKeyCode::wake,
    }
}

/// Whether `dir` holds a state that `cmd`'s QEMU can load: its record,
/// the same QEMU version, the stream whole.
pub fn check(cmd: &QemuCommand, dir: &Path) -> Result<Meta, SnapshotError> {
    let meta = read_meta(dir)?;
    let guest_bytes = u64::from(cmd.memory_mib) << 20;
    if let Some(ram) = meta.ram.as_ref().filter(|r| r.bytes != guest_bytes) {
        return Err(SnapshotError::RamSize {
            saved: ram.bytes,
            now: guest_bytes,
        });
    }
    let now = qemu_version_memo(&cmd.binary, dir.parent().unwrap_or(dir))?;
    if meta.qemu_version != now {
        return Err(SnapshotError::OtherQemu {
            saved: meta.qemu_version,
            now,
        });
    }
    if !snapstream::verify(dir, &meta.stream)? {
        return Err(SnapshotError::Damaged(dir.join(snapstream::STATE_FILE)));
    }
    Ok(meta)
}

/// How QEMU loads the state in `dir`: `-incoming`'s value, and the RAM
/// file it maps, if the state keeps one. With a RAM file, QEMU waits
/// (`defer`) for [`resume`] to set `x-ignore-shared` and name the stream.
pub fn incoming(dir: &Path, meta: &Meta) -> Result<(OsString, Option<RamBacking>), SnapshotError> {
    let Some(ram) = &meta.ram else {
        return Ok((exec_uri(READ_VERB, dir)?.into(), None));
    };
    let path = ramfile::materialize(dir, ram)?;
    Ok(("defer".into(), Some(RamBacking { path, shared: false })))
}

/// `unibeam snapshot-read DIR`: the stream to stdout, its clocks moved on
/// by the time since the save.
pub fn read_to_stdout(dir: &Path) -> Result<(), SnapshotError> {
    let meta = read_meta(dir)?;
    let advance = meta.tsc_khz.map(|tsc_khz| snapstream::ClockAdvance {
        nanos: now_ns().saturating_sub(meta.saved_at_ns),
        tsc_khz,
    });
    let stdout = std::io::stdout().lock();
    snapstream::read(
        dir,
        &meta.stream,
        advance,
        std::io::BufWriter::with_capacity(1 << 16, stdout),
    )?;
    Ok(())
}

/// After QEMU started with `-incoming`: starts a deferred load of `dir`
/// (a RAM file's state), waits until the state has loaded, runs the guest
/// and tells its init it was restored.
pub fn resume(cmd: &QemuCommand, dir: &Path, qemu: &mut Child) -> Result<(), SnapshotError> {
    let start = Instant::now();
    let mut qmp = loop {
        if let Ok(Some(status)) = qemu.try_wait() {
            return Err(SnapshotError::LoadFailed(format!("QEMU exited with {status}")));
        }
        if !cmd.qmp_socket.exists() && start.elapsed() < TRANSFER_LIMIT {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        // A QEMU loading a state next to seven others may take its time to
        // answer; a short read timeout would throw a good state away.
        match Qmp::connect(&cmd.qmp_socket, QMP_PATIENCE) {
            Ok(q) => break q,
            Err(_) if start.elapsed() < TRANSFER_LIMIT => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if cmd.snapshots.ram.is_some() {
        qmp.ignore_shared_ram(true)?;
        qmp.load(&exec_uri(READ_VERB, dir)?)?;
    }
    while !qmp.paused()? {
        if let Ok(Some(status)) = qemu.try_wait() {
            return Err(SnapshotError::LoadFailed(format!("QEMU exited with {status}")));
        }
        if start.elapsed() > TRANSFER_LIMIT {
            return Err(SnapshotError::LoadTimeout(TRANSFER_LIMIT));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    qmp.cont()?;
    qmp.press(key(snapshot_keys::RESTORED))?;
    Ok(())
}
