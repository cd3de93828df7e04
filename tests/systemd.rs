//! `unibeam generate systemd`: the unit of a real detached instance parses
//! under `systemd-analyze verify`, and the commands it holds start and
//! stop that instance as systemd would run them (systemd need not be
//! PID 1 here: the test runs ExecStart= and ExecStop= itself).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use unibeam_e2e::*;

const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

struct State {
    dir: tempfile::TempDir,
}

impl State {
    fn home(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn unibeam(&self, args: &[&str]) -> Output {
        unibeam_output(args, &[("XDG_STATE_HOME", self.home())])
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

    fn state_of(&self, name: &str) -> serde_json::Value {
        let record: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", name])).unwrap();
        record["state"].clone()
    }

    fn wait_state(&self, name: &str, state: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.state_of(name) != state {
            assert!(Instant::now() < deadline, "{name} never reached {state}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The value of `Key=` in a unit file.
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in\n{unit}"))
}

/// Runs a unit's command line as systemd would (words split on blanks:
/// the paths here hold none), with the unit's environment.
fn unit_command(unit: &str, key: &str) -> Command {
    let line = unit_value(unit, key);
    let mut words = line.split_whitespace();
    let mut cmd = Command::new(words.next().unwrap());
    cmd.args(words);
    let (var, value) = unit_value(unit, "Environment").split_once('=').unwrap();
    cmd.env_clear()
        .env(var, value)
        .env("PATH", std::env::var_os("PATH").unwrap());
    cmd
}

/// `systemd-analyze verify` on the unit: the test fails, not passes, when
/// the tool is missing (Debian's `systemd` package; `make deps`).
fn verify(unit: &Path) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("systemd-analyze runs (apt-get install systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = unit.file_name().unwrap().to_str().unwrap();
    assert!(out.status.success(), "systemd-analyze verify {name}: {stderr}");
    assert!(
        !stderr.lines().any(|l| l.contains(name)),
        "systemd-analyze has something to say about {name}:\n{stderr}"
    );
}

#[test]
fn a_generated_unit_verifies_and_starts_and_stops_its_instance() {
    let state = State {
        dir: tempfile::tempdir().unwrap(),
    };
    let image = build_image(&hello_release(), &state.dir.path().join("hello.unibeam"));
    let image = image.to_str().unwrap();
    state.ok(&[
        "run",
        "-d",
        "--name",
        "sd-web",
        "--restart",
        "on-failure:2",
        "--stop-timeout",
        "5",
        image,
    ]);

    let units = state.dir.path().join("units");
    let written = state.ok(&[
        "generate",
        "systemd",
        "sd-web",
        "--files",
        units.to_str().unwrap(),
    ]);
    let path = units.join("unibeam-sd-web.service");
    assert_eq!(written.trim(), path.to_str().unwrap());
    let unit = std::fs::read_to_string(&path).unwrap();
    let exe = std::fs::canonicalize(unibeam()).unwrap();
    assert_eq!(
        unit_value(&unit, "ExecStart"),
        format!("{} start --foreground sd-web", exe.display())
    );
    assert_eq!(
        unit_value(&unit, "ExecStop"),
        format!("{} stop -t 20 sd-web", exe.display())
    );
    assert_eq!(unit_value(&unit, "Restart"), "on-abnormal");
    assert_eq!(
        unit_value(&unit, "TimeoutStopSec"),
        "50",
        "--stop-timeout 5, plus margins"
    );
    assert_eq!(
        unit_value(&unit, "Environment"),
        format!("XDG_STATE_HOME={}", state.home())
    );
    verify(&path);
    let printed = state.ok(&["generate", "systemd", "sd-web"]);
    assert_eq!(
        printed,
        format!("# unibeam-sd-web.service\n{unit}\n"),
        "stdout holds the same unit"
    );

    // What systemd does at boot: the instance is down (here: stopped),
    // ExecStart= brings it back from its record and stays as its owner.
    state.ok(&["stop", "sd-web"]);
    const STARTED: &str = "unibeam-init: applications started";
    let boots = state.ok(&["logs", "sd-web"]).matches(STARTED).count();
    let mut service = unit_command(&unit, "ExecStart")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    state.wait_state("sd-web", "running", BOOT_TIMEOUT);
    // The power button works once init listens for it: wait for the app
    // (the console log goes on from the boot before).
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while state.ok(&["logs", "sd-web"]).matches(STARTED).count() == boots {
        assert!(Instant::now() < deadline, "hello never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    let again = state.unibeam(&["start", "sd-web"]);
    assert_eq!(
        again.status.code(),
        Some(125),
        "a running instance is not started twice"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));
    // `systemctl stop`: ExecStop= powers it off; the main process then
    // exits with the guest's status, 0 after init:stop().
    let stop = unit_command(&unit, "ExecStop").output().unwrap();
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = service.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "ExecStart= did not end after ExecStop="
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0), "a clean stop is a clean exit for systemd");
    assert!(state.ok(&["ps", "-a"]).contains("exited (0)"));
    assert!(state.ok(&["logs", "sd-web"]).contains("hello: stop/1 called"));

    state.ok(&["rm", "-f", "sd-web"]);
    assert!(!state.dir.path().join("unibeam/instances/sd-web").exists());
}

#[test]
fn generate_names_what_it_cannot_find() {
    let state = State {
        dir: tempfile::tempdir().unwrap(),
    };
    for (args, culprit) in [
        (&["generate", "systemd", "nope"][..], "\"nope\""),
        (&["generate", "systemd", "--cluster", "nope"][..], "\"nope\""),
        (&["generate", "systemd", "../x"][..], "\"../x\""),
        (&["start", "nope"][..], "\"nope\""),
    ] {
        let out = state.unibeam(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let error = unibeam_e2e::one_line(&out);
        assert!(error.contains(culprit), "{args:?}: {error}");
    }
}
