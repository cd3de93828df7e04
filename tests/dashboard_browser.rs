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

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use unibeam_e2e::browser;
use unibeam_e2e::cluster::Cluster;
use unibeam_e2e::dashboard::Dashboard;
use unibeam_e2e::{rpc_when_up, shared_hello_image, unibeam_output, workspace_root, BOOT_TIMEOUT};

/// The whole browser run: boots, a 30 s stop grace and two mesh changes on TCG.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(900);

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
    browser::require_tools();
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

    let dashboard = Dashboard::start(&state, &[]);
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
            .arg(browser::dir().join("dashboard.mjs"))
            .current_dir(browser::dir())
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
