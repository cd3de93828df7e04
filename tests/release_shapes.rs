//! Release shapes unibeam does not support, or supports only in part: each
//! gets a one-line error, or a warning that names the file, at build time
//! and before any VM starts. No VM boots here.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use unibeam_e2e::*;

/// A private copy of examples/hello to change.
fn hello_copy(dir: &Path) -> PathBuf {
    let release = dir.join("hello");
    copy_tree(&hello_release(), &release);
    release
}

fn build(release: &Path, flags: &[&str]) -> Output {
    let out = release.with_extension("unibeam");
    let mut args = vec!["build", release.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(flags);
    unibeam_output(&args, &[])
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The build failed with one error (and its causes), which it returns.
fn one_line_failure(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    unibeam_e2e::one_line(out)
}

/// The build succeeded; its `warning: ` lines.
fn warnings(out: &Output) -> Vec<String> {
    assert!(out.status.success(), "{}", stderr(out));
    stderr(out)
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .map(String::from)
        .collect()
}

fn append_vm_args(release: &Path, line: &str) {
    let path = release.join("releases/0.1.0/vm.args");
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str(line);
    fs::write(path, text).unwrap();
}

#[test]
fn an_args_file_by_absolute_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let release = hello_copy(dir.path());
    // Where the file is on the build host; the guest's layout differs.
    let extra = release.join("releases/0.1.0/extra.args");
    fs::write(&extra, "+K true\n").unwrap();
    append_vm_args(&release, &format!("-args_file {}\n", extra.display()));
    let line = one_line_failure(&build(&release, &[]));
    assert!(
        line.contains("vm.args:")
            && line.contains("-args_file")
            && line.contains("relative to the release root"),
        "{line}"
    );
}

#[test]
fn a_missing_args_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let release = hello_copy(dir.path());
    append_vm_args(&release, "-args_file releases/0.1.0/missing.args\n");
    let line = one_line_failure(&build(&release, &[]));
    assert!(
        line.contains("missing.args") && line.contains("no such file"),
        "{line}"
    );
}

#[test]
fn an_unknown_release_version_names_the_ones_there() {
    let dir = tempfile::tempdir().unwrap();
    let release = hello_copy(dir.path());
    let line = one_line_failure(&build(&release, &["--release-version", "9.9.9"]));
    assert!(
        line.contains("9.9.9") && line.contains("0.1.0") && line.contains("--release-version"),
        "{line}"
    );
    let line = one_line_failure(&build(&release, &["--release-version", "../../etc"]));
    assert!(line.contains("not a plain name"), "{line}");
}

#[test]
fn a_start_erl_data_version_that_leaves_the_release_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let release = hello_copy(dir.path());
    fs::write(
        release.join("releases/start_erl.data"),
        "13.1.5 ../../outside/0.1.0\n",
    )
    .unwrap();
    let line = one_line_failure(&build(&release, &[]));
    assert!(
        line.contains("start_erl.data") && line.contains("not a plain name"),
        "{line}"
    );
}

#[test]
fn files_no_start_script_reads_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let release = hello_copy(dir.path());
    fs::write(release.join("releases/0.1.0/app.conf"), "x = 1\n").unwrap();
    fs::create_dir_all(release.join("bin/hooks")).unwrap();
    fs::write(release.join("bin/hooks/pre_start.sh"), "#!/bin/sh\n").unwrap();
    let found = warnings(&build(&release, &[]));
    assert!(
        found.iter().any(|w| w.contains("releases/0.1.0/app.conf")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|w| w.contains("bin/hooks") && w.contains("do not run")),
        "{found:?}"
    );
    // hello as rebar3 made it warns about nothing.
    let clean = dir.path().join("clean");
    copy_tree(&hello_release(), &clean);
    assert_eq!(warnings(&build(&clean, &[])), Vec::<String>::new());
}

#[test]
fn a_stale_rendered_config_beside_a_template_is_not_used() {
    // Checked on the image: its boot spec names the .src as the source.
    let dir = tempfile::tempdir().unwrap();
    let release = hello_copy(dir.path());
    let vsn = release.join("releases/0.1.0");
    fs::write(vsn.join("sys.config.src"), "[{hello, [{port, ${PORT}}]}].\n").unwrap();
    fs::write(vsn.join("sys.config"), "[{hello, [{port, 1}]}].\n").unwrap();
    let out = build(&release, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(release.with_extension("unibeam").join("image.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["boot"]["release"]["sys_config_source"], "template");
    assert_eq!(manifest["boot"]["release"]["vm_args_source"], "plain");
}

#[test]
fn with_program_adds_a_program_the_scan_cannot_see() {
    let dir = tempfile::tempdir().unwrap();
    let release = hello_copy(dir.path());
    let out = build(&release, &["--with-program", "date"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let entries = initramfs_entries(&release.with_extension("unibeam").join("initramfs.img"));
    for path in ["usr/bin/date", "usr/bin/dash", "usr/bin/sh", "bin"] {
        assert!(entries.iter().any(|(n, _)| n == path), "{path} missing");
    }
    let line = one_line_failure(&build(&release, &["--with-program", "no-such-program"]));
    assert!(line.contains("--with-program no-such-program"), "{line}");
    let line = one_line_failure(&build(&release, &["--with-program", "../../bin/date"]));
    assert!(line.contains("no such program"), "{line}");
}
