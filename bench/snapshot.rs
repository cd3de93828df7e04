//! `make bench`, snapshot part, all in one run so the ratios hold:
//! - a cold `run -d` of hello to its first HTTP 200 (the baseline);
//! - `run -d --snapshot` warm (a saved state is loaded) to the first 200;
//! - `suspend` of a running hello, and `start` (resume) to the first 200;
//! - hello's saved state on disk;
//! - `up` of 1 and of 8 nodes with `snapshot = true`, warm, to a full mesh.
//!
//! Writes bench/results/snapshot.json and the snapshot section of
//! docs/benchmarks.md.

use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use unibeam_e2e::bench::*;
use unibeam_e2e::cluster::Cluster;
use unibeam_e2e::*;

const RUNS: usize = 5;
const CLUSTER_RUNS: usize = 3;
const SIZES: [u16; 2] = [1, 8];

/// One state directory and snapshot cache for the hello measurements.
struct Bench {
    /// Its commands run with `XDG_CACHE_HOME` = `cache`.
    state: StateDir,
    cache: tempfile::TempDir,
    image: PathBuf,
    cookie: PathBuf,
}

impl Bench {
    fn new(image: PathBuf, cookie: PathBuf) -> Bench {
        let (state, cache) = StateDir::with_own_cache();
        Bench {
            state,
            cache,
            image,
            cookie,
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        self.state.ok(args)
    }

    /// `run -d` with `flags`, timed to the first HTTP 200 on `port`.
    fn run_to_http(&self, name: &str, port: u16, flags: &[&str]) -> f64 {
        let publish = format!("{port}:8080");
        let mut args = vec!["run", "-d", "--name", name, "-p", &publish];
        args.extend(["--cookie-file", self.cookie.to_str().unwrap()]);
        args.extend(flags);
        args.push(self.image.to_str().unwrap());
        let start = Instant::now();
        self.ok(&args);
        wait_200(port, start)
    }

    fn remove(&self, name: &str) {
        self.ok(&["stop", name]);
        self.ok(&["rm", name]);
    }

    fn logs(&self, name: &str) -> String {
        self.ok(&["logs", name])
    }
}

/// Seconds from `start` to the first HTTP 200 on `port`.
fn wait_200(port: u16, start: Instant) -> f64 {
    while http_get(port).is_none_or(|(code, _)| code != 200) {
        assert!(start.elapsed() < BOOT_TIMEOUT, "no HTTP 200 on port {port}");
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed().as_secs_f64()
}

fn wait_for_log(b: &Bench, name: &str, needle: &str) {
    let start = Instant::now();
    while !b.logs(name).contains(needle) {
        assert!(start.elapsed() < BOOT_TIMEOUT, "{name} never logged {needle:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// The host memory the entry's uncompressed RAM copy takes in tmpfs
/// (unibeam-vmm ramfile.rs), which every warm start maps copy-on-write.
fn ram_copy_bytes(entry: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(entry.join("snapshot.json")).unwrap()).unwrap();
    let copy = meta["ram"]["copy"]
        .as_str()
        .expect("the entry keeps its RAM as a file");
    let uid = fs::metadata(entry).unwrap().uid();
    let path = Path::new(&format!("/dev/shm/unibeam-{uid}")).join(copy);
    fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .blocks()
        * 512
}

/// The warm start's state: boots cold once and saves; returns the size
/// of the saved state on disk and of its RAM copy in host memory.
fn prime_warm(b: &Bench, port: u16) -> (u64, u64) {
    b.run_to_http("warm", port, &["--snapshot"]);
    wait_for_log(b, "warm", "snapshot saved");
    b.remove("warm");
    let entries: Vec<PathBuf> = fs::read_dir(b.cache.path().join("unibeam/snapshots"))
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    (dir_bytes(&entries[0]), ram_copy_bytes(&entries[0]))
}

struct HelloFigures {
    cold: Vec<f64>,
    warm: Vec<f64>,
    suspend: Vec<f64>,
    resume: Vec<f64>,
    snapshot_bytes: u64,
    ram_copy_bytes: u64,
    suspended_bytes: u64,
}

fn hello_figures(b: &Bench) -> HelloFigures {
    let (cold_port, warm_port, sus_port) = (free_port(), free_port(), free_port());
    // Warm-up: the boot files are prepared once, outside the timings.
    b.run_to_http("cold", cold_port, &[]);
    b.remove("cold");
    let (snapshot_bytes, ram_copy_bytes) = prime_warm(b, warm_port);
    b.run_to_http("sus", sus_port, &[]);
    let mut f = HelloFigures {
        cold: Vec::new(),
        warm: Vec::new(),
        suspend: Vec::new(),
        resume: Vec::new(),
        snapshot_bytes,
        ram_copy_bytes,
        suspended_bytes: 0,
    };
    for run in 1..=RUNS {
        f.cold.push(b.run_to_http("cold", cold_port, &[]));
        b.remove("cold");
        f.warm.push(b.run_to_http("warm", warm_port, &["--snapshot"]));
        let log = b.logs("warm");
        assert!(log.contains("unibeam-init: restored"), "not a warm start:\n{log}");
        b.remove("warm");
        let (_, secs) = timed(|| b.ok(&["suspend", "sus"]));
        f.suspend.push(secs);
        f.suspended_bytes = dir_bytes(&b.state.path().join("unibeam/instances/sus/suspended"));
        let start = Instant::now();
        b.ok(&["start", "sus"]);
        f.resume.push(wait_200(sus_port, start));
        eprintln!(
            "bench: run {run}/{RUNS}: cold {:.2} s, warm {:.3} s, suspend {:.2} s, resume {:.3} s",
            f.cold[run - 1],
            f.warm[run - 1],
            f.suspend[run - 1],
            f.resume[run - 1]
        );
    }
    b.remove("sus");
    f
}

/// The host's busy CPU time so far, in seconds (all cores, from
/// /proc/stat: everything but idle and iowait).
fn busy_cpu_s() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap())
        .collect();
    let (idle, iowait) = (fields[3], fields[4]);
    // USER_HZ is 100 on Linux for every architecture unibeam runs on.
    (fields.iter().sum::<f64>() - idle - iowait) / 100.0
}

/// Seconds from `up` to a full mesh, with every member restored, and the
/// host CPU seconds that took.
fn warm_up(c: &Cluster) -> (f64, f64) {
    let cpu = busy_cpu_s();
    let took = c.up().as_secs_f64() + c.wait_meshed(Duration::from_secs(600)).as_secs_f64();
    let cpu = busy_cpu_s() - cpu;
    for i in 1..=c.replicas {
        let log = c.logs(i);
        let said: Vec<&str> = log.lines().filter(|l| l.starts_with("unibeam:")).collect();
        assert!(
            log.contains("unibeam-init: restored"),
            "member {i} booted cold: {said:#?}"
        );
    }
    assert!(c.down().status.success());
    (took, cpu)
}

/// Brings a snapshot cluster of `n` up once (cold, saving each member).
fn primed_cluster(n: u16) -> Cluster {
    let c = Cluster::with_service_lines(&format!("snap{n}"), n, 10, "snapshot = true\n");
    c.up();
    c.wait_meshed(Duration::from_secs(600));
    for i in 1..=n {
        let start = Instant::now();
        while !c.logs(i).contains("snapshot saved") {
            assert!(start.elapsed() < BOOT_TIMEOUT, "member {i} saved no snapshot");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    assert!(c.down().status.success());
    c
}

/// Per cluster size: the warm `up` times, and the host CPU seconds each
/// took.
struct UpFigures {
    times: Vec<Vec<f64>>,
    cpu: Vec<Vec<f64>>,
}

fn cluster_figures() -> UpFigures {
    let clusters: Vec<Cluster> = SIZES.iter().map(|n| primed_cluster(*n)).collect();
    let mut times = vec![Vec::new(); SIZES.len()];
    let mut cpu = vec![Vec::new(); SIZES.len()];
    for run in 1..=CLUSTER_RUNS {
        let mut line = format!("bench: warm up, run {run}/{CLUSTER_RUNS}:");
        for (i, c) in clusters.iter().enumerate() {
            let (t, used) = warm_up(c);
            line.push_str(&format!(" {} nodes {t:.2} s ({used:.2} CPU s)", c.replicas));
            times[i].push(t);
            cpu[i].push(used);
        }
        eprintln!("{line}");
    }
    UpFigures { times, cpu }
}

fn main() {
    let root = workspace_root();
    let work = root.join("bench/work");
    fs::create_dir_all(&work).unwrap();
    let image = build_image(&hello_release(), &work.join("hello.unibeam"));
    let cookie = work.join("snapshot-bench.cookie");
    fs::write(&cookie, "snapshotbenchcookie\n").unwrap();
    fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let b = Bench::new(image, cookie);
    let h = hello_figures(&b);
    let snapshots_before = list_snapshots();
    let up = cluster_figures();
    remove_new_snapshots(&snapshots_before);
    report(&root, &h, &up);
}

/// The user's snapshot cache, where `up` (with the default cache) saves.
fn user_snapshots() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    cache.join("unibeam/snapshots")
}

fn list_snapshots() -> Vec<PathBuf> {
    fs::read_dir(user_snapshots())
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default()
}

/// The cluster runs' saved states are the bench's own litter.
fn remove_new_snapshots(before: &[PathBuf]) {
    for p in list_snapshots()
        .into_iter()
        .filter(|p| !before.contains(p) && p.is_dir())
    {
        let _ = fs::remove_dir_all(p);
    }
}

fn report(root: &Path, h: &HelloFigures, figures: &UpFigures) {
    let up = &figures.times;
    let cpu1 = median(&figures.cpu[0]);
    let cpu8 = median(&figures.cpu[1]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let cold = median(&h.cold);
    let warm = median(&h.warm);
    let up1 = median(&up[0]);
    let up8 = median(&up[1]);
    let result = json!({
        "benchmark": "snapshot",
        "command": "make bench",
        "date": utc_now(),
        "accelerator": "tcg",
        "runs": RUNS,
        "release": "examples/hello",
        "cold_run_to_http_s": {"samples": h.cold, "median": cold},
        "warm_run_snapshot_to_http_s": {"samples": h.warm, "median": warm},
        "warm_over_cold": warm / cold,
        "suspend_s": {"samples": h.suspend, "median": median(&h.suspend)},
        "resume_to_http_s": {"samples": h.resume, "median": median(&h.resume)},
        "snapshot_bytes": h.snapshot_bytes,
        "ram_copy_bytes": h.ram_copy_bytes,
        "suspended_bytes": h.suspended_bytes,
        "warm_up_to_meshed_s": {
            "runs": CLUSTER_RUNS,
            "1_node": {"samples": up[0], "median": up1},
            "8_nodes": {"samples": up[1], "median": up8},
            "8_over_1": up8 / up1,
            "host_cpu_s": {"1_node": figures.cpu[0], "8_nodes": figures.cpu[1]},
            "host_cores": cores,
            "8_node_floor_s": cpu8 / cores,
        },
    });
    write_result(root, "snapshot", &result);
    let list = |s: &[f64]| s.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", ");
    let section = format!(
        "## Snapshots: suspend, resume and warm starts\n\n\
         Measured by `make bench` (bench/snapshot.rs) on {}, QEMU TCG, {RUNS} runs, interleaved, \
         hello with its default 128 MiB, all in one run. Times are from the command's start to the \
         first HTTP 200 on the published port. Raw figures: `bench/results/snapshot.json`.\n\n\
         | what | median | samples (s) |\n|---|---|---|\n\
         | cold `run -d` (baseline) | {cold:.3} s | {} |\n\
         | warm `run -d --snapshot` | {warm:.3} s ({:.2}× cold) | {} |\n\
         | `suspend` | {:.3} s | {} |\n\
         | `start` of a suspended instance (resume) | {:.3} s | {} |\n\n\
         hello's saved state: {} on disk (`run --snapshot`'s cache entry), {} for a suspended instance. \
         While the entry is in use, its uncompressed RAM copy takes {} of host memory in tmpfs, \
         mapped copy-on-write by every instance started from it.\n\n\
         `up` with `snapshot = true`, warm (every member restored), to a full mesh: \
         1 node {up1:.2} s, 8 nodes {up8:.2} s, **{:.2}×** ({CLUSTER_RUNS} runs each: {} / {}). \
         The host's busy CPU time for one warm `up` (medians): 1 node {cpu1:.2} s, 8 nodes {cpu8:.2} s. \
         On these {cores} cores, 8 nodes cannot reach a full mesh in less than {:.2} s, \
         {:.2}× one node's time, however well they overlap.\n",
        result["date"].as_str().unwrap_or(""),
        list(&h.cold),
        warm / cold,
        list(&h.warm),
        median(&h.suspend),
        list(&h.suspend),
        median(&h.resume),
        list(&h.resume),
        mb(h.snapshot_bytes),
        mb(h.suspended_bytes),
        mb(h.ram_copy_bytes),
        up8 / up1,
        list(&up[0]),
        list(&up[1]),
        cpu8 / cores,
        cpu8 / cores / up1,
    );
    println!("{section}");
    update_section(root, "snapshot", &section);
}
