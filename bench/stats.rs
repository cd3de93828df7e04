//! The metrics bench (`cargo bench -p unibeam-e2e --bench stats`; not
//! yet a line of `make bench`): what the monitor's sampling costs an idle
//! guest, and the `rpc` round trip. An idle detached hello is measured
//! for WINDOW seconds with sampling every 5 s and with sampling off
//! (UNIBEAM_SAMPLE_SECS=0), alternating, RUNS times each: QEMU's host CPU
//! time (utime + stime) over the window, as % of one core. Then `1` is
//! evaluated on the node many times over one connection. Writes
//! bench/results/stats.json and the stats section of docs/benchmarks.md.
//!
//! UNIBEAM_BENCH_WINDOW_SECS and UNIBEAM_BENCH_RUNS shorten it (60 and 3
//! by default); the figures say what they were.

use serde_json::json;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use unibeam_e2e::bench::*;
use unibeam_e2e::*;
use unibeam_lifecycle::{remote, stats};
use unibeam_vmm::state::{InstanceName, Store};

/// Evaluations of `1` on one connection.
const ROUND_TRIPS: usize = 200;
/// After the node first answers, for the boot's tail to settle.
const SETTLE: Duration = Duration::from_secs(10);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Instance<'a> {
    state: &'a Path,
    name: String,
}

impl Instance<'_> {
    fn unibeam(&self, args: &[&str], sample_secs: &str) -> std::process::Output {
        Command::new(unibeam())
            .args(args)
            .env("XDG_STATE_HOME", self.state)
            .env(stats::INTERVAL_ENV, sample_secs)
            .output()
            .unwrap()
    }

    fn store(&self) -> Store {
        Store {
            root: self.state.join("unibeam/instances"),
        }
    }

    fn id(&self) -> InstanceName {
        InstanceName::parse(&self.name).unwrap()
    }

    /// Runs hello detached with `sample_secs`, until its node answers.
    fn run<'a>(state: &'a Path, name: &str, image: &str, sample_secs: &str) -> Instance<'a> {
        let i = Instance {
            state,
            name: name.to_string(),
        };
        let out = i.unibeam(&["run", "-d", "--name", name, image], sample_secs);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while !answers(&i.store(), &i.id()) {
            assert!(Instant::now() < deadline, "{name}'s node never answered");
            std::thread::sleep(Duration::from_millis(500));
        }
        i
    }

    /// QEMU's CPU time over `window`, in % of one core, and the samples
    /// the monitor took meanwhile.
    fn idle_cpu(&self, window: Duration) -> (f64, usize) {
        std::thread::sleep(SETTLE);
        let pid = self.store().load(&self.id()).unwrap().qemu.unwrap().pid;
        let count = || stats::read(&self.store(), &self.id(), None).unwrap().len();
        let (before, samples_before) = (stats::qemu_usage(pid).unwrap(), count());
        let start = Instant::now();
        std::thread::sleep(window);
        let after = stats::qemu_usage(pid).unwrap();
        let wall_ms = start.elapsed().as_secs_f64() * 1000.0;
        let cpu = (after.cpu_ms - before.cpu_ms) as f64 * 100.0 / wall_ms;
        (cpu, count() - samples_before)
    }

    /// Seconds per evaluation of `1` (erl_scan, erl_parse and erl_eval:
    /// three calls), and per single call (`erlang:node()`), over one
    /// connection.
    fn round_trips(&self) -> (Vec<f64>, Vec<f64>) {
        let node = remote::connect(&self.store(), &self.id(), Duration::from_secs(30)).unwrap();
        node.eval_erlang("1").unwrap();
        let evals = (0..ROUND_TRIPS)
            .map(|_| timed(|| node.eval_erlang("1").unwrap()).1)
            .collect();
        let calls = (0..ROUND_TRIPS)
            .map(|_| timed(|| node.call("erlang", "node", Vec::new()).unwrap()).1)
            .collect();
        (evals, calls)
    }

    fn remove(self) {
        let _ = self.unibeam(&["rm", "-f", &self.name], "0");
    }
}

/// Whether `name`'s node answers `ok`.
fn answers(store: &Store, name: &InstanceName) -> bool {
    remote::connect(store, name, Duration::from_secs(10)).is_ok_and(|node| node.eval_erlang("ok").is_ok())
}

fn main() {
    let root = workspace_root();
    let work = root.join("bench/work");
    fs::create_dir_all(&work).unwrap();
    let image = build_image(&hello_release(), &work.join("hello.unibeam"));
    let image = image.to_str().unwrap();
    let state = tempfile::tempdir().unwrap();
    let window = Duration::from_secs(env_or("UNIBEAM_BENCH_WINDOW_SECS", 60));
    let runs = env_or("UNIBEAM_BENCH_RUNS", 3) as usize;

    let (mut on, mut off, mut taken) = (Vec::new(), Vec::new(), Vec::new());
    let (mut trips, mut calls) = (Vec::new(), Vec::new());
    for run in 0..runs {
        for (secs, figures) in [("5", &mut on), ("0", &mut off)] {
            let i = Instance::run(state.path(), &format!("idle-{secs}-{run}"), image, secs);
            let (cpu, samples) = i.idle_cpu(window);
            eprintln!(
                "bench: run {}/{runs}: sampling {secs} s: QEMU {cpu:.2}% of a core, {samples} samples",
                run + 1
            );
            figures.push(cpu);
            if secs != "0" {
                assert!(samples > 0, "the monitor sampled nothing");
                taken.push(samples as f64);
                if trips.is_empty() {
                    (trips, calls) = i.round_trips();
                }
            }
            i.remove();
        }
    }
    let overhead = median(&on) - median(&off);
    let trip_ms = median(&trips) * 1000.0;
    let call_ms = median(&calls) * 1000.0;
    let result = json!({
        "benchmark": "stats",
        "command": "cargo bench -p unibeam-e2e --bench stats",
        "date": utc_now(),
        "window_s": window.as_secs(),
        "runs": runs,
        "qemu_cpu_pct_sampling_5s": on,
        "qemu_cpu_pct_sampling_off": off,
        "qemu_cpu_pct_sampling_5s_median": median(&on),
        "qemu_cpu_pct_sampling_off_median": median(&off),
        "sampling_overhead_pct_of_one_core": overhead,
        "samples_per_window": taken,
        "rpc_round_trips": ROUND_TRIPS,
        "rpc_round_trip_median_ms": trip_ms,
        "single_call_round_trip_median_ms": call_ms,
    });
    write_result(&root, "stats", &result);
    let section = format!(
        "## Metrics: sampling cost and rpc round trip\n\n\
         Measured by `cargo bench -p unibeam-e2e --bench stats` on {}. An idle detached hello, left {} s after its node first \
         answers, then measured for {} s, {runs} runs each way, alternating: QEMU's host CPU time \
         (utime + stime) is {:.2}% of one core with the monitor sampling every 5 s and {:.2}% with \
         sampling off (`UNIBEAM_SAMPLE_SECS=0`), medians; sampling costs {:+.2} points of one core \
         (the limit is 2). Evaluating `1` on the node over one connection (erl_scan, erl_parse, \
         erl_eval: three calls) takes {:.2} ms, and one call (`erlang:node()`) {:.2} ms (medians \
         of {ROUND_TRIPS}). Raw figures: `bench/results/stats.json`.\n",
        result["date"].as_str().unwrap_or(""),
        SETTLE.as_secs(),
        window.as_secs(),
        median(&on),
        median(&off),
        overhead,
        trip_ms,
        call_ms,
    );
    println!("{section}");
    update_section(&root, "stats", &section);
}
