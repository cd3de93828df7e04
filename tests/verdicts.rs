//! Who decides how a VM ended: init's verdict channel (a port only PID 1
//! may write), QEMU's own exit and stderr, and the kernel's console only
//! before init starts. The guest app's console output is never a verdict.

use std::process::Output;
use std::time::{Duration, Instant};
use unibeam_e2e::*;

/// What unibeam itself says when it takes a verdict from the console: none
/// of it may appear for an app that merely prints such lines.
const SPOOFED_VERDICTS: [&str; 4] = [
    "guest kernel panic",
    "ran out of memory",
    "OOM killer",
    "--memory",
];

/// Lines an app can print that the kernel, init and the OOM killer print.
const LOOKALIKES: &str = r#"{lines, ["Kernel panic - not syncing: fake",
                                     "Out of memory: Killed process 1 (beam.smp)",
                                     "unibeam-init: beam exited with status 3",
                                     "Initramfs unpacking failed: fake"]}"#;

#[test]
fn console_lines_from_the_app_are_not_verdicts() {
    let mut vm = halt_fixture(&format!("{{mode, say}}, {{code, 0}}, {LOOKALIKES}"), &[]);
    let status = vm.wait(BOOT_TIMEOUT);
    let out = vm.output();
    assert!(
        out.contains("Kernel panic - not syncing: fake"),
        "the app printed its lines: {out}"
    );
    assert_eq!(status.code(), Some(0), "{out}");
    for verdict in SPOOFED_VERDICTS {
        assert!(
            !out.contains(verdict),
            "{verdict:?} taken from the app's output:\n{out}"
        );
    }
}

/// The exact status, top bit and all, comes from init's channel.
#[test]
fn the_exact_status_comes_through_with_lookalike_lines() {
    let mut vm = halt_fixture(&format!("{{mode, say}}, {{code, 200}}, {LOOKALIKES}"), &[]);
    let status = vm.wait(BOOT_TIMEOUT);
    assert_eq!(status.code(), Some(200), "{}", vm.output());
}

/// More RAM than QEMU can give: unibeam's own checks pass, QEMU refuses.
const IMPOSSIBLE_MEMORY: &str = "100000G";

fn hello_image(dir: &std::path::Path) -> String {
    build_image(&hello_release(), &dir.join("hello.unibeam"))
        .to_str()
        .unwrap()
        .to_string()
}

/// QEMU's own error lines start with its program name.
fn names_qemus_message(text: &str) -> bool {
    text.contains("qemu-system-x86_64: ")
}

#[test]
fn a_qemu_start_up_failure_is_a_failure_with_qemus_message() {
    let dir = tempfile::tempdir().unwrap();
    let image = hello_image(dir.path());
    let out = unibeam_output(&["run", &image, "--memory", IMPOSSIBLE_MEMORY], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("QEMU failed") && names_qemus_message(last),
        "the last line names QEMU's message: {stderr}"
    );
}

fn state_unibeam(state: &std::path::Path, args: &[&str]) -> Output {
    unibeam_output(args, &[("XDG_STATE_HOME", state.to_str().unwrap())])
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_detached_qemu_failure_shows_as_failed_with_qemus_message() {
    let state = tempfile::tempdir().unwrap();
    let image = hello_image(state.path());
    let run = state_unibeam(
        state.path(),
        &[
            "run",
            "-d",
            "--name",
            "noram",
            &image,
            "--memory",
            IMPOSSIBLE_MEMORY,
        ],
    );
    if !run.status.success() {
        // `run -d` saw QEMU gone already: it must not call that a success.
        let said = text(&run);
        assert!(said.contains("125") && !said.contains("status 0"), "{said}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let record = loop {
        let out = state_unibeam(state.path(), &["inspect", "noram"]);
        let record: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("inspect noram: {e}: {}", text(&out)));
        if record["state"] == "exited" && record["monitor"].is_null() {
            break record;
        }
        assert!(Instant::now() < deadline, "never exited: {record}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(record["code"], 125, "{record}");
    let ps = text(&state_unibeam(state.path(), &["ps", "-a"]));
    assert!(ps.contains("exited (125)") && !ps.contains("exited (0)"), "{ps}");
    let logs = text(&state_unibeam(state.path(), &["logs", "noram"]));
    assert!(
        logs.contains("QEMU failed") && names_qemus_message(&logs),
        "logs name QEMU's message: {logs}"
    );
    let _ = state_unibeam(state.path(), &["rm", "-f", "noram"]);
}

/// An app that really exhausts the guest's memory is still named as such:
/// init reports the OOM kill over its own channel.
#[test]
fn a_real_oom_kill_keeps_its_verdict_and_advice() {
    // The default memory: Debian's kernel (`UNIBEAM_KERNEL=debian`) needs
    // more than the specialised one just to boot.
    let mut vm = halt_fixture("{mode, hog}", &[]);
    let status = vm.wait(BOOT_TIMEOUT);
    let out = vm.output();
    assert_eq!(status.code(), Some(137), "{out}");
    let last = out.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("OOM killer ended the BEAM") && last.contains("--memory") && last.contains("128 MiB"),
        "{out}"
    );
}

/// Restart policies act on the verdict: a panic line from the app made a
/// clean exit a failure, which `on-failure` restarted.
#[test]
fn restart_policies_ignore_lookalike_lines() {
    let state = tempfile::tempdir().unwrap();
    let release = halt_release_with(
        r#"{mode, say}, {code, 0}, {lines, ["Kernel panic - not syncing: fake"]}"#,
        state.path(),
    );
    let image = build_image(&release, &state.path().join("say.unibeam"));
    let run = state_unibeam(
        state.path(),
        &[
            "run",
            "-d",
            "--name",
            "sayer",
            "--restart",
            "on-failure:2",
            image.to_str().unwrap(),
        ],
    );
    assert!(run.status.success(), "{}", text(&run));
    let deadline = Instant::now() + BOOT_TIMEOUT * 3;
    let record = loop {
        let out = state_unibeam(state.path(), &["inspect", "sayer"]);
        let record: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("inspect sayer: {e}: {}", text(&out)));
        if record["state"] == "exited" && record["monitor"].is_null() {
            break record;
        }
        assert!(Instant::now() < deadline, "never settled: {record}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let logs = text(&state_unibeam(state.path(), &["logs", "sayer"]));
    assert_eq!(record["code"], 0, "{record}\n{logs}");
    assert_eq!(record["restarts"], 0, "a clean exit is not a failure: {record}");
    assert!(logs.contains("Kernel panic - not syncing: fake"), "{logs}");
    for verdict in SPOOFED_VERDICTS {
        assert!(!logs.contains(verdict), "{verdict:?} in the log:\n{logs}");
    }
    let _ = state_unibeam(state.path(), &["rm", "-f", "sayer"]);
}
