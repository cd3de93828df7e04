//! A private world for one fault scenario: its own state, cache and
//! temporary directories, and the checks that the scenario ended clean:
//! no process of it left, `ps` agreeing with /proc, no litter on disk.

use crate::{unibeam, Vm};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// What the shared cache holds that a scenario may reuse: finished
/// kernels, layers and unpacked images are never written in place, so
/// hard links to them are safe.
const SEEDED: &[&str] = &["specialised-kernels", "kernels", "layers", "boot"];

/// How long a killed process may take to take its children with it
/// (PDEATHSIG is delivered asynchronously).
const SETTLE: Duration = Duration::from_secs(10);

pub struct Sandbox {
    root: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// XDG_STATE_HOME, XDG_CACHE_HOME and TMPDIR all inside one temporary
    /// directory; the cache is seeded from the shared one (kernels, layers,
    /// unpacked images), so builds and boots cost what they cost elsewhere.
    pub fn new() -> Sandbox {
        let root = tempfile::tempdir().unwrap();
        let sandbox = Sandbox { root };
        for dir in [sandbox.state(), sandbox.cache().join("unibeam"), sandbox.tmp()] {
            std::fs::create_dir_all(dir).unwrap();
        }
        sandbox.seed_cache();
        sandbox
    }

    fn seed_cache(&self) {
        let shared = shared_cache();
        let ours = self.cache().join("unibeam");
        for entry in SEEDED {
            let from = shared.join(entry);
            if from.is_dir() {
                // A file another test prunes meanwhile fails cp; what was
                // linked still serves, so only a missing cp is fatal.
                Command::new("cp")
                    .arg("-al")
                    .arg(&from)
                    .arg(&ours)
                    .status()
                    .expect("cp runs");
            }
        }
        // The accelerator probe's verdict: copied, as it is rewritten in place.
        let probe = shared.join("accel-probe.json");
        if probe.is_file() {
            std::fs::copy(&probe, ours.join("accel-probe.json")).unwrap();
        }
        // Another test's build may have been mid-write when we linked.
        for path in walk(&ours) {
            if is_partial(&path) {
                let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
            }
        }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn state(&self) -> PathBuf {
        self.root().join("state")
    }

    pub fn cache(&self) -> PathBuf {
        self.root().join("cache")
    }

    pub fn tmp(&self) -> PathBuf {
        self.root().join("tmp")
    }

    pub fn instances(&self) -> PathBuf {
        self.state().join("unibeam/instances")
    }

    /// `unibeam <args>` in this sandbox's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(unibeam());
        cmd.args(args)
            .env("XDG_STATE_HOME", self.state())
            .env("XDG_CACHE_HOME", self.cache())
            .env("TMPDIR", self.tmp());
        cmd
    }

    pub fn unibeam(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("unibeam runs")
    }

