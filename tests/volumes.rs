//! Volumes end to end: ext4 on a sparse file, attached with `run -v
//! NAME:/path[:ro]` and managed with `unibeam volume`. The examples/notes
//! service writes to its volume and answers 201 only after an fsync, so a
//! test can hold unibeam to its promise: an acknowledged write survives a
//! stop, a restart, a kill -9 of QEMU, an export and an import.
//!
//! Each scenario runs in its own sandbox (state, cache and temp dirs) and
//! ends with `assert_clean`. Boots are slow under TCG and the host is
//! small, so the scenarios that boot take turns.

use serde_json::Value;
use std::collections::HashSet;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use unibeam_e2e::http::{add_note, http_post, listed_notes};
use unibeam_e2e::sandbox::{signal, Sandbox};
use unibeam_e2e::*;

/// One booting scenario at a time: TCG on two shared cores.
static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

fn vm_turn() -> MutexGuard<'static, ()> {
    ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The notes example's image, built once per test binary beside it.
fn notes_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/<profile>/deps");
        let out = profile_dir.join("e2e-volumes/notes.unibeam");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let release = release("examples/notes", "notes");
        build_image_with(&release, &out, &["--compression", "none"])
            .to_str()
            .unwrap()
            .to_string()
    })
}

/// A sandbox whose instances are all removed (`rm -f`) however the test
/// ends, so a failed assertion leaves no QEMU behind.
struct World(Sandbox);

impl World {
    fn new() -> World {
        World(Sandbox::new())
    }
}

impl Deref for World {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.0
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let names: Vec<String> = std::fs::read_dir(self.0.instances())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        for name in names {
            let _ = self.0.unibeam(&["rm", "-f", &name]);
        }
    }
}

/// Whether an acknowledged note is listed: by `<id> <body>`, or by its body
/// alone when the answer was cut before the id arrived.
fn is_listed(listed: &HashSet<String>, id: &str, body: &str) -> bool {
    if id.is_empty() {
        listed
            .iter()
            .any(|line| line.split_once(' ').is_some_and(|(_, b)| b == body))
    } else {
        listed.contains(&format!("{id} {body}"))
    }
}

/// `run -d --name NAME -p PORT:8080 -v ... notes`, then waits until it
/// answers HTTP; its port.
fn boot(s: &Sandbox, name: &str, volumes: &[&str], extra: &[&str]) -> u16 {
    let port = free_port();
    let publish = format!("{port}:8080");
    let mut args = vec!["run", "-d", "--name", name, "-p", &publish];
    for v in volumes {
        args.extend(["-v", v]);
    }
    args.extend(extra);
    args.push(notes_image());
    s.ok(&args);
    wait_http(s, name, port);
    port
}

