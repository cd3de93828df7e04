//! The web dashboard in a real browser: two hello instances and a cluster
//! of three counters run in one private state directory, `unibeam
//! dashboard` serves them, and tests/browser/dashboard.mjs drives Debian's
//! headless Chromium through the overview, an instance page (charts that
//! grow without a reload; Stop, Restart and Kill), and the cluster page (the mesh graph
//! losing a node to `kill -9` of its QEMU and getting it back). Screenshots
//! of each step land in target/test-output/dashboard/.
//!
//! Needs node, playwright-core in tests/browser/node_modules and
//! /usr/bin/chromium (`make tools`); without them it fails, naming that.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use unibeam_e2e::cluster::Cluster;
use unibeam_e2e::{rpc_when_up, shared_hello_image, unibeam, unibeam_output, workspace_root, BOOT_TIMEOUT};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole browser run: boots, a 30 s stop grace and two mesh changes on TCG.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(900);

fn browser_dir() -> PathBuf {
    workspace_root().join("tests/browser")
}

/// Fails (never skips) when a tool the browser test needs is missing.
fn require_browser_tools() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is missing ({node:?}): run `make tools` (it installs nodejs, npm, playwright-core and chromium)"
    );
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(
        playwright.is_file(),
        "{} is missing: run `make tools` (npm ci in tests/browser)",
        playwright.display()
    );
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: run `make tools` (apt-get install chromium)"
    );
}

/// Hello instances in the cluster's state directory, removed on drop.
struct Instances<'a> {
    state: &'a Path,
    names: Vec<String>,
}

impl Instances<'_> {
    fn unibeam(&self, args: &[&str]) -> std::process::Output {
        unibeam_output(
            args,
            &[
                ("XDG_STATE_HOME", self.state.to_str().unwrap()),
                // A sample every 2 s: the charts grow quickly.
                ("UNIBEAM_SAMPLE_SECS", "2"),
            ],
        )
    }

    fn run(&mut self, name: &str, image: &Path) {
        self.names.push(name.to_string());
        let out = self.unibeam(&["run", "-d", "--name", name, image.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "run -d --name {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Instances<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self.unibeam(&["rm", "-f", name]);
        }
    }
}

/// `unibeam dashboard` on a free port; stopped on drop.
struct Dashboard {
    child: Child,
    url: String,
}

impl Dashboard {
    fn start(state: &Path) -> Dashboard {
        let mut child = Command::new(unibeam())
            .args(["dashboard", "--listen", "127.0.0.1:0"])
            .env("XDG_STATE_HOME", state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unibeam dashboard starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("dashboard: {line}");
                if let Some(url) = dashboard_url(&line) {
                    let _ = tx.send(url);
                }
            }
        });
        let mut dashboard = Dashboard {
            child,
            url: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => dashboard.url = url,
            Err(_) => {
                let status = dashboard.child.try_wait();
                panic!("unibeam dashboard printed no http://127.0.0.1:PORT/?token= URL within 60 s (status: {status:?})");
            }
        }
        dashboard
    }
}

/// The `http://127.0.0.1:PORT/?token=...` in a line of the dashboard's stdout.
fn dashboard_url(line: &str) -> Option<String> {
    let start = line.find("http://127.0.0.1:")?;
    let url: String = line[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '<' | '>'))
        .collect();
    url.contains("token=").then_some(url)
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node process, killed if the test gives up on it.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_dashboard_shows_instances_charts_stop_and_a_cluster_losing_and_regaining_a_node() {
    require_browser_tools();
    let image = shared_hello_image();
    let t0 = Instant::now();

    // Names no other test (or engineer) on this machine uses.
    let tag = std::process::id() % 100_000;
    let cluster = Cluster::new(&format!("dash{tag}"), 3, 10);
    let state = cluster.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    let mut instances = Instances {
        state: &state,
        names: Vec::new(),
    };
    let names = [format!("dash{tag}-web"), format!("dash{tag}-api")];
    for name in &names {
        instances.run(name, image);
    }
    cluster.up();
    for name in &names {
        rpc_when_up(name, "ok", |args| instances.unibeam(args));
    }
    let meshed = cluster.wait_meshed(BOOT_TIMEOUT);
    eprintln!(
        "2 instances and a cluster of 3 up after {:?} (meshed {meshed:?} after the last node answered)",
        t0.elapsed()
    );

    let dashboard = Dashboard::start(&state);
    eprintln!(
        "dashboard at {}",
        dashboard.url.split("?token=").next().unwrap_or_default()
    );

    let out = workspace_root().join("target/test-output/dashboard");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let members: Vec<String> = (1..=cluster.replicas).map(|i| cluster.instance(i)).collect();
    let script_start = Instant::now();
    let mut script = Script(
        Command::new("node")
            .arg(browser_dir().join("dashboard.mjs"))
            .current_dir(browser_dir())
            .env("DASH_URL", &dashboard.url)
            .env("DASH_INSTANCES", names.join(","))
            .env("DASH_CLUSTER", &cluster.name)
            .env("DASH_MEMBERS", members.join(","))
            .env("DASH_OUT", &out)
            // stop's grace is 30 s, then QEMU is quit or killed.
            .env("DASH_STOP_SECS", "120")
            // net_ticktime 10, a TCG boot, a busy host.
            .env("DASH_MESH_SECS", "240")
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node starts"),
    );
    let status = loop {
        if let Some(status) = script.0.try_wait().expect("wait on node") {
            break status;
        }
        assert!(
            script_start.elapsed() < SCRIPT_TIMEOUT,
            "tests/browser/dashboard.mjs still running after {SCRIPT_TIMEOUT:?}; screenshots in {}",
            out.display()
        );
        thread::sleep(Duration::from_millis(200));
    };
    eprintln!("browser steps took {:?}", script_start.elapsed());
    assert!(
        status.success(),
        "tests/browser/dashboard.mjs failed ({status}): its message is above; screenshots in {}",
        out.display()
    );
    for shot in [
        "01-overview.png",
        "02-instance.png",
        "03-stopped.png",
        "04-cluster.png",
        "05-cluster-loss.png",
        "06-cluster-rejoined.png",
    ] {
        assert!(
            out.join(shot).is_file(),
            "no screenshot {shot} in {}",
            out.display()
        );
    }

    // What the buttons did, as the CLI sees it: the first stopped then
    // restarted, the second killed.
    let ps = instances.unibeam(&["ps", "-a", "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&ps.stdout).expect("ps --format json");
    let state_of = |name: &str| {
        listed
            .as_array()
            .and_then(|all| all.iter().find(|i| i["name"] == name))
            .map(|i| i["state"].clone())
            .unwrap_or_else(|| panic!("{name} in ps -a: {listed}"))
    };
    assert_eq!(state_of(&names[0]), "running", "{listed}");
    assert_eq!(state_of(&names[1]), "exited", "{listed}");
    drop(dashboard);
    drop(instances);
    let down = cluster.down();
    assert!(
        down.status.success(),
        "down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
}
