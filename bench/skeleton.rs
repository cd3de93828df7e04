//! `make bench`, first part: unibeam's image against the naive baseline
//! (busybox shell init, gzip initramfs, same release, same kernel), booted
//! alternately in the same run. Writes bench/results/skeleton.json and the
//! skeleton section of docs/benchmarks.md.

use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use unibeam_e2e::bench::*;
use unibeam_e2e::*;
use unibeam_vmm::{default_kernel_args, Accel, QemuCommand};

const RUNS: usize = 5;

/// The module tree of the kernel in the image: /lib/modules on the host,
/// else unibeam's kernel cache.
fn modules_dir(kernel_release: &str) -> PathBuf {
    let host = Path::new("/lib/modules").join(kernel_release);
    if host.join("kernel").is_dir() {
        return host;
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    cache
        .join("unibeam/kernels")
        .join(kernel_release)
        .join("lib/modules")
        .join(kernel_release)
}

fn build_baseline(release: &Path, kernel_release: &str, out: &Path) -> PathBuf {
    let script = workspace_root().join("bench/naive-baseline.sh");
    let status = Command::new(script)
        .arg(release)
        .arg(modules_dir(kernel_release))
        .arg(out)
        .status()
        .expect("naive-baseline.sh runs");
    assert!(status.success(), "naive-baseline.sh failed");
    out.join("initramfs.gz")
}

/// init's boot milestones, as `unibeam run --timings` reports them.
const MILESTONES: [(&str, &str); 5] = [
    ("kernel_to_init", "unibeam-init: started"),
    ("modules_loaded", "unibeam-init: modules loaded"),
    ("network_up", "unibeam-init: network up"),
    ("beam_execd", "unibeam-init: BEAM exec'd"),
    ("apps_started", "unibeam-init: applications started"),
];

/// Guest timestamps of the milestones in a console log.
fn milestones(console: &str) -> Vec<Option<f64>> {
    MILESTONES
        .iter()
        .map(|(_, needle)| milestone_stamp(console, needle))
        .collect()
}

/// One unibeam boot: seconds to the first 200, and the boot milestones.
fn time_unibeam(image: &Path) -> (f64, Vec<Option<f64>>) {
    let port = free_port();
    let mut vm = Vm::run(&[
        image.to_str().unwrap(),
        "-p",
        &format!("{port}:8080"),
        "--timings",
    ]);
    let (_, took) = vm.wait_http_ok(port, BOOT_TIMEOUT);
    vm.interrupt();
    vm.wait(Duration::from_secs(90));
    (took.as_secs_f64(), milestones(&vm.output()))
}

/// One baseline boot with the very same QEMU flags unibeam uses.
fn time_baseline(kernel: &Path, initrd: &Path, scratch: &Path) -> f64 {
    let port = free_port();
    let qemu = QemuCommand {
        binary: "qemu-system-x86_64".into(),
        accel: Accel::Tcg,
        memory_mib: 256,
        cpus: 1,
        kernel: kernel.to_path_buf(),
        initrd: initrd.to_path_buf(),
        kernel_args: default_kernel_args(),
        forwards: vec![format!("{port}:8080").parse().unwrap()],
        qmp_socket: scratch.join(format!("qmp-{port}.sock")),
    };
    let mut cmd = Command::new(&qemu.binary);
    cmd.args(qemu.args());
    let mut vm = Vm::spawn(cmd);
    let (_, took) = vm.wait_http_ok(port, BOOT_TIMEOUT);
    vm.kill();
    took.as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; this harness takes no options.
    let root = workspace_root();
    let work = root.join("bench/work");
    fs::create_dir_all(&work).unwrap();
    let release = hello_release();
    eprintln!("bench: building images");
    let image = build_image(&release, &work.join("hello.unibeam"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(image.join("image.json")).unwrap()).unwrap();
    let kernel_release = manifest["kernel"]["release"].as_str().unwrap().to_string();
    let kernel = image.join("vmlinuz");
    let initramfs = image.join("initramfs.img");
    let baseline_initrd = build_baseline(&release, &kernel_release, &work.join("naive"));

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut stamps: Vec<Vec<f64>> = vec![Vec::new(); MILESTONES.len()];
    for i in 1..=RUNS {
        let (t, seen) = time_unibeam(&image);
        let b = time_baseline(&kernel, &baseline_initrd, &work);
        eprintln!("bench: run {i}/{RUNS}: unibeam {t:.2} s, naive baseline {b:.2} s");
        ours.push(t);
        theirs.push(b);
        for (all, one) in stamps.iter_mut().zip(seen) {
            all.extend(one);
        }
    }
    let (ours_med, theirs_med) = (median(&ours), median(&theirs));
    let result = json!({
        "benchmark": "skeleton",
        "command": "make bench",
        "date": utc_now(),
        "accelerator": "tcg",
        "runs": RUNS,
        "release": "examples/hello",
        "unibeam": {
            "run_to_first_http_200_s": ours,
            "median_s": ours_med,
            "kernel_to_init_median_s": (!stamps[0].is_empty()).then(|| median(&stamps[0])),
            "timeline_median_s": MILESTONES
                .iter()
                .zip(&stamps)
                .map(|((key, _), s)| (key.to_string(), json!((!s.is_empty()).then(|| median(s)))))
                .collect::<serde_json::Map<_, _>>(),
            "kernel_bytes": file_size(&kernel),
            "initramfs_bytes": file_size(&initramfs),
        },
        "naive_baseline": {
            "run_to_first_http_200_s": theirs,
            "median_s": theirs_med,
            "kernel_bytes": file_size(&kernel),
            "initramfs_bytes": file_size(&baseline_initrd),
        },
        "baseline_ratio": ours_med / theirs_med,
    });
    write_result(&root, "skeleton", &result);
    let section = markdown(&result);
    println!("{section}");
    update_section(&root, "skeleton", &section);
}

fn mb_of(v: &serde_json::Value) -> String {
    format!("{:.1} MB", v.as_f64().unwrap_or(0.0) / 1e6)
}

fn markdown(r: &serde_json::Value) -> String {
    let (u, b) = (&r["unibeam"], &r["naive_baseline"]);
    let samples = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| format!("{:.2}", x.as_f64().unwrap()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let total = |v: &serde_json::Value| {
        serde_json::Value::from(v["kernel_bytes"].as_u64().unwrap() + v["initramfs_bytes"].as_u64().unwrap())
    };
    format!(
        "## Walking skeleton: `run` to first HTTP 200\n\n\
         Measured by `make bench` on {date}, QEMU TCG (nested KVM is unusable on this machine), \
         {runs} runs each, unibeam and the naive baseline alternating in the same run. \
         Raw figures: `bench/results/skeleton.json`.\n\n\
         | image | run → first HTTP 200 (median) | samples (s) | kernel | initramfs | total |\n\
         |---|---|---|---|---|---|\n\
         | unibeam | {um:.2} s | {us} | {uk} | {ui} | {ut} |\n\
         | naive baseline (busybox sh init, gzip -9) | {bm:.2} s | {bs} | {bk} | {bi} | {bt} |\n\n\
         Ratio unibeam / baseline: **{ratio:.2}**. Guest kernel → init (median, unibeam): {k2i}.\n",
        date = r["date"].as_str().unwrap_or(""),
        runs = r["runs"],
        um = u["median_s"].as_f64().unwrap(),
        us = samples(&u["run_to_first_http_200_s"]),
        uk = mb_of(&u["kernel_bytes"]),
        ui = mb_of(&u["initramfs_bytes"]),
        ut = mb_of(&total(u)),
        bm = b["median_s"].as_f64().unwrap(),
        bs = samples(&b["run_to_first_http_200_s"]),
        bk = mb_of(&b["kernel_bytes"]),
        bi = mb_of(&b["initramfs_bytes"]),
        bt = mb_of(&total(b)),
        ratio = r["baseline_ratio"].as_f64().unwrap(),
        k2i = u["kernel_to_init_median_s"]
            .as_f64()
            .map(|s| format!("{s:.2} s"))
            .unwrap_or_else(|| "not seen".into()),
    ) + &timeline_table(&u["timeline_median_s"])
}

/// The boot timeline that `unibeam run --timings` prints, as medians.
fn timeline_table(t: &serde_json::Value) -> String {
    let mut out = String::from(
        "\nBoot timeline of hello from `unibeam run --timings` (guest clock, median over the runs above):\n\n\
         | milestone | guest time | step |\n|---|---|---|\n",
    );
    let mut previous = 0.0;
    for (key, _) in MILESTONES {
        let Some(stamp) = t[key].as_f64() else { continue };
        out.push_str(&format!(
            "| {} | {stamp:.3} s | +{:.3} s |\n",
            key.replace('_', " "),
            stamp - previous
        ));
        previous = stamp;
    }
    out
}