/// Polls `GET /` until it answers 200; fails early if the instance ends.
fn wait_http(s: &Sandbox, name: &str, port: u16) {
    let started = Instant::now();
    let deadline = started + BOOT_TIMEOUT;
    loop {
        if let Some((200, _)) = http_get(port) {
            eprintln!("{name}: HTTP 200 after {:?}", started.elapsed());
            return;
        }
        let record = s.record(name);
        let logs = || String::from_utf8_lossy(&s.unibeam(&["logs", name]).stdout).into_owned();
        assert!(
            record["state"] != "exited",
            "{name} ended before answering HTTP: {record}\n{}",
            logs()
        );
        assert!(
            Instant::now() < deadline,
            "{name}: no HTTP 200 on {port} within {BOOT_TIMEOUT:?}: {record}\n{}",
            logs()
        );
        thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until `rpc NAME ok` answers.
fn wait_rpc(s: &Sandbox, name: &str) {
    rpc_when_up(name, "ok", |args| s.unibeam(args));
}

/// `rpc NAME EXPR`'s printed value.
fn rpc(s: &Sandbox, name: &str, expr: &str) -> String {
    s.ok(&["rpc", name, expr, "--timeout", "30"]).trim().to_string()
}

fn inspect_volume(s: &Sandbox, name: &str) -> Value {
    serde_json::from_str(&s.ok(&["volume", "inspect", name])).expect("volume inspect prints JSON")
}

/// The volume's disk file, as `volume inspect` names it.
fn volume_file(s: &Sandbox, name: &str) -> PathBuf {
    let file = PathBuf::from(inspect_volume(s, name)["file"].as_str().expect("a file"));
    assert_eq!(
        file,
        s.state().join(format!("unibeam/volumes/{name}/disk.ext4")),
        "volume inspect {name}"
    );
    assert!(file.is_file(), "{} is missing", file.display());
    file
}

/// The names `volume ls --format json` lists.
fn volume_names(s: &Sandbox) -> Vec<String> {
    let all: Value = serde_json::from_str(&s.ok(&["volume", "ls", "--format", "json"]))
        .expect("volume ls --format json prints JSON");
    all.as_array()
        .expect("a JSON array")
        .iter()
        .map(|v| v["name"].as_str().expect("a name").to_string())
        .collect()
}

/// `e2fsck -n -f FILE` finds nothing to fix.
fn assert_fsck_clean(file: &std::path::Path) {
    let out = Command::new("/usr/sbin/e2fsck")
        .arg("-n")
        .arg("-f")
        .arg(file)
        .env("LC_ALL", "C")
        .output()
        .expect("e2fsck runs (apt-get install e2fsprogs)");
    assert_eq!(
        out.status.code(),
        Some(0),
        "e2fsck -n -f {} is not clean:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn qemu_pid(record: &Value) -> u32 {
    record["qemu"]["pid"].as_u64().expect("a QEMU pid") as u32
}

/// 0 to 2 s, different each call.
fn jitter() -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    Duration::from_millis(u64::from(nanos) % 2000)
}

#[test]
fn data_survives_stop_and_run_again() {
    let _turn = vm_turn();
    let s = World::new();
    let port = boot(&s, "first", &["notes-data:/data"], &[]);
    let notes: Vec<String> = (1..=3)
        .map(|i| {
            let body = format!("note {i} outlives its instance");
            format!("{} {body}", add_note(port, &body))
        })
        .collect();
    assert_eq!(
        inspect_volume(&s, "notes-data")["used_by"],
        serde_json::json!(["first"])
    );
    s.ok(&["stop", "first"]);
    s.ok(&["rm", "first"]);

    let port = boot(&s, "second", &["notes-data:/data"], &[]);
    let listed = listed_notes(port);
    for note in &notes {
        assert!(listed.contains(note), "{note:?} is gone; GET /notes: {listed:?}");
    }
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(
        http_get_path(port, "/notes/count"),
        Some((200, "3\n".to_string()))
    );
    s.ok(&["stop", "second"]);
    assert_fsck_clean(&volume_file(&s, "notes-data"));
    s.ok(&["rm", "second"]);
    s.ok(&["volume", "rm", "notes-data"]);
    assert!(volume_names(&s).is_empty());
    s.assert_clean();
}

#[test]
fn no_acknowledged_write_is_lost_when_qemu_is_killed() {
    const ROUNDS: usize = 5;
    const ACKS_PER_ROUND: usize = 3;
    let _turn = vm_turn();
    let s = World::new();
    let port = boot(&s, "dur", &["journal:/data"], &["--restart", "always"]);

    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let refused: Arc<Mutex<Vec<String>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, refused, done) = (acked.clone(), refused.clone(), done.clone());
        thread::spawn(move || {
            let mut seq = 0u64;
            let mut unanswered = 0u64;
            while !done.load(Ordering::Relaxed) {
                seq += 1;
                let body = format!("write-{seq}");
                match http_post(port, "/notes", &body, Duration::from_secs(10)) {
                    Some((201, id)) => acked.lock().unwrap().push((id.trim().to_string(), body)),
                    Some((code, text)) => refused.lock().unwrap().push(format!("{code} {text}")),
                    None => {
                        unanswered += 1;
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            }
            (seq, unanswered)
        })
    };
    let acks = || acked.lock().unwrap().len();
    let wait_acks = |at_least: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while acks() < at_least {
            assert!(
                Instant::now() < deadline,
                "only {} writes acknowledged, waited for {at_least}",
                acks()
            );
            thread::sleep(Duration::from_millis(50));
        }
    };

    let mut per_round = Vec::new();
    for round in 1..=ROUNDS {
        let before = acks();
        wait_acks(before + ACKS_PER_ROUND);
        thread::sleep(jitter());
        let record = s.record("dur");
        assert_eq!(record["state"], "running", "{record}");
        let old = qemu_pid(&record);
        signal(old, libc::SIGKILL);
        let killed_at = acks();
        per_round.push(killed_at - before);
        let again = s.wait_record("dur", BOOT_TIMEOUT, |r| {
            r["state"] == "running" && r["qemu"]["pid"].as_u64().is_some_and(|p| p != u64::from(old))
        });
        wait_http(&s, "dur", port);
        eprintln!(
            "round {round}: {} acks before kill -9 of QEMU {old}; restarted as {} (restarts {})",
            killed_at - before,
            qemu_pid(&again),
            again["restarts"]
        );
    }
    // Writes go on after the last restart too.
    wait_acks(acks() + ACKS_PER_ROUND);
    done.store(true, Ordering::Relaxed);
    let (sent, unanswered) = writer.join().expect("the writer thread panicked");

    let acked = acked.lock().unwrap().clone();
    let refused = refused.lock().unwrap().clone();
    let listed = listed_notes(port);
    let lost: Vec<String> = acked
        .iter()
        .filter(|(id, body)| !is_listed(&listed, id, body))
        .map(|(id, body)| format!("{id} {body}"))
        .collect();
    let with_id: Vec<&String> = acked
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !id.is_empty())
        .collect();
    let ids: HashSet<&String> = with_id.iter().copied().collect();
    eprintln!(
        "{ROUNDS} kill -9 rounds: {sent} POSTs, {} acknowledged (per round {per_round:?}), \
         {unanswered} unanswered, {} refused {refused:?}; GET /notes lists {}; {} lost",
        acked.len(),
        refused.len(),
        listed.len(),
        lost.len()
    );
    assert_eq!(ids.len(), with_id.len(), "one id acknowledged twice: {acked:?}");
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(per_round.len() >= ROUNDS);
    let record = s.record("dur");
    assert_eq!(record["restarts"], ROUNDS as u64, "{record}");

    s.ok(&["stop", "dur"]);
    let record = s.record("dur");
    assert_eq!(record["state"], "exited", "{record}");
    assert_fsck_clean(&volume_file(&s, "journal"));
    s.ok(&["rm", "dur"]);
    s.ok(&["volume", "rm", "journal"]);
    s.assert_clean();
}

