//! End-to-end tests of detached instances: `run -d`, `ps`, `logs`,
//! `stop`, `kill`, `rm`, restart policies and conflicts. Each test keeps
//! its instances in a private XDG_STATE_HOME.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use unibeam_e2e::*;

struct State {
    dir: tempfile::TempDir,
}

impl State {
    fn new() -> State {
        State {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn unibeam(&self, args: &[&str]) -> Output {
        unibeam_output(args, &[("XDG_STATE_HOME", self.dir.path().to_str().unwrap())])
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.unibeam(args);
        assert!(
            out.status.success(),
            "unibeam {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn instances(&self) -> std::path::PathBuf {
        self.dir.path().join("unibeam/instances")
    }

    fn record(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["inspect", name])).unwrap()
    }

    /// Waits until `inspect` shows `state` for `name`.
    fn wait_state(&self, name: &str, state: &str, limit: Duration) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let record = self.record(name);
            if record["state"] == state {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never reached {state}: {record}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// No process on the host mentions `path` (e.g. an instance dir) any more.
fn no_process_mentions(path: &Path) -> bool {
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    !String::from_utf8_lossy(&ps.stdout).contains(path.to_str().unwrap())
}

fn hello_image(dir: &Path) -> String {
    build_image(&hello_release(), &dir.join("hello.unibeam"))
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn run_d_ps_logs_stop_rm_round_trip() {
    let state = State::new();
    let image = hello_image(state.dir.path());
    let port = free_port();
    assert_eq!(
        state
            .ok(&[
                "run",
                "-d",
                "--name",
                "web",
                "-p",
                &format!("{port}:8080"),
                &image
            ])
            .trim(),
        "web"
    );
    let ps = state.ok(&["ps"]);
    assert!(
        ps.contains("web") && ps.contains("running") && ps.contains("tcg"),
        "{ps}"
    );
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while http_get(port).is_none_or(|(code, _)| code != 200) {
        assert!(Instant::now() < deadline, "no HTTP answer");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(http_get(port).unwrap().1.starts_with("hello from hello on web "));
    let logs = state.ok(&["logs", "web"]);
    assert!(logs.contains("unibeam-init: applications started"), "{logs}");
    assert_eq!(state.ok(&["logs", "--tail", "1", "web"]).lines().count(), 1);
    let stop = state.ok(&["stop", "web"]);
    assert!(stop.contains("exited (0)"), "{stop}");
    assert!(state.ok(&["logs", "web"]).contains("hello: stop/1 called"));
    assert!(
        !state.ok(&["ps"]).contains("web"),
        "ps without -a hides exited instances"
    );
    assert!(state.ok(&["ps", "-a"]).contains("exited (0)"));
    state.ok(&["rm", "web"]);
    assert!(!state.ok(&["ps", "-a"]).contains("web"));
    let dir = state.instances().join("web");
    assert!(!dir.exists(), "rm leaves no files");
    assert!(no_process_mentions(&dir), "rm leaves no processes");
}

#[test]
fn kill_9_on_qemu_shows_exited_and_rm_cleans_up() {
    let state = State::new();
    let image = hello_image(state.dir.path());
    state.ok(&["run", "-d", "--name", "victim", &image]);
    let record = state.wait_state("victim", "running", BOOT_TIMEOUT);
    let pid = record["qemu"]["pid"].as_u64().unwrap();
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let record = state.wait_state("victim", "exited", Duration::from_secs(20));
    assert_ne!(record["code"], 0);
    assert!(state.ok(&["ps", "-a"]).contains("exited"));
    state.ok(&["rm", "victim"]);
    let dir = state.instances().join("victim");
    assert!(!dir.exists() && no_process_mentions(&dir));
}

#[test]
fn on_failure_2_restarts_a_crashing_app_exactly_twice() {
    let state = State::new();
    let dir = tempfile::tempdir().unwrap();
    let release = halt_release_with("{mode, error}", dir.path());
    let image = build_image(&release, &dir.path().join("crash.unibeam"));
    // run -d returns once QEMU runs, before the app can crash.
    let name = state.ok(&[
        "run",
        "-d",
        "--name",
        "crashy",
        "--restart",
        "on-failure:2",
        image.to_str().unwrap(),
    ]);
    assert_eq!(name.trim(), "crashy");
    let deadline = Instant::now() + BOOT_TIMEOUT * 3;
    let record = loop {
        let record = state.record("crashy");
        if record["state"] == "exited" && record["monitor"].is_null() {
            break record;
        }
        assert!(Instant::now() < deadline, "never settled: {record}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(record["restarts"], 2, "{record}");
    assert_ne!(record["code"], 0, "{record}");
    let logs = state.ok(&["logs", "crashy"]);
    assert_eq!(logs.matches("unibeam-init: BEAM exec'd").count(), 3, "{logs}");
    state.ok(&["rm", "crashy"]);
}

#[test]
fn name_conflicts_and_races_have_one_winner() {
    let state = State::new();
    let image = hello_image(state.dir.path());
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let mut cmd = Command::new(unibeam());
            cmd.args(["run", "-d", "--name", "same", &image])
                .env("XDG_STATE_HOME", state.dir.path());
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let results: Vec<bool> = racers
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.success())
        .collect();
    assert_eq!(
        results.iter().filter(|ok| **ok).count(),
        1,
        "exactly one racer wins: {results:?}"
    );
    let again = state.unibeam(&["run", "-d", "--name", "same", &image]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("\"same\" is already in use"), "{err}");
    let err = String::from_utf8_lossy(&state.unibeam(&["rm", "same"]).stderr).into_owned();
    assert!(err.contains("is running"), "rm refuses a running instance: {err}");
    assert!(state.ok(&["kill", "same"]).contains("exited"));
    state.ok(&["rm", "same"]);
}

#[test]
fn a_busy_port_fails_before_qemu_starts() {
    let state = State::new();
    let image = hello_image(state.dir.path());
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let out = state.unibeam(&[
        "run",
        "-d",
        "--name",
        "blocked",
        "-p",
        &format!("{port}:8080"),
        &image,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port} is already in use")),
        "{err}"
    );
    assert!(
        !state.instances().join("blocked").exists(),
        "nothing is left behind"
    );
}

#[test]
fn a_guest_writing_100_mb_leaves_a_capped_log() {
    let state = State::new();
    let dir = tempfile::tempdir().unwrap();
    let release = halt_release_with("{mode, chatty}, {megabytes, 100}", dir.path());
    let image = build_image(&release, &dir.path().join("chatty.unibeam"));
    state.ok(&["run", "-d", "--name", "chatty", image.to_str().unwrap()]);
    let follower = follow_logs(&state, "chatty");
    // The emulated UART moves about half a megabyte a second under TCG.
    let record = state.wait_state("chatty", "exited", Duration::from_secs(900));
    assert_eq!(record["code"], 0, "{record}");
    let log = state.instances().join("chatty/console.log");
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let total = size(&log) + size(&unibeam_vmm::logfile::rotated(&log));
    assert!(total <= unibeam_vmm::logfile::DEFAULT_CAP, "log is {total} bytes");
    assert!(
        total > unibeam_vmm::logfile::DEFAULT_CAP / 2,
        "the log kept the newest output: {total} bytes"
    );
    let tail = state.ok(&["logs", "--tail", "3", "chatty"]);
    assert!(
        tail.contains("beam exited with status 0"),
        "the end of the output survives: {tail}"
    );
    // `logs -f` followed the log across its rotations to the very end.
    let (followed, last) = follower.join().unwrap();
    assert!(followed > 90_000_000, "logs -f saw only {followed} bytes");
    assert!(
        last.contains("beam exited with status 0"),
        "logs -f ended with: {last}"
    );
    state.ok(&["rm", "chatty"]);
}

/// Runs `unibeam logs -f NAME` until it exits by itself; returns how many
/// bytes it printed and the last few hundred of them.
fn follow_logs(state: &State, name: &str) -> std::thread::JoinHandle<(u64, String)> {
    use std::io::Read;
    let mut child = Command::new(unibeam())
        .args(["logs", "-f", name])
        .env("XDG_STATE_HOME", state.dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("unibeam logs -f starts");
    let mut out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let (mut total, mut last) = (0u64, Vec::new());
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
            last.extend_from_slice(&buf[..n]);
            let keep = last.len().saturating_sub(400);
            last.drain(..keep);
        }
        let _ = child.wait();
        (total, String::from_utf8_lossy(&last).into_owned())
    })
}
