//! Suspend, resume and start from a snapshot, on real VMs: an in-memory
//! value survives a suspend, the guest's clocks are right after a resume,
//! two restores of one snapshot draw different random bytes, and a
//! damaged snapshot gives a cold boot and one warning line.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use unibeam_e2e::cluster::Cluster;
use unibeam_e2e::http::{add_note, listed_notes};
use unibeam_e2e::{
    build_image, free_port, http_200_within, one_line, release, rpc_when_up, shared_hello_image,
    stock_release, StateDir,
};

fn host_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A state dir whose snapshot cache is its own too.
fn state() -> (StateDir, tempfile::TempDir) {
    StateDir::with_own_cache()
}

fn rpc(state: &StateDir, name: &str, expr: &str) -> String {
    rpc_when_up(name, expr, |args| state.unibeam(args))
        .trim()
        .to_string()
}

fn status(state: &StateDir, name: &str) -> String {
    let ps: serde_json::Value = serde_json::from_str(&state.ok(&["ps", "-a", "--format", "json"])).unwrap();
    let entry = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {ps}"))
        .clone();
    entry["state"].as_str().unwrap_or_default().to_string()
}

#[test]
fn suspend_and_resume_keep_memory_and_put_the_clocks_right() {
    let (state, _cache) = state();
    state.start("sus", shared_hello_image());
    assert_eq!(rpc(&state, "sus", "persistent_term:put(counter, 41), ok"), "ok");
    let out = state.unibeam(&["suspend", "sus"]);
    assert!(out.status.success(), "{}", one_line(&out));
    assert_eq!(status(&state, "sus"), "suspended");
    assert!(state.instance_dir("sus").join("suspended/state.zst").is_file());

    // Long enough that a clock left where it stood is seen to lag.
    std::thread::sleep(Duration::from_secs(8));
    state.ok(&["start", "sus"]);
    assert_eq!(rpc(&state, "sus", "persistent_term:get(counter) + 1"), "42");
    assert!(
        !state.instance_dir("sus").join("suspended").exists(),
        "a state is loaded once"
    );
    for clock in ["os:system_time(millisecond)", "erlang:system_time(millisecond)"] {
        let before = host_ms();
        let guest: i64 = rpc(&state, "sus", clock).parse().unwrap();
        let after = host_ms();
        assert!(
            guest > before - 1000 && guest < after + 1000,
            "{clock} is {guest}, host between {before} and {after}"
        );
    }
    // A clock source that lost the time on disk would lag by all of it
    // (the TSC, marked unstable by the watchdog, had given way to jiffies).
    let source = rpc(
        &state,
        "sus",
        "element(2, file:read_file(\"/sys/devices/system/clocksource/clocksource0/current_clocksource\"))",
    );
    assert_eq!(source, "<<\"tsc\\n\">>");
    let log = state.ok(&["logs", "sus"]);
    assert!(log.contains("unibeam-init: restored"), "{log}");
}

#[test]
fn two_restores_of_one_snapshot_draw_different_random_bytes() {
    let (state, cache) = state();
    // hello has no crypto; the stock release (`rebar3 new release` with a
    // crypto NIF, os_mon, mnesia) has.
    let work = tempfile::tempdir().unwrap();
    let image = build_image(&stock_release(), &work.path().join("stock.unibeam"));
    let image = image.to_str().unwrap();
    state.ok(&["run", "-d", "--snapshot", "--name", "snap", image]);
    rpc(&state, "snap", "ok");
    wait_for_log(&state, "snap", "snapshot saved");
    let mut draws = Vec::new();
    // First `stop` and `start`; then `rm` and a new `run` of the same name
    // and settings, which was given no cookie either: it gets the one kept
    // for that name, so the key matches and it too is restored.
    for renewed in [false, true] {
        state.ok(if renewed {
            &["rm", "-f", "snap"][..]
        } else {
            &["stop", "snap"][..]
        });
        // As if saved ten minutes ago: a restored guest's clock jumps by
        // the time on disk, past init's one-minute limit for a frozen
        // BEAM, which must still wait for the host's word and reseed.
        let entry = only_entry(&cache.path().join("unibeam/snapshots"));
        age_snapshot(&entry, 600);
        if renewed {
            // As after a host reboot: the RAM's uncompressed copy is gone,
            // and is made again from the entry.
            remove_ram_copy(&entry);
        }
        if renewed {
            state.ok(&["run", "-d", "--snapshot", "--name", "snap", image]);
        } else {
            state.ok(&["start", "snap"]);
        }
        draws.push(rpc(&state, "snap", "crypto:strong_rand_bytes(16)"));
        let log = state.ok(&["logs", "snap"]);
        assert_eq!(log.matches("unibeam-init: restored").count(), 1, "{log}");
        assert!(!log.contains("no word from the host"), "{log}");
    }
    assert_ne!(draws[0], draws[1], "clones share their random bytes");
}

/// Moves a saved state's recorded save time `secs` into the past.
fn age_snapshot(entry: &Path, secs: u64) {
    let file = entry.join("snapshot.json");
    let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let saved = meta["saved_at_ns"].as_u64().expect("saved_at_ns");
    meta["saved_at_ns"] = (saved - secs * 1_000_000_000).into();
    std::fs::write(&file, serde_json::to_vec(&meta).unwrap()).unwrap();
}