#[test]
fn a_volume_in_use_is_refused_naming_its_holder() {
    let _turn = vm_turn();
    let s = World::new();
    s.ok(&["run", "-d", "--name", "holder", "-v", "data:/data", notes_image()]);
    s.wait_running("holder");

    for (second, request) in [("second", "data:/x"), ("reader", "data:/x:ro")] {
        let out = s.unibeam(&["run", "-d", "--name", second, "-v", request, notes_image()]);
        fails_naming(
            &out,
            125,
            &["volume data is in use by instance holder; stop that first"],
        );
        let ps = s.ps();
        assert!(
            ps.iter().all(|e| e["name"] != second),
            "a refused run left a record: {ps:?}"
        );
    }
    let out = s.unibeam(&[
        "volume",
        "export",
        "data",
        s.root().join("data.tar").to_str().unwrap(),
    ]);
    fails_naming(&out, 1, &["volume data is in use by instance holder"]);
    assert!(
        !s.root().join("data.tar").exists(),
        "a refused export wrote its file"
    );

    let out = s.unibeam(&["volume", "rm", "data"]);
    fails_naming(&out, 1, &["volume data is used by instance holder", "unibeam rm"]);
    assert_eq!(volume_names(&s), ["data"]);
    assert_eq!(
        inspect_volume(&s, "data")["used_by"],
        serde_json::json!(["holder"])
    );

    s.ok(&["rm", "-f", "holder"]);
    assert_eq!(s.ok(&["volume", "rm", "data"]).trim(), "data");
    assert!(volume_names(&s).is_empty());
    assert!(!s.state().join("unibeam/volumes/data").exists());
    s.assert_clean();
}

