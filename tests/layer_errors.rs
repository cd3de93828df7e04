//! A layer that cannot be written to the cache: the error names the layer
//! file, and the OS error follows on its own `caused by:` line.

use std::fs;
use std::process::Command;
use unibeam_e2e::*;

/// `unibeam build` of hello with the layer cache on a read-only bind
/// mount, in a private mount namespace (tests run as root, so file modes
/// would not stop the write).
#[test]
fn a_failed_layer_write_names_the_layer_file_and_the_os_error() {
    let dir = tempfile::tempdir().unwrap();
    let xdg_cache = dir.path().join("cache");
    let layers = xdg_cache.join("unibeam/layers");
    fs::create_dir_all(&layers).unwrap();
    // The kernel is not what this test is about: a file with an ELF
    // header is taken as a kernel with everything built in, so no kernel
    // cache is needed and the build reaches the layers.
    let kernel = dir.path().join("vmlinux");
    fs::write(&kernel, b"\x7fELF\x02\x01\x01\0").unwrap();
    let out_image = dir.path().join("out/hello.unibeam");
    fs::create_dir_all(out_image.parent().unwrap()).unwrap();
    let script = r#"
        mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 97
        if touch "$1/probe" 2>/dev/null; then echo "the cache is still writable" >&2; exit 98; fi
        shift
        exec "$@"
    "#;
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", script, "sh"])
        .arg(&xdg_cache)
        .arg(unibeam())
        .arg("build")
        .arg(hello_release())
        .arg("-o")
        .arg(&out_image)
        .arg("--kernel")
        .arg(&kernel)
        .env("XDG_CACHE_HOME", &xdg_cache)
        .output()
        .expect("unshare runs (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.starts_with("unshare:") && !matches!(out.status.code(), Some(97 | 98)),
        "could not make the cache read-only in a private mount namespace:\n{stderr}"
    );
    assert!(!out.status.success(), "the build succeeded:\n{stderr}");
    assert!(!out_image.exists(), "a failed build left {}", out_image.display());
    let lines: Vec<&str> = stderr.lines().collect();
    let prefix = format!("{}/", layers.display());
    let named = lines
        .iter()
        .position(|l| {
            l.split_whitespace()
                .any(|w| w.starts_with(&prefix) && w.len() > prefix.len() + 32)
        })
        .unwrap_or_else(|| panic!("no line names a file in {}:\n{stderr}", layers.display()));
    assert!(
        !lines[named].contains("Read-only") && !lines[named].contains("os error"),
        "the OS error belongs on its own line:\n{stderr}"
    );
    assert!(
        lines[named + 1..]
            .iter()
            .any(|l| l.starts_with("  caused by: ") && l.contains("Read-only file system")),
        "no `caused by:` line with the OS error after the file's:\n{stderr}"
    );
    assert_eq!(
        stderr.matches("Read-only file system").count(),
        1,
        "the OS error is printed once:\n{stderr}"
    );
}
