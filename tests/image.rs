//! End-to-end checks of the image builder: reproducibility, layer caching,
//! `inspect`, and other inputs than a release directory.

use std::fs;
use std::path::Path;
use std::process::Command;
use unibeam_e2e::*;

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

fn manifest(image: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(image.join("image.json")).unwrap()).unwrap()
}

fn layer_keys(image: &Path) -> Vec<(String, String)> {
    manifest(image)["initramfs"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["key"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn two_builds_are_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let build = |out: &str| {
        let out = dir.path().join(out);
        let o = unibeam_output(
            &[
                "build",
                hello_release().to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--no-cache",
            ],
            &[],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    };
    let (a, b) = (build("a"), build("b"));
    for file in ["vmlinuz", "initramfs.img", "image.json"] {
        assert_eq!(sha256(&a.join(file)), sha256(&b.join(file)), "{file} differs");
    }
}

#[test]
fn an_app_change_rebuilds_only_the_app_layer() {
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("hello");
    copy_tree(&hello_release(), &release);
    let before = layer_keys(&build_image(&release, &dir.path().join("before")));
    // Change one module of the app: recompile hello_app with a new vsn.
    let src =
        fs::read_to_string(workspace_root().join("examples/hello/apps/hello/src/hello_app.erl")).unwrap();
    let changed = dir.path().join("hello_app.erl");
    fs::write(
        &changed,
        src.replace(
            "-behaviour(application).",
            "-behaviour(application).\n-vsn(\"changed\").",
        ),
    )
    .unwrap();
    let status = Command::new("erlc")
        .arg("+deterministic")
        .arg("-o")
        .arg(release.join("lib/hello-0.1.0/ebin"))
        .arg(&changed)
        .status()
        .expect("erlc runs");
    assert!(status.success());
    let after = layer_keys(&build_image(&release, &dir.path().join("after")));
    for ((name, key_before), (_, key_after)) in before.iter().zip(&after) {
        if name == "app" {
            assert_ne!(key_before, key_after, "app layer must change");
        } else {
            assert_eq!(key_before, key_after, "{name} layer must be reused");
        }
    }
}

#[test]
fn inspect_totals_match_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(&hello_release(), &dir.path().join("hello.unibeam"));
    let out = unibeam_output(
        &["inspect", image.to_str().unwrap(), "--format", "json", "--files"],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = report["initramfs"]["layers"].as_array().unwrap();
    let names: Vec<&str> = layers.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["base", "erts", "deps", "app"]);
    let layer_sum: u64 = layers.iter().map(|l| l["bytes"].as_u64().unwrap()).sum();
    let initramfs = fs::metadata(image.join("initramfs.img")).unwrap().len();
    let kernel = fs::metadata(image.join("vmlinuz")).unwrap().len();
    assert_eq!(layer_sum, initramfs);
    assert_eq!(report["kernel"]["bytes"].as_u64().unwrap(), kernel);
    assert_eq!(report["total_bytes"].as_u64().unwrap(), kernel + initramfs);
    let apps: Vec<&str> = report["applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["application"].as_str().unwrap())
        .collect();
    for app in ["hello-0.1.0", "inets-8.2.2", "kernel-8.5.3", "stdlib-4.2"] {
        assert!(apps.contains(&app), "{app} missing from {apps:?}");
    }
    let files = report["files"].as_array().unwrap();
    let beam_smp = files
        .iter()
        .find(|f| f["path"] == "/release/erts-13.1.5/bin/beam.smp")
        .unwrap();
    assert_eq!(beam_smp["layer"], "erts");
    assert_eq!(beam_smp["sha256"].as_str().unwrap().len(), 64);
    // What the release cannot use at run time is gone.
    for f in files {
        let path = f["path"].as_str().unwrap();
        assert!(
            !path.contains("/src/") && !path.contains("/doc/") && !path.contains("/include/"),
            "{path}"
        );
        assert!(
            !path.ends_with("/erlc") && !path.ends_with("/dialyzer") && !path.ends_with("/epmd"),
            "{path}"
        );
    }
    let text = unibeam_output(&["inspect", image.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("layer") && text.contains("stdlib-4.2") && text.contains("deps"),
        "{text}"
    );
}

#[test]
fn tarball_release_boots_and_answers_http() {
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(&hello_tarball(), &dir.path().join("hello.unibeam"));
    let port = free_port();
    let mut vm = Vm::run(&[image.to_str().unwrap(), "-p", &format!("{port}:8080")]);
    let (body, _) = vm.wait_http_ok(port, BOOT_TIMEOUT);
    assert!(body.starts_with("hello from hello on hello "), "body: {body}");
    vm.interrupt();
    assert_eq!(
        vm.wait(std::time::Duration::from_secs(90)).code(),
        Some(0),
        "{}",
        vm.output()
    );
}

#[test]
fn project_dir_finds_its_release() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("img");
    let project = workspace_root().join("examples/hello");
    hello_release();
    let o = unibeam_output(
        &["build", project.to_str().unwrap(), "-o", out.to_str().unwrap()],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(manifest(&out)["release"]["name"], "hello");
}

#[test]
fn erts_from_host_fills_in_a_release_without_erts() {
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("hello");
    copy_tree(&hello_release(), &release);
    fs::remove_dir_all(release.join("erts-13.1.5")).unwrap();
    let out = dir.path().join("img");
    let o = unibeam_output(
        &[
            "build",
            release.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--erts-from-host",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = manifest(&out);
    let files = m["files"].as_array().unwrap();
    let beam = files
        .iter()
        .find(|f| f["path"] == "/release/erts-13.1.5/bin/beam.smp");
    assert_eq!(beam.expect("ERTS came from the host")["layer"], "erts");
}

const SHELL_PATHS: [&str; 4] = ["bin/sh", "usr/bin/sh", "usr/bin/dash", "bin"];

#[test]
fn hello_image_has_no_shell() {
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(&hello_release(), &dir.path().join("hello.unibeam"));
    let entries = initramfs_entries(&image.join("initramfs.img"));
    for (name, _) in &entries {
        assert!(!SHELL_PATHS.contains(&name.as_str()), "hello got a shell: {name}");
        assert!(!name.ends_with("/dash"), "hello got a shell: {name}");
    }
    assert_eq!(manifest(&image)["shell"]["included"], false);
    let text = unibeam_output(&["inspect", image.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("shell: none"), "{text}");
}

#[test]
fn os_mon_release_gets_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let release = os_mon_release(dir.path());
    let image = build_image(&release, &dir.path().join("auto.unibeam"));
    let entries = initramfs_entries(&image.join("initramfs.img"));
    let mode = |path: &str| entries.iter().find(|(n, _)| n == path).map(|(_, m)| *m);
    const S_IFMT: u32 = 0o170000;
    assert_eq!(
        mode("bin").map(|m| m & S_IFMT),
        Some(0o120000),
        "/bin is a symlink"
    );
    assert_eq!(mode("usr/bin/sh").map(|m| m & S_IFMT), Some(0o120000));
    for program in ["usr/bin/dash", "usr/bin/df"] {
        let m = mode(program).unwrap_or_else(|| panic!("{program} missing"));
        assert_eq!(m & S_IFMT, 0o100000, "{program} is a file");
        assert_ne!(m & 0o111, 0, "{program} is executable");
    }
    let inspect = unibeam_output(&["inspect", image.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(text.contains("shell: /bin/sh (dash), because: os_mon"), "{text}");
    assert!(text.contains("programs: df"), "{text}");

    let out = dir.path().join("never.unibeam");
    let o = unibeam_output(
        &[
            "build",
            release.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--shell",
            "never",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("warning: --shell never") && l.contains("os_mon")),
        "{stderr}"
    );
    let entries = initramfs_entries(&out.join("initramfs.img"));
    for (name, _) in &entries {
        assert!(
            !SHELL_PATHS.contains(&name.as_str()) && !name.ends_with("/df"),
            "{name}"
        );
    }
    assert_eq!(manifest(&out)["shell"]["included"], false);
}
