//! `make bench`, runner part: how fast `--accel auto` settles with no
//! cached probe, and `unibeam stop` latency of a detached instance.
//! Writes bench/results/runner.json and the runner section of
//! docs/benchmarks.md.

use serde_json::json;
use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};
use unibeam_e2e::bench::*;
use unibeam_e2e::*;

const RUNS: usize = 3;

fn main() {
    let root = workspace_root();
    let work = root.join("bench/work");
    fs::create_dir_all(&work).unwrap();
    let image = build_image(&hello_release(), &work.join("hello.unibeam"));
    let image = image.to_str().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let env = |cmd: &mut Command| {
        cmd.env("XDG_STATE_HOME", state.path());
    };

    // A fresh cache each time, so the probe really runs; the image is built
    // already, so nothing else is slow.
    let mut settle = Vec::new();
    for _ in 0..RUNS {
        let probe_cache = cache.path().join(format!("c{}", settle.len()));
        fs::create_dir_all(&probe_cache).unwrap();
        let mut vm = Vm::spawn({
            let mut cmd = Command::new(unibeam());
            cmd.args(["run", image, "--accel", "auto"])
                .env("XDG_CACHE_HOME", &probe_cache);
            cmd
        });
        vm.wait_for_output("unibeam: accelerator", 1, Duration::from_secs(60));
        settle.push(vm.elapsed().as_secs_f64());
        vm.interrupt();
        vm.wait(Duration::from_secs(90));
    }

    let mut stops = Vec::new();
    for i in 0..RUNS {
        let name = format!("bench-{i}");
        let port = free_port();
        let mut run = Command::new(unibeam());
        run.args(["run", "-d", "--name", &name, "-p", &format!("{port}:8080"), image]);
        env(&mut run);
        assert!(run.status().unwrap().success());
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while http_get(port).is_none_or(|(c, _)| c != 200) {
            assert!(Instant::now() < deadline, "no HTTP answer from {name}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut stop = Command::new(unibeam());
        stop.args(["stop", &name]);
        env(&mut stop);
        let (status, secs) = timed(|| stop.status().unwrap());
        assert!(status.success());
        stops.push(secs);
        let mut rm = Command::new(unibeam());
        rm.args(["rm", &name]);
        env(&mut rm);
        rm.status().unwrap();
    }
    let result = json!({
        "benchmark": "runner",
        "command": "make bench",
        "date": utc_now(),
        "accel_auto_settle_s": settle,
        "accel_auto_settle_median_s": median(&settle),
        "stop_s": stops,
        "stop_median_s": median(&stops),
    });
    write_result(&root, "runner", &result);
    let section = format!(
        "## Runner: accelerator probe and stop latency\n\n\
         Measured by `make bench` on {}, {RUNS} runs each. `--accel auto` with no cached probe \
         settles on TCG (nested KVM is broken here) {:.2} s after `unibeam run` starts (median; \
         the target is under 5 s). `unibeam stop` of a running hello instance (power key, \
         `init:stop()`, power-off) takes {:.2} s (median). Raw figures: `bench/results/runner.json`.\n",
        result["date"].as_str().unwrap_or(""),
        median(&settle),
        median(&stops),
    );
    println!("{section}");
    update_section(&root, "runner", &section);
}
