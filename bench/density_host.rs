//! bench/density.rs's view of the host: memory and CPU from /proc, and
//! KSM switched on for the run and restored after. Kept apart to keep
//! density.rs short.

use super::{KSM_PAGES_TO_SCAN, KSM_SETTLE_LIMIT};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// A /proc/meminfo field in bytes.
pub(crate) fn meminfo(key: &str) -> u64 {
    let text = fs::read_to_string("/proc/meminfo").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("/proc/meminfo has no {key}"))
        * 1024
}

pub(crate) fn host_used() -> u64 {
    meminfo("MemTotal") - meminfo("MemAvailable")
}

/// (all ticks, busy ticks) of the host's CPUs from /proc/stat. guest and
/// guest_nice are left out: user already counts them.
pub(crate) fn host_ticks() -> (u64, u64) {
    let text = fs::read_to_string("/proc/stat").unwrap();
    let fields: Vec<u64> = text
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().unwrap())
        .collect();
    let total: u64 = fields.iter().sum();
    (total, total - fields[3] - fields[4])
}

/// utime + stime of a process, in the same ticks as /proc/stat.
pub(crate) fn process_ticks(pid: u32) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which may hold spaces: state is the
    // first, utime the 12th, stime the 13th.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    fields.get(11).zip(fields.get(12)).map_or(0, |(u, s)| u + s)
}

/// A `kB` field of /proc/PID/status or smaps_rollup, in bytes.
pub(crate) fn proc_kb(pid: u32, file: &str, key: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Host KSM switched on for the bench; the previous settings come back
/// when dropped. Pages merged meanwhile stay merged until their VMs go.
pub(crate) struct Ksm {
    pub(crate) saved: Vec<(&'static str, String)>,
}

pub(crate) const KSM_DIR: &str = "/sys/kernel/mm/ksm";

pub(crate) fn ksm_read(file: &str) -> Option<String> {
    fs::read_to_string(Path::new(KSM_DIR).join(file))
        .ok()
        .map(|s| s.trim().to_string())
}

pub(crate) fn ksm_count(file: &str) -> u64 {
    ksm_read(file).and_then(|s| s.parse().ok()).unwrap_or(0)
}

impl Ksm {
    /// None when the host has no KSM, this process may not write it, or
    /// UNIBEAM_DENSITY_KSM=off.
    pub(crate) fn enable() -> Option<Ksm> {
        if std::env::var("UNIBEAM_DENSITY_KSM").is_ok_and(|v| v == "off") {
            return None;
        }
        let mut ksm = Ksm { saved: Vec::new() };
        for (file, value) in [("pages_to_scan", KSM_PAGES_TO_SCAN), ("run", "1")] {
            let old = ksm_read(file)?;
            fs::write(Path::new(KSM_DIR).join(file), value).ok()?;
            ksm.saved.push((file, old));
        }
        Some(ksm)
    }

    /// Waits until pages_sharing grows by under 2% in 15 s; the seconds waited.
    pub(crate) fn settle(&self) -> f64 {
        let start = Instant::now();
        let mut last = ksm_count("pages_sharing");
        while start.elapsed() < KSM_SETTLE_LIMIT {
            std::thread::sleep(Duration::from_secs(15));
            let now = ksm_count("pages_sharing");
            eprintln!("density: KSM pages_sharing {now}");
            if now > 0 && now.saturating_sub(last) * 50 < now {
                break;
            }
            last = now;
        }
        start.elapsed().as_secs_f64()
    }
}

impl Drop for Ksm {
    fn drop(&mut self) {
        for (file, old) in self.saved.iter().rev() {
            let _ = fs::write(Path::new(KSM_DIR).join(file), old);
        }
    }
}

pub(crate) fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Over `window`: (`pids`' CPU, the host's busy CPU), as % of all the host's CPUs.
pub(crate) fn cpu_over(pids: &[u32], window: Duration) -> (f64, f64) {
    let ticks = |pids: &[u32]| pids.iter().map(|p| process_ticks(*p)).sum::<u64>();
    let (total0, busy0, own0) = (host_ticks().0, host_ticks().1, ticks(pids));
    std::thread::sleep(window);
    let ((total1, busy1), own1) = (host_ticks(), ticks(pids));
    let total = (total1 - total0).max(1) as f64;
    (
        100.0 * (own1 - own0) as f64 / total,
        100.0 * (busy1 - busy0) as f64 / total,
    )
}
