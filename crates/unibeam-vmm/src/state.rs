//! Detached instances on disk, Podman-style with no daemon:
//! `$XDG_STATE_HOME/unibeam/instances/<name>/` holds the record, the QMP
//! socket, the console log and the initrd. Every write is a temp file
//! renamed into place, so a crash never leaves a half-written record.

use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::hostfs::{self, PathIo};

pub use crate::process::{BootId, ProcessId};

pub const RECORD_FILE: &str = "instance.json";
pub const CONSOLE_LOG: &str = "console.log";
pub const QMP_SOCKET: &str = "qmp.sock";
pub const INITRD_FILE: &str = "initrd.img";
/// The instance's `QemuCommand`, which its monitor boots and `stop` reads.
pub const QEMU_FILE: &str = "qemu.json";
/// Present once a user asked the instance to stop: no restart after that.
pub const STOP_REQUESTED: &str = "stop-requested";

#[derive(Debug, Error)]
pub enum StateError {
    #[error("instance name {0:?} is already in use; pick another --name or `unibeam rm {0}`")]
    NameInUse(InstanceName),
    #[error("no instance named {0:?}; `unibeam ps -a` lists them")]
    NoSuchInstance(InstanceName),
    #[error("instance name {0:?}: use letters, digits, '-', '_' and '.', at most 64, not starting with '.'")]
    BadName(String),
    #[error("instance {name} is broken ({why}); `unibeam rm -f {name}` removes it")]
    Broken { name: InstanceName, why: String },
    #[error("instance {name}: cannot write its record")]
    Encode {
        name: InstanceName,
        #[source]
        cause: serde_json::Error,
    },
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error("{0:?} is not a restart policy: use no, on-failure[:N] or always")]
    BadRestart(String),
}

/// An instance's name, checked once where it comes in (a flag, a record,
/// a directory listing) and the only way a name reaches a path: it is one
/// directory under the store, so it holds letters, digits, '-', '_' and
/// '.', does not start with '.' (no `..`, no hidden staging dirs), and is
/// at most 64 bytes. `../../x` and `/tmp/x` never get this far.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceName(String);

/// As the string it is, quoted: messages show `"web"`.
impl std::fmt::Debug for InstanceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl InstanceName {
    pub fn parse(name: &str) -> Result<InstanceName, StateError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if valid {
            Ok(InstanceName(name.to_string()))
        } else {
            Err(StateError::BadName(name.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for InstanceName {
    type Err = StateError;
    fn from_str(s: &str) -> Result<Self, StateError> {
        InstanceName::parse(s)
    }
}

impl TryFrom<String> for InstanceName {
    type Error = StateError;
    fn try_from(s: String) -> Result<Self, StateError> {
        InstanceName::parse(&s)
    }
}

impl From<InstanceName> for String {
    fn from(name: InstanceName) -> String {
        name.0
    }
}

impl std::ops::Deref for InstanceName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for InstanceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InstanceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

impl PartialEq<str> for InstanceName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for InstanceName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// What an instance is doing, as `ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Status {
    Starting,
    Running,
    Restarting,
    Exited {
        code: i32,
    },
    /// `unibeam suspend`: its state is saved in [`SUSPENDED_STATE`] and
    /// no QEMU runs; `start` resumes it.
    Suspended,
}

impl Status {
    /// No QEMU runs for it, and none is on its way: exited or suspended.
    pub fn is_down(&self) -> bool {
        matches!(self, Status::Exited { .. } | Status::Suspended)
    }
}

/// As `ps` shows it: `running`, `exited (137)`.
impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Starting => f.write_str("starting"),
            Status::Running => f.write_str("running"),
            Status::Restarting => f.write_str("restarting"),
            Status::Exited { code } => write!(f, "exited ({code})"),
            Status::Suspended => f.write_str("suspended"),
        }
    }
}

/// A suspended instance's saved state, in its directory.
pub const SUSPENDED_STATE: &str = "suspended";
/// Written by `unibeam suspend` before it quits QEMU, so that the monitor
/// records the instance as suspended instead of exited.
pub const SUSPENDING: &str = "suspending";

/// Restart policy, as `--restart` and unibeam.toml's `restart` take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "kebab-case")]
pub enum Restart {
    No,
    OnFailure { max: Option<u32> },
    Always,
}