#[test]
fn a_damaged_snapshot_boots_cold_with_one_warning() {
    let (state, cache) = state();
    let image = shared_hello_image().to_str().unwrap();
    state.ok(&["run", "-d", "--snapshot", "--name", "dmg", image]);
    wait_for_log(&state, "dmg", "snapshot saved");
    // Each part of a state: the devices' stream, then the RAM (with its
    // uncompressed copy gone, as after a host reboot, so it is read).
    for (round, part) in ["state.zst", "ram.zst"].into_iter().enumerate() {
        state.ok(&["stop", "dmg"]);
        let entry = only_entry(&cache.path().join("unibeam/snapshots"));
        if part == "ram.zst" {
            remove_ram_copy(&entry);
        }
        let file = entry.join(part);
        let mut bytes = std::fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();

        state.ok(&["start", "dmg"]);
        assert_eq!(rpc(&state, "dmg", "1 + 1"), "2");
        let log = state.ok(&["logs", "dmg"]);
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("booting cold")).collect();
        assert_eq!(warnings.len(), round + 1, "{log}");
        let warning = warnings[round];
        assert!(warning.contains("damaged") && warning.contains(part), "{warning}");
        assert_eq!(log.matches("unibeam-init: restored").count(), 0, "{log}");
        // The cold boot saves afresh.
        wait_until(
            || state.ok(&["logs", "dmg"]).matches("snapshot saved").count() == round + 2,
            "a fresh snapshot",
        );
    }
}

/// Removes the uncompressed RAM copy that `entry`'s record names.
fn remove_ram_copy(entry: &Path) {
    use std::os::unix::fs::MetadataExt;
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.join("snapshot.json")).unwrap()).unwrap();
    let copy = meta["ram"]["copy"].as_str().expect("the RAM is kept as a file");
    let uid = std::fs::metadata(entry).unwrap().uid();
    let path = Path::new(&format!("/dev/shm/unibeam-{uid}")).join(copy);
    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[test]
fn snapshot_with_volumes_and_suspend_of_a_stopped_instance_are_refused() {
    let (state, _cache) = state();
    let image = shared_hello_image().to_str().unwrap();
    let out = state.unibeam(&[
        "run",
        "-d",
        "--snapshot",
        "-v",
        "data:/data",
        "--name",
        "v",
        image,
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        one_line(&out).contains("--snapshot cannot be used with volumes"),
        "{}",
        one_line(&out)
    );
    let out = state.unibeam(&["suspend", "nosuch"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(one_line(&out).contains("nosuch"), "{}", one_line(&out));
}

fn wait_for_log(state: &StateDir, name: &str, needle: &str) {
    let deadline = std::time::Instant::now() + unibeam_e2e::BOOT_TIMEOUT;
    while !state.ok(&["logs", name]).contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in {name}'s log"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn only_entry(dir: &Path) -> std::path::PathBuf {
    let entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].clone()
}

#[test]
fn a_suspended_instance_keeps_its_volume_consistent_and_held() {
    let (state, _cache) = state();
    let work = tempfile::tempdir().unwrap();
    let image = build_image(
        &release("examples/notes", "notes"),
        &work.path().join("notes.unibeam"),
    );
    let image = image.to_str().unwrap();
    let port = free_port();
    let publish = format!("{port}:8080");
    state.ok(&[
        "run",
        "-d",
        "--name",
        "nv",
        "-v",
        "jot:/data",
        "-p",
        &publish,
        image,
    ]);
    rpc(&state, "nv", "ok");
    http_200_within(port, "/notes", Duration::from_secs(60));
    let first = add_note(port, "before suspend");
    state.ok(&["suspend", "nv"]);
    assert_eq!(status(&state, "nv"), "suspended");

    // Nothing else may mount the disk the saved memory has mounted.
    let out = state.unibeam(&["run", "-d", "--name", "other", "-v", "jot:/data", image]);
    assert_ne!(out.status.code(), Some(0));
    let said = one_line(&out);
    assert!(said.contains("held by suspended instance nv"), "{said}");

    state.ok(&["start", "nv"]);
    rpc(&state, "nv", "ok");
    http_200_within(port, "/notes", Duration::from_secs(60));
    let listed = listed_notes(port);
    assert!(listed.contains(&format!("{first} before suspend")), "{listed:?}");
    let second = add_note(port, "after resume");
    assert!(listed_notes(port).contains(&format!("{second} after resume")));
    state.ok(&["stop", "nv"]);
    let fsck = std::process::Command::new("/sbin/e2fsck")
        .args(["-fn"])
        .arg(state.path().join("unibeam/volumes/jot/disk.ext4"))
        .output()
        .expect("e2fsck runs");
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stdout));
}

#[test]
fn cluster_replicas_each_get_their_own_snapshot() {
    let c = Cluster::with_service_lines("snaps", 2, 10, "snapshot = true\n");
    let before = snapshot_entries();
    c.up();
    c.wait_meshed(Duration::from_secs(300));
    for i in 1..=2 {
        wait_until(|| c.logs(i).contains("snapshot saved"), "a saved snapshot");
    }
    let mine: Vec<_> = snapshot_entries()
        .into_iter()
        .filter(|e| !before.contains(e))
        .collect();
    assert_eq!(mine.len(), 2, "one entry per replica: {mine:?}");
    assert!(c.down().status.success());
    c.up();
    c.wait_meshed(Duration::from_secs(120));
    for i in 1..=2 {
        assert!(c.logs(i).contains("unibeam-init: restored"), "{}", c.logs(i));
    }
    assert!(c.down().status.success());
    for e in mine {
        let _ = std::fs::remove_dir_all(e);
    }
}

/// The default snapshot cache, which `up` in the Cluster helper uses.
fn snapshot_entries() -> Vec<std::path::PathBuf> {
    let home = std::env::var_os("HOME").expect("HOME");
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(&home).join(".cache"));
    std::fs::read_dir(cache.join("unibeam/snapshots"))
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default()
}

fn wait_until(ok: impl Fn() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + unibeam_e2e::BOOT_TIMEOUT;
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "waited for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}
