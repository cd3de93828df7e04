//! End-to-end tests of `unibeam top`: a detached hello's figures read over
//! its distribution, as JSON and as text, and the one-line errors for an
//! unknown or stopped instance. Each test keeps its instances in a private
//! XDG_STATE_HOME.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};
use unibeam_e2e::*;

fn state_unibeam(state: &Path, args: &[&str]) -> Output {
    unibeam_output(args, &[("XDG_STATE_HOME", state.to_str().unwrap())])
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until `name`'s node evaluates an expression.
fn wait_for_node(state: &Path, name: &str) {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let out = state_unibeam(state, &["rpc", name, "1"]);
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}'s node never answered: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Waits until `inspect` shows `name` exited.
fn wait_exited(state: &Path, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = state_unibeam(state, &["inspect", name]);
        let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if record["state"] == "exited" {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never exited: {}", text(&out));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn top_once_reads_a_running_hello_as_json_and_text() {
    let state = tempfile::tempdir().unwrap();
    let state = state.path();
    let image = shared_hello_image().to_str().unwrap();
    let run = state_unibeam(state, &["run", "-d", "--name", "toppy", image]);
    assert!(run.status.success(), "run -d: {}", text(&run));
    wait_for_node(state, "toppy");

    let out = state_unibeam(state, &["top", "toppy", "--once", "--format", "json"]);
    assert!(out.status.success(), "top --once: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim().lines().count(), 1, "one JSON object: {stdout}");
    let top: serde_json::Value = serde_json::from_str(&stdout).expect("top prints JSON");
    assert_eq!(top["instance"], "toppy", "{top}");
    assert!(top["node"].as_str().is_some_and(|n| n.contains('@')), "{top}");
    assert!(top["memory"]["total"].as_u64().is_some_and(|t| t > 0), "{top}");
    assert!(top["memory"]["processes"].as_u64().is_some(), "{top}");
    let count = top["process_count"].as_u64().unwrap_or(0);
    assert!(
        count > 0 && count <= top["process_limit"].as_u64().unwrap(),
        "{top}"
    );
    for key in [
        "port_count",
        "atom_count",
        "atom_limit",
        "ets_count",
        "ets_limit",
        "run_queue",
    ] {
        assert!(top[key].as_u64().is_some(), "no {key}: {top}");
    }
    assert!(
        top["run_queue_lengths"].as_array().is_some_and(|l| !l.is_empty()),
        "{top}"
    );
    // Two samples a second apart give the rates.
    let rates = &top["rates"];
    assert!(
        rates["reductions_per_s"].as_f64().is_some_and(|r| r > 0.0),
        "{top}"
    );
    let busy = rates["scheduler_utilisation"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&busy), "{top}");
    let procs = top["top"].as_array().expect("a top list");
    assert!(!procs.is_empty() && procs.len() <= 20, "{top}");
    for p in procs {
        assert!(p["pid"].as_str().is_some_and(|pid| pid.starts_with('<')), "{p}");
        assert!(p["memory"].as_u64().is_some_and(|m| m > 0), "{p}");
        assert!(p["current_function"].as_str().is_some(), "{p}");
    }
    // By memory, biggest first; a registered process is named.
    let sizes: Vec<u64> = procs.iter().map(|p| p["memory"].as_u64().unwrap()).collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    assert!(
        procs
            .iter()
            .any(|p| p["name"].as_str().is_some_and(|n| !n.is_empty())),
        "{top}"
    );

    // Without a name: the only running instance. As text.
    let out = state_unibeam(state, &["top", "--once"]);
    assert!(out.status.success(), "top --once: {}", text(&out));
    let snapshot = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "instance toppy",
        "memory",
        "total",
        "processes",
        "top processes by memory",
    ] {
        assert!(snapshot.contains(needle), "no {needle:?} in:\n{snapshot}");
    }

    // Stopped: a one-line error, exit 1.
    let kill = state_unibeam(state, &["kill", "toppy"]);
    assert!(kill.status.success(), "kill: {}", text(&kill));
    wait_exited(state, "toppy");
    let out = state_unibeam(state, &["top", "toppy", "--once", "--format", "json"]);
    fails_naming(&out, 1, &["toppy", "not running"]);
    assert!(out.stdout.is_empty(), "{}", text(&out));

    let rm = state_unibeam(state, &["rm", "-f", "toppy"]);
    assert!(rm.status.success(), "rm -f: {}", text(&rm));
}

#[test]
fn top_of_an_unknown_instance_or_of_none_is_one_line() {
    let state = tempfile::tempdir().unwrap();
    let out = state_unibeam(state.path(), &["top", "nosuch", "--once", "--format", "json"]);
    fails_naming(&out, 1, &["nosuch"]);
    assert!(out.stdout.is_empty(), "{}", text(&out));
    let out = state_unibeam(state.path(), &["top", "--once"]);
    fails_naming(&out, 1, &["no instance is running"]);
}