#[test]
fn a_full_volume_gives_enospc_and_the_service_keeps_answering() {
    let _turn = vm_turn();
    let s = World::new();
    assert_eq!(
        s.ok(&["volume", "create", "small", "--size", "16M"]).trim(),
        "small"
    );
    assert_eq!(inspect_volume(&s, "small")["bytes"], 16u64 << 20);
    let port = boot(&s, "full", &["small:/data"], &[]);
    let note = format!(
        "{} before the disk filled",
        add_note(port, "before the disk filled")
    );

    let answer = http_post(port, "/fill?mb=64", "", Duration::from_secs(120));
    let Some((code, body)) = answer else {
        panic!("POST /fill?mb=64 got no answer")
    };
    assert_eq!(code, 507, "POST /fill?mb=64 on a 16M volume: {body}");
    assert!(body.contains("enospc"), "{body}");

    let (code, body) = http_get(port).expect("GET / answers after ENOSPC");
    assert_eq!(code, 200, "{body}");
    assert!(listed_notes(port).contains(&note));
    let record = s.record("full");
    assert_eq!(record["state"], "running", "{record}");
    assert!(s.ok(&["ps"]).contains("full"), "ps no longer lists the instance");

    s.ok(&["stop", "full"]);
    assert_fsck_clean(&volume_file(&s, "small"));
    s.ok(&["rm", "full"]);
    s.ok(&["volume", "rm", "small"]);
    s.assert_clean();
}

#[test]
fn export_rm_import_keeps_the_data() {
    let _turn = vm_turn();
    let s = World::new();
    let port = boot(&s, "writer", &["orig:/data"], &[]);
    let bodies = ["exported one", "exported two", "exported three"];
    let notes: Vec<String> = bodies
        .iter()
        .map(|body| format!("{} {body}", add_note(port, body)))
        .collect();
    s.ok(&["stop", "writer"]);

    let tar = s.root().join("orig.tar");
    let tar_arg = tar.to_str().unwrap();
    s.ok(&["volume", "export", "orig", tar_arg]);
    assert!(
        std::fs::metadata(&tar).is_ok_and(|m| m.len() > 0),
        "no tar at {}",
        tar.display()
    );
    s.ok(&["rm", "writer"]);
    s.ok(&["volume", "rm", "orig"]);
    assert!(volume_names(&s).is_empty());

    assert_eq!(
        s.ok(&["volume", "import", "restored", tar_arg]).trim(),
        "restored"
    );
    assert_eq!(volume_names(&s), ["restored"]);
    let port = boot(&s, "reader", &["restored:/data"], &[]);
    let listed = listed_notes(port);
    for note in &notes {
        assert!(
            listed.contains(note),
            "{note:?} did not survive export and import: {listed:?}"
        );
    }
    s.ok(&["stop", "reader"]);
    s.ok(&["rm", "reader"]);

    // Read-only: the files are there, and the guest cannot write.
    boot(&s, "ro", &["restored:/data:ro"], &[]);
    wait_rpc(&s, "ro");
    let quoted: Vec<String> = bodies.iter().map(|b| format!("<<\"{b}\">>")).collect();
    let all_there = format!(
        "{{ok, B}} = file:read_file(\"/data/notes.LOG\"), \
         lists:all(fun(N) -> binary:match(B, N) =/= nomatch end, [{}])",
        quoted.join(", ")
    );
    assert_eq!(rpc(&s, "ro", &all_there), "true");
    assert_eq!(
        rpc(&s, "ro", "file:write_file(\"/data/x\", <<\"y\">>)"),
        "{error,erofs}"
    );
    s.ok(&["rm", "-f", "ro"]);
    s.ok(&["volume", "rm", "restored"]);
    s.assert_clean();
}

