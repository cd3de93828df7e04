//! What a hostile or careless user can hand unibeam: an output directory
//! full of their own files, instance names that climb out of the state
//! directory, tarballs with escaping members, file names that are not
//! UTF-8, huge sparse files, cookies others can read, instance records
//! that are gone or garbled, a Ctrl-C mid-build, records a crashed host
//! left. Each gets a non-zero exit and one stderr line naming the culprit,
//! or a truthful `ps`, and leaves nothing behind.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use unibeam_e2e::sandbox::Sandbox;
use unibeam_e2e::*;

fn hello_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("hello");
    copy_tree(&hello_release(), &release);
    (dir, release)
}

fn build(sandbox: &Sandbox, input: &Path, out: &Path) -> Output {
    let mut cmd = sandbox.command(&["build", "--compression", "none"]);
    cmd.arg(input).arg("-o").arg(out);
    cmd.output().expect("unibeam build runs")
}

#[test]
fn build_never_replaces_a_directory_holding_the_users_files() {
    let sandbox = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // An image unibeam made is replaced by a rebuild.
    assert!(build(&sandbox, &hello_release(), &out).status.success());
    let rebuilt = build(&sandbox, &hello_release(), &out);
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    // A user's directory that happens to hold a file named image.json is not.
    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("image.json"), "{}").unwrap();
    std::fs::write(mine.join("thesis.tex"), "years of work").unwrap();
    let out = build(&sandbox, &hello_release(), &mine);
    fails_naming(
        &out,
        1,
        &[mine.to_str().unwrap(), "thesis.tex", "choose another -o"],
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("thesis.tex")).unwrap(),
        "years of work"
    );
    // Nor is an image beside which the user put a file of their own.
    std::fs::copy(
        shared_hello_image().join("image.json"),
        dir.path().join("out/image.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("out/notes.txt"), "mine").unwrap();
    let refused = build(&sandbox, &hello_release(), &dir.path().join("out"));
    fails_naming(&refused, 1, &["notes.txt"]);
    assert!(dir.path().join("out/notes.txt").exists());
    sandbox.assert_clean();
}

#[test]
fn run_detached_refuses_an_image_path_that_is_not_utf8() {
    let sandbox = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    let latin1 = dir.path().join(OsStr::from_bytes(b"caf\xe9.unibeam"));
    copy_tree(shared_hello_image(), &latin1);
    let mut cmd = sandbox.command(&["run", "-d", "--name", "latin1"]);
    let out = cmd.arg(&latin1).output().expect("unibeam runs");
    fails_naming(&out, 125, &["caf", "not UTF-8", "rename it"]);
    // Nothing is left that `rm` could not remove.
    assert!(!sandbox.instances().join("latin1").exists());
    sandbox.assert_clean();
}

#[test]
fn instance_names_that_leave_the_state_directory_are_refused() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.instances()).unwrap();
    // A directory outside that looks like an instance, where
    // instances/../../victim leads: the target.
    let victim = sandbox.state().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let record = serde_json::json!({
        "name": "victim", "image": "/img", "release": "hello 0.1.0", "created": 1,
        "started": null, "ports": [], "accel": "tcg", "restart": {"policy": "no"},
        "restarts": 0, "state": "exited", "code": 0, "qemu": null, "monitor": null
    });
    std::fs::write(victim.join("instance.json"), record.to_string()).unwrap();
    std::fs::write(victim.join("console.log"), "private\n").unwrap();
    let absolute = victim.to_str().unwrap();
    for name in ["../../victim", absolute] {
        let verbs: [&[&str]; 5] = [&["rm"], &["rm", "-f"], &["logs"], &["stop"], &["kill"]];
        for verb in verbs {
            let mut args = verb.to_vec();
            args.push(name);
            let out = sandbox.unibeam(&args);
            let line = fails_naming(&out, 2, &[name, "instance name"]);
            assert!(!line.contains("private"), "{line}");
            assert!(
                out.stdout.is_empty(),
                "{args:?} printed {:?}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(
                victim.join("instance.json").exists(),
                "{args:?} removed {}",
                victim.display()
            );
        }
    }
    sandbox.assert_clean();
}

/// A tarball holding a release skeleton and `member`, whose name tar keeps
/// as given (-P): `../x` and `/abs` are stored, not cleaned up.
fn tarball_with(dir: &Path, member: &Path) -> PathBuf {
    let rel = dir.join("rel");
    std::fs::create_dir_all(rel.join("releases")).unwrap();
    std::fs::write(rel.join("releases/start_erl.data"), "13.1.5 0.1.0\n").unwrap();
    let tarball = dir.join("bad-0.1.0.tar.gz");
    let status = Command::new("tar")
        .arg("-czPf")
        .arg(&tarball)
        .arg("-C")
        .arg(&rel)
        .arg("releases")
        .arg(member)
        .status()
        .expect("tar runs");
    assert!(status.success(), "tar failed");
    tarball
}

