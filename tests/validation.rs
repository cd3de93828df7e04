//! Values are checked before anything starts: image.json's sizes and
//! hashes before a boot, every CLI value and unibeam.toml field before the
//! first VM or file, and release files at build time. Each bad input gets
//! one line naming the culprit and a non-zero exit, never a panic.

use std::path::{Path, PathBuf};
use std::process::Output;
use unibeam_e2e::*;

fn image_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("hello.unibeam");
    copy_tree(shared_hello_image(), &image);
    (dir, image)
}

fn hello_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("hello");
    copy_tree(&hello_release(), &release);
    (dir, release)
}

/// A private XDG_STATE_HOME: what `run -d` and `up` would leave shows there.
struct State(tempfile::TempDir);

impl State {
    fn new() -> State {
        State(tempfile::tempdir().unwrap())
    }

    fn unibeam(&self, args: &[&str]) -> Output {
        unibeam_output(args, &[("XDG_STATE_HOME", self.0.path().to_str().unwrap())])
    }

    /// `ps -a` lists nothing: no instance was started, none left behind.
    fn assert_no_instance(&self) {
        let out = self.unibeam(&["ps", "-a", "--format", "json"]);
        assert!(out.status.success());
        let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(all, serde_json::json!([]), "instances were started");
        let instances = self.0.path().join("unibeam/instances");
        let left = std::fs::read_dir(&instances).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "{} is not empty", instances.display());
    }
}

/// Would stop the BEAM at once, were the image ever booted.
const STOP_AT_ONCE: [&str; 4] = ["--vm-arg", "-eval", "--vm-arg", "init:stop()"];

/// `run IMAGE <flags>` in `state`, foreground or `-d`; it must fail before
/// anything starts.
fn run_refused(state: &State, image: &Path, flags: &[&str]) -> Output {
    let mut args = vec!["run", image.to_str().unwrap()];
    args.extend(flags);
    args.extend(STOP_AT_ONCE);
    let out = state.unibeam(&args);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("booting"), "refused only after booting: {text}");
    state.assert_no_instance();
    out
}

fn edit_manifest(image: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = image.join("image.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

// Finding 4: absurd sizes in image.json.

#[test]
fn absurd_sizes_in_image_json_are_named_not_panicked_on() {
    let huge = serde_json::json!(1u64 << 63);
    type Edit = fn(&mut serde_json::Value, serde_json::Value);
    let cases: [(&str, Edit); 4] = [
        ("uncompressed_bytes", |m, v| {
            m["initramfs"]["layers"][0]["uncompressed_bytes"] = v
        }),
        ("bytes", |m, v| m["initramfs"]["layers"][1]["bytes"] = v),
        ("offset", |m, v| m["initramfs"]["layers"][2]["offset"] = v),
        ("kernel.bytes", |m, v| m["kernel"]["bytes"] = v),
    ];
    for (field, edit) in cases {
        let (_dir, image) = image_copy();
        edit_manifest(&image, |m| edit(m, huge.clone()));
        let state = State::new();
        let out = run_refused(&state, &image, &[]);
        fails_naming(&out, 125, &["image.json", field, "rebuild the image"]);
        let out = state.unibeam(&["inspect", image.to_str().unwrap()]);
        fails_naming(&out, 1, &["image.json", field]);
    }
}

// Finding 6: tampered images.

/// Flips one byte of `file` at `at` (from its end when negative).
fn flip_byte(file: &Path, at: i64) {
    let mut data = std::fs::read(file).unwrap();
    let i = if at < 0 {
        data.len() - at.unsigned_abs() as usize
    } else {
        at as usize
    };
    data[i] ^= 0x20;
    std::fs::write(file, data).unwrap();
}

#[test]
fn a_flipped_byte_in_a_layer_is_refused_before_boot() {
    let (_dir, image) = image_copy();
    let initramfs = image.join("initramfs.img");
    // Inside the app layer's last file data, past every header: uncompressed
    // layers would boot with it unnoticed.
    flip_byte(&initramfs, -200);
    let state = State::new();
    let out = run_refused(&state, &image, &[]);
    fails_naming(&out, 125, &["initramfs.img", "app layer", "rebuild the image"]);
    let out = run_refused(&state, &image, &["-d"]);
    fails_naming(&out, 125, &["initramfs.img", "rebuild the image"]);
}

#[test]
fn a_flipped_byte_in_the_kernel_is_refused_before_boot() {
    let (_dir, image) = image_copy();
    flip_byte(&image.join("vmlinuz"), -100);
    let state = State::new();
    let out = run_refused(&state, &image, &[]);
    fails_naming(&out, 125, &["vmlinuz", "sha256", "rebuild the image"]);
}

// Finding 7: CLI values checked before anything starts.

#[test]
fn sys_config_with_a_syntax_error_is_refused_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.config");
    std::fs::write(&config, "[{hello, [{greeting, \"hi\"}]}]\n").unwrap();
    let state = State::new();
    let flag = ["--sys-config", config.to_str().unwrap()];
    let out = run_refused(&state, shared_hello_image(), &flag);
    let at = format!("--sys-config {}:", config.display());
    fails_naming(&out, 125, &[&at, "'.'"]);
    std::fs::write(&config, "[{hello, [{greeting, \"hi\"}]]}.\n").unwrap();
    let out = run_refused(&state, shared_hello_image(), &[&flag[..], &["-d"]].concat());
    fails_naming(&out, 125, &[&format!("{}:1:28", config.display())]);
}

#[test]
fn cookies_the_beam_would_refuse_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cookie = dir.path().join("cookie");
    let state = State::new();
    let flag = ["--cookie-file", cookie.to_str().unwrap()];
    std::fs::write(&cookie, "x".repeat(256)).unwrap();
    let out = run_refused(&state, shared_hello_image(), &flag);
    fails_naming(&out, 125, &[cookie.to_str().unwrap(), "256", "255"]);
    std::fs::write(&cookie, "caf\u{e9}").unwrap();
    let out = run_refused(&state, shared_hello_image(), &[&flag[..], &["-d"]].concat());
    fails_naming(&out, 125, &[cookie.to_str().unwrap(), "'\u{e9}'"]);
}