impl std::str::FromStr for Restart {
    type Err = StateError;

    /// `no`, `always`, `on-failure` or `on-failure:N`: the one parser.
    fn from_str(s: &str) -> Result<Self, StateError> {
        let bad = || StateError::BadRestart(s.to_string());
        match s.split_once(':') {
            None if s == "no" => Ok(Restart::No),
            None if s == "always" => Ok(Restart::Always),
            None if s == "on-failure" => Ok(Restart::OnFailure { max: None }),
            Some(("on-failure", n)) => Ok(Restart::OnFailure {
                max: Some(n.parse().map_err(|_| bad())?),
            }),
            _ => Err(bad()),
        }
    }
}

/// Everything `ps`, `inspect` and the monitor need to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub name: InstanceName,
    pub image: PathBuf,
    pub release: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub started: Option<u64>,
    pub ports: Vec<String>,
    pub accel: String,
    pub restart: Restart,
    pub restarts: u32,
    #[serde(flatten)]
    pub status: Status,
    pub qemu: Option<ProcessId>,
    /// The process that owns the instance: `run -d` while it prepares the
    /// VM, then the monitor.
    pub monitor: Option<ProcessId>,
    /// The cluster `unibeam up` started this instance for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Where the node's distribution is reachable from the host; `None`
    /// for an instance run with `--no-dist` (or before unibeam had it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dist: Option<DistEndpoint>,
    /// A foreground `run --name`: the run owns it and removes it when it
    /// ends; one whose run was killed is swept, never restarted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub foreground: bool,
}

/// The host side of an instance's Erlang distribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistEndpoint {
    /// The node's name, as it was planned at `run` (the guest's own).
    pub node: String,
    /// The host port on 127.0.0.1 forwarded to the guest's distribution
    /// port.
    pub port: u16,
    /// The file holding the node's cookie (0600): the instance's own, the
    /// cluster's or the user's `--cookie-file`. The record holds its path,
    /// never the cookie.
    pub cookie_file: PathBuf,
    /// Set when the node speaks TLS distribution (paths, never a key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<unibeam_spec::DistTlsPaths>,
}

/// The directory of all instances.
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

/// Writes `data` to `path` whole or not at all (the one atomic write,
/// [`hostfs::write_atomic`]).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    Ok(hostfs::write_atomic(path, data)?)
}

/// rename(2) that fails with `AlreadyExists` instead of replacing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags};
    renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE).map_err(io::Error::from)
}

