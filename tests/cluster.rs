//! End-to-end: `unibeam up` brings examples/cluster up as one Erlang
//! cluster on a private network, with no root and no EPMD.

use std::time::{Duration, Instant};
use unibeam_e2e::cluster::*;
use unibeam_e2e::BOOT_TIMEOUT;

#[test]
fn three_replicas_mesh_share_state_and_survive_a_kill() {
    let c = Cluster::new("mesh", 3, 6);
    c.up();
    c.wait_meshed(BOOT_TIMEOUT);
    for i in 1..=3u16 {
        let mut others: Vec<String> = (1..=3).filter(|j| *j != i).map(|j| c.node(j)).collect();
        others.sort();
        assert_eq!(c.peers_of(i), others, "replica {i}");
    }
    // An update through node 1 is read through node 3.
    let (code, body) = unibeam_e2e::http_get_path(c.port(1), "/incr").expect("node 1 answers");
    assert_eq!(code, 200, "{body}");
    assert_eq!(c.status(3).unwrap()["counter"], 1);

    // kill -9 node 2's QEMU: the survivors see it go within the tick time.
    let killed_at = Instant::now();
    let pid = c.qemu_pid(2);
    // SAFETY: kill(2) on the pid unibeam reports for this test's own VM.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let gone = format!("cluster: nodedown {}", c.node(2));
    let limit = Duration::from_secs(u64::from(c.ticktime) * 5 / 4 + 5);
    while !(c.logs(1).contains(&gone) && c.logs(3).contains(&gone)) {
        assert!(
            killed_at.elapsed() < limit,
            "survivors did not report node 2 down within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("node 2 reported down after {:?}", killed_at.elapsed());

    // The restart policy brings it back, and it rejoins with no help.
    c.wait_meshed(BOOT_TIMEOUT);
    assert_ne!(c.qemu_pid(2), pid, "a new QEMU runs node 2");
    assert_eq!(c.status(2).unwrap()["counter"], 1, "the restarted node caught up");
    eprintln!("node 2 back in the mesh after {:?}", killed_at.elapsed());

    let out = c.down();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_nothing_left(&c);
}

/// No QEMU, monitor, socket or state directory of the cluster is left.
fn assert_nothing_left(c: &Cluster) {
    let state = c.state_dir();
    assert_eq!(
        processes_mentioning(&state),
        Vec::<String>::new(),
        "processes left"
    );
    let instances: Vec<_> = std::fs::read_dir(state.join("unibeam/instances"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(instances.is_empty(), "instance directories left: {instances:?}");
    assert!(
        !state.join("unibeam/clusters").join(&c.name).exists(),
        "cluster state left"
    );
    let ps = c.unibeam(&["ps", "-a"]);
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains(&c.name),
        "ps -a still lists the cluster"
    );
}

#[test]
fn the_cookie_stays_out_of_command_lines_logs_and_ps() {
    let c = Cluster::new("secret", 2, 10);
    c.up();
    c.wait_meshed(BOOT_TIMEOUT);
    let cookie = std::fs::read_to_string(c.cookie_path()).unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(c.cookie_path()).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the cookie file is private");
    assert!(cookie.len() >= 20, "a real cookie: {cookie:?}");
    let mut seen = processes_mentioning(&c.state_dir()).join("\n");
    for i in 1..=2 {
        seen.push_str(&c.logs(i));
        seen.push_str(&c.inspect(i).to_string());
    }
    for args in [&["ps", "-a"][..], &["ps", "-a", "--format", "json"]] {
        seen.push_str(&String::from_utf8_lossy(&c.unibeam(args).stdout));
    }
    assert!(
        seen.contains("counter-1@10.77.0.2"),
        "the checks saw the cluster:\n{seen}"
    );
    assert!(!seen.contains(cookie.trim()), "the cookie leaked:\n{seen}");
    assert!(c.down().status.success());
    assert_nothing_left(&c);
}
