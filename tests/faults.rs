//! Fault scenarios: processes killed, stopped or interrupted at awkward
//! moments, records damaged, QEMU failing to start. Each scenario runs in
//! its own sandbox (state, cache and temp dirs) and ends with
//! `assert_clean`: no orphan QEMU or monitor, a `ps` that matches /proc,
//! and no litter on disk. tests/instances.rs covers the plain kill -9 of
//! QEMU, `--restart on-failure:N` and racing `run -d`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use unibeam_e2e::cluster::Cluster;
use unibeam_e2e::sandbox::{alive, assert_no_processes, signal, Sandbox};
use unibeam_e2e::*;

/// A halt fixture image in the sandbox, built with `settings`.
fn halt_image(s: &Sandbox, label: &str, settings: &str) -> String {
    let dir = s.root().join("images").join(label);
    std::fs::create_dir_all(&dir).unwrap();
    let release = halt_release_with(settings, &dir);
    let image = build_image(&release, &dir.join(format!("{label}.unibeam")));
    image.to_str().unwrap().to_string()
}

/// An instance that boots and then idles until it is killed: the halt
/// fixture in `ignore_stop` mode serves nothing and never halts.
fn idle_image(s: &Sandbox) -> String {
    halt_image(s, "idle", "{mode, ignore_stop}")
}

fn hello_image(s: &Sandbox) -> String {
    let dir = s.root().join("images");
    std::fs::create_dir_all(&dir).unwrap();
    let image = build_image(&hello_release(), &dir.join("hello.unibeam"));
    image.to_str().unwrap().to_string()
}

