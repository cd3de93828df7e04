//! Detached instances on disk, Podman-style with no daemon:
//! `$XDG_STATE_HOME/unibeam/instances/<name>/` holds the record, the QMP
//! socket, the console log and the initrd. Every write is a temp file
//! renamed into place, so a crash never leaves a half-written record.

use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

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
    NameInUse(String),
    #[error("no instance named {0:?}; `unibeam ps -a` lists them")]
    NoSuchInstance(String),
    #[error("instance name {0:?}: use letters, digits, '-', '_' and '.'")]
    BadName(String),
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error("{path}: corrupt instance record: {cause}")]
    Corrupt { path: PathBuf, cause: serde_json::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |cause| StateError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// What an instance is doing, as `ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Status {
    Starting,
    Running,
    Restarting,
    Exited { code: i32 },
}

/// A process identity that survives pid reuse: pid plus its start time in
/// clock ticks since boot (field 22 of /proc/<pid>/stat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    pub start_ticks: u64,
}

impl ProcessId {
    pub fn of(pid: u32) -> Option<ProcessId> {
        Some(ProcessId {
            pid,
            start_ticks: start_ticks(pid)?,
        })
    }

    /// Still the same process, not a newer one that reused the pid.
    pub fn alive(&self) -> bool {
        start_ticks(self.pid) == Some(self.start_ticks)
    }
}

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields follow the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let state = fields.first()?;
    if *state == "Z" || *state == "X" {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Restart policy, as `--restart` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "kebab-case")]
pub enum Restart {
    No,
    OnFailure { max: Option<u32> },
    Always,
}

/// Everything `ps`, `inspect` and the monitor need to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub name: String,
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
    pub monitor: Option<ProcessId>,
    /// The cluster `unibeam up` started this instance for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// The directory of all instances.
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Writes `data` to `path` through a temp file and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, data).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
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

    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Claims `name`: mkdir is atomic, so of two racing `run --name X`
    /// exactly one succeeds.
    pub fn create(&self, record: &InstanceRecord) -> Result<PathBuf, StateError> {
        if !valid_name(&record.name) {
            return Err(StateError::BadName(record.name.clone()));
        }
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        let dir = self.dir(&record.name);
        match fs::create_dir(&dir) {
            Ok(()) => {
                // The instance's initrd carries its secrets (the cookie).
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StateError::NameInUse(record.name.clone()))
            }
            Err(e) => return Err(io_err(&dir)(e)),
        }
        self.save(record)?;
        Ok(dir)
    }

    pub fn save(&self, record: &InstanceRecord) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(record).expect("record serialises");
        write_atomic(&self.dir(&record.name).join(RECORD_FILE), &json)
    }

    pub fn load(&self, name: &str) -> Result<InstanceRecord, StateError> {
        let path = self.dir(name).join(RECORD_FILE);
        let data = fs::read(&path).map_err(|_| StateError::NoSuchInstance(name.to_string()))?;
        serde_json::from_slice(&data).map_err(|cause| StateError::Corrupt { path, cause })
    }

    /// Every instance, by name; unreadable records are skipped.
    pub fn list(&self) -> Vec<InstanceRecord> {
        let mut names: Vec<String> = fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names.iter().filter_map(|n| self.load(n).ok()).collect()
    }

    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        let dir = self.dir(name);
        if !dir.exists() {
            return Err(StateError::NoSuchInstance(name.to_string()));
        }
        fs::remove_dir_all(&dir).map_err(io_err(&dir))
    }
}

impl InstanceRecord {
    /// The status with liveness checked: a record that says running while
    /// its QEMU is gone (killed, crashed, pid reused) is shown as exited.
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
mod tests {
    use super::*;

    fn record(name: &str) -> InstanceRecord {
        InstanceRecord {
            name: name.into(),
            image: "/img".into(),
            release: "hello 0.1.0".into(),
            created: 1,
            started: None,
            ports: vec![],
            accel: "tcg".into(),
            restart: Restart::No,
            restarts: 0,
            status: Status::Starting,
            qemu: None,
            monitor: None,
            cluster: None,
        }
    }

    #[test]
    fn names_are_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store {
            root: dir.path().join("instances"),
        };
        store.create(&record("web")).unwrap();
        assert!(matches!(
            store.create(&record("web")),
            Err(StateError::NameInUse(_))
        ));
        assert!(matches!(
            store.create(&record("../x")),
            Err(StateError::BadName(_))
        ));
        assert_eq!(store.load("web").unwrap().name, "web");
        assert_eq!(store.list().len(), 1);
        store.remove("web").unwrap();
        assert!(matches!(store.load("web"), Err(StateError::NoSuchInstance(_))));
    }

    #[test]
    fn our_own_process_is_alive_and_a_stale_identity_is_not() {
        let me = ProcessId::of(std::process::id()).unwrap();
        assert!(me.alive());
        let reused = ProcessId {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!reused.alive(), "same pid, other start time: not our process");
    }

    #[test]
    fn dead_running_instances_show_as_exited() {
        let mut r = record("web");
        r.status = Status::Running;
        r.qemu = Some(ProcessId {
            pid: u32::MAX - 1,
            start_ticks: 5,
        });
        assert_eq!(r.observed_status(), Status::Exited { code: 137 });
        r.qemu = ProcessId::of(std::process::id());
        assert_eq!(r.observed_status(), Status::Running);
    }

    #[test]
    fn records_round_trip() {
        let mut r = record("db");
        r.status = Status::Exited { code: 3 };
        r.restart = Restart::OnFailure { max: Some(2) };
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            json.contains("\"state\":\"exited\"") && json.contains("\"code\":3"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<InstanceRecord>(&json).unwrap(), r);
    }
}
