//! End-to-end tests of the guest PID 1: instance settings, DHCP, graceful
//! and forced stops, crashes, exit policies, entropy and cookie secrecy,
//! all checked through HTTP answers, exit codes and console lines.

use std::process::Command;
use std::time::{Duration, Instant};
use unibeam_e2e::*;

#[test]
fn env_hostname_and_dhcp_reach_the_app_and_timings_print() {
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(&hello_release(), &dir.path().join("hello.unibeam"));
    let port = free_port();
    let mut vm = Vm::run(&[
        image.to_str().unwrap(),
        "-p",
        &format!("{port}:8080"),
        "-e",
        "GREETING=bonjour tout le monde",
        "--hostname",
        "web-1",
        "--dhcp",
        "--timings",
    ]);
    let (body, _) = vm.wait_http_ok(port, BOOT_TIMEOUT);
    assert!(body.starts_with("hello from hello on web-1 "), "body: {body}");
    assert!(body.contains("greeting: bonjour tout le monde"), "body: {body}");
    vm.interrupt();
    vm.wait(Duration::from_secs(90));
    let out = vm.output();
    assert!(
        out.contains("network up: eth0 10.0.2.15/24 (DHCP lease from 10.0.2.2)"),
        "{out}"
    );
    assert!(out.contains("boot timeline"), "{out}");
    for step in [
        "kernel -> init",
        "modules loaded",
        "network up",
        "BEAM exec'd",
        "applications started",
    ] {
        assert!(
            out.contains(&format!(" {step} ")),
            "timeline lacks {step}:\n{out}"
        );
    }
}

#[test]
fn an_app_that_ignores_stop_is_killed_after_the_timeout() {
    let mut vm = halt_fixture("{mode, ignore_stop}", &["--stop-timeout", "3"]);
    vm.wait_for_output("applications started", 1, BOOT_TIMEOUT);
    let asked = Instant::now();
    vm.interrupt();
    let status = vm.wait(Duration::from_secs(60));
    let took = asked.elapsed();
    let out = vm.output();
    assert!(out.contains("ignoring the stop request"), "{out}");
    assert!(out.contains("did not stop within 3s: SIGKILL"), "{out}");
    assert_eq!(status.code(), Some(137), "killed by SIGKILL:\n{out}");
    assert!(
        took < Duration::from_secs(3 + 10),
        "run took {took:?} to return after the stop"
    );
}

#[test]
fn a_crash_at_boot_exits_non_zero_with_the_slogan() {
    let mut vm = halt_fixture("{mode, error}", &[]);
    let status = vm.wait(BOOT_TIMEOUT);
    let out = vm.output();
    assert_ne!(status.code(), Some(0), "{out}");
    assert!(out.contains("unibeam-init: crash dump: Slogan: "), "{out}");
    assert!(out.contains("unibeam_fixture_boot_failure"), "{out}");
}

#[test]
fn on_exit_reboot_restarts_the_beam() {
    let mut vm = halt_fixture("{mode, halt}, {code, 0}", &["--on-exit", "reboot"]);
    vm.wait_for_output("halt fixture: calling erlang:halt(0)", 2, BOOT_TIMEOUT);
    vm.interrupt();
    vm.wait(Duration::from_secs(90));
    let out = vm.output();
    assert!(out.matches("BEAM exec'd").count() >= 2, "{out}");
    assert!(out.contains("on-exit reboot: starting the BEAM again"), "{out}");
}

#[test]
fn strong_rand_bytes_does_not_wait_at_boot() {
    let mut vm = halt_fixture("{mode, entropy}", &[]);
    let status = vm.wait(BOOT_TIMEOUT);
    let out = vm.output();
    assert_eq!(status.code(), Some(0), "{out}");
    let micros: u64 = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("halt fixture: 16 random bytes in ")?
                .strip_suffix(" us")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no entropy line:\n{out}"));
    // Under TCG everything is slow; a blocked pool would take seconds.
    assert!(micros < 500_000, "strong_rand_bytes(16) took {micros} us");
}

fn sha256_hex(text: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s '{text}' | sha256sum"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_uppercase()
}

#[test]
fn the_cookie_is_delivered_but_never_shown() {
    let secret = "unibeamSecretCookie4242";
    let dir = tempfile::tempdir().unwrap();
    let cookie_file = dir.path().join("cookie");
    std::fs::write(&cookie_file, format!("{secret}\n")).unwrap();
    let mut vm = halt_fixture(
        "{mode, cookie}",
        &["--cookie-file", cookie_file.to_str().unwrap(), "--verbose"],
    );
    // Once init runs, QEMU is surely up.
    vm.wait_for_output("unibeam-init: started", 1, BOOT_TIMEOUT);
    // While the VM runs: no process on the host shows it.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(ps.contains("qemu-system-x86_64"), "QEMU is running");
    assert!(!ps.contains(secret), "the cookie shows in ps");
    let status = vm.wait(BOOT_TIMEOUT);
    let out = vm.output();
    assert_eq!(status.code(), Some(0), "{out}");
    // The guest got it: the fixture prints the cookie's digest.
    assert!(
        out.contains(&format!("cookie sha256 {}", sha256_hex(secret))),
        "{out}"
    );
    // --verbose printed the QEMU command line, kernel command line included.
    assert!(out.contains("-append 'console=ttyS0"), "{out}");
    assert!(
        !out.contains(secret),
        "the cookie shows on the console or a command line:\n{out}"
    );
}
