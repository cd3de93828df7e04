//! `make bench`, boot part: hello booted every way that matters, in the
//! same run and interleaved, so machine noise hits them all alike:
//! - the naive baseline (Debian kernel, busybox shell init, gzip
//!   initramfs, `pc` machine), as built by hand before unibeam existed;
//! - unibeam with Debian's cloud kernel;
//! - unibeam with the specialised kernel (the default), on `microvm`;
//! - the same on `pc`, with embedded code loading, with `+S 1`, with zstd or
//!   uncompressed layers instead of xz, and entered through the bzImage
//!   instead of the PVH ELF that `run` takes out of it.
//!
//! Then the RAM floor of the default. Writes bench/results/boot.json and
//! the boot section of docs/benchmarks.md.

use serde_json::{json, Map, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use unibeam_e2e::bench::*;
use unibeam_e2e::*;
use unibeam_vmm::{default_kernel_args, Accel, Machine, QemuCommand};

const RUNS: usize = 7;
/// Memory sizes tried for the floor, smallest first.
const MEMORY_STEPS: [u32; 8] = [32, 40, 44, 46, 48, 52, 56, 64];

/// init's boot milestones, as `unibeam run --timings` reports them.
const MILESTONES: [(&str, &str); 4] = [
    ("kernel_to_init", "unibeam-init: started"),
    ("network_up", "unibeam-init: network up"),
    ("beam_execd", "unibeam-init: BEAM exec'd"),
    ("apps_started", "unibeam-init: applications started"),
];

/// One way of booting hello through `unibeam run`.
struct Variant {
    key: &'static str,
    label: &'static str,
    image: PathBuf,
    run_flags: &'static [&'static str],
    samples: Vec<f64>,
    stamps: Vec<Vec<f64>>,
}

impl Variant {
    fn new(
        key: &'static str,
        label: &'static str,
        image: PathBuf,
        run_flags: &'static [&'static str],
    ) -> Self {
        Variant {
            key,
            label,
            image,
            run_flags,
            samples: Vec::new(),
            stamps: vec![Vec::new(); MILESTONES.len()],
        }
    }

    fn boot_once(&mut self) -> f64 {
        let port = free_port();
        let publish = format!("{port}:8080");
        let mut args = vec![self.image.to_str().unwrap(), "-p", &publish, "--timings"];
        args.extend(self.run_flags);
        let mut vm = Vm::run(&args);
        let (_, took) = vm.wait_http_ok(port, BOOT_TIMEOUT);
        vm.interrupt();
        vm.wait(Duration::from_secs(90));
        let console = vm.output();
        for ((_, needle), all) in MILESTONES.iter().zip(&mut self.stamps) {
            all.extend(milestone_stamp(&console, needle));
        }
        self.samples.push(took.as_secs_f64());
        took.as_secs_f64()
    }

    fn result(&self) -> Value {
        let kernel = self.image.join("vmlinuz");
        let initramfs = self.image.join("initramfs.img");
        let timeline: Map<String, Value> = MILESTONES
            .iter()
            .zip(&self.stamps)
            .map(|((key, _), s)| (key.to_string(), json!((!s.is_empty()).then(|| median(s)))))
            .collect();
        json!({
            "label": self.label,
            "run_flags": self.run_flags,
            "run_to_first_http_200_s": self.samples,
            "median_s": median(&self.samples),
            "timeline_median_s": timeline,
            "beam_to_apps_started_median_s": beam_to_apps(&self.stamps),
            "kernel_bytes": file_size(&kernel),
            "initramfs_bytes": file_size(&initramfs),
            "total_bytes": file_size(&kernel) + file_size(&initramfs),
        })
    }
}

fn beam_to_apps(stamps: &[Vec<f64>]) -> Option<f64> {
    let (execd, apps) = (&stamps[2], &stamps[3]);
    (!execd.is_empty() && !apps.is_empty()).then(|| median(apps) - median(execd))
}

/// The Debian kernel's module tree: /lib/modules, else unibeam's cache.
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