#[test]
fn tarball_members_outside_the_release_refuse_the_tarball() {
    let sandbox = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("outside.txt"), "x").unwrap();
    let absolute = dir.path().join("outside.txt");
    for (member, problem) in [
        (Path::new("../outside.txt"), "'..'"),
        (absolute.as_path(), "absolute"),
    ] {
        let tarball = tarball_with(dir.path(), member);
        let out = build(&sandbox, &tarball, &dir.path().join("out"));
        let shown = member.to_str().unwrap();
        fails_naming(&out, 1, &[tarball.to_str().unwrap(), shown, problem, "refused"]);
        assert!(!dir.path().join("out").exists());
    }
    sandbox.assert_clean();
}

#[test]
fn release_file_names_that_are_not_utf8_are_refused_not_collapsed() {
    let sandbox = Sandbox::new();
    let (_dir, release) = hello_copy();
    let priv_dir = release.join("lib/hello-0.1.0/priv");
    std::fs::create_dir_all(&priv_dir).unwrap();
    // Both would become "caf\u{fffd}" if mangled: one file, silently.
    let names: [&[u8]; 2] = [b"caf\xe9", b"caf\xe8"];
    for name in names {
        std::fs::write(priv_dir.join(OsStr::from_bytes(name)), name).unwrap();
    }
    let out = build(&sandbox, &release, &release.with_extension("unibeam"));
    let line = fails_naming(&out, 1, &["priv/caf", "not UTF-8", "rename it"]);
    assert!(
        line.to_lowercase().contains("caf\\xe8"),
        "the exact bytes are named: {line}"
    );
    sandbox.assert_clean();
}

#[test]
fn a_huge_sparse_file_is_refused_before_it_is_read() {
    let sandbox = Sandbox::new();
    let (_dir, release) = hello_copy();
    let priv_dir = release.join("lib/hello-0.1.0/priv");
    std::fs::create_dir_all(&priv_dir).unwrap();
    let big = priv_dir.join("model.bin");
    std::fs::File::create(&big).unwrap().set_len(2 << 30).unwrap(); // 2 GiB, no disk
    let started = Instant::now();
    let out = build(&sandbox, &release, &release.with_extension("unibeam"));
    fails_naming(&out, 1, &[big.to_str().unwrap(), "2147483648 bytes", "512 MiB"]);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "it was read after all"
    );
    sandbox.assert_clean();
}

#[test]
fn instances_whose_record_is_gone_or_garbled_are_listed_and_removable() {
    let sandbox = Sandbox::new();
    let instances = sandbox.instances();
    std::fs::create_dir_all(instances.join("gone")).unwrap();
    std::fs::create_dir_all(instances.join("garbled")).unwrap();
    std::fs::write(instances.join("garbled/instance.json"), "{\"name\": \"garb").unwrap();
    let table = sandbox.ok(&["ps", "-a"]);
    for (name, why) in [
        ("gone", "broken: no instance.json"),
        ("garbled", "broken: corrupt instance.json"),
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(name) && l.contains(why)),
            "ps -a hides {name}:\n{table}"
        );
    }
    sandbox.assert_ps_truthful();
    let hello = shared_hello_image().to_str().unwrap();
    let out = sandbox.unibeam(&["run", "-d", "--name", "gone", hello]);
    fails_naming(
        &out,
        125,
        &["instance gone", "no instance.json", "unibeam rm -f gone"],
    );
    let out = sandbox.unibeam(&["rm", "garbled"]);
    fails_naming(
        &out,
        1,
        &["garbled", "corrupt instance.json", "unibeam rm -f garbled"],
    );
    for verb in ["logs", "stop", "kill"] {
        let out = sandbox.unibeam(&[verb, "gone"]);
        fails_naming(&out, 1, &["instance gone is broken", "rm -f"]);
    }
    sandbox.ok(&["rm", "-f", "gone"]);
    sandbox.ok(&["rm", "-f", "garbled"]);
    sandbox.assert_clean();
}

/// The pid's start time in clock ticks (field 22 of /proc/<pid>/stat).
fn start_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

