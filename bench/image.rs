//! `make bench`, image builder part: image sizes per layer, cold build and
//! warm rebuild times, and zstd against xz by size and boot time, all
//! measured in one run. Writes bench/results/image.json and the image
//! section of docs/benchmarks.md.

use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use unibeam_e2e::bench::*;
use unibeam_e2e::*;

const BUILDS: usize = 3;
const REBUILDS: usize = 5;
const BOOTS: usize = 3;

fn build(release: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["build", release.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = unibeam_output(&args, &[]);
    assert!(
        o.status.success(),
        "unibeam build: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&fs::read(out.join("image.json")).unwrap()).unwrap()
}

fn sizes(m: &Value) -> Value {
    let layers: serde_json::Map<String, Value> = m["initramfs"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["name"].as_str().unwrap().to_string(), l["bytes"].clone()))
        .collect();
    let kernel = m["kernel"]["bytes"].as_u64().unwrap();
    let initramfs = m["initramfs"]["bytes"].as_u64().unwrap();
    json!({
        "kernel_bytes": kernel,
        "initramfs_bytes": initramfs,
        "initramfs_unpacked_bytes": m["initramfs"]["uncompressed_bytes"],
        "total_bytes": kernel + initramfs,
        "layers": layers,
    })
}

/// Cold builds (no layer cache; the kernel is already cached) of `release`.
fn measure_release(label: &str, release: &Path, work: &Path) -> Value {
    let out = work.join(format!("{label}.unibeam"));
    let mut times = Vec::new();
    let mut manifest = Value::Null;
    for _ in 0..BUILDS {
        let (m, secs) = timed(|| build(release, &out, &["--no-cache"]));
        times.push(secs);
        manifest = m;
    }
    eprintln!("bench: {label}: cold build {:.2} s", median(&times));
    json!({"sizes": sizes(&manifest), "cold_build_s": times, "cold_build_median_s": median(&times)})
}

/// Rebuild times after one module of hello's app changes.
fn measure_warm_rebuild(work: &Path) -> Value {
    let release = work.join("hello-edited");
    let _ = fs::remove_dir_all(&release);
    copy_tree(&hello_release(), &release);
    let out = work.join("hello-edited.unibeam");
    build(&release, &out, &[]);
    let src =
        fs::read_to_string(workspace_root().join("examples/hello/apps/hello/src/hello_app.erl")).unwrap();
    let mut times = Vec::new();
    for i in 0..REBUILDS {
        let edited = work.join("hello_app.erl");
        let changed = src.replace(
            "-behaviour(application).",
            &format!("-behaviour(application).\n-vsn({i})."),
        );
        fs::write(&edited, changed).unwrap();
        let ebin = release.join("lib/hello-0.1.0/ebin");
        let status = Command::new("erlc")
            .arg("-o")
            .arg(&ebin)
            .arg(&edited)
            .status()
            .unwrap();
        assert!(status.success(), "erlc");
        times.push(timed(|| build(&release, &out, &[])).1);
    }
    eprintln!("bench: warm rebuild {:.3} s", median(&times));
    json!({"warm_rebuild_s": times, "warm_rebuild_median_s": median(&times)})
}

/// Boots `image` and returns (run → first HTTP 200, guest kernel → init).
fn boot(image: &Path) -> (f64, f64) {
    let port = free_port();
    let mut vm = Vm::run(&[image.to_str().unwrap(), "-p", &format!("{port}:8080")]);
    let (_, took) = vm.wait_http_ok(port, BOOT_TIMEOUT);
    vm.interrupt();
    vm.wait(Duration::from_secs(90));
    (
        took.as_secs_f64(),
        kernel_to_init(&vm.output()).unwrap_or(f64::NAN),
    )
}

/// zstd against xz for hello: size, kernel → init and run → HTTP 200.
fn measure_compression(work: &Path) -> Value {
    let images: Vec<(&str, PathBuf)> = [("zstd", "zstd"), ("xz", "xz")]
        .iter()
        .map(|(label, arg)| {
            let out = work.join(format!("hello-{label}.unibeam"));
            build(&hello_release(), &out, &["--compression", arg]);
            (*label, out)
        })
        .collect();
    let mut results = serde_json::Map::new();
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); images.len()];
    for _ in 0..BOOTS {
        for (i, (_, image)) in images.iter().enumerate() {
            let (http, init) = boot(image);
            samples[i].0.push(http);
            samples[i].1.push(init);
        }
    }
    for ((label, image), (http, init)) in images.iter().zip(samples) {
        let initramfs = file_size(&image.join("initramfs.img"));
        eprintln!(
            "bench: {label}: {} , kernel->init {:.2} s",
            mb(initramfs),
            median(&init)
        );
        results.insert(
            label.to_string(),
            json!({
                "initramfs_bytes": initramfs,
                "kernel_to_init_s": init,
                "kernel_to_init_median_s": median(&init),
                "run_to_first_http_200_s": http,
                "run_to_first_http_200_median_s": median(&http),
            }),
        );
    }
    Value::Object(results)
}

