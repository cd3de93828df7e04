//! The volumes bench (`cargo bench -p unibeam-e2e --bench volume`, a line
//! of `make bench`): what volumes cost and give.
//! - The specialised kernel's size: it gained block, virtio-blk and ext4
//!   for volumes; the kernel from before them is measured too when the
//!   cache still holds it, else the figure recorded before is quoted.
//! - Boot time of hello (`run` → first HTTP 200) with no volume and with
//!   one attached, interleaved, RUNS each; medians and their ratio.
//! - Inside the guest under TCG, over `rpc`: sequential writes of SEQ_MIB
//!   then one fsync, in MB/s, and the latency of a 4 KiB write + fsync,
//!   median of FSYNCS, each on the volume and on the guest's /tmp (RAM) as
//!   the baseline of the same run.
//!
//! Writes bench/results/volume.json and the volumes section of
//! docs/benchmarks.md. UNIBEAM_BENCH_RUNS shortens it (5 by default).

use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use unibeam_e2e::bench::*;
use unibeam_e2e::*;

const FSYNCS: usize = 200;
/// MiB written sequentially: the guest's /tmp (the baseline) is RAM, so
/// this must fit in the 256M guest beside the BEAM.
const SEQ_MIB: usize = 32;
/// The specialised kernel before volumes, as `make bench` recorded it on
/// 2026-11-28 (bench/results/boot.json, specialised_kernel_bytes).
const KERNEL_BEFORE_VOLUMES_BYTES: u64 = 1_479_680;
/// Its cache entry, `<fragment hash>-<source version>`, on machines that
/// built it.
const KERNEL_BEFORE_VOLUMES_ENTRY: &str = "8f1d24f0dea2";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn unibeam_in(state: &Path, args: &[&str]) -> String {
    let out = Command::new(unibeam())
        .args(args)
        .env("XDG_STATE_HOME", state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Seconds from `run` to hello's first HTTP 200, with `flags`.
fn boot_seconds(state: &Path, image: &str, flags: &[&str]) -> f64 {
    let port = free_port();
    let publish = format!("{port}:8080");
    let mut args = vec![image, "-p", &publish];
    args.extend_from_slice(flags);
    let mut cmd = Command::new(unibeam());
    cmd.arg("run").args(&args).env("XDG_STATE_HOME", state);
    let mut vm = Vm::spawn(cmd);
    let (_, took) = vm.wait_http_ok(port, BOOT_TIMEOUT);
    vm.interrupt();
    assert!(vm.wait(Duration::from_secs(60)).success(), "{}", vm.output());
    took.as_secs_f64()
}

/// The guest's figures in `dir`: MB/s of SEQ_MIB written then synced, and
/// each 4 KiB write + fsync in µs.
fn guest_io(state: &Path, name: &str, dir: &str) -> (f64, Vec<f64>) {
    let seq = format!(
        "B = binary:copy(<<0>>, 1048576), {{T, ok}} = timer:tc(fun() -> \
         {{ok, F}} = file:open(\"{dir}/seq\", [write, raw, binary]), \
         [ok = file:write(F, B) || _ <- lists:seq(1, {SEQ_MIB})], ok = file:sync(F), file:close(F) end), \
         ok = file:delete(\"{dir}/seq\"), T"
    );
    let micros: f64 = unibeam_in(state, &["rpc", name, &seq, "--timeout", "300"])
        .parse()
        .unwrap();
    let mb_s = SEQ_MIB as f64 * 1048576.0 / 1e6 / (micros / 1e6);
    let fsync = format!(
        "{{ok, F}} = file:open(\"{dir}/fsync\", [write, raw, binary]), B = binary:copy(<<1>>, 4096), \
         L = [element(1, timer:tc(fun() -> ok = file:write(F, B), ok = file:sync(F) end)) \
         || _ <- lists:seq(1, {FSYNCS})], file:close(F), ok = file:delete(\"{dir}/fsync\"), L"
    );
    let list = unibeam_in(state, &["rpc", name, &fsync, "--timeout", "300"]);
    let latencies = list
        .trim_matches(|c| c == '[' || c == ']')
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (mb_s, latencies)
}

/// The `io` instance, removed when this goes.
struct Removed<'a>(&'a Path);

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        let _ = Command::new(unibeam())
            .args(["rm", "-f", "io"])
            .env("XDG_STATE_HOME", self.0)
            .output();
    }
}

