//! Bad input gets one line naming the culprit and a non-zero exit.

use unibeam_e2e::*;

fn one_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr).trim().to_string();
    assert_eq!(
        text.lines().count(),
        1,
        "expected a one-line error, got:\n{text}"
    );
    text
}

#[test]
fn build_on_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-release");
    let out = unibeam_output(&["build", missing.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let line = one_line(&out.stderr);
    assert!(
        line.contains(missing.to_str().unwrap()) && line.contains("no such file or directory"),
        "{line}"
    );
}

#[test]
fn build_on_a_directory_that_is_not_a_release() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README"), "not a release").unwrap();
    let out = unibeam_output(&["build", dir.path().to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let line = one_line(&out.stderr);
    assert!(
        line.contains(dir.path().to_str().unwrap()) && line.contains("not an Erlang release"),
        "{line}"
    );
}

#[test]
fn run_without_qemu_installed() {
    let empty_path = tempfile::tempdir().unwrap();
    let out = unibeam_output(
        &["run", hello_release().to_str().unwrap()],
        &[("PATH", empty_path.path().to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(125));
    let line = one_line(&out.stderr);
    assert!(
        line.contains("qemu-system-x86_64 not found") && line.contains("apt-get install"),
        "{line}"
    );
}

#[test]
fn run_with_a_bad_port_mapping() {
    let out = unibeam_output(&["run", "whatever", "-p", "80"], &[]);
    assert_ne!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("bad port mapping \"80\""), "{text}");
}

#[test]
fn run_on_something_that_is_neither_image_nor_release() {
    let dir = tempfile::tempdir().unwrap();
    let out = unibeam_output(&["run", dir.path().to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(125));
    let line = one_line(&out.stderr);
    assert!(
        line.contains("neither a unibeam image nor a release"),
        "{line}"
    );
}