#[test]
fn bad_volume_inputs_get_one_line_errors() {
    let s = World::new();
    let image = notes_image();
    let run = |volumes: &[&str]| {
        let mut args = vec!["run", "-d", "--name", "bad"];
        for v in volumes {
            args.extend(["-v", v]);
        }
        args.push(image);
        s.unibeam(&args)
    };

    // Rejected as the flags are read: clap's exit 2, one line.
    fails_naming(
        &s.unibeam(&["volume", "create", "../x"]),
        2,
        &["\"../x\"", "volume name"],
    );
    fails_naming(&run(&["../x:/data"]), 2, &["\"../x\"", "volume name"]);
    fails_naming(&run(&["data:data"]), 2, &["data:data", "not an absolute path"]);
    fails_naming(&run(&["data"]), 2, &["NAME:/path"]);
    fails_naming(&run(&["data:/d:RO"]), 2, &["\"RO\" is not a mode"]);
    fails_naming(&run(&["data:/d:r0"]), 2, &["\"r0\" is not a mode"]);
    fails_naming(&run(&["data:/d:rw:ro"]), 2, &["/d:rw"]);
    fails_naming(&run(&["data:/proc/x"]), 2, &["/proc/x"]);
    fails_naming(&run(&["data:/"]), 2, &["other than /"]);
    fails_naming(
        &s.unibeam(&["volume", "create", "v", "--size", "1M"]),
        2,
        &["\"1M\"", "too small", "16M"],
    );
    fails_naming(
        &s.unibeam(&["volume", "create", "v", "--size", "lots"]),
        2,
        &["\"lots\"", "not a size"],
    );
    fails_naming(
        &s.unibeam(&["volume", "import", "v", "x.tar", "--size", "1M"]),
        2,
        &["\"1M\"", "too small"],
    );
    assert!(volume_names(&s).is_empty(), "a rejected flag made a volume");

    // Refused by unibeam itself: 125 for run, 1 for volume.
    fails_naming(&run(&["a:/x", "a:/y"]), 125, &["volume a is asked for twice"]);
    fails_naming(&run(&["a:/x", "b:/x"]), 125, &["two volumes are mounted on /x"]);
    fails_naming(
        &s.unibeam(&["volume", "rm", "nosuch"]),
        1,
        &["no volume named nosuch"],
    );
    fails_naming(
        &s.unibeam(&["volume", "inspect", "nosuch"]),
        1,
        &["no volume named nosuch"],
    );
    s.ok(&["volume", "create", "twice", "--size", "16M"]);
    fails_naming(
        &s.unibeam(&["volume", "create", "twice"]),
        1,
        &["volume twice already exists"],
    );

    // A disk file that is not ext4 is refused before any boot.
    s.ok(&["volume", "create", "v", "--size", "16M"]);
    let disk = volume_file(&s, "v");
    std::fs::write(&disk, vec![0x5au8; 1 << 20]).unwrap();
    let line = fails_naming(
        &run(&["v:/d"]),
        125,
        &[disk.to_str().unwrap(), "is not an ext4 filesystem", "volume v"],
    );
    eprintln!("garbage disk: {line}");

    let not_a_tar = s.root().join("not-a-tar.txt");
    std::fs::write(&not_a_tar, "just some words\n").unwrap();
    fails_naming(
        &s.unibeam(&["volume", "import", "x", not_a_tar.to_str().unwrap()]),
        1,
        &[not_a_tar.to_str().unwrap(), "not a tar archive"],
    );
    let missing = s.root().join("missing.tar");
    fails_naming(
        &s.unibeam(&["volume", "import", "y", missing.to_str().unwrap()]),
        1,
        &[missing.to_str().unwrap()],
    );
    let mut left = volume_names(&s);
    left.sort();
    assert!(
        !left.iter().any(|n| n == "x" || n == "y"),
        "a failed import left its volume: {left:?}"
    );
    assert!(
        !s.state().join("unibeam/volumes/x").exists(),
        "a failed import left its directory"
    );

    let ps = s.ps();
    assert!(ps.is_empty(), "a refused run left a record: {ps:?}");
    for name in left {
        s.ok(&["volume", "rm", &name]);
    }
    s.assert_clean();
}
