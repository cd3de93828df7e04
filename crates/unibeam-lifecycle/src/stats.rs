//! Metrics history: what an instance's monitor samples while it runs, and
//! what `unibeam stats` and `ps` read back.
//!
//! Every [`DEFAULT_INTERVAL`] (or `UNIBEAM_SAMPLE_SECS` seconds, as the
//! monitor's environment says; `0` turns sampling off) a thread of the
//! monitor takes the node's figures ([`unibeam_dist::metrics::sample`],
//! over one hidden connection kept open between samples) and QEMU's own
//! CPU time and resident memory from `/proc`, and appends them as one
//! JSON line to `stats.jsonl` in the instance's directory. Only the
//! [`TOP_PROCESSES`] biggest processes by memory are kept, not every
//! process. A sample the node does not answer in time is skipped; the
//! monitor never stops for one.
//!
//! The file is bounded: once it grows past [`BYTE_CAP`], its newer half
//! replaces it whole ([`hostfs::write_atomic`]), which still holds hours of
//! samples at 5 s. A monitor that starts again (`unibeam start`, a host
//! reboot with systemd) appends to what is there. A line cut short by a
//! crash is dropped when the next monitor starts, and skipped by readers
//! until then.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use unibeam_dist::metrics::{self, Sample, SortKey};
use unibeam_dist::Node;
use unibeam_spec::hostfs::{self, PathIo};
use unibeam_vmm::state::{InstanceName, StateError, Status, Store};

/// The instance's metrics history, in its directory.
pub const STATS_FILE: &str = "stats.jsonl";
/// The monitor's environment variable: seconds between samples, 0 for none.
pub const INTERVAL_ENV: &str = "UNIBEAM_SAMPLE_SECS";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// The history's size limit. Over it, the newer half is kept: 4 MiB, at
/// about 2 kB a sample (hello's), is about 3 h at 5 s; an hour takes
/// 1.4 MB.
pub const BYTE_CAP: u64 = 8 << 20;
/// How many processes a sample keeps, the biggest by memory.
pub const TOP_PROCESSES: usize = 10;
/// How long one sample may take the node, each step.
const NODE_TIMEOUT: Duration = Duration::from_secs(4);
/// How much of the file's end `last` reads to find the newest sample.
const TAIL_BYTES: u64 = 64 << 10;
/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, 100 a second on
/// Linux whatever the kernel's own HZ.
const TICKS_PER_SECOND: u64 = 100;

#[derive(Debug, Error)]
pub enum StatsError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("reading the instance's metrics history")]
    Read(#[source] PathIo),
    #[error("writing the instance's metrics history")]
    Write(#[source] PathIo),
    #[error("{INTERVAL_ENV}={0:?}: give whole seconds between samples, or 0 for none")]
    BadInterval(String),
}

/// QEMU's use of the host, from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QemuUsage {
    pub pid: u32,
    /// User plus system CPU time since QEMU started.
    pub cpu_ms: u64,
    /// Resident set size.
    pub rss_bytes: u64,
}

/// One entry of the history.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatSample {
    /// Milliseconds since the epoch.
    pub time_ms: u64,
    /// `None` when QEMU was not running.
    pub qemu: Option<QemuUsage>,
    /// The node's figures, with only the biggest processes; `None` for an
    /// instance without distribution (`run -d --no-dist`).
    pub beam: Option<Sample>,
    /// QEMU's CPU use since the sample before, in % of one core; worked
    /// out when read, not stored.
    #[serde(skip_deserializing)]
    pub qemu_cpu_percent: Option<f64>,
}

impl StatSample {
    /// `erlang:memory(total)`.
    pub fn beam_memory(&self) -> Option<u64> {
        self.beam.as_ref()?.memory.get("total").copied()
    }

    /// The sample as `stats --format json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a sample serialises")
    }

    /// The stored line: the JSON without what is worked out on reading.
    fn to_line(&self) -> String {
        let mut value = self.to_json();
        if let Some(object) = value.as_object_mut() {
            object.remove("qemu_cpu_percent");
        }
        value.to_string() + "\n"
    }

    fn from_line(line: &str) -> Option<StatSample> {
        serde_json::from_str(line).ok()
    }
}

