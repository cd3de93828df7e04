//! The dashboard bench (`cargo bench -p unibeam-e2e --bench dashboard`, a
//! line of `make bench`): what `unibeam dashboard` costs, and how quick it
//! is, with INSTANCES detached hello instances running (memory default),
//! booted BATCH at a time.
//! - Its own memory: VmRSS and VmHWM (the peak) from /proc/PID/status,
//!   after LOAD_SECS of a user's load (the overview API every second, a
//!   chart SVG every second, an instance's metrics every 5 s, one log
//!   stream (SSE) open), and again at the end; the target is RSS ≤ 30 MB.
//!   /proc/PID/smaps says where it goes (the binary's pages, the heap,
//!   anonymous mappings such as malloc's thread arenas).
//! - `GET /api/instances`: API_CALLS sequential calls after WARM_UP,
//!   median and p90, interleaved with as many `unibeam ps -a --format
//!   json` runs (a process each), the same run's baseline.
//! - Page loads in headless Chromium (bench/page_load.mjs): the overview
//!   to its `load` event and until it lists every instance; the instance
//!   page until its memory chart shows.
//!
//! Writes bench/results/dashboard.json and the dashboard section of
//! docs/benchmarks.md. UNIBEAM_BENCH_LOAD_SECS shortens the load (20 s by
//! default); the figures say what it was.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use unibeam_e2e::bench::*;
use unibeam_e2e::dashboard::Dashboard;
use unibeam_e2e::*;

const INSTANCES: usize = 10;
/// Booted at a time: more TCG boots at once on 2 cores only queue.
const BATCH: usize = 3;
const API_CALLS: usize = 50;
const WARM_UP: usize = 5;
/// The target for the dashboard's RSS, in MB (10^6 bytes).
const RSS_TARGET_MB: f64 = 30.0;
/// Loads of each page in the browser, the first a warm-up left out.
const PAGE_LOADS: usize = 7;
const PAGE_TIMEOUT: Duration = Duration::from_secs(600);
/// The burst after the rest: clients at once, each making as many
/// overview + chart calls in a row.
const BURST_CLIENTS: usize = 16;
const BURST_CALLS: usize = 20;
const CHROMIUM: &str = "/usr/bin/chromium";
const CHARTS: [&str; 5] = [
    "memory.svg",
    "processes.svg",
    "run_queue.svg",
    "cpu.svg",
    "memory-pie.svg",
];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn ms(samples: &[f64]) -> Vec<f64> {
    samples.iter().map(|s| (s * 1e5).round() / 100.0).collect()
}

/// Boots `names` BATCH at a time, each until its node answers rpc.
fn boot(state: &StateDir, names: &[String], image: &Path) {
    for batch in names.chunks(BATCH) {
        for name in batch {
            state.ok(&["run", "-d", "--name", name, image.to_str().unwrap()]);
        }
        for name in batch {
            rpc_when_up(name, "ok", |args| state.unibeam(args));
        }
        eprintln!("bench: {} up", batch.join(", "));
    }
}

/// The dashboard's memory, from /proc/PID/status.
#[derive(Clone, Copy)]
struct Status {
    rss_kb: u64,
    hwm_kb: u64,
    threads: u64,
}

fn try_status(pid: u32) -> Option<Status> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some(Status {
        rss_kb: field("VmRSS:")?,
        hwm_kb: field("VmHWM:")?,
        threads: field("Threads:")?,
    })
}

fn status(pid: u32) -> Status {
    try_status(pid).unwrap_or_else(|| panic!("no VmRSS, VmHWM or Threads in /proc/{pid}/status"))
}

fn status_json(s: Status) -> Value {
    json!({"vm_rss_kb": s.rss_kb, "vm_hwm_kb": s.hwm_kb, "threads": s.threads})
}

