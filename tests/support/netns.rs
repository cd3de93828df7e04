//! Network namespaces that stand in for hosts, made and removed by the
//! test itself: traffic stays inside them. Needs root and iproute2.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2's `ip` is installed (apt-get install iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ip -n NS ARGS`'s stdout.
pub fn ip_in(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["-n", ns];
    all.extend(args);
    let out = Command::new("ip").args(&all).output().expect("ip runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether this process may make namespaces: the tests that need them
/// fail (never skip) without, naming what is missing.
pub fn require_root() {
    assert!(
        nix_is_root(),
        "this test makes network namespaces, bridges and taps: run it as root"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// A network namespace, deleted when dropped (and with it every
/// interface inside: veths, bridges, taps).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        // A namespace left by a test that was killed goes first.
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        Netns { name: name.into() }
    }

    /// `cmd` to run inside this namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    pub fn run(&self, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(program);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("ip netns exec runs")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