/// QEMU's CPU use between two samples of the same QEMU, in % of one core.
pub fn qemu_cpu_percent(earlier: &StatSample, later: &StatSample) -> Option<f64> {
    let (a, b) = (earlier.qemu?, later.qemu?);
    let wall_ms = later.time_ms.checked_sub(earlier.time_ms).filter(|ms| *ms > 0)?;
    (a.pid == b.pid).then(|| b.cpu_ms.saturating_sub(a.cpu_ms) as f64 * 100.0 / wall_ms as f64)
}

/// The seconds between samples that `value` (the monitor's
/// `UNIBEAM_SAMPLE_SECS`) asks for: `None` for 0, the default when unset.
pub fn parse_interval(value: Option<&str>) -> Result<Option<Duration>, StatsError> {
    let Some(text) = value.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(Some(DEFAULT_INTERVAL));
    };
    match text.parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(secs) if secs <= 86_400 => Ok(Some(Duration::from_secs(secs))),
        _ => Err(StatsError::BadInterval(text.to_string())),
    }
}

/// The interval from this process's environment. A value that is not
/// whole seconds leaves the default: a typo must not stop an instance.
pub fn interval_from_env() -> Option<Duration> {
    let value = std::env::var(INTERVAL_ENV).ok();
    parse_interval(value.as_deref()).unwrap_or(Some(DEFAULT_INTERVAL))
}

pub fn path(store: &Store, name: &InstanceName) -> PathBuf {
    store.dir(name).join(STATS_FILE)
}

/// `name`'s samples taken in the last `since` (all of them with `None`),
/// oldest first. An instance that has none yet has an empty history.
pub fn read(
    store: &Store,
    name: &InstanceName,
    since: Option<Duration>,
) -> Result<Vec<StatSample>, StatsError> {
    store.load(name)?;
    let path = path(store, name);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StatsError::Read(hostfs::at::<PathIo>(&path)(e))),
    };
    // A damaged line, even one that is not UTF-8, costs that line only.
    let mut samples = parse_lines(&String::from_utf8_lossy(&bytes));
    for i in 1..samples.len() {
        samples[i].qemu_cpu_percent = qemu_cpu_percent(&samples[i - 1], &samples[i]);
    }
    if let Some(since) = since {
        let from = now_ms().saturating_sub(u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
        samples.retain(|s| s.time_ms >= from);
    }
    Ok(samples)
}

/// Every whole, readable line; a line a crash cut short is skipped.
fn parse_lines(text: &str) -> Vec<StatSample> {
    text.lines().filter_map(StatSample::from_line).collect()
}

/// `name`'s newest sample, read from the end of its history only: what
/// `ps` shows.
pub fn last(store: &Store, name: &InstanceName) -> Option<StatSample> {
    let mut file = fs::File::open(path(store, name)).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    text.lines().rev().find_map(StatSample::from_line)
}

/// Appends `sample` to the history at `path`; past `cap` bytes, keeps the
/// newer half.
pub fn append(path: &Path, sample: &StatSample, cap: u64) -> Result<(), StatsError> {
    let write_err = |e| StatsError::Write(hostfs::at::<PathIo>(path)(e));
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(write_err)?;
    // One write of a whole line: readers see it all or not at all.
    file.write_all(sample.to_line().as_bytes()).map_err(write_err)?;
    let len = file.metadata().map_err(write_err)?.len();
    drop(file);
    if len > cap {
        let text = fs::read(path).map_err(write_err)?;
        let kept = newer_part(&text, cap / 2);
        hostfs::write_atomic(path, kept).map_err(StatsError::Write)?;
    }
    Ok(())
}

/// The newest whole lines of `text` that fit in `limit` bytes.
fn newer_part(text: &[u8], limit: u64) -> &[u8] {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if text.len() <= limit {
        return text;
    }
    let from = text.len() - limit;
    // Start after the first line break at or after `from`, or at `from`
    // itself when a line break ends the part before it.
    let start = if from > 0 && text[from - 1] == b'\n' {
        from
    } else {
        text[from..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(text.len(), |i| from + i + 1)
    };
    &text[start..]
}

/// Drops a last line that a crash cut short, so appends start on a line
/// of their own.
fn repair(path: &Path) -> Result<(), StatsError> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StatsError::Read(hostfs::at::<PathIo>(path)(e))),
    };
    if text.is_empty() || text.ends_with(b"\n") {
        return Ok(());
    }
    let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    hostfs::write_atomic(path, &text[..whole]).map_err(StatsError::Write)
}