/// What the shell costs the os_mon example (tests/fixtures/stock, made by
/// `rebar3 new release` with os_mon, mnesia, crypto and sasl): its
/// compressed initramfs with `--shell auto` (dash, /bin, df, uname and
/// their libraries) minus `--shell never`.
fn measure_shell(work: &Path) -> Value {
    let release = stock_release();
    let image = |mode: &str| {
        build(
            &release,
            &work.join(format!("stock-{mode}.unibeam")),
            &["--shell", mode],
        )
    };
    let (auto, never) = (image("auto"), image("never"));
    let bytes = |m: &Value| m["initramfs"]["bytes"].as_u64().unwrap();
    let (with, without) = (bytes(&auto), bytes(&never));
    eprintln!(
        "bench: the shell adds {} bytes to the os_mon example",
        with - without
    );
    json!({
        "release": "tests/fixtures/stock",
        "programs": auto["shell"]["programs"],
        "initramfs_bytes_auto": with,
        "initramfs_bytes_never": without,
        "shell_bytes": with - without,
    })
}

fn main() {
    let root = workspace_root();
    let work = root.join("bench/work");
    fs::create_dir_all(&work).unwrap();
    let mut releases = serde_json::Map::new();
    for (label, release) in example_releases() {
        releases.insert(label.to_string(), measure_release(label, &release, &work));
    }
    let result = json!({
        "benchmark": "image",
        "command": "make bench",
        "date": utc_now(),
        "releases": releases,
        "hello_warm_rebuild": measure_warm_rebuild(&work),
        "hello_compression": measure_compression(&work),
        "os_mon_shell": measure_shell(&work),
    });
    write_result(&root, "image", &result);
    let section = markdown(&result);
    println!("{section}");
    update_section(&root, "image", &section);
}

fn markdown(r: &Value) -> String {
    let mut out = format!(
        "## Image builder: sizes, build times, compression\n\n\
         Measured by `make bench` on {}. Cold builds recompress every layer (`--no-cache`; the \
         kernel is already cached), medians of {BUILDS}. The warm rebuild recompiles one module of \
         hello's app, then runs `unibeam build` again, median of {REBUILDS}. Raw figures: \
         `bench/results/image.json`.\n\n\
         | release | total | kernel | initramfs | base | erts | deps | app | unpacked | cold build |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        r["date"].as_str().unwrap_or("")
    );
    for (label, rel) in r["releases"].as_object().unwrap() {
        let s = &rel["sizes"];
        let layer = |n: &str| mb(s["layers"][n].as_u64().unwrap_or(0));
        out.push_str(&format!(
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} s |\n",
            mb(s["total_bytes"].as_u64().unwrap()),
            mb(s["kernel_bytes"].as_u64().unwrap()),
            mb(s["initramfs_bytes"].as_u64().unwrap()),
            layer("base"),
            layer("erts"),
            layer("deps"),
            layer("app"),
            mb(s["initramfs_unpacked_bytes"].as_u64().unwrap()),
            rel["cold_build_median_s"].as_f64().unwrap(),
        ));
    }
    out.push_str(&format!(
        "\nWarm rebuild of hello after one module changed: **{:.3} s** (median).\n\n",
        r["hello_warm_rebuild"]["warm_rebuild_median_s"].as_f64().unwrap()
    ));
    let shell = &r["os_mon_shell"];
    out.push_str(&format!(
        "The shell (dash as /bin/sh, /bin, the programs {} and their libraries) adds **{:.1} kB** to the \
         compressed initramfs of the os_mon example, tests/fixtures/stock ({} with `--shell auto`, \
         {} with `--shell never`).\n\n",
        shell["programs"],
        shell["shell_bytes"].as_u64().unwrap() as f64 / 1e3,
        mb(shell["initramfs_bytes_auto"].as_u64().unwrap()),
        mb(shell["initramfs_bytes_never"].as_u64().unwrap()),
    ));
    out.push_str(&format!(
        "Compression of hello's layers, each booted {BOOTS} times, alternating, under TCG:\n\n\
         | compression | initramfs | guest kernel → init (median) | run → first HTTP 200 (median) |\n|---|---|---|---|\n"
    ));
    for (label, c) in r["hello_compression"].as_object().unwrap() {
        out.push_str(&format!(
            "| {label} | {} | {:.2} s | {:.2} s |\n",
            mb(c["initramfs_bytes"].as_u64().unwrap()),
            c["kernel_to_init_median_s"].as_f64().unwrap(),
            c["run_to_first_http_200_median_s"].as_f64().unwrap(),
        ));
    }
    out
}
