//! `make bench`, cluster part: from `unibeam up` to a fully meshed cluster
//! (every node's HTTP lists all the others) for 1, 3 and 8 replicas of
//! examples/cluster, interleaved in the same run. Writes
//! bench/results/cluster.json and the cluster section of docs/benchmarks.md.

use serde_json::json;
use std::time::{Duration, Instant};
use unibeam_e2e::bench::*;
use unibeam_e2e::cluster::Cluster;
use unibeam_e2e::*;

const RUNS: usize = 3;
const SIZES: [u16; 3] = [1, 3, 8];

/// Seconds from `unibeam up` to every node answering with all its peers.
fn up_to_meshed(replicas: u16, run: usize) -> f64 {
    let c = Cluster::new(&format!("bench{replicas}-{run}"), replicas, 10);
    let start = Instant::now();
    c.up();
    c.wait_meshed(Duration::from_secs(600));
    let took = start.elapsed().as_secs_f64();
    assert!(c.down().status.success());
    took
}

fn main() {
    let root = workspace_root();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); SIZES.len()];
    // The image is built once, outside the timings.
    up_to_meshed(1, 0);
    for run in 1..=RUNS {
        let mut line = format!("bench: run {run}/{RUNS}:");
        for (n, all) in SIZES.iter().zip(&mut samples) {
            let t = up_to_meshed(*n, run);
            line.push_str(&format!(" {n} nodes {t:.2} s"));
            all.push(t);
        }
        eprintln!("{line}");
    }
    let by_size: serde_json::Map<String, serde_json::Value> = SIZES
        .iter()
        .zip(&samples)
        .map(|(n, s)| {
            (
                format!("{n}_nodes"),
                json!({"samples_s": s, "median_s": median(s)}),
            )
        })
        .collect();
    let result = json!({
        "benchmark": "cluster",
        "command": "make bench",
        "date": utc_now(),
        "accelerator": "tcg",
        "runs": RUNS,
        "release": "examples/cluster",
        "up_to_fully_meshed": by_size,
    });
    write_result(&root, "cluster", &result);
    let rows: String = SIZES
        .iter()
        .zip(&samples)
        .map(|(n, s)| {
            let list: Vec<String> = s.iter().map(|x| format!("{x:.2}")).collect();
            format!("| {n} | {:.2} s | {} |\n", median(s), list.join(", "))
        })
        .collect();
    let section = format!(
        "## Clusters: `unibeam up` to a fully meshed cluster\n\n\
         Measured by `make bench` (bench/cluster.rs) on {}, QEMU TCG, {RUNS} runs, sizes interleaved. \
         \"Meshed\" means every node's HTTP endpoint lists all the others in `nodes()`; \
         1 node is one VM's boot-to-ready through the same path. The image build is outside the timings. \
         Raw figures: `bench/results/cluster.json`.\n\n\
         | nodes | median | samples (s) |\n|---|---|---|\n{rows}",
        result["date"].as_str().unwrap_or("")
    );
    println!("{section}");
    update_section(&root, "cluster", &section);
}