/// Milliseconds since the epoch, as samples' `time_ms` counts them.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// `pid`'s CPU time (user + system) and resident memory, from `/proc`.
pub fn qemu_usage(pid: u32) -> Option<QemuUsage> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from
    // the last ')'. utime and stime are fields 14 and 15 of stat(5).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(QemuUsage {
        pid,
        cpu_ms: ticks * 1000 / TICKS_PER_SECOND,
        rss_bytes: rss_kb * 1024,
    })
}

/// The sampling thread of one monitor; stopped when dropped.
pub struct Sampler {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Samples `name` every `every` until stopped.
    pub fn start(store: &Store, name: &InstanceName, every: Duration) -> Sampler {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (store, name, flag) = (store.clone(), name.clone(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || run(&store, &name, every, &flag));
        Sampler {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The sampling loop. Nothing here fails the monitor: a sample that
/// cannot be taken or written is skipped.
fn run(store: &Store, name: &InstanceName, every: Duration, stop: &(Mutex<bool>, Condvar)) {
    let path = path(store, name);
    let _ = repair(&path);
    let mut node: Option<Node> = None;
    let mut next = Instant::now() + every;
    loop {
        let (lock, wake) = stop;
        let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !*stopped && Instant::now() < next {
            let left = next.saturating_duration_since(Instant::now());
            stopped = wake
                .wait_timeout(stopped, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if *stopped {
            return;
        }
        drop(stopped);
        next = Instant::now() + every;
        if let Some(sample) = take(store, name, &mut node) {
            let _ = append(&path, &sample, BYTE_CAP);
        }
    }
}

/// One sample of a running instance, or `None` to skip this one.
fn take(store: &Store, name: &InstanceName, node: &mut Option<Node>) -> Option<StatSample> {
    let record = store.load(name).ok()?;
    if record.status != Status::Running {
        *node = None;
        return None;
    }
    let qemu = record.qemu.and_then(|q| qemu_usage(q.pid));
    let beam = match record.dist {
        None => None,
        Some(_) => {
            if node.is_none() {
                *node = crate::remote::connect(store, name, NODE_TIMEOUT).ok();
            }
            match metrics::sample(node.as_ref()?) {
                Ok(sample) => Some(compact(sample)),
                Err(_) => {
                    // Connect again next time: QEMU may have restarted.
                    *node = None;
                    return None;
                }
            }
        }
    };
    Some(StatSample {
        time_ms: now_ms(),
        qemu,
        beam,
        qemu_cpu_percent: None,
    })
}

/// `sample` with only its biggest processes.
fn compact(mut sample: Sample) -> Sample {
    let top: Vec<_> = metrics::top(&sample, SortKey::Memory, TOP_PROCESSES)
        .into_iter()
        .cloned()
        .collect();
    sample.processes = top;
    sample
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use unibeam_dist::metrics::ProcessSample;

    fn beam(total: u64, processes: usize) -> Sample {
        Sample {
            node: "hello@hello".into(),
            memory: BTreeMap::from([("total".to_string(), total)]),
            process_count: processes as u64,
            process_limit: 1024,
            port_count: 1,
            port_limit: 1024,
            atom_count: 1,
            atom_limit: 1024,
            ets_count: 1,
            ets_limit: 1024,
            run_queue: 0,
            run_queue_lengths: vec![0],
            reductions: 1,
            io_input: 0,
            io_output: 0,
            runtime_ms: 0,
            wall_ms: 0,
            schedulers: 1,
            processes: (0..processes)
                .map(|i| ProcessSample {
                    pid: format!("<0.{i}.0>"),
                    name: String::new(),
                    memory: i as u64,
                    reductions: 0,
                    message_queue_len: 0,
                    current_function: "m:f/0".into(),
                })
                .collect(),
        }
    }

    fn sample(time_ms: u64, cpu_ms: u64) -> StatSample {
        StatSample {
            time_ms,
            qemu: Some(QemuUsage {
                pid: 7,
                cpu_ms,
                rss_bytes: 1 << 20,
            }),
            beam: Some(beam(1000, 3)),
            qemu_cpu_percent: None,
        }
    }

    #[test]
    fn a_sample_survives_its_line() {
        let s = sample(5, 6);
        assert_eq!(StatSample::from_line(s.to_line().trim_end()), Some(s.clone()));
        let bare = StatSample {
            qemu: None,
            beam: None,
            ..s
        };
        assert_eq!(StatSample::from_line(&bare.to_line()), Some(bare));
        assert_eq!(StatSample::from_line("{\"time_ms\": 3, \"qemu\""), None);
    }

    #[test]
    fn cpu_is_per_core_and_only_within_one_qemu() {
        assert_eq!(qemu_cpu_percent(&sample(0, 100), &sample(1000, 150)), Some(5.0));
        let mut other = sample(1000, 150);
        other.qemu.as_mut().unwrap().pid = 8;
        assert_eq!(qemu_cpu_percent(&sample(0, 100), &other), None);
        assert_eq!(qemu_cpu_percent(&sample(0, 100), &sample(0, 100)), None);
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval(None).unwrap(), Some(DEFAULT_INTERVAL));
        assert_eq!(parse_interval(Some("0")).unwrap(), None);
        assert_eq!(parse_interval(Some(" 2 ")).unwrap(), Some(Duration::from_secs(2)));
        assert!(parse_interval(Some("5s")).is_err());
        assert!(parse_interval(Some("-1")).is_err());
    }

    #[test]
    fn only_the_biggest_processes_are_kept() {
        let kept = compact(beam(1, 40));
        assert_eq!(kept.processes.len(), TOP_PROCESSES);
        assert_eq!(kept.processes[0].memory, 39);
    }

    #[test]
    fn the_history_keeps_its_newer_half_under_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATS_FILE);
        let line = sample(0, 0).to_line().len() as u64;
        let cap = line * 10;
        for t in 0..25 {
            append(&path, &sample(t, t), cap).unwrap();
            assert!(fs::metadata(&path).unwrap().len() <= cap);
        }
        let kept = parse_lines(&fs::read_to_string(&path).unwrap());
        assert!(kept.len() >= 5, "{}", kept.len());
        assert_eq!(kept.last().unwrap().time_ms, 24);
        assert!(kept.windows(2).all(|w| w[0].time_ms + 1 == w[1].time_ms));
    }

    #[test]
    fn a_line_cut_short_is_dropped_and_appends_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATS_FILE);
        append(&path, &sample(1, 0), BYTE_CAP).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"time_ms\": 2, \"qe").unwrap();
        assert_eq!(parse_lines(&fs::read_to_string(&path).unwrap()).len(), 1);
        repair(&path).unwrap();
        append(&path, &sample(3, 0), BYTE_CAP).unwrap();
        let times: Vec<u64> = parse_lines(&fs::read_to_string(&path).unwrap())
            .iter()
            .map(|s| s.time_ms)
            .collect();
        assert_eq!(times, [1, 3]);
    }

    #[test]
    fn a_line_that_is_not_utf8_costs_that_line_only() {
        let (_dir, store, name) = crate::testing::store_with("web", Status::Exited { code: 0 });
        let mut bytes = sample(1, 0).to_line().into_bytes();
        bytes.extend(b"\xff\xfe garbage\n");
        bytes.extend(sample(2, 0).to_line().into_bytes());
        fs::write(path(&store, &name), bytes).unwrap();
        let times: Vec<u64> = read(&store, &name, None)
            .unwrap()
            .iter()
            .map(|s| s.time_ms)
            .collect();
        assert_eq!(times, [1, 2]);
    }

    #[test]
    fn newer_part_starts_on_a_line() {
        assert_eq!(newer_part(b"aa\nbb\ncc\n", 6), b"bb\ncc\n");
        assert_eq!(newer_part(b"aa\nbb\ncc\n", 5), b"cc\n");
        assert_eq!(newer_part(b"aa\n", 10), b"aa\n");
    }

    #[test]
    fn qemu_usage_reads_this_process() {
        let me = qemu_usage(std::process::id()).unwrap();
        assert!(me.rss_bytes > 0);
        assert!(qemu_usage(u32::MAX).is_none());
    }
}