#[test]
fn a_node_name_the_beam_would_refuse_is_refused() {
    let state = State::new();
    for bad in ["bad name", "web@", "we!b@10.0.0.1"] {
        let out = run_refused(&state, shared_hello_image(), &["--node-name", bad]);
        fails_naming(&out, 125, &[&format!("--node-name {bad:?}")]);
    }
    let out = run_refused(&state, shared_hello_image(), &["-d", "--node-name", "a b@host"]);
    fails_naming(&out, 125, &["--node-name \"a b@host\""]);
}

#[test]
fn publishing_on_ipv6_is_refused_as_unsupported() {
    let state = State::new();
    let out = run_refused(&state, shared_hello_image(), &["-p", "::1:8080:8080"]);
    fails_naming(&out, 125, &["::1", "IPv6"]);
    let out = run_refused(&state, shared_hello_image(), &["-d", "-p", "[::1]:8080:8080"]);
    assert_ne!(out.status.code(), Some(0));
    one_line(&out);
}

#[test]
fn clap_errors_are_one_line() {
    let state = State::new();
    let out = run_refused(&state, shared_hello_image(), &["--memory", "lots"]);
    let line = one_line(&out);
    assert_eq!(out.status.code(), Some(2), "{line}");
    assert!(line.contains("--memory") && line.contains("\"lots\""), "{line}");
    let out = state.unibeam(&["run"]);
    let line = one_line(&out);
    assert!(line.contains("<TARGET>"), "{line}");
}

#[test]
fn a_truncated_boot_script_fails_the_build() {
    let (_dir, release) = hello_copy();
    let boot = release.join("releases/0.1.0/start.boot");
    let data = std::fs::read(&boot).unwrap();
    std::fs::write(&boot, &data[..data.len() / 2]).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("img");
    let o = unibeam_output(
        &["build", release.to_str().unwrap(), "-o", out.to_str().unwrap()],
        &[],
    );
    fails_naming(&o, 1, &[boot.to_str().unwrap(), "truncated"]);
    assert!(!out.exists());
}

// Finding 7: unibeam.toml, checked whole before the first VM starts.

/// Writes unibeam.toml whose first service runs hello's image and whose
/// other lines are `rest`; `up` must fail at `line:column` saying `what`,
/// with no instance started.
fn up_refused(rest: &str, line_col: &str, what: &[&str]) {
    let state = State::new();
    let file = state.0.path().join("unibeam.toml");
    let text = format!(
        "[services.web]\nimage = \"{}\"\nports = [\"18080:8080\"]\n{rest}",
        shared_hello_image().display()
    );
    std::fs::write(&file, text).unwrap();
    let out = state.unibeam(&["up", "-f", file.to_str().unwrap()]);
    let at = format!("{}:{line_col}: ", file.display());
    fails_naming(&out, 1, &[&[at.as_str()][..], what].concat());
    state.assert_no_instance();
}

#[test]
fn toml_memory_that_is_not_a_size() {
    up_refused("memory = \"lots\"\n", "4:10", &["memory", "\"lots\""]);
}

