//! The metrics history on a real VM: the monitor samples hello every
//! 2 s (UNIBEAM_SAMPLE_SECS), `unibeam stats` reads the samples back,
//! `ps` shows the BEAM's memory, and the cookie is in none of it.

use serde_json::Value;
use std::time::{Duration, Instant};
use unibeam_e2e::{fails_naming, shared_hello_image, StateDir};

/// A private state directory, with a quick sampling interval for every
/// monitor started from it.
fn state() -> StateDir {
    StateDir::with_env(&[("UNIBEAM_SAMPLE_SECS", "2")])
}

fn samples(json: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(json)
        .unwrap_or_else(|e| panic!("stats --format json: {e}: {json}"))
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("not an array: {json}"))
}

fn beam_total(sample: &Value) -> u64 {
    sample["beam"]["memory"]["total"].as_u64().unwrap_or(0)
}

#[test]
fn the_monitor_keeps_samples_that_stats_and_ps_show() {
    let state = state();
    let image = shared_hello_image().to_str().unwrap();
    state.ok(&["run", "-d", "--name", "sampled", image]);

    // A TCG boot takes 10-20 s; then a sample every 2 s.
    let deadline = Instant::now() + Duration::from_secs(240);
    let (json, all) = loop {
        let json = state.ok(&["stats", "sampled", "--format", "json"]);
        let all = samples(&json);
        if all.iter().filter(|s| beam_total(s) > 0).count() >= 3 {
            break (json, all);
        }
        assert!(Instant::now() < deadline, "fewer than 3 samples: {json}");
        std::thread::sleep(Duration::from_secs(1));
    };
    let times: Vec<u64> = all.iter().map(|s| s["time_ms"].as_u64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "timestamps increase: {times:?}"
    );
    for s in &all {
        assert!(beam_total(s) > 0, "BEAM memory in every sample: {s}");
        assert!(s["qemu"]["rss_bytes"].as_u64().unwrap() > 0, "QEMU's RSS: {s}");
        assert!(s["beam"]["process_count"].as_u64().unwrap() > 10, "{s}");
        let top = s["beam"]["processes"].as_array().unwrap();
        assert!(!top.is_empty() && top.len() <= 10, "the top processes only: {s}");
    }
    assert!(
        all.iter()
            .skip(1)
            .any(|s| s["qemu_cpu_percent"].as_f64().is_some()),
        "QEMU's CPU use between samples: {json}"
    );

    let text = state.ok(&["stats", "sampled"]);
    assert!(text.starts_with("TIME"), "{text}");
    assert!(text.lines().count() > all.len(), "a line per sample: {text}");
    let recent = samples(&state.ok(&["stats", "sampled", "--since", "1h", "--format", "json"]));
    assert!(recent.len() >= all.len(), "the last hour has them all");
    let none = samples(&state.ok(&["stats", "sampled", "--since", "0s", "--format", "json"]));
    assert!(none.len() <= 1, "{none:?}");

    let table = state.ok(&["ps"]);
    let row = table.lines().find(|l| l.starts_with("sampled ")).expect(&table);
    assert!(
        row.split_whitespace().any(|w| w
            .strip_suffix('M')
            .and_then(|n| n.parse::<f64>().ok())
            .is_some_and(|m| m > 0.0)),
        "ps shows the BEAM's memory: {table}"
    );
    let listed: Value = serde_json::from_str(&state.ok(&["ps", "--format", "json"])).unwrap();
    assert!(listed[0]["beam_memory"].as_u64().unwrap() > 0, "{listed}");

    // The sampler holds the cookie; nothing it writes or shows does.
    let cookie = std::fs::read_to_string(state.instance_dir("sampled").join("cookie")).unwrap();
    let cookie = cookie.trim();
    assert!(cookie.len() >= 16, "a cookie worth the name");
    let history = std::fs::read_to_string(state.instance_dir("sampled").join("stats.jsonl")).unwrap();
    for (what, output) in [
        ("stats --format json", &json),
        ("stats", &text),
        ("ps", &table),
        ("stats.jsonl", &history),
    ] {
        assert!(!output.contains(cookie), "the cookie is in {what}");
    }

    state.ok(&["rm", "-f", "sampled"]);
    fails_naming(&state.unibeam(&["stats", "sampled"]), 1, &["sampled"]);
}

#[test]
fn bad_arguments_are_one_line_errors() {
    let state = state();
    fails_naming(
        &state.unibeam(&["stats", "nosuch"]),
        1,
        &["no instance named \"nosuch\""],
    );
    fails_naming(
        &state.unibeam(&["stats", "nosuch", "--since", "5 minutes"]),
        2,
        &["--since", "30s, 5m or 1h"],
    );
}
