//! End-to-end: real releases built by rebar3, booted by `unibeam run` on
//! QEMU, checked through what a user sees.

use std::fs;
use std::time::Duration;
use unibeam_e2e::*;

#[test]
fn hello_answers_http_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(&hello_release(), &dir.path().join("hello.unibeam"));
    hello_answers_and_stops(&image, &[]);
}

#[test]
fn hello_elixir_mix_release_answers_http() {
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(&hello_elixir_release(), &dir.path().join("hello_elixir.unibeam"));
    let port = free_port();
    let mut vm = Vm::run(&[image.to_str().unwrap(), "-p", &format!("{port}:8080")]);
    let (body, took) = vm.wait_http_ok(port, BOOT_TIMEOUT);
    eprintln!("first HTTP 200 after {took:?}: {body}");
    assert!(
        body.starts_with("hello from hello_elixir on hello_elixir "),
        "body: {body}"
    );
    // A named node, as `bin/hello_elixir start` gives, with no EPMD.
    assert!(body.contains("node hello_elixir@hello_elixir"), "body: {body}");
    vm.interrupt();
    assert_eq!(
        vm.wait(Duration::from_secs(90)).code(),
        Some(0),
        "{}",
        vm.output()
    );
}

/// Boots the halt fixture with `code` in its sys.config; returns the exit
/// code of `unibeam run` and everything it printed.
fn run_halt_fixture(code: u8) -> (Option<i32>, String) {
    let mut vm = halt_fixture(&format!("{{mode, halt}}, {{code, {code}}}"), &[]);
    let status = vm.wait(BOOT_TIMEOUT);
    (status.code(), vm.output())
}

#[test]
fn halt_3_exits_3() {
    let (code, out) = run_halt_fixture(3);
    assert_eq!(code, Some(3), "output:\n{out}");
    assert!(out.contains("beam exited with status 3"), "output:\n{out}");
    // The crypto NIF and the host's libcrypto work in the guest.
    let digest = "55E9BB09D37013CFB97AC3691470D21978611C364DE9CC0F8395DCCE44D2029C";
    assert!(
        out.contains(&format!("sha256(unibeam) = {digest}")),
        "output:\n{out}"
    );
}

#[test]
fn halt_0_exits_0() {
    let (code, out) = run_halt_fixture(0);
    assert_eq!(code, Some(0), "output:\n{out}");
    // microvm has no PCI bus; the kernel saying so is no error to show.
    assert!(!out.contains("PCI: Fatal"), "output:\n{out}");
}

#[test]
fn initramfs_holds_the_release_and_no_shell() {
    let dir = tempfile::tempdir().unwrap();
    // Debian's kernel, whose drivers are modules: their load order is checked.
    let image = build_image_with(
        &hello_release(),
        &dir.path().join("hello.unibeam"),
        &["--kernel", "debian"],
    );
    let entries = initramfs_entries(&image.join("initramfs.img"));
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    let shells = ["sh", "bash", "dash", "ash", "busybox", "toybox"];
    for (name, _) in &entries {
        let base = name.rsplit('/').next().unwrap();
        assert!(!shells.contains(&base), "initramfs holds a shell: {name}");
    }
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("bin/") || n.starts_with("sbin/")),
        "{names:?}"
    );
    for needed in [
        "init",
        "lib64/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libc.so.6",
        "lib/modules/virtio_net.ko",
        "release/erts-13.1.5/bin/beam.smp",
        "release/releases/0.1.0/start.boot",
        "dev/console",
    ] {
        assert!(names.contains(&needed), "initramfs lacks {needed}");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(image.join("image.json")).unwrap()).unwrap();
    let modules: Vec<&str> = manifest["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let pos = |m: &str| {
        modules
            .iter()
            .position(|x| *x == m)
            .unwrap_or_else(|| panic!("{m} not in {modules:?}"))
    };
    // Load order from modinfo depends=: dependencies first.
    assert!(pos("virtio") < pos("virtio_net"));
    assert!(pos("virtio_ring") < pos("virtio_net"));
    assert!(pos("net_failover") < pos("virtio_net"));
    assert!(pos("failover") < pos("net_failover"));
    assert_eq!(manifest["release"]["name"], "hello");
    assert_eq!(manifest["erts_version"], "13.1.5");
}