#[test]
fn records_a_crashed_host_left_show_as_exited() {
    let sandbox = Sandbox::new();
    // A process alive now, with the same pid and start time as the record
    // says: after a reboot that happens, the count starting over.
    let mut stand_in = Command::new("sleep").arg("120").spawn().expect("sleep runs");
    let pid = stand_in.id();
    let earlier_boot = "00000000000040008000000000000001";
    let identity = serde_json::json!({"pid": pid, "start_ticks": start_ticks(pid), "boot": earlier_boot});
    let record = serde_json::json!({
        "name": "web", "image": "/img", "release": "hello 0.1.0", "created": 1,
        "started": 1, "ports": [], "accel": "tcg", "restart": {"policy": "always"},
        "restarts": 0, "state": "running", "qemu": identity, "monitor": identity
    });
    std::fs::create_dir_all(sandbox.instances().join("web")).unwrap();
    std::fs::write(sandbox.instances().join("web/instance.json"), record.to_string()).unwrap();
    let table = sandbox.ok(&["ps"]);
    assert!(
        !table.contains("web"),
        "ps lists a VM of an earlier boot as alive:\n{table}"
    );
    let web = sandbox.record("web");
    assert_eq!(
        (web["state"].as_str(), web["code"].as_i64()),
        (Some("exited"), Some(137)),
        "{web}"
    );
    // Reconciled on disk, not just in the display.
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sandbox.instances().join("web/instance.json")).unwrap())
            .unwrap();
    assert_eq!(on_disk["state"], "exited", "{on_disk}");
    assert!(on_disk["qemu"].is_null(), "{on_disk}");
    let _ = stand_in.kill();
    let _ = stand_in.wait();
    sandbox.ok(&["rm", "web"]);
    sandbox.assert_clean();
}

#[test]
fn a_cookie_file_others_can_write_is_refused() {
    let sandbox = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    let cookie = dir.path().join("cookie");
    std::fs::write(&cookie, "secretcookie\n").unwrap();
    std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o666)).unwrap();
    let hello = shared_hello_image().to_str().unwrap();
    let out = sandbox.unibeam(&[
        "run",
        "-d",
        "--name",
        "c",
        "--cookie-file",
        cookie.to_str().unwrap(),
        hello,
    ]);
    fails_naming(
        &out,
        125,
        &[cookie.to_str().unwrap(), "writable by others", "chmod 600"],
    );
    sandbox.assert_clean();
}

#[test]
fn a_cookie_file_others_can_read_is_warned_about() {
    let sandbox = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    let cookie = dir.path().join("cookie");
    std::fs::write(&cookie, "secretcookie\n").unwrap();
    std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o644)).unwrap();
    let hello = shared_hello_image().to_str().unwrap();
    let out = sandbox.unibeam(&[
        "run",
        "-d",
        "--name",
        "c",
        "--cookie-file",
        cookie.to_str().unwrap(),
        hello,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    sandbox.ok(&["rm", "-f", "c"]);
    assert!(out.status.success(), "{stderr}");
    let warning = format!("warning: --cookie-file {}: readable by others", cookie.display());
    assert_eq!(stderr.matches(&warning).count(), 1, "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
    std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = sandbox.unibeam(&[
        "run",
        "-d",
        "--name",
        "c",
        "--cookie-file",
        cookie.to_str().unwrap(),
        hello,
    ]);
    sandbox.ok(&["rm", "-f", "c"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("--cookie-file"),
        "{stderr}"
    );
    sandbox.assert_clean();
}

/// Waits until a directory named with `prefix` appears in `dir`.
fn wait_for_entry(dir: &Path, prefix: &str, build: &mut Vm) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let found = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
            })
            .unwrap_or(false);
        if found {
            return;
        }
        assert!(
            !build.has_exited(),
            "build ended before {prefix}* appeared:\n{}",
            build.output()
        );
        assert!(Instant::now() < deadline, "no {prefix}* in {}", dir.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn ctrl_c_during_a_tarball_build_leaves_nothing() {
    let sandbox = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hello.unibeam");
    // --no-cache: compressing every layer gives Ctrl-C time to land mid-write.
    let tarball = hello_tarball();
    let args = [
        "build",
        tarball.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--no-cache",
    ];
    let mut build = sandbox.spawn(&args);
    wait_for_entry(dir.path(), ".hello.unibeam.partial-", &mut build);
    build.interrupt();
    let status = build.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(130), "{}", build.output());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "an interrupted build left {left:?}");
    sandbox.assert_clean();
}

#[test]
fn what_dead_builds_left_is_swept_by_the_next_one() {
    let sandbox = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hello.unibeam");
    let dead = {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    let staging = dir.path().join(format!(".hello.unibeam.partial-{dead}"));
    let unpacked = sandbox
        .cache()
        .join(format!("unibeam/unpacked/tarball-{dead}-AbCdEf"));
    for leftover in [&staging, &unpacked] {
        std::fs::create_dir_all(leftover.join("releases")).unwrap();
        std::fs::write(leftover.join("releases/start_erl.data"), "13.1.5 0.1.0").unwrap();
    }
    let built = build(&sandbox, &hello_tarball(), &out);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(
        !staging.exists() && !unpacked.exists(),
        "a dead build's leftovers stayed"
    );
    sandbox.assert_clean();
}