    /// `unibeam <args>`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.unibeam(args);
        assert!(
            out.status.success(),
            "unibeam {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `unibeam <args>` in the background, output captured.
    pub fn spawn(&self, args: &[&str]) -> Vm {
        Vm::spawn(self.command(args))
    }

    /// `ps -a --format json`.
    pub fn ps(&self) -> Vec<Value> {
        let out = self.ok(&["ps", "-a", "--format", "json"]);
        match serde_json::from_str(&out) {
            Ok(Value::Array(all)) => all,
            _ => panic!("ps --format json printed no JSON array:\n{out}"),
        }
    }

    /// `inspect NAME`.
    pub fn record(&self, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["inspect", name])).expect("inspect prints JSON")
    }

    /// Polls `inspect NAME` until `done` holds for it.
    pub fn wait_record(&self, name: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let record = self.record(name);
            if done(&record) {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: waited {limit:?} in vain: {record}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until `NAME` runs; returns its record.
    pub fn wait_running(&self, name: &str) -> Value {
        self.wait_record(name, crate::BOOT_TIMEOUT, |r| r["state"] == "running")
    }

    /// Every entry of `ps -a` matches /proc: a live state has its QEMU (or,
    /// between boots, its monitor) alive; an exited one has neither; and
    /// every instance directory is listed, readable record or not.
    pub fn assert_ps_truthful(&self) {
        let ps = self.ps();
        for entry in &ps {
            let name = entry["name"].as_str().unwrap_or_default();
            let qemu = pid_in(entry, "qemu").is_some_and(is_qemu);
            let monitor = pid_in(entry, "monitor").is_some_and(alive);
            let running = processes_mentioning(&self.instances().join(format!("{name}/")));
            match entry["state"].as_str() {
                Some("running") => assert!(qemu, "ps says {name} runs, but its QEMU is gone: {entry}"),
                Some("starting" | "restarting") => {
                    assert!(qemu || monitor, "ps says {name} is alive, nothing is: {entry}")
                }
                Some("exited") => assert!(
                    running.is_empty() && !monitor,
                    "ps says {name} exited, yet {running:?} (monitor alive: {monitor}): {entry}"
                ),
                _ => {}
            }
        }
        let listed: Vec<&str> = ps.iter().filter_map(|e| e["name"].as_str()).collect();
        for dir in entries(&self.instances()) {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                listed.contains(&name.as_str()),
                "ps -a hides the instance directory {}: {listed:?}",
                dir.display()
            );
        }
    }

    /// The end of every scenario: nothing of it runs, `ps -a` is empty and
    /// truthful, and no instance, cluster, partial image, unpacked
    /// tarball, temp file or run directory is left.
    pub fn assert_clean(&self) {
        assert_no_processes(self.root());
        self.assert_ps_truthful();
        let ps = self.ps();
        assert!(ps.is_empty(), "ps -a still lists: {ps:?}");
        let mut left = entries(&self.instances());
        left.extend(entries(&self.state().join("unibeam/clusters")));
        left.extend(entries(&self.cache().join("unibeam/unpacked")));
        left.extend(entries(&self.tmp()).into_iter().filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("unibeam-run-"))
        }));
        left.extend(walk(self.root()).into_iter().filter(|p| is_partial(p)));
        assert!(left.is_empty(), "litter left behind: {left:#?}");
    }
}

/// The cache the other tests use, which the sandbox seeds from.
fn shared_cache() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("unibeam"),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/unibeam"),
    }
}

/// A half-written file or directory, by the names unibeam gives them:
/// `.<image>.partial-<pid>` staging dirs and `<file>.tmp<pid>` temp files.
fn is_partial(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp_ext = path
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .and_then(|e| e.strip_prefix("tmp").map(String::from))
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
    name.contains(".partial") || tmp_ext
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Every path under `dir`, symlinks not followed.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        for path in entries(&next) {
            if path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                todo.push(path.clone());
            }
            all.push(path);
        }
    }
    all
}

fn pid_in(entry: &Value, key: &str) -> Option<u32> {
    entry[key]["pid"].as_u64().map(|p| p as u32)
}

/// Whether `pid` runs (a zombie does not).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().to_string()))
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

fn is_qemu(pid: u32) -> bool {
    alive(pid) && read_nul_separated(pid, "cmdline").contains("qemu-system")
}

fn read_nul_separated(pid: u32, file: &str) -> String {
    let data = std::fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default();
    String::from_utf8_lossy(&data).replace('\0', " ")
}

/// Live processes (not this test) whose command line or environment
/// mentions `needle`: a QEMU names its instance's files, a monitor or a
/// foreground run carries the sandbox's XDG_STATE_HOME or TMPDIR.
pub fn processes_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.display().to_string();
    let me = std::process::id();
    entries(Path::new("/proc"))
        .iter()
        .filter_map(|p| p.file_name()?.to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && alive(pid))
        .filter_map(|pid| {
            let cmdline = read_nul_separated(pid, "cmdline");
            let mentions = cmdline.contains(&needle) || read_nul_separated(pid, "environ").contains(&needle);
            mentions.then(|| format!("{pid}: {cmdline}"))
        })
        .collect()
}

/// Waits a little for dying processes to go, then insists none of
/// `root`'s is left (an orphan QEMU or monitor).
pub fn assert_no_processes(root: &Path) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let left = processes_mentioning(root);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes left behind: {left:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a pid the test just read from unibeam or spawned;
    // no memory is involved.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill -{signal} {pid}: {}", std::io::Error::last_os_error());
}