fn mb_of(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

/// Where the RSS is, from /proc/PID/smaps: kB by kind of mapping, the
/// anonymous mappings with pages in them, and smaps_rollup's totals.
fn smaps(pid: u32) -> Value {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut anon_regions = 0;
    let mut anon_regions_64m = 0;
    let mut kind = String::new();
    let mut size_kb = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let header = fields
            .first()
            .is_some_and(|f| f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
        if header {
            kind = match fields.get(5) {
                None => "anonymous".into(),
                Some(p) if p.starts_with('/') => {
                    let own = p.rsplit('/').next().is_some_and(|f| f.starts_with("unibeam"));
                    if own { "binary" } else { "libraries" }.into()
                }
                Some(p) => p.trim_matches(|c| c == '[' || c == ']').into(),
            };
        } else if fields.first() == Some(&"Size:") {
            size_kb = fields[1].parse().unwrap_or(0);
        } else if fields.first() == Some(&"Rss:") {
            let rss: u64 = fields[1].parse().unwrap_or(0);
            *by_kind.entry(kind.clone()).or_default() += rss;
            if kind == "anonymous" && rss > 0 {
                anon_regions += 1;
                // glibc's thread arenas reserve 64 MiB each (rw part + guard).
                if size_kb >= 60 * 1024 {
                    anon_regions_64m += 1;
                }
            }
        }
    }
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let rollup: BTreeMap<String, u64> = rollup
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            // The first line is the whole range's header.
            if k.contains(' ') {
                return None;
            }
            Some((k.to_string(), v.split_whitespace().next()?.parse().ok()?))
        })
        .collect();
    json!({
        "rss_kb_by_mapping": by_kind,
        "anonymous_regions_with_pages": anon_regions,
        "anonymous_regions_with_pages_of_60mib_or_more": anon_regions_64m,
        "smaps_rollup_kb": rollup,
    })
}

/// Samples the dashboard's status until stopped: the most threads seen.
struct Watch {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<u64>>,
}

impl Watch {
    fn start(pid: u32) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let mut most = 0;
            while !flag.load(Ordering::Relaxed) {
                let Some(now) = try_status(pid) else { break };
                most = most.max(now.threads);
                thread::sleep(Duration::from_millis(200));
            }
            most
        });
        Watch {
            stop,
            handle: Some(handle),
        }
    }

    fn most_threads(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An open `logs/follow` event stream, read until ended.
struct Follow {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<u8>>>,
}

impl Follow {
    fn open(dashboard: &Dashboard, name: &str) -> Follow {
        let addr = dashboard.base.trim_start_matches("http://").to_string();
        let mut stream = TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "GET /api/instances/{name}/logs/follow HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
             Accept: text/event-stream\r\n\r\n",
            dashboard.token
        )
        .unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let (mut got, mut buf) = (Vec::new(), [0; 16384]);
            while !flag.load(Ordering::Relaxed) {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            got
        });
        Follow {
            stop,
            handle: Some(handle),
        }
    }

    /// Closes it; the events it got.
    fn close(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let got = String::from_utf8_lossy(&self.handle.take().unwrap().join().unwrap()).into_owned();
        assert!(
            got.starts_with("HTTP/1.1 200"),
            "the log stream: {}",
            got.chars().take(300).collect::<String>()
        );
        got.matches("\ndata:").count()
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The overview as the page polls it, with INSTANCES entries.
fn overview(dashboard: &Dashboard) {
    let list = dashboard.json("/api/instances");
    assert_eq!(list.as_array().map(Vec::len), Some(INSTANCES), "{list}");
}

/// A user's load for `secs`: each second the overview and a chart of
/// `name` (the five in turn), every fifth its metrics. The requests made.
fn load(dashboard: &Dashboard, name: &str, secs: u64) -> usize {
    let start = Instant::now();
    let mut requests = 0;
    for tick in 0.. {
        if start.elapsed() >= Duration::from_secs(secs) {
            break;
        }
        let t = Instant::now();
        overview(dashboard);
        let chart = CHARTS[tick % CHARTS.len()];
        let (code, body) = dashboard.call("GET", &format!("/api/instances/{name}/charts/{chart}"), None);
        assert!(code == 200 && body.contains("<svg"), "{chart}: {code} {body}");
        requests += 2;
        if tick % 5 == 0 {
            let samples = dashboard.json(&format!("/api/instances/{name}/metrics"));
            assert!(samples.is_array(), "{samples}");
            requests += 1;
        }
        thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
    }
    requests
}

/// BURST_CLIENTS at once, BURST_CALLS overviews and charts each.
fn burst(dashboard: &Dashboard, name: &str) {
    thread::scope(|s| {
        for client in 0..BURST_CLIENTS {
            s.spawn(move || {
                for call in 0..BURST_CALLS {
                    overview(dashboard);
                    let chart = CHARTS[(client + call) % CHARTS.len()];
                    let (code, body) =
                        dashboard.call("GET", &format!("/api/instances/{name}/charts/{chart}"), None);
                    assert_eq!(code, 200, "{chart}: {body}");
                }
            });
        }
    });
}

/// Seconds per overview from the API and from `ps -a --format json`,
/// API_CALLS each, interleaved, after WARM_UP of each.
fn latencies(dashboard: &Dashboard, state: &StateDir) -> (Vec<f64>, Vec<f64>) {
    let ps = || {
        let out = state.ok(&["ps", "-a", "--format", "json"]);
        let list: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(list.as_array().map(Vec::len), Some(INSTANCES), "{list}");
    };
    for _ in 0..WARM_UP {
        overview(dashboard);
        ps();
    }
    let (mut api, mut cli) = (Vec::new(), Vec::new());
    for _ in 0..API_CALLS {
        api.push(timed(|| overview(dashboard)).1);
        cli.push(timed(ps).1);
    }
    (api, cli)
}

/// node, killed if the bench gives up on it.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn browser_dir() -> PathBuf {
    workspace_root().join("tests/browser")
}

