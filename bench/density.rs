//! `make bench-density` (long, so not part of `make bench`): how many
//! detached hello instances (`--memory 64M`) this host holds at once, all
//! answering HTTP, and what each costs the host.
//!
//! First a sweep of TCG's translation-cache size (`-accel tcg,tb-size=`),
//! one VM at a time, settings interleaved: QEMU's RSS once HTTP answers,
//! `run` → first HTTP 200, and the VM's CPU once idle. A wrapper on PATH
//! rewrites unibeam's `-accel` value, so the sweep runs the real CLI.
//!
//! Then the fleet: instances start in batches of BATCH, each batch waited
//! for until it all answers, until TARGET answer, a batch does not all
//! answer within BATCH_TIMEOUT, an earlier instance stops answering, or the
//! next batch could push the host's available memory under MIN_AVAILABLE
//! (there is no swap here: the OOM killer would pick its own victim). Host
//! KSM is switched on when this process may (root), and restored after.
//! Every instance is removed at the end, on a panic too (Drop guards).
//!
//! Writes bench/results/density.json and the density section of
//! docs/benchmarks.md. UNIBEAM_DENSITY_TARGET, UNIBEAM_DENSITY_SWEEP_ROUNDS
//! (0: no sweep) and UNIBEAM_DENSITY_KSM=off change the run; the figures
//! say what they were.

use serde_json::{json, Value};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use unibeam_e2e::bench::*;
use unibeam_e2e::*;
use unibeam_vmm::qemu::{find_qemu, TCG_TB_SIZE_MIB};

#[path = "density_host.rs"]
mod host;
use host::*;

const TARGET: usize = 200;
const BATCH: usize = 10;
const GUEST_MEMORY: &str = "64M";
const GUEST_BYTES: u64 = 64 << 20;
/// A whole batch boots on 2 shared cores: 10 TCG boots take about a minute.
const BATCH_TIMEOUT: Duration = Duration::from_secs(300);
/// Where the ramp stops, with room left for the host's other work.
const MIN_AVAILABLE: u64 = 2 << 30;
/// What a new instance may take before KSM merges any of it (QEMU about
/// 150 MB, its monitor a few), erring high: a batch starts only if this
/// much per instance is available above MIN_AVAILABLE.
const FRESH_VM_BYTES: u64 = 200_000_000;
/// After the last answer, for the boots' tails (and the monitors' first
/// samples) to pass before idleness is measured.
const SETTLE: Duration = Duration::from_secs(30);
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// How long KSM may take to stop finding pages to merge.
const KSM_SETTLE_LIMIT: Duration = Duration::from_secs(300);
/// Pages ksmd scans per wake-up (every 20 ms). The kernel's 100 would take
/// about 10 min for one pass over 200 guests' 12.8 GB.
const KSM_PAGES_TO_SCAN: &str = "1000";
/// tb-size settings swept: "default" is QEMU's own (1 GiB).
const SWEEP: [&str; 5] = ["default", "64", "32", "16", "8"];
/// How long a sweep sample waits after HTTP answers before its CPU window.
const SWEEP_SETTLE: Duration = Duration::from_secs(5);
/// One poll for the first answer; longer would hide boot time (see
/// `Vm::wait_http_ok`).
const POLL: Duration = Duration::from_millis(500);
/// A fleet check: a busy host may be slow, an answering VM is not silent.
const CHECK: Duration = Duration::from_secs(3);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `GET /` on 127.0.0.1:`port` answers 200 within `timeout`.
fn answers(port: u16, timeout: Duration) -> bool {
    let agent = ureq::AgentBuilder::new().timeout(timeout).build();
    matches!(agent.get(&format!("http://127.0.0.1:{port}/")).call(), Ok(r) if r.status() == 200)
}