#[test]
fn toml_env_keys_with_a_space_or_equals() {
    up_refused("env = { \"BAD KEY\" = \"v\" }\n", "4:9", &["env", "\"BAD KEY\""]);
    up_refused("env = { \"A=B\" = \"v\" }\n", "4:9", &["env", "\"A=B\""]);
}

#[test]
fn toml_numbers_out_of_range_point_at_themselves() {
    up_refused("replicas = 65\n", "4:12", &["replicas", "65"]);
    up_refused("[cluster]\nnet_ticktime = 1\n", "5:16", &["net_ticktime"]);
}

#[test]
fn toml_host_port_shared_by_two_services() {
    let rest = format!(
        "[services.api]\nimage = \"{}\"\nports = [\"18080:9090\"]\n",
        shared_hello_image().display()
    );
    up_refused(&rest, "6:10", &["18080", "web"]);
}

#[test]
fn toml_ports_beyond_65535_after_the_replica_shift() {
    let state_rest = "replicas = 3\n";
    let state = State::new();
    let file = state.0.path().join("unibeam.toml");
    let text = format!(
        "[services.web]\nimage = \"{}\"\nports = [\"65534:8080\"]\n{state_rest}",
        shared_hello_image().display()
    );
    std::fs::write(&file, text).unwrap();
    let out = state.unibeam(&["up", "-f", file.to_str().unwrap()]);
    let at = format!("{}:3:10: ", file.display());
    fails_naming(&out, 1, &[&at, "65536", "65535"]);
    state.assert_no_instance();
}

/// A host port another program holds is found before the first VM starts,
/// not after the services before it are up.
#[test]
fn up_with_a_host_port_in_use_starts_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let state = State::new();
    let file = state.0.path().join("unibeam.toml");
    let image = shared_hello_image().display().to_string();
    let text = format!(
        "[services.api]\nimage = \"{image}\"\n\n[services.web]\nimage = \"{image}\"\nports = [\"{port}:8080\"]\n"
    );
    std::fs::write(&file, text).unwrap();
    let out = state.unibeam(&["up", "-f", file.to_str().unwrap()]);
    let line = fails_naming(&out, 1, &[&format!("127.0.0.1:{port}"), "web-1"]);
    assert!(!line.contains("starting"), "a VM started first: {line}");
    state.assert_no_instance();
}

#[test]
fn toml_second_service_whose_image_is_missing() {
    up_refused(
        "[services.api]\nimage = \"no-such.unibeam\"\n",
        "5:9",
        &["no-such.unibeam", "image"],
    );
}

// Finding 9: the right diagnosis.

fn build_fails(release: &Path, flags: &[&str], needles: &[&str]) {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("img");
    let mut args = vec!["build", release.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend(flags);
    let o = unibeam_output(&args, &[]);
    fails_naming(&o, 1, needles);
    assert!(!out.exists());
}

#[test]
fn a_binary_start_erl_data_is_not_called_missing() {
    let (_dir, release) = hello_copy();
    let start_erl = release.join("releases/start_erl.data");
    std::fs::write(&start_erl, b"\x00\xff\xfe\x83binary\x01").unwrap();
    build_fails(&release, &[], &[start_erl.to_str().unwrap(), "not text"]);
}

#[test]
fn an_erts_version_mismatch_names_both_versions() {
    let (_dir, release) = hello_copy();
    std::fs::write(release.join("releases/start_erl.data"), "99.9 0.1.0\n").unwrap();
    build_fails(&release, &[], &["start_erl.data", "99.9", "erts-13.1.5"]);
}

#[test]
fn a_symlink_loop_is_called_a_loop() {
    let (_dir, release) = hello_copy();
    let ebin = release.join("lib/hello-0.1.0/ebin");
    std::os::unix::fs::symlink("loop_b.beam", ebin.join("loop_a.beam")).unwrap();
    std::os::unix::fs::symlink("loop_a.beam", ebin.join("loop_b.beam")).unwrap();
    build_fails(&release, &[], &["loop_", "symlink loop"]);
}

#[test]
fn an_empty_kernel_file_is_called_empty() {
    let (dir, release) = hello_copy();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, b"").unwrap();
    let flags = ["--kernel", kernel.to_str().unwrap()];
    build_fails(&release, &flags, &[kernel.to_str().unwrap(), "empty"]);
    std::fs::write(&kernel, b"#!/bin/sh\necho not a kernel\n").unwrap();
    build_fails(
        &release,
        &flags,
        &[kernel.to_str().unwrap(), "not a Linux kernel"],
    );
}