/// bench/page_load.mjs's figures (ms), warm-up left out.
fn page_loads(dashboard: &Dashboard, name: &str) -> Value {
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(
        playwright.is_file() && Path::new(CHROMIUM).is_file(),
        "{} or {CHROMIUM} is missing: run `make tools`",
        playwright.display()
    );
    let mut node = Node(
        Command::new("node")
            .arg(workspace_root().join("bench/page_load.mjs"))
            .env("DASH_URL", &dashboard.url)
            .env("DASH_COUNT", INSTANCES.to_string())
            .env("DASH_INSTANCE", name)
            .env("DASH_LOADS", PAGE_LOADS.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node starts (`make tools` installs it)"),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < PAGE_TIMEOUT,
            "bench/page_load.mjs still running after {PAGE_TIMEOUT:?}"
        );
        thread::sleep(Duration::from_millis(200));
    };
    let mut out = String::new();
    node.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(
        status.success(),
        "bench/page_load.mjs failed ({status}): its message is above"
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("bench/page_load.mjs printed {out:?}: {e}"))
}

fn figures(value: &Value, key: &str) -> Vec<f64> {
    value[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {value}"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn main() {
    let root = workspace_root();
    let work = root.join("bench/work");
    std::fs::create_dir_all(&work).unwrap();
    let image = build_image(&hello_release(), &work.join("hello.unibeam"));
    let load_secs = env_or("UNIBEAM_BENCH_LOAD_SECS", 20);
    // Its drop removes every instance, after the dashboard below stops.
    let state = StateDir::new();
    let names: Vec<String> = (0..INSTANCES).map(|i| format!("b{i}")).collect();
    let (_, boot_s) = timed(|| boot(&state, &names, &image));
    eprintln!("bench: {INSTANCES} instances up after {boot_s:.1} s");

    let dashboard = Dashboard::start(state.path(), &[]);
    let pid = dashboard.pid();
    let watch = Watch::start(pid);
    thread::sleep(Duration::from_secs(1));
    let idle = status(pid);
    let follow = Follow::open(&dashboard, &names[0]);
    let requests = load(&dashboard, &names[0], load_secs);
    let loaded = status(pid);
    let loaded_smaps = smaps(pid);
    eprintln!(
        "bench: dashboard RSS {} idle, {} after {load_secs} s of load ({requests} requests), peak {}, {} threads",
        mb_of(idle.rss_kb),
        mb_of(loaded.rss_kb),
        mb_of(loaded.hwm_kb),
        loaded.threads
    );

    let (api, cli) = latencies(&dashboard, &state);
    let (api_ms, cli_ms) = (median(&api) * 1000.0, median(&cli) * 1000.0);
    let api_p90_ms = percentile(&api, 90.0) * 1000.0;
    eprintln!(
        "bench: overview: API {api_ms:.2} ms (p90 {api_p90_ms:.2}), ps -a --format json {cli_ms:.2} ms"
    );

    let pages = page_loads(&dashboard, &names[0]);
    let end = status(pid);
    let end_smaps = smaps(pid);
    let (_, burst_s) = timed(|| burst(&dashboard, &names[0]));
    let after_burst = status(pid);
    let burst_smaps = smaps(pid);
    eprintln!(
        "bench: dashboard RSS {} after a burst of {BURST_CLIENTS} clients ({burst_s:.1} s), peak {}, {} threads",
        mb_of(after_burst.rss_kb),
        mb_of(after_burst.hwm_kb),
        after_burst.threads
    );
    let events = follow.close();
    let most_threads = watch.most_threads();
    drop(dashboard);

    let rss_mb = mb_of(loaded.rss_kb.max(end.rss_kb));
    let meets = rss_mb <= RSS_TARGET_MB;
    let (o_load, o_rows) = (
        figures(&pages, "overview_load_ms"),
        figures(&pages, "overview_rows_ms"),
    );
    let (i_load, i_chart) = (
        figures(&pages, "instance_load_ms"),
        figures(&pages, "instance_chart_ms"),
    );
    let result = json!({
        "benchmark": "dashboard",
        "command": "cargo bench -p unibeam-e2e --bench dashboard",
        "date": utc_now(),
        "machine": "2 cores, QEMU TCG",
        "instances": INSTANCES,
        "boot_all_s": boot_s,
        "load_s": load_secs,
        "load_requests": requests,
        "log_stream_events": events,
        "memory_idle": status_json(idle),
        "memory_after_load": status_json(loaded),
        "memory_end": status_json(end),
        "burst_clients": BURST_CLIENTS,
        "burst_calls_each": BURST_CALLS * 2,
        "burst_s": burst_s,
        "memory_after_burst": status_json(after_burst),
        "most_threads_seen": most_threads,
        "smaps_after_load": loaded_smaps,
        "smaps_end": end_smaps,
        "smaps_after_burst": burst_smaps,
        "rss_mb": rss_mb,
        "rss_target_mb": RSS_TARGET_MB,
        "rss_meets_target": meets,
        "api_calls": API_CALLS,
        "api_overview_ms": ms(&api),
        "api_overview_median_ms": api_ms,
        "api_overview_p90_ms": api_p90_ms,
        "cli_ps_json_ms": ms(&cli),
        "cli_ps_json_median_ms": cli_ms,
        "api_over_cli_ratio": api_ms / cli_ms,
        "page_loads": pages,
        "overview_load_median_ms": round2(median(&o_load)),
        "overview_all_rows_median_ms": round2(median(&o_rows)),
        "instance_load_median_ms": round2(median(&i_load)),
        "instance_memory_chart_median_ms": round2(median(&i_chart)),
    });
    write_result(&root, "dashboard", &result);
    let section = format!(
        "## Dashboard\n\n\
         Measured by `cargo bench -p unibeam-e2e --bench dashboard` on {} (2 cores, QEMU TCG, shared), with \
         {INSTANCES} detached hello instances running (memory default, booted {BATCH} at a time). \
         MB here is 10^6 bytes.\n\n\
         - **The dashboard's RSS**: {:.1} MB (VmRSS) after {load_secs} s of a user's load ({requests} \
         requests: the overview every second, a chart SVG every second, an instance's metrics every 5 s, \
         one log stream open), {:.1} MB at the end (after the latency runs and {} browser page loads); \
         the peak (VmHWM) {:.1} MB; {:.1} MB idle just after start. Threads: {} idle, {} after the \
         load, {} at the end. \
         Target ≤ {RSS_TARGET_MB:.0} MB: **{}**. Beyond a user's load, a burst of {BURST_CLIENTS} \
         clients at once ({} overviews and charts each) leaves {:.1} MB (peak {:.1} MB, {} threads, mostly tokio's blocking pool).\n\
         - **`GET /api/instances`** (the overview, {INSTANCES} instances): median {api_ms:.2} ms, p90 \
         {api_p90_ms:.2} ms ({API_CALLS} sequential calls after {WARM_UP} warm-up, a connection each), \
         against {cli_ms:.2} ms for `unibeam ps -a --format json` as a process, interleaved in the same \
         run: ratio {:.2}.\n\
         - **Page loads in headless Chromium** (bench/page_load.mjs; a fresh tab each, medians of {}, \
         a warm-up left out): the overview reaches its `load` event in {:.0} ms and lists all \
         {INSTANCES} instances at {:.0} ms; an instance page (`#/instances/b0`) loads in {:.0} ms and \
         shows its memory chart at {:.0} ms (times from navigation start).\n\n\
         Raw figures, with /proc/PID/smaps by mapping: `bench/results/dashboard.json`.\n",
        result["date"].as_str().unwrap_or(""),
        mb_of(loaded.rss_kb),
        mb_of(end.rss_kb),
        PAGE_LOADS * 2,
        mb_of(end.hwm_kb),
        mb_of(idle.rss_kb),
        idle.threads,
        loaded.threads,
        end.threads,
        if meets { "met" } else { "missed" },
        BURST_CALLS * 2,
        mb_of(after_burst.rss_kb),
        mb_of(after_burst.hwm_kb),
        after_burst.threads,
        api_ms / cli_ms,
        PAGE_LOADS - 1,
        median(&o_load),
        median(&o_rows),
        median(&i_load),
        median(&i_chart),
    );
    println!("{section}");
    update_section(&root, "dashboard", &section);
}
