//! Helpers shared by the `make bench` harnesses: statistics, result files
//! and the sections of docs/benchmarks.md that each harness owns.

use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// Runs `f` and returns its result with the seconds it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed().as_secs_f64())
}

/// UTC date from `date`, to avoid a date crate for one line.
pub fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

pub fn file_size(path: &Path) -> u64 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// The guest timestamp of the first console line containing `needle`:
/// `[    2.598] unibeam-init: started (kernel -> init)` → 2.598
pub fn milestone_stamp(console: &str, needle: &str) -> Option<f64> {
    let line = console.lines().find(|l| l.contains(needle))?;
    line.trim_start()
        .strip_prefix('[')?
        .split(']')
        .next()?
        .trim()
        .parse()
        .ok()
}

pub fn kernel_to_init(console: &str) -> Option<f64> {
    milestone_stamp(console, "unibeam-init: started")
}

/// Writes `bench/results/<name>.json` under the workspace.
pub fn write_result(root: &Path, name: &str, result: &Value) {
    let dir = root.join("bench/results");
    fs::create_dir_all(&dir).unwrap();
    let text = serde_json::to_string_pretty(result).unwrap() + "\n";
    fs::write(dir.join(format!("{name}.json")), text).unwrap();
}

/// Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->`
/// in docs/benchmarks.md, appending the section if the markers are missing.
pub fn update_section(root: &Path, name: &str, body: &str) {
    let path = root.join("docs/benchmarks.md");
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let old = fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let block = format!("{begin}\n{body}{end}");
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &old[..b], &old[e + end.len()..]),
        _ => format!("{}\n\n{block}\n", old.trim_end()),
    };
    fs::write(path, new).unwrap();
}