fn qemu_pid(record: &serde_json::Value) -> u32 {
    record["qemu"]["pid"].as_u64().expect("a QEMU pid") as u32
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A failure a user can read: one error with its causes, no panic.
fn assert_one_line_error(out: &std::process::Output, what: &str) {
    let err = stderr(out);
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
    assert!(!unibeam_e2e::one_line(out).is_empty(), "{what}: {err}");
}

#[test]
fn kill_9_of_qemu_is_restarted_exactly_as_on_failure_1_says() {
    let s = Sandbox::new();
    let image = idle_image(&s);
    s.ok(&["run", "-d", "--name", "k9", "--restart", "on-failure:1", &image]);
    let first = qemu_pid(&s.wait_running("k9"));
    s.assert_ps_truthful();
    signal(first, libc::SIGKILL);
    let second = s.wait_record("k9", BOOT_TIMEOUT, |r| {
        r["state"] == "running" && r["qemu"]["pid"].as_u64() != Some(u64::from(first))
    });
    assert_eq!(second["restarts"], 1, "{second}");
    s.assert_ps_truthful();
    // The one restart is used up: this kill is final.
    signal(qemu_pid(&second), libc::SIGKILL);
    let last = s.wait_record("k9", Duration::from_secs(30), |r| {
        r["state"] == "exited" && r["monitor"].is_null()
    });
    assert_eq!(last["restarts"], 1, "{last}");
    assert_ne!(last["code"], 0, "a SIGKILLed QEMU is no success: {last}");
    s.assert_ps_truthful();
    assert!(
        !s.ok(&["ps"]).contains("k9"),
        "ps without -a lists an exited instance"
    );
    s.ok(&["rm", "k9"]);
    s.assert_clean();
}

#[test]
fn kill_9_of_the_monitor_takes_its_qemu_down() {
    let s = Sandbox::new();
    let image = idle_image(&s);
    s.ok(&["run", "-d", "--name", "orphan", "--restart", "always", &image]);
    let record = s.wait_running("orphan");
    let qemu = qemu_pid(&record);
    let monitor = record["monitor"]["pid"].as_u64().expect("a monitor pid") as u32;
    signal(monitor, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(qemu) {
        assert!(Instant::now() < deadline, "QEMU {qemu} outlived its monitor");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing is left to restart it: ps must say so, not "running".
    let record = s.record("orphan");
    assert_eq!(record["state"], "exited", "{record}");
    assert_ne!(record["code"], 0, "{record}");
    s.assert_ps_truthful();
    assert!(!s.ok(&["ps"]).contains("orphan"));
    s.ok(&["rm", "orphan"]);
    s.assert_clean();
}

#[test]
fn stop_kills_a_sigstopped_qemu_soon_after_its_timeout() {
    let s = Sandbox::new();
    let image = idle_image(&s);
    s.ok(&["run", "-d", "--name", "frozen", &image]);
    let qemu = qemu_pid(&s.wait_running("frozen"));
    signal(qemu, libc::SIGSTOP);
    let began = Instant::now();
    let out = s.unibeam(&["stop", "-t", "3", "frozen"]);
    let took = began.elapsed();
    eprintln!("stop -t 3 of a stopped QEMU took {took:?}");
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("frozen exited"), "stop printed: {said}");
    assert!(!alive(qemu), "the stopped QEMU survived `stop`");
    // The QMP greeting never comes from a stopped QEMU: whatever stop
    // tries first, SIGKILL must follow within a few seconds of -t.
    assert!(took < Duration::from_secs(3 + 5), "stop -t 3 took {took:?}");
    s.assert_ps_truthful();
    s.ok(&["rm", "frozen"]);
    s.assert_clean();
}

#[test]
fn two_racing_rm_f_of_one_running_instance_leave_nothing() {
    let s = Sandbox::new();
    let image = idle_image(&s);
    s.ok(&["run", "-d", "--name", "contested", &image]);
    s.wait_running("contested");
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let mut cmd = s.command(&["rm", "-f", "contested"]);
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let outs: Vec<_> = racers
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    assert!(outs.iter().any(|o| o.status.success()), "no rm -f won");
    for out in outs.iter().filter(|o| !o.status.success()) {
        assert_one_line_error(out, "the losing rm -f");
        assert!(stderr(out).contains("contested"), "{}", stderr(out));
    }
    s.assert_clean();
}

#[test]
fn a_crash_loop_under_restart_always_keeps_going_until_rm_f() {
    let s = Sandbox::new();
    let image = halt_image(&s, "crash", "{mode, error}");
    // It may crash before `run -d` returns; the policy restarts it anyway.
    let _ = s.unibeam(&["run", "-d", "--name", "loop", "--restart", "always", &image]);
    s.wait_record("loop", BOOT_TIMEOUT, |r| {
        r["restarts"].as_u64().is_some_and(|n| n >= 3)
    });
    // Between crashes ps says "restarting" (the backoff), during a boot
    // "running"; never "exited" while the policy holds.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while !(seen.contains("running") && seen.contains("restarting")) {
        let record = s.record("loop");
        let state = record["state"].as_str().unwrap_or_default().to_string();
        assert_ne!(state, "exited", "the loop stopped by itself: {record}");
        assert!(Instant::now() < deadline, "ps showed only {seen:?}");
        seen.insert(state);
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = s.ok(&["logs", "loop"]);
    assert!(logs.matches("unibeam-init: BEAM exec'd").count() >= 3, "{logs}");
    let out = s.unibeam(&["rm", "-f", "loop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    s.assert_clean();
}

#[test]
fn ctrl_c_during_boot_stops_a_foreground_run_gracefully() {
    let s = Sandbox::new();
    let image = hello_image(&s);
    let mut vm = s.spawn(&["run", &image]);
    // init is up, the BEAM is not: the power button may be pressed before
    // anything listens, and must be pressed again until it is heard.
    vm.wait_for_output("started (kernel -> init)", 1, BOOT_TIMEOUT);
    vm.interrupt();
    assert!(
        !vm.output().contains("applications started"),
        "too late: the app was up before Ctrl-C"
    );
    let status = vm.wait(Duration::from_secs(90));
    let out = vm.output();
    assert!(out.contains("stopping the VM gracefully"), "{out}");
    // The stop goes through init, not QEMU's death: a BEAM far enough to
    // run init:stop() exits 0; one SIGTERMed in the first milliseconds
    // after its exec, before it handles the signal, ends with 143.
    assert!(!out.contains("killing QEMU"), "{out}");
    let code = status.code();
    assert!(
        out.contains(&format!("beam exited with status {}", code.unwrap_or(-1)))
            && matches!(code, Some(0 | 143)),
        "exit {code:?}:\n{out}"
    );
    s.assert_clean();
}

#[test]
fn sigterm_stops_a_foreground_run_gracefully() {
    let s = Sandbox::new();
    let image = hello_image(&s);
    let mut vm = s.spawn(&["run", &image]);
    vm.wait_for_output("applications started", 1, BOOT_TIMEOUT);
    signal(vm.pid(), libc::SIGTERM);
    let status = vm.wait(Duration::from_secs(90));
    let out = vm.output();
    assert!(
        out.contains("hello: stop/1 called"),
        "the BEAM did not stop:\n{out}"
    );
    assert_eq!(status.code(), Some(0), "{out}");
    s.assert_clean();
}

/// `build TARBALL -o OUT` in the background, with every layer compressed
/// afresh so that it lasts long enough to be interrupted; returns once the
/// tarball is unpacked and the image's staging directory exists.
fn slow_tarball_build(s: &Sandbox, out: &Path) -> Vm {
    let tarball = hello_tarball();
    let mut build = s.spawn(&[
        "build",
        tarball.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--no-cache",
    ]);
    let parent = out.parent().unwrap();
    let unpacked = s.cache().join("unibeam/unpacked");
    let staging = |dir: &Path| {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().contains(".partial"))
            })
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(staging(parent) && std::fs::read_dir(&unpacked).is_ok_and(|mut d| d.next().is_some())) {
        assert!(
            !build.has_exited(),
            "build ended before it could be interrupted:\n{}",
            build.output()
        );
        assert!(
            Instant::now() < deadline,
            "build never got under way:\n{}",
            build.output()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    build
}

#[test]
fn ctrl_c_during_a_tarball_build_leaves_nothing_partial() {
    let s = Sandbox::new();
    let out_dir = s.root().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("hello.unibeam");
    let mut build = slow_tarball_build(&s, &out);
    build.interrupt();
    let status = build.wait(Duration::from_secs(60));
    assert!(
        !status.success(),
        "an interrupted build succeeded:\n{}",
        build.output()
    );
    assert!(!out.exists(), "an interrupted build left {}", out.display());
    s.assert_clean();
}

#[test]
fn the_next_build_sweeps_what_a_kill_9d_build_left() {
    let s = Sandbox::new();
    let out_dir = s.root().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("hello.unibeam");
    slow_tarball_build(&s, &out).kill();
    let tarball = hello_tarball();
    s.ok(&["build", tarball.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(out.join("image.json").is_file());
    s.assert_clean();
}

/// The directories `unibeam run` with pid `pid` made in the sandbox's TMPDIR.
fn run_dirs(s: &Sandbox, pid: u32) -> Vec<PathBuf> {
    let prefix = format!("unibeam-run-{pid}-");
    std::fs::read_dir(s.tmp())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

#[test]
fn kill_9_of_a_foreground_run_takes_qemu_down_and_the_next_run_sweeps() {
    let s = Sandbox::new();
    let idle = idle_image(&s);
    let halting = halt_image(&s, "halt3", "{mode, halt}, {code, 3}");
    let mut vm = s.spawn(&["run", &idle]);
    vm.wait_for_output("halt fixture: mode ignore_stop", 1, BOOT_TIMEOUT);
    let left = run_dirs(&s, vm.pid());
    assert_eq!(left.len(), 1, "run's own directory: {left:?}");
    vm.kill();
    assert_no_processes(s.root());
    assert!(
        left[0].exists(),
        "a SIGKILLed run cannot clean up: the sweep is what this tests"
    );
    let next = s.unibeam(&["run", &halting]);
    assert_eq!(next.status.code(), Some(3), "{}", stderr(&next));
    assert!(
        !left[0].exists(),
        "the next run left {} behind",
        left[0].display()
    );
    s.assert_clean();
}

#[test]
fn qemu_failing_to_start_under_run_d_is_reported_with_qemus_message() {
    let s = Sandbox::new();
    let image = halt_image(&s, "halt0", "{mode, halt}, {code, 0}");
    // No host can give this; QEMU itself refuses it, after unibeam checks.
    let out = s.unibeam(&["run", "-d", "--name", "huge", "--memory", "100000G", &image]);
    eprintln!("run -d: {:?} {}", out.status, stderr(&out));
    if !out.status.success() {
        assert_one_line_error(&out, "run -d");
    }
    // QEMU is started before it fails: give the monitor a moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    let entry = loop {
        let ps = s.ps();
        let entry = ps
            .iter()
            .find(|e| e["name"] == "huge")
            .unwrap_or_else(|| panic!("ps -a lost the instance whose QEMU failed: {ps:?}"))
            .clone();
        if entry["state"] == "exited" || Instant::now() > deadline {
            break entry;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(entry["state"], "exited", "{entry}");
    assert_ne!(entry["code"], 0, "a QEMU that never ran is no success: {entry}");
    let logs = s.ok(&["logs", "huge"]);
    assert!(
        logs.contains("qemu-system-x86_64:") && logs.to_lowercase().contains("memory"),
        "logs do not say what QEMU said:\n{logs}"
    );
    s.assert_ps_truthful();
    s.ok(&["rm", "huge"]);
    s.assert_clean();
}

#[test]
fn instances_with_a_corrupt_or_missing_record_are_listed_and_removable() {
    let s = Sandbox::new();
    let instances = s.instances();
    let garbled = instances.join("garbled");
    std::fs::create_dir_all(&garbled).unwrap();
    // A record cut short, as a full disk leaves it.
    std::fs::write(garbled.join("instance.json"), br#"{"name": "garbled", "ima"#).unwrap();
    std::fs::create_dir_all(instances.join("recordless")).unwrap();
    let table = s.ok(&["ps", "-a"]);
    for name in ["garbled", "recordless"] {
        assert!(table.contains(name), "ps -a hides {name}:\n{table}");
    }
    s.assert_ps_truthful();
    for name in ["garbled", "recordless"] {
        let out = s.unibeam(&["rm", "-f", name]);
        assert!(out.status.success(), "rm -f {name}: {}", stderr(&out));
    }
    s.assert_clean();
}

#[test]
fn rm_f_of_a_running_instance_with_a_corrupt_record_leaves_no_qemu() {
    let s = Sandbox::new();
    let image = idle_image(&s);
    s.ok(&["run", "-d", "--name", "scrambled", &image]);
    s.wait_running("scrambled");
    std::fs::write(s.instances().join("scrambled/instance.json"), b"\0\0\0\0").unwrap();
    assert!(s.ok(&["ps", "-a"]).contains("scrambled"), "ps -a hides it");
    let out = s.unibeam(&["rm", "-f", "scrambled"]);
    assert!(out.status.success(), "{}", stderr(&out));
    s.assert_clean();
}

#[test]
fn down_removes_a_cluster_whose_members_were_kill_9d() {
    let c = Cluster::new("faultdown", 2, 6);
    c.up();
    // Member 1 loses its monitor (its QEMU dies with it); member 2 loses
    // its QEMU and its monitor is restarting it as `down` runs.
    let monitor = c.inspect(1)["monitor"]["pid"].as_u64().expect("a monitor") as u32;
    signal(monitor, libc::SIGKILL);
    signal(c.qemu_pid(2), libc::SIGKILL);
    let out = c.down();
    assert!(out.status.success(), "down: {}", stderr(&out));
    assert_no_processes(c.home.path());
    let ps = String::from_utf8_lossy(&c.unibeam(&["ps", "-a"]).stdout).into_owned();
    assert!(!ps.contains("faultdown"), "ps -a still lists the cluster:\n{ps}");
    let state = c.state_dir().join("unibeam");
    for dir in ["instances", "clusters"] {
        let left: Vec<_> = std::fs::read_dir(state.join(dir))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "down left {left:?}");
    }
}
