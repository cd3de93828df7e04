//! `unibeam network`: the rootless user driver end to end (two VMs on one
//! named network reach each other), and every bad input gets one line
//! naming the culprit and a non-zero exit. The bridge driver across hosts
//! is tests/multihost.rs.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use unibeam_e2e::{fails_naming, rpc_when_up, shared_hello_image, unibeam, StateDir};

#[test]
fn two_vms_on_a_user_network_reach_each_other_and_it_is_kept_while_used() {
    let state = StateDir::new();
    let image = shared_hello_image().to_str().unwrap();
    state.ok(&["network", "create", "back", "--subnet", "10.90.7.0/24"]);
    for name in ["na", "nb"] {
        state.ok(&["run", "-d", "--name", name, "--network", "back", image]);
    }
    let listed = state.ok(&["network", "ls"]);
    assert!(
        listed.contains("na(10.90.7.2)") && listed.contains("nb(10.90.7.3)"),
        "{listed}"
    );
    rpc_when_up("nb", "ok", |a| state.unibeam(a));
    // na reaches nb's HTTP over the network, not through the host.
    let reached = rpc_when_up(
        "na",
        "{ok, S} = gen_tcp:connect({10,90,7,3}, 8080, [binary, {active, false}], 20000), \
         ok = gen_tcp:send(S, <<\"GET / HTTP/1.0\\r\\n\\r\\n\">>), \
         {ok, B} = gen_tcp:recv(S, 0, 20000), binary:part(B, 0, 12).",
        |a| state.unibeam(a),
    );
    assert!(reached.contains("HTTP/1."), "{reached}");

    let out = state.unibeam(&["network", "rm", "back"]);
    fails_naming(
        &out,
        1,
        &["network back is in use by instance na", "unibeam rm -f na"],
    );
    state.ok(&["rm", "-f", "na"]);
    state.ok(&["rm", "-f", "nb"]);
    state.ok(&["network", "rm", "back"]);
    assert!(!state.ok(&["network", "ls"]).contains("back"));
}

#[test]
fn bad_network_inputs_get_one_line_each() {
    let state = StateDir::new();
    state.ok(&["network", "create", "one", "--subnet", "10.91.0.0/16"]);
    let out = state.unibeam(&["network", "create", "two", "--subnet", "10.91.4.0/24"]);
    fails_naming(
        &out,
        1,
        &[
            "network two",
            "10.91.4.0/24 overlaps network one's subnet 10.91.0.0/16",
        ],
    );
    let out = state.unibeam(&["network", "create", "one", "--subnet", "10.92.0.0/24"]);
    fails_naming(&out, 1, &["network one exists already"]);
    let out = state.unibeam(&["network", "create", "Bad_Name"]);
    fails_naming(&out, 2, &["network name \"Bad_Name\""]);
    let out = state.unibeam(&["network", "create", "three", "--subnet", "10.93.0.1/24"]);
    fails_naming(&out, 2, &["host bits are set", "10.93.0.0/24"]);
    let out = state.unibeam(&[
        "network",
        "create",
        "four",
        "--subnet",
        "10.94.0.0/24",
        "--gateway",
        "10.95.0.1",
    ]);
    fails_naming(
        &out,
        1,
        &["--gateway 10.95.0.1 is outside its subnet 10.94.0.0/24"],
    );
    let out = state.unibeam(&["network", "create", "five", "--uplink", "eth0"]);
    fails_naming(&out, 1, &["--uplink is only for the bridge driver"]);
    let out = state.unibeam(&["network", "rm", "nosuch"]);
    fails_naming(&out, 1, &["network nosuch: no such network"]);
    let out = state.unibeam(&[
        "run",
        "--network",
        "nosuch",
        shared_hello_image().to_str().unwrap(),
    ]);
    fails_naming(&out, 125, &["network nosuch: no such network"]);
}

#[test]
fn the_bridge_driver_without_root_is_refused_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(unibeam())
        .args(["network", "create", "lan", "--driver", "bridge"])
        .env("XDG_STATE_HOME", dir.path())
        .env("HOME", dir.path())
        .output()
        .expect("setpriv (util-linux) runs");
    fails_naming(&out, 1, &["bridge driver needs root", "--driver user"]);
}

/// A crash of an instance's monitor and QEMU takes its tap with them (the
/// kernel removes a tap with its last descriptor); the instance is then
/// removed and the network with its bridge, leaving nothing.
#[test]
fn a_crashed_bridge_instance_leaves_no_tap_and_its_network_goes_cleanly() {
    unibeam_e2e::netns::require_root();
    let ns = unibeam_e2e::netns::Netns::new(&format!("ubnc{}", std::process::id() % 100_000));
    let home = tempfile::tempdir().unwrap();
    let state = home.path().to_str().unwrap().to_string();
    let run = |args: &[&str]| ns.run(&unibeam(), args, &[("XDG_STATE_HOME", &state)]);
    let ok = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&[
        "network",
        "create",
        "lan",
        "--driver",
        "bridge",
        "--subnet",
        "10.96.0.0/24",
    ]);
    let image = shared_hello_image().to_str().unwrap();
    ok(&["run", "-d", "--name", "crash", "--network", "lan", image]);
    let links = unibeam_e2e::netns::ip_in(&ns.name, &["-o", "link"]);
    assert!(
        links.contains("ubt") && links.contains("master ub-lan"),
        "{links}"
    );
    let record: serde_json::Value = serde_json::from_str(&ok(&["inspect", "crash"])).unwrap();
    for who in ["monitor", "qemu"] {
        let pid = record[who]["pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("no {who} pid in {record}"));
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while unibeam_e2e::netns::ip_in(&ns.name, &["-o", "link"]).contains("ubt") {
        assert!(std::time::Instant::now() < deadline, "the tap outlived its VM");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = run(&["network", "rm", "lan"]);
    fails_naming(&out, 1, &["in use by instance crash"]);
    ok(&["rm", "-f", "crash"]);
    let links = unibeam_e2e::netns::ip_in(&ns.name, &["-o", "link"]);
    assert!(
        !links.contains("ub-lan"),
        "the bridge outlived its last instance: {links}"
    );
    ok(&["network", "rm", "lan"]);
    let links = unibeam_e2e::netns::ip_in(&ns.name, &["-o", "link"]);
    assert!(
        !links.contains("ub-") && !links.contains("ubt"),
        "left behind: {links}"
    );
}
