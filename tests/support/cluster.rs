//! A cluster of examples/cluster replicas brought up with `unibeam up`,
//! in a private state directory, for the cluster tests and benchmark.

use crate::{http_get, release, unibeam};
use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn cluster_release() -> PathBuf {
    release("examples/cluster", "cluster")
}

/// `n` consecutive TCP ports on 127.0.0.1 that were free a moment ago.
pub fn free_port_range(n: u16) -> u16 {
    for _ in 0..200 {
        let base = crate::free_port();
        if base > u16::MAX - n {
            continue;
        }
        if (base..base + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

pub struct Cluster {
    /// XDG_STATE_HOME for every unibeam call, and where unibeam.toml lives.
    pub home: tempfile::TempDir,
    pub file: PathBuf,
    pub name: String,
    pub replicas: u16,
    pub base_port: u16,
    pub ticktime: u32,
}

impl Cluster {
    /// Writes a unibeam.toml for `replicas` counters named `name`.
    pub fn new(name: &str, replicas: u16, ticktime: u32) -> Cluster {
        Cluster::with_service_lines(name, replicas, ticktime, "")
    }

    /// [`Cluster::new`] with `lines` (e.g. "snapshot = true\n") added to
    /// the service.
    pub fn with_service_lines(name: &str, replicas: u16, ticktime: u32, lines: &str) -> Cluster {
        let home = tempfile::tempdir().unwrap();
        let base_port = free_port_range(replicas);
        let file = home.path().join("unibeam.toml");
        let toml = format!(
            "[cluster]\nname = \"{name}\"\nnet_ticktime = {ticktime}\n\n\
             [services.counter]\nrelease = \"{}\"\nreplicas = {replicas}\n\
             ports = [\"{base_port}:8080\"]\nrestart = \"always\"\n{lines}",
            cluster_release().display()
        );
        std::fs::write(&file, toml).unwrap();
        Cluster {
            home,
            file,
            name: name.into(),
            replicas,
            base_port,
            ticktime,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.home.path().join("state")
    }

    /// Runs the CLI against this cluster's state directory.
    pub fn unibeam(&self, args: &[&str]) -> Output {
        Command::new(unibeam())
            .args(args)
            .env("XDG_STATE_HOME", self.state_dir())
            .output()
            .expect("unibeam runs")
    }

    fn file_arg(&self) -> String {
        self.file.display().to_string()
    }

    /// `unibeam up`; returns how long it took.
    pub fn up(&self) -> Duration {
        let start = Instant::now();
        let out = self.unibeam(&["up", "-f", &self.file_arg()]);
        assert!(
            out.status.success(),
            "unibeam up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        start.elapsed()
    }

    pub fn down(&self) -> Output {
        self.unibeam(&["down", "-f", &self.file_arg(), "-t", "20"])
    }

    /// Instance name of replica `i` (1-based).
    pub fn instance(&self, i: u16) -> String {
        format!("{}-counter-{i}", self.name)
    }

    /// Node name of replica `i`.
    pub fn node(&self, i: u16) -> String {
        format!("counter-{i}@10.77.0.{}", i + 1)
    }

    pub fn port(&self, i: u16) -> u16 {
        self.base_port + i - 1
    }

    /// Replica `i`'s `GET /` JSON, if it answers.
    pub fn status(&self, i: u16) -> Option<Value> {
        match http_get(self.port(i)) {
            Some((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// The other nodes replica `i` lists.
    pub fn peers_of(&self, i: u16) -> Vec<String> {
        self.status(i)
            .and_then(|v| v["nodes"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n.as_str().map(String::from))
            .collect()
    }

    pub fn meshed(&self) -> bool {
        (1..=self.replicas).all(|i| self.peers_of(i).len() == usize::from(self.replicas) - 1)
    }

    /// Waits until every replica lists all the others; returns the wait.
    pub fn wait_meshed(&self, timeout: Duration) -> Duration {
        let start = Instant::now();
        while !self.meshed() {
            assert!(
                start.elapsed() < timeout,
                "not meshed after {timeout:?}: {:?}",
                (1..=self.replicas).map(|i| self.status(i)).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        start.elapsed()
    }

    pub fn logs(&self, i: u16) -> String {
        String::from_utf8_lossy(&self.unibeam(&["logs", &self.instance(i)]).stdout).into_owned()
    }

    pub fn inspect(&self, i: u16) -> Value {
        let out = self.unibeam(&["inspect", &self.instance(i)]);
        serde_json::from_slice(&out.stdout).expect("inspect prints JSON")
    }

    pub fn qemu_pid(&self, i: u16) -> u32 {
        self.inspect(i)["qemu"]["pid"].as_u64().expect("a running QEMU") as u32
    }

    pub fn cookie_path(&self) -> PathBuf {
        self.state_dir()
            .join("unibeam/clusters")
            .join(&self.name)
            .join("cookie")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failed test must not leave VMs behind.
        let _ = Command::new(unibeam())
            .args(["down", "-f", &self.file_arg(), "-t", "0"])
            .env("XDG_STATE_HOME", self.state_dir())
            .output();
    }
}

/// Command lines of live processes that mention `needle`.
pub fn processes_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains(&needle).then_some(text)
        })
        .collect()
}