/// Detached instances in their own XDG_STATE_HOME, removed when dropped.
struct Fleet {
    state: tempfile::TempDir,
    image: PathBuf,
    /// Extra environment for `unibeam`: the sweep's wrapper on PATH and
    /// its setting, which the monitor and QEMU inherit.
    env: Vec<(&'static str, OsString)>,
    members: Vec<(String, u16)>,
}

impl Fleet {
    fn new(image: &Path, env: Vec<(&'static str, OsString)>) -> Fleet {
        Fleet {
            state: tempfile::tempdir().unwrap(),
            image: image.to_path_buf(),
            env,
            members: Vec::new(),
        }
    }

    fn unibeam(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(unibeam());
        cmd.args(args).env("XDG_STATE_HOME", self.state.path());
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd
    }

    /// `unibeam run -d --memory 64M -p PORT:8080 IMAGE` plus `extra`.
    fn start(&mut self, name: &str, extra: &[&str]) -> u16 {
        let port = free_port();
        let publish = format!("{port}:8080");
        let image = self.image.to_str().unwrap().to_string();
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--memory",
            GUEST_MEMORY,
            "-p",
            &publish,
        ];
        args.extend_from_slice(extra);
        args.push(&image);
        let output = self
            .unibeam(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "unibeam run -d {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.members.push((name.to_string(), port));
        port
    }

    /// `name`'s instance.json, or null if it does not read.
    fn record(&self, name: &str) -> Value {
        let path = self
            .state
            .path()
            .join("unibeam/instances")
            .join(name)
            .join("instance.json");
        fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// The (QEMU, monitor) pids that `name`'s instance.json records.
    fn pids(&self, name: &str) -> (Option<u32>, Option<u32>) {
        let record = self.record(name);
        let pid = |key: &str| record[key]["pid"].as_u64().map(|p| p as u32);
        (pid("qemu"), pid("monitor"))
    }

    /// The instance has ended (its boot failed, or the guest stopped).
    fn exited(&self, name: &str) -> bool {
        self.record(name)["state"] == "exited"
    }

    /// The last lines of an instance's console, to say why it did not answer.
    fn console_tail(&self, name: &str) -> String {
        let path = self
            .state
            .path()
            .join("unibeam/instances")
            .join(name)
            .join("console.log");
        let text = fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(6)..].join("\n")
    }

    /// Every QEMU and monitor process of the fleet.
    fn processes(&self) -> Vec<u32> {
        self.members
            .iter()
            .flat_map(|(name, _)| {
                let (qemu, monitor) = self.pids(name);
                qemu.into_iter().chain(monitor)
            })
            .collect()
    }

    /// Members that do not answer, each given a second chance.
    fn silent(&self) -> Vec<u16> {
        let once: Vec<u16> = self
            .members
            .iter()
            .map(|m| m.1)
            .filter(|p| !answers(*p, CHECK))
            .collect();
        once.into_iter().filter(|p| !answers(*p, CHECK)).collect()
    }

    fn remove_all(&mut self) {
        // `rm -f` kills QEMU and waits for little; 20 at a time keeps the
        // process table small.
        for chunk in self.members.chunks(20) {
            let children: Vec<Child> = chunk
                .iter()
                .filter_map(|(name, _)| {
                    self.unibeam(&["rm", "-f", name])
                        .stderr(Stdio::null())
                        .spawn()
                        .ok()
                })
                .collect();
            for mut child in children {
                let _ = child.wait();
            }
        }
        self.members.clear();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// A `qemu-system-x86_64` that runs the real one with the translation
/// cache named in UNIBEAM_BENCH_TB ("default": QEMU's own). A shell script
/// because QEMU is exec'd by unibeam's monitor, out of this process' reach.
fn tb_wrapper(dir: &Path) -> OsString {
    let qemu = find_qemu().expect("QEMU installed");
    let script = format!(
        "#!/bin/sh\n\
         for a in \"$@\"; do\n  shift\n  case \"$a\" in\n    tcg|tcg,tb-size=*)\n      \
         if [ \"$UNIBEAM_BENCH_TB\" = default ]; then a=tcg; else a=\"tcg,tb-size=$UNIBEAM_BENCH_TB\"; fi;;\n  \
         esac\n  set -- \"$@\" \"$a\"\ndone\nexec '{}' \"$@\"\n",
        qemu.display()
    );
    let path = dir.join("qemu-system-x86_64");
    fs::write(&path, script).unwrap();
    let status = Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    assert!(status.success());
    let mut search = OsString::from(dir);
    search.push(":");
    search.push(std::env::var_os("PATH").unwrap_or_default());
    search
}

/// One sweep sample: (run → first 200 s, QEMU RSS bytes then, idle CPU % of one core).
fn sweep_sample(fleet: &mut Fleet, name: &str) -> (f64, u64, f64) {
    let start = Instant::now();
    let port = fleet.start(name, &["--accel", "tcg"]);
    while !answers(port, POLL) {
        if start.elapsed() > BOOT_TIMEOUT {
            let console = fleet
                .state
                .path()
                .join("unibeam/instances")
                .join(name)
                .join("console.log");
            panic!(
                "{name} did not answer: {}",
                fs::read_to_string(console).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let boot = start.elapsed().as_secs_f64();
    let qemu = fleet.pids(name).0.expect("QEMU pid recorded");
    let rss = proc_kb(qemu, "status", "VmRSS:");
    std::thread::sleep(SWEEP_SETTLE);
    let (cpu, _) = cpu_over(&[qemu], IDLE_WINDOW);
    fleet.remove_all();
    (boot, rss, cpu * host_cpus() as f64)
}

fn sweep(image: &Path, rounds: usize) -> Vec<Value> {
    let wrapper = tempfile::tempdir().unwrap();
    let path = tb_wrapper(wrapper.path());
    let mut samples: Vec<Vec<(f64, u64, f64)>> = vec![Vec::new(); SWEEP.len()];
    for round in 0..rounds {
        for (i, tb) in SWEEP.iter().enumerate() {
            let env = vec![("PATH", path.clone()), ("UNIBEAM_BENCH_TB", OsString::from(tb))];
            let mut fleet = Fleet::new(image, env);
            let sample = sweep_sample(&mut fleet, &format!("tb{tb}-{round}"));
            eprintln!(
                "density: tb-size {tb}: boot {:.2} s, RSS {}, idle {:.2}% of a core",
                sample.0,
                mb(sample.1),
                sample.2
            );
            samples[i].push(sample);
        }
    }
    SWEEP
        .iter()
        .zip(samples)
        .map(|(tb, s)| sweep_row(tb, &s))
        .collect()
}

fn previous_sweep(root: &Path) -> (Vec<Value>, String, u64) {
    let old: Value = fs::read_to_string(root.join("bench/results/density.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let date = old["tb_size_sweep_date"].as_str().or(old["date"].as_str());
    let table = old["tb_size_sweep"].as_array().cloned().unwrap_or_default();
    let rounds = old["tb_size_sweep_rounds"].as_u64().unwrap_or(0);
    (table, date.unwrap_or("").to_string(), rounds)
}

fn sweep_row(tb: &str, samples: &[(f64, u64, f64)]) -> Value {
    let boot: Vec<f64> = samples.iter().map(|s| s.0).collect();
    let rss: Vec<f64> = samples.iter().map(|s| s.1 as f64).collect();
    let cpu: Vec<f64> = samples.iter().map(|s| s.2).collect();
    json!({
        "tb_size_mib": tb,
        "boot_s": boot, "boot_median_s": median(&boot),
        "qemu_rss_bytes": rss, "qemu_rss_median_bytes": median(&rss),
        "idle_cpu_pct_of_one_core": cpu, "idle_cpu_median_pct_of_one_core": median(&cpu),
    })
}

/// How the ramp ended.
struct Ramp {
    /// Answering after the last batch that all answered, and seconds until then.
    held: usize,
    all_at: f64,
    reason: String,
    batches: Vec<Value>,
    /// The console's last lines of each instance that did not answer.
    failed: Vec<Value>,
}

fn ramp(fleet: &mut Fleet, target: usize, baseline: u64) -> Ramp {
    let start = Instant::now();
    // UNIBEAM_DENSITY_RAMP_MINUTES bounds a run on a slow or busy host.
    let limit = Duration::from_secs(60 * env_or("UNIBEAM_DENSITY_RAMP_MINUTES", 0) as u64);
    let (mut held, mut all_at, mut batches, mut failed) = (0, 0.0, Vec::new(), Vec::new());
    let reason = loop {
        if held >= target {
            break format!("reached the target of {target}");
        }
        if !limit.is_zero() && start.elapsed() > limit {
            break format!(
                "the time limit of {} min (UNIBEAM_DENSITY_RAMP_MINUTES)",
                limit.as_secs() / 60
            );
        }
        let size = BATCH.min(target - held);
        let available = meminfo("MemAvailable");
        if available < MIN_AVAILABLE + size as u64 * FRESH_VM_BYTES {
            break format!(
                "host memory: {} available, under {} plus {size} × {} for the next batch",
                mb(available),
                mb(MIN_AVAILABLE),
                mb(FRESH_VM_BYTES)
            );
        }
        let batch_start = Instant::now();
        let mut pending: Vec<(String, u16)> = (held..held + size)
            .map(|i| format!("d{i}"))
            .map(|name| (name.clone(), fleet.start(&name, &[])))
            .collect();
        while !pending.is_empty()
            && batch_start.elapsed() < BATCH_TIMEOUT
            && meminfo("MemAvailable") > MIN_AVAILABLE / 2
            && !pending.iter().any(|(name, _)| fleet.exited(name))
        {
            pending.retain(|(_, p)| !answers(*p, POLL));
            std::thread::sleep(Duration::from_millis(200));
        }
        if !pending.is_empty() {
            for (name, _) in &pending {
                let console = fleet.console_tail(name);
                eprintln!("density: {name} did not answer; its console ends:\n{console}");
                failed.push(json!({"name": name, "exited": fleet.exited(name), "console_tail": console}));
            }
            break format!(
                "{} of the batch of {size} did not answer (an instance exited, or {} s passed)",
                pending.len(),
                BATCH_TIMEOUT.as_secs()
            );
        }
        let silent = fleet.silent();
        if !silent.is_empty() {
            break format!("{} earlier instances stopped answering", silent.len());
        }
        held = fleet.members.len();
        all_at = start.elapsed().as_secs_f64();
        let per_vm = host_used().saturating_sub(baseline) / held as u64;
        eprintln!(
            "density: {held} answering after {all_at:.1} s (batch {:.1} s), {} per VM, {} available",
            batch_start.elapsed().as_secs_f64(),
            mb(per_vm),
            mb(meminfo("MemAvailable"))
        );
        batches.push(json!({
            "answering": held, "at_s": all_at, "batch_s": batch_start.elapsed().as_secs_f64(),
            "used_delta_per_vm_bytes": per_vm, "mem_available_bytes": meminfo("MemAvailable"),
        }));
    };
    Ramp {
        held,
        all_at,
        reason,
        batches,
        failed,
    }
}

fn main() {
    let root = workspace_root();
    let work = root.join("bench/work");
    fs::create_dir_all(&work).unwrap();
    let image = build_image(&hello_release(), &work.join("hello.unibeam"));
    let target = env_or("UNIBEAM_DENSITY_TARGET", TARGET);
    let rounds = env_or("UNIBEAM_DENSITY_SWEEP_ROUNDS", 3);
    let (table, sweep_date, rounds) = match rounds {
        // No sweep: the last run's, with its date.
        0 => previous_sweep(&root),
        _ => (sweep(&image, rounds), utc_now(), rounds as u64),
    };

    // Declared first, dropped last: the fleet goes before KSM is restored.
    let ksm = Ksm::enable();
    let ksm_was = (ksm_read("run"), ksm_read("pages_to_scan"));
    let baseline = host_used();
    let mut fleet = Fleet::new(&image, Vec::new());
    let Ramp {
        held,
        all_at,
        reason,
        batches,
        failed,
    } = ramp(&mut fleet, target, baseline);
    eprintln!("density: ramp ended: {reason}");
    std::thread::sleep(SETTLE);
    let ksm_wait = ksm.as_ref().map_or(0.0, Ksm::settle);
    let fleet_size = fleet.members.len();
    let used = host_used().saturating_sub(baseline);
    let procs = fleet.processes();
    let pss: u64 = procs.iter().map(|p| proc_kb(*p, "smaps_rollup", "Pss:")).sum();
    let rss: u64 = procs.iter().map(|p| proc_kb(*p, "status", "VmRSS:")).sum();
    let (fleet_cpu, host_cpu) = cpu_over(&procs, IDLE_WINDOW);
    let answering = fleet_size - fleet.silent().len();
    let accel = accel_in_use(&fleet);
    let sharing = ksm_count("pages_sharing");
    fleet.remove_all();
    drop(ksm);
    std::thread::sleep(Duration::from_secs(5));
    let after = host_used() as i64 - baseline as i64;

    let n = fleet_size.max(1) as u64;
    let result = json!({
        "benchmark": "density",
        "command": "make bench-density",
        "date": utc_now(),
        "host_cpus": host_cpus(),
        "host_mem_total_bytes": meminfo("MemTotal"),
        "guest_memory_bytes": GUEST_BYTES,
        "accel": accel,
        "tb_size_default_mib": TCG_TB_SIZE_MIB,
        "tb_size_sweep": table,
        "tb_size_sweep_rounds": rounds,
        "tb_size_sweep_date": sweep_date,
        "target": target,
        "batch": BATCH,
        "started": fleet_size,
        "answered_after_ramp": held,
        "answering_at_end": answering,
        "time_to_all_answered_s": all_at,
        "stop_reason": reason,
        "batches": batches,
        "did_not_answer": failed,
        "host_used_delta_bytes": used,
        "host_used_delta_per_vm_bytes": used / n,
        "ratio_to_guest_memory": (used / n) as f64 / GUEST_BYTES as f64,
        "fleet_pss_per_vm_bytes": pss / n,
        "fleet_rss_per_vm_bytes": rss / n,
        "host_used_delta_after_cleanup_bytes": after,
        "ksm": {
            "on": ksm_was.0.as_deref() == Some("1"),
            "pages_to_scan": ksm_was.1,
            "pages_sharing": sharing,
            "settle_wait_s": ksm_wait,
        },
        "idle_window_s": IDLE_WINDOW.as_secs(),
        // The monitors sample each VM's metrics; that is most of an idle VM's CPU.
        "monitor_sample_secs": std::env::var("UNIBEAM_SAMPLE_SECS").unwrap_or_else(|_| "5 (default)".into()),
        "idle_fleet_cpu_pct_of_host": fleet_cpu,
        "idle_host_cpu_pct": host_cpu,
    });
    write_result(&root, "density", &result);
    let section = section(&result);
    println!("{section}");
    update_section(&root, "density", &section);
}

/// The `-accel` value of the fleet's first QEMU, as the kernel saw it.
fn accel_in_use(fleet: &Fleet) -> String {
    let pid = fleet.members.first().and_then(|(name, _)| fleet.pids(name).0);
    let cmdline = pid
        .and_then(|p| fs::read(format!("/proc/{p}/cmdline")).ok())
        .unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    args.windows(2)
        .find(|w| w[0] == "-accel")
        .map(|w| w[1].clone())
        .unwrap_or_default()
}

fn sweep_table(result: &Value) -> String {
    let mut table = String::from(
        "| `-accel tcg,tb-size=` (MiB) | QEMU RSS once HTTP answers | run → first HTTP 200 | idle CPU (% of one core) |\n|---|---|---|---|\n",
    );
    for row in result["tb_size_sweep"].as_array().into_iter().flatten() {
        let tb = row["tb_size_mib"].as_str().unwrap_or("");
        let tb = if tb == "default" {
            "QEMU's default (1 GiB)".to_string()
        } else {
            tb.to_string()
        };
        table.push_str(&format!(
            "| {tb} | {} | {:.2} s | {:.2} |\n",
            mb(row["qemu_rss_median_bytes"].as_f64().unwrap_or(0.0) as u64),
            row["boot_median_s"].as_f64().unwrap_or(0.0),
            row["idle_cpu_median_pct_of_one_core"].as_f64().unwrap_or(0.0),
        ));
    }
    table
}

fn section(r: &Value) -> String {
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    let ksm = &r["ksm"];
    let ksm_text = if ksm["on"].as_bool() == Some(true) {
        format!(
            "on (the bench set `run` = 1 and `pages_to_scan` = {}, then waited {:.0} s for merging to level off; {} pages shared at the end)",
            ksm["pages_to_scan"].as_str().unwrap_or("?"),
            ksm["settle_wait_s"].as_f64().unwrap_or(0.0),
            ksm["pages_sharing"]
        )
    } else {
        "off".to_string()
    };
    format!(
        "## Density: idle hello VMs on one host\n\n\
         Measured by `make bench-density` (bench/density.rs) on {date}, {cpus} cores, {mem} of RAM, no swap, shared with other work; `-accel {accel}`. MB here is 10^6 bytes.\n\n\
         **TCG's translation cache.** One hello VM at a time with `--memory 64M`, {rounds} runs of each setting interleaved, medians (measured {sweep_date}). Idle CPU is QEMU's over {win} s, {settle} s after the first answer. unibeam passes `tb-size={tb}`.\n\n{table}\n\
         **The fleet.** Detached hello instances with `--memory 64M` each, started {batch} at a time, each batch waited for until it all answers, towards a target of {target}: **{held} answered at once** ({answering} of {started} still answered at the end); the ramp stopped because of: {reason}. All {held} answered {all_at:.0} s after the first start. \
         Host memory (MemTotal − MemAvailable) grew by {per_vm} per VM: **{ratio:.2}× the guest's memory** (target ≤ 1.5×); the fleet's QEMU and monitor processes account for {pss} per VM (PSS; {rss} RSS). \
         KSM: {ksm_text}. The idle fleet (QEMU and monitor processes, the monitors sampling every {sample} s) used {fleet_cpu:.1}% of the host's {cpus} cores (the whole host: {host_cpu:.1}%), over {win} s. Raw figures: `bench/results/density.json`.\n",
        date = r["date"].as_str().unwrap_or(""),
        cpus = r["host_cpus"],
        mem = mb(r["host_mem_total_bytes"].as_u64().unwrap_or(0)),
        accel = r["accel"].as_str().unwrap_or("?"),
        rounds = r["tb_size_sweep_rounds"],
        sweep_date = r["tb_size_sweep_date"].as_str().unwrap_or(""),
        win = r["idle_window_s"],
        settle = SWEEP_SETTLE.as_secs(),
        tb = r["tb_size_default_mib"],
        table = sweep_table(r),
        batch = r["batch"],
        target = r["target"],
        held = r["answered_after_ramp"],
        answering = r["answering_at_end"],
        started = r["started"],
        reason = r["stop_reason"].as_str().unwrap_or(""),
        all_at = f("time_to_all_answered_s"),
        per_vm = mb(r["host_used_delta_per_vm_bytes"].as_u64().unwrap_or(0)),
        ratio = f("ratio_to_guest_memory"),
        pss = mb(r["fleet_pss_per_vm_bytes"].as_u64().unwrap_or(0)),
        rss = mb(r["fleet_rss_per_vm_bytes"].as_u64().unwrap_or(0)),
        fleet_cpu = f("idle_fleet_cpu_pct_of_host"),
        host_cpu = f("idle_host_cpu_pct"),
        sample = r["monitor_sample_secs"].as_str().unwrap_or("?"),
    )
}