fn kernel_bytes() -> (u64, Option<u64>) {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cache"))
        .join("unibeam/specialised-kernels");
    let mut now = 0;
    let mut before = None;
    for entry in std::fs::read_dir(&cache).into_iter().flatten().flatten() {
        let bytes = file_size(&entry.path().join("bzImage"));
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(KERNEL_BEFORE_VOLUMES_ENTRY)
        {
            before = Some(bytes);
        }
        let config = std::fs::read_to_string(entry.path().join("config")).unwrap_or_default();
        if config.lines().any(|l| l == "CONFIG_EXT4_FS=y") {
            now = now.max(bytes);
        }
    }
    (now, before)
}

fn main() {
    let root = workspace_root();
    let work = root.join("bench/work");
    std::fs::create_dir_all(&work).unwrap();
    let image = build_image(&hello_release(), &work.join("hello.unibeam"));
    let image = image.to_str().unwrap();
    let state = tempfile::tempdir().unwrap();
    let runs = env_or("UNIBEAM_BENCH_RUNS", 5);

    let (mut plain, mut with_volume) = (Vec::new(), Vec::new());
    for run in 0..runs {
        plain.push(boot_seconds(state.path(), image, &[]));
        with_volume.push(boot_seconds(state.path(), image, &["-v", "bootvol:/data"]));
        eprintln!(
            "bench: run {}/{runs}: {:.2} s plain, {:.2} s with a volume",
            run + 1,
            plain[run],
            with_volume[run]
        );
    }

    unibeam_in(
        state.path(),
        &[
            "run",
            "-d",
            "--name",
            "io",
            "--memory",
            "256M",
            "-v",
            "iovol:/data",
            image,
        ],
    );
    // Removed even when a step below panics, before the state dir goes.
    let io = Removed(state.path());
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while Command::new(unibeam())
        .args(["rpc", "io", "ok"])
        .env("XDG_STATE_HOME", state.path())
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the io instance never answered");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (volume_mb_s, volume_fsync) = guest_io(state.path(), "io", "/data");
    let (tmp_mb_s, tmp_fsync) = guest_io(state.path(), "io", "/tmp");
    drop(io);

    let (kernel_now, kernel_before_cached) = kernel_bytes();
    let kernel_before = kernel_before_cached.unwrap_or(KERNEL_BEFORE_VOLUMES_BYTES);
    let (p, v) = (median(&plain), median(&with_volume));
    let (fsync_ms, tmp_fsync_ms) = (median(&volume_fsync) / 1000.0, median(&tmp_fsync) / 1000.0);
    let result = json!({
        "benchmark": "volume",
        "command": "cargo bench -p unibeam-e2e --bench volume",
        "date": utc_now(),
        "runs": runs,
        "kernel_bytes": kernel_now,
        "kernel_before_volumes_bytes": kernel_before,
        "kernel_before_volumes_measured": kernel_before_cached.is_some(),
        "kernel_added_bytes": kernel_now as i64 - kernel_before as i64,
        "boot_to_http_s_plain": plain,
        "boot_to_http_s_one_volume": with_volume,
        "boot_to_http_s_plain_median": p,
        "boot_to_http_s_one_volume_median": v,
        "boot_one_volume_ratio": v / p,
        "seq_write_mb_s_volume": volume_mb_s,
        "seq_write_mb_s_guest_tmp": tmp_mb_s,
        "fsync_4k_median_ms_volume": fsync_ms,
        "fsync_4k_median_ms_guest_tmp": tmp_fsync_ms,
        "fsyncs": FSYNCS,
    });
    write_result(&root, "volume", &result);
    let section = format!(
        "## Volumes\n\n\
         Measured by `cargo bench -p unibeam-e2e --bench volume` on {} (TCG). The specialised kernel \
         with block, virtio-blk and ext4 is {} bytes, {:+} bytes against the kernel before volumes \
         ({} bytes{}). hello's `run` → first HTTP 200 takes {p:.2} s with no volume and {v:.2} s with \
         one attached (medians of {runs}, interleaved; ratio {:.2}): the disk is checked by `e2fsck -p` \
         on the host and mounted by init before the BEAM starts. Inside a 256M guest, {SEQ_MIB} MiB \
         written sequentially then synced: {volume_mb_s:.1} MB/s to the volume against {tmp_mb_s:.1} MB/s to \
         the guest's /tmp (RAM). A 4 KiB write + `file:sync` (fsync, which QEMU's cache=writeback \
         turns into an fdatasync on the host): {fsync_ms:.2} ms on the volume against {tmp_fsync_ms:.3} \
         ms on /tmp, medians of {FSYNCS}. Raw figures: `bench/results/volume.json`.\n",
        result["date"].as_str().unwrap_or(""),
        kernel_now,
        kernel_now as i64 - kernel_before as i64,
        kernel_before,
        if kernel_before_cached.is_some() {
            ", measured from the cache"
        } else {
            ", as recorded on 2026-11-28"
        },
        v / p,
    );
    println!("{section}");
    update_section(&root, "volume", &section);
}