/// One baseline boot: the Debian kernel on `pc`, as it was done by hand.
fn time_baseline(kernel: &Path, initrd: &Path, scratch: &Path) -> f64 {
    let port = free_port();
    let qemu = QemuCommand {
        binary: "qemu-system-x86_64".into(),
        accel: Accel::Tcg,
        machine: Machine::Pc,
        memory_mib: 256,
        cpus: 1,
        kernel: kernel.to_path_buf(),
        initrd: initrd.to_path_buf(),
        kernel_args: default_kernel_args(Machine::Pc, Accel::Tcg),
        forwards: vec![format!("{port}:8080").parse().unwrap()],
        qmp_socket: scratch.join(format!("qmp-{port}.sock")),
        private_net: None,
        // Debian's kernel, with ACPI, as the baseline was booted by hand.
        acpi: true,
        drives: Vec::new(),
        snapshots: Default::default(),
    };
    let mut cmd = Command::new(&qemu.binary);
    cmd.args(qemu.args());
    let mut vm = Vm::spawn(cmd);
    let (_, took) = vm.wait_http_ok(port, BOOT_TIMEOUT);
    vm.kill();
    took.as_secs_f64()
}

/// Whether hello answers HTTP with `--memory <mib>M`.
fn answers_with_memory(image: &Path, mib: u32) -> bool {
    let port = free_port();
    let memory = format!("{mib}M");
    let mut vm = Vm::run(&[
        image.to_str().unwrap(),
        "-p",
        &format!("{port}:8080"),
        "--memory",
        &memory,
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let ok = loop {
        if matches!(http_get(port), Some((200, _))) {
            break true;
        }
        if vm.has_exited() || std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    vm.kill();
    ok
}

fn ram_floor(image: &Path) -> Option<u32> {
    MEMORY_STEPS.into_iter().find(|&mib| {
        let ok = answers_with_memory(image, mib);
        eprintln!("bench: --memory {mib}M: {}", if ok { "answers" } else { "fails" });
        ok
    })
}

fn manifest(image: &Path) -> Value {
    serde_json::from_slice(&fs::read(image.join("image.json")).unwrap()).unwrap()
}

fn main() {
    // `cargo bench` passes --bench; this harness takes no options.
    let root = workspace_root();
    let work = root.join("bench/work");
    fs::create_dir_all(&work).unwrap();
    let release = hello_release();
    eprintln!("bench: building images");
    let special = build_image_with(
        &release,
        &work.join("hello-specialised.unibeam"),
        &["--kernel", "specialised"],
    );
    let embedded = build_image_with(
        &release,
        &work.join("hello-embedded.unibeam"),
        &["--kernel", "specialised", "--code-loading", "embedded"],
    );
    let debian = build_image_with(
        &release,
        &work.join("hello-debian.unibeam"),
        &["--kernel", "debian"],
    );
    let debian_release = manifest(&debian)["kernel"]["release"]
        .as_str()
        .unwrap()
        .to_string();
    let debian_kernel = debian.join("vmlinuz");
    let zstd = build_image_with(
        &release,
        &work.join("hello-zstd.unibeam"),
        &["--kernel", "specialised", "--compression", "zstd"],
    );
    let raw = build_image_with(
        &release,
        &work.join("hello-raw.unibeam"),
        &["--kernel", "specialised", "--compression", "none"],
    );
    let baseline_initrd = build_baseline(&release, &debian_release, &work.join("naive"));

    let mut variants = vec![
        Variant::new(
            "specialised",
            "unibeam, specialised kernel, microvm",
            special.clone(),
            &[],
        ),
        Variant::new("debian", "unibeam, Debian cloud kernel, microvm", debian, &[]),
        Variant::new(
            "specialised_pc",
            "unibeam, specialised kernel, pc",
            special.clone(),
            &["--machine", "pc"],
        ),
        Variant::new(
            "embedded",
            "unibeam, specialised kernel, microvm, embedded code loading",
            embedded,
            &[],
        ),
        Variant::new(
            "one_scheduler",
            "unibeam, specialised kernel, microvm, `+S 1`",
            special.clone(),
            &["--vm-arg=+S", "--vm-arg=1"],
        ),
        Variant::new(
            "zstd",
            "unibeam, specialised kernel, microvm, image with zstd layers",
            zstd,
            &[],
        ),
        Variant::new(
            "bzimage",
            "unibeam, specialised kernel, microvm, bzImage entry (guest decompresses the kernel)",
            special.clone(),
            &["--bzimage"],
        ),
        Variant::new(
            "uncompressed",
            "unibeam, specialised kernel, microvm, image with uncompressed layers",
            raw,
            &[],
        ),
    ];
    let mut baseline = Vec::new();
    for i in 1..=RUNS {
        let b = time_baseline(&debian_kernel, &baseline_initrd, &work);
        baseline.push(b);
        let mut line = format!("bench: run {i}/{RUNS}: naive baseline {b:.2} s");
        for v in &mut variants {
            let took = v.boot_once();
            line.push_str(&format!(", {} {took:.2} s", v.key));
        }
        eprintln!("{line}");
    }
    let floor = ram_floor(&special);
    let baseline_med = median(&baseline);
    let mut results: Map<String, Value> = Map::new();
    for v in &variants {
        let mut r = v.result();
        r["baseline_ratio"] = json!(median(&v.samples) / baseline_med);
        results.insert(v.key.to_string(), r);
    }
    let result = json!({
        "benchmark": "boot",
        "command": "make bench",
        "date": utc_now(),
        "accelerator": "tcg",
        "runs": RUNS,
        "release": "examples/hello",
        "naive_baseline": {
            "label": "naive baseline: Debian kernel, busybox sh init, gzip -9 initramfs, pc",
            "run_to_first_http_200_s": baseline,
            "median_s": baseline_med,
            "kernel_bytes": file_size(&debian_kernel),
            "initramfs_bytes": file_size(&baseline_initrd),
            "total_bytes": file_size(&debian_kernel) + file_size(&baseline_initrd),
        },
        "variants": results,
        "baseline_ratio": results["specialised"]["baseline_ratio"],
        "specialised_kernel_bytes": file_size(&special.join("vmlinuz")),
        "ram_floor_mib": floor,
        "ram_floor_steps_mib": MEMORY_STEPS,
    });
    write_result(&root, "boot", &result);
    let section = markdown(&result);
    println!("{section}");
    update_section(&root, "boot", &section);
}

fn secs(v: &Value) -> String {
    v.as_f64()
        .map(|s| format!("{s:.2} s"))
        .unwrap_or_else(|| "—".into())
}

fn mb_of(v: &Value) -> String {
    format!("{:.2} MB", v.as_f64().unwrap_or(0.0) / 1e6)
}

fn markdown(r: &Value) -> String {
    let b = &r["naive_baseline"];
    let mut rows = format!(
        "| {} | {} | 1.00 | {} | {} | — | — |\n",
        b["label"].as_str().unwrap_or(""),
        secs(&b["median_s"]),
        mb_of(&b["kernel_bytes"]),
        mb_of(&b["total_bytes"]),
    );
    for (_, v) in r["variants"].as_object().unwrap() {
        rows.push_str(&format!(
            "| {} | {} | {:.2} | {} | {} | {} | {} |\n",
            v["label"].as_str().unwrap_or(""),
            secs(&v["median_s"]),
            v["baseline_ratio"].as_f64().unwrap_or(0.0),
            mb_of(&v["kernel_bytes"]),
            mb_of(&v["total_bytes"]),
            secs(&v["timeline_median_s"]["kernel_to_init"]),
            secs(&v["beam_to_apps_started_median_s"]),
        ));
    }
    let floor = r["ram_floor_mib"]
        .as_u64()
        .map(|m| format!("{m} MiB"))
        .unwrap_or_else(|| "above the largest size tried".into());
    format!(
        "## Boot path: kernels, machines and code loading\n\n\
         Measured by `make bench` (bench/boot.rs) on {date}, QEMU TCG, {runs} runs of each, \
         interleaved in the same run. Medians; the ratio is against the naive baseline's median. \
         Raw figures: `bench/results/boot.json`.\n\n\
         | boot | run → first HTTP 200 | ratio | kernel | image total | kernel → init | BEAM exec → apps started |\n\
         |---|---|---|---|---|---|---|\n{rows}\n\
         RAM floor of the default (specialised kernel, microvm): hello answers with `--memory {floor}` \
         (tried {steps:?} MiB).\n",
        date = r["date"].as_str().unwrap_or(""),
        runs = r["runs"],
        steps = r["ram_floor_steps_mib"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect::<Vec<_>>(),
    )
}
