//! A foreground `run --name`: an instance for as long as the run lasts
//! (`ps`, `logs`, `rpc`, `top`, `stop` reach it by name), gone when it
//! ends, and its name freed after a kill -9 of the run.

use serde_json::Value;
use std::time::Duration;
use unibeam_e2e::sandbox::{assert_no_processes, Sandbox};
use unibeam_e2e::{
    fails_naming, free_port, halt_release_with, rpc_when_up, shared_hello_image, BOOT_TIMEOUT,
};

#[test]
fn a_named_foreground_run_is_an_instance_while_it_runs() {
    let s = Sandbox::new();
    let hello = shared_hello_image().to_str().unwrap();
    let port = free_port();
    let mut vm = s.spawn(&["run", "--name", "fg", "-p", &format!("{port}:8080"), hello]);
    vm.wait_http_ok(port, BOOT_TIMEOUT);
    assert_eq!(rpc_when_up("fg", "node()", |args| s.unibeam(args)), "hello@fg\n");

    let ps = s.ps();
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(
        (&ps[0]["name"], &ps[0]["state"], &ps[0]["foreground"]),
        (&Value::from("fg"), &Value::from("running"), &Value::from(true)),
        "{ps:?}"
    );
    // The console goes to the terminal and to the instance's log.
    let logs = s.ok(&["logs", "fg"]);
    let shown = vm.output();
    let line = logs
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .expect("a log line");
    assert!(
        shown.contains(line),
        "{line:?} is in the log, not on the console:\n{shown}"
    );
    let top: Value = serde_json::from_str(&s.ok(&["top", "fg", "--once", "--format", "json"])).unwrap();
    assert!(top.to_string().contains("processes"), "{top}");

    // The name is taken while it runs; it is not started from elsewhere.
    let again = s.unibeam(&["run", "--name", "fg", hello]);
    fails_naming(&again, 125, &["\"fg\"", "already in use"]);
    fails_naming(&s.unibeam(&["rm", "fg"]), 1, &["fg", "is running"]);
    fails_naming(&s.unibeam(&["start", "fg"]), 125, &["fg", "foreground"]);

    // `stop` ends the run as Ctrl-C would, and the instance goes with it.
    assert_eq!(s.ok(&["stop", "fg"]).trim(), "fg exited (0)");
    assert_eq!(
        vm.wait(Duration::from_secs(60)).code(),
        Some(0),
        "{}",
        vm.output()
    );
    s.assert_clean();
}

#[test]
fn rm_f_of_a_named_foreground_run_ends_it_and_leaves_nothing() {
    let s = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    let idle = halt_release_with("{mode, ignore_stop}", dir.path());
    let mut vm = s.spawn(&["run", "--name", "fg-rm", idle.to_str().unwrap()]);
    vm.wait_for_output("halt fixture: mode ignore_stop", 1, BOOT_TIMEOUT);
    s.ok(&["rm", "-f", "fg-rm"]);
    let status = vm.wait(Duration::from_secs(30));
    assert!(!status.success(), "a killed VM is no success: {status:?}");
    s.assert_clean();
}

#[test]
fn kill_9_of_a_named_foreground_run_frees_its_name() {
    let s = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    let idle = halt_release_with("{mode, ignore_stop}", dir.path());
    let halt3 = dir.path().join("halt3");
    std::fs::create_dir(&halt3).unwrap();
    let halting = halt_release_with("{mode, halt}, {code, 3}", &halt3);
    let mut vm = s.spawn(&["run", "--name", "fg9", idle.to_str().unwrap()]);
    vm.wait_for_output("halt fixture: mode ignore_stop", 1, BOOT_TIMEOUT);
    assert!(s.instances().join("fg9").is_dir());
    vm.kill();
    assert_no_processes(s.root());
    assert!(
        s.instances().join("fg9").is_dir(),
        "a SIGKILLed run cannot clean up: the sweep is what this tests"
    );
    // `ps` shows no ghost, and the name can be used again.
    assert_eq!(s.ps(), Vec::<Value>::new());
    let next = s.unibeam(&["run", "--name", "fg9", halting.to_str().unwrap()]);
    assert_eq!(
        next.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
    s.assert_clean();
}