impl Store {
    /// `$XDG_STATE_HOME/unibeam/instances`, else `~/.local/state/...`.
    pub fn default_root() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
        Some(base.join("unibeam/instances"))
    }

    pub fn dir(&self, name: &InstanceName) -> PathBuf {
        self.root.join(name.as_str())
    }

    /// Claims the record's name. The record is written in a hidden staging
    /// directory that is renamed into place without replacing anything, so
    /// of two racing `run --name X` exactly one succeeds, and no one ever
    /// sees the directory without its record.
    pub fn create(&self, record: &InstanceRecord) -> Result<PathBuf, StateError> {
        fs::create_dir_all(&self.root).map_err(hostfs::at::<StateError>(&self.root))?;
        let dir = self.dir(&record.name);
        let staging = self
            .root
            .join(format!(".{}.new-{}", record.name, std::process::id()));
        let _ = fs::remove_dir_all(&staging);
        let claimed = self
            .stage(&staging, record)
            .and_then(|()| match rename_noreplace(&staging, &dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(self.in_use(&record.name)),
                // Filesystems without RENAME_NOREPLACE: mkdir claims the name.
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINVAL as i32) => {
                    match fs::create_dir(&dir) {
                        Ok(()) => {
                            let record_path = dir.join(RECORD_FILE);
                            fs::rename(staging.join(RECORD_FILE), &record_path).map_err(hostfs::at::<
                                StateError,
                            >(
                                &record_path
                            ))
                        }
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(self.in_use(&record.name)),
                        Err(e) => Err(hostfs::at::<StateError>(&dir)(e)),
                    }
                }
                Err(e) => Err(hostfs::at::<StateError>(&dir)(e)),
            });
        let _ = fs::remove_dir_all(&staging);
        claimed.map(|()| dir)
    }

    fn stage(&self, staging: &Path, record: &InstanceRecord) -> Result<(), StateError> {
        fs::create_dir(staging).map_err(hostfs::at::<StateError>(staging))?;
        // The instance's initrd carries its secrets (the cookie).
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(staging, fs::Permissions::from_mode(0o700))
            .map_err(hostfs::at::<StateError>(staging))?;
        write_atomic(&staging.join(RECORD_FILE), &encode(record)?)
    }

    /// Why `name` cannot be claimed: taken, or taken by a broken instance.
    fn in_use(&self, name: &InstanceName) -> StateError {
        match self.load(name) {
            Err(broken @ StateError::Broken { .. }) => broken,
            _ => StateError::NameInUse(name.clone()),
        }
    }

    pub fn save(&self, record: &InstanceRecord) -> Result<(), StateError> {
        write_atomic(&self.dir(&record.name).join(RECORD_FILE), &encode(record)?)
    }

    /// The record of `name`. A directory whose record is missing, corrupt
    /// or names another instance is `Broken`, which `rm -f` removes.
    pub fn load(&self, name: &InstanceName) -> Result<InstanceRecord, StateError> {
        let dir = self.dir(name);
        let path = dir.join(RECORD_FILE);
        let broken = |why: String| StateError::Broken {
            name: name.clone(),
            why,
        };
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.is_dir() => {
                return Err(StateError::NoSuchInstance(name.clone()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(broken(format!("no {RECORD_FILE}"))),
            Err(e) => return Err(broken(format!("{RECORD_FILE}: {e}"))),
        };
        let record: InstanceRecord =
            serde_json::from_slice(&data).map_err(|e| broken(format!("corrupt {RECORD_FILE}: {e}")))?;
        if record.name != *name {
            return Err(broken(format!(
                "{RECORD_FILE} names instance {:?}",
                record.name.as_str()
            )));
        }
        Ok(record)
    }

    /// Every instance directory by name, with its record or why it has
    /// none. Records whose processes are gone (killed, or left by a host
    /// that crashed or rebooted) are rewritten as exited on the way.
    pub fn list_all(&self) -> Vec<(InstanceName, Result<InstanceRecord, StateError>)> {
        let mut names: Vec<InstanceName> = fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| InstanceName::parse(e.file_name().to_str()?).ok())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let loaded = self.load(&n).map(|r| self.reconcile(r));
                (n, loaded)
            })
            .collect()
    }

    /// Every instance with a readable record, by name.
    pub fn list(&self) -> Vec<InstanceRecord> {
        self.list_all().into_iter().filter_map(|(_, r)| r.ok()).collect()
    }

    /// Writes down an exit nobody was left to record. Only when neither
    /// QEMU nor the owner is alive, so no one else writes the record.
    fn reconcile(&self, mut record: InstanceRecord) -> InstanceRecord {
        let observed = record.observed_status();
        if observed != record.status && matches!(observed, Status::Exited { .. }) {
            record.status = observed;
            record.qemu = None;
            record.monitor = None;
            let _ = self.save(&record);
        }
        record
    }

    pub fn remove(&self, name: &InstanceName) -> Result<(), StateError> {
        let dir = self.dir(name);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StateError::NoSuchInstance(name.clone())),
            Err(e) => Err(hostfs::at::<StateError>(&dir)(e)),
        }
    }
}

fn encode(record: &InstanceRecord) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec_pretty(record).map_err(|cause| StateError::Encode {
        name: record.name.clone(),
        cause,
    })
}

impl InstanceRecord {
    /// The status with liveness checked: a record that says running while
    /// its QEMU is gone (killed, crashed, pid reused, host rebooted) is
    /// shown as exited.
    pub fn observed_status(&self) -> Status {
        match &self.status {
            Status::Running | Status::Starting | Status::Restarting => {
                let qemu_alive = self.qemu.is_some_and(|q| q.alive());
                let monitor_alive = self.monitor.is_some_and(|m| m.alive());
                if qemu_alive || monitor_alive {
                    self.status.clone()
                } else {
                    Status::Exited { code: 137 }
                }
            }
            exited => exited.clone(),
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
