//! Volumes in a cluster: each replica of a service with `volumes =` keeps
//! its own data across `down` and `up`; `down --volumes` removes them.

use std::time::{Duration, Instant};
use unibeam_e2e::cluster::free_port_range;
use unibeam_e2e::{http_get_path, release, StateDir, BOOT_TIMEOUT};

fn post(port: u16, path: &str, body: &str) -> Option<(u16, String)> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(20)).build();
    match agent
        .post(&format!("http://127.0.0.1:{port}{path}"))
        .send_string(body)
    {
        Ok(resp) => Some((resp.status(), resp.into_string().unwrap_or_default())),
        Err(ureq::Error::Status(code, resp)) => Some((code, resp.into_string().unwrap_or_default())),
        Err(_) => None,
    }
}

/// GET `path` until it answers 200; its body.
fn get_when_up(port: u16, path: &str) -> String {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        if let Some((200, body)) = http_get_path(port, path) {
            return body;
        }
        assert!(Instant::now() < deadline, "no 200 from port {port}{path}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn each_replica_keeps_its_own_volume_across_down_and_up() {
    let state = StateDir::new();
    let base = free_port_range(2);
    let file = state.path().join("unibeam.toml");
    let toml = format!(
        "[cluster]\nname = \"vc\"\n\n[services.notes]\nrelease = \"{}\"\nreplicas = 2\n\
         ports = [\"{base}:8080\"]\nvolumes = [\"data:/data\"]\n",
        release("examples/notes", "notes").display()
    );
    std::fs::write(&file, toml).unwrap();
    let file = file.to_str().unwrap();

    state.ok(&["up", "-f", file]);
    for (i, port) in [base, base + 1].into_iter().enumerate() {
        get_when_up(port, "/");
        let note = format!("note for replica {}", i + 1);
        assert_eq!(post(port, "/notes", &note), Some((201, "1\n".into())));
    }
    let inspected: serde_json::Value = serde_json::from_str(&state.ok(&["inspect", "vc-notes-1"])).unwrap();
    assert_eq!(
        inspected["volumes"],
        serde_json::json!([{ "name": "vc-notes-1-data", "read_only": false }])
    );
    let listed = state.ok(&["volume", "ls"]);
    assert!(
        listed.contains("vc-notes-1-data") && listed.contains("vc-notes-2-data"),
        "{listed}"
    );

    state.ok(&["down", "-f", file]);
    let kept = state.ok(&["volume", "ls"]);
    assert!(kept.contains("vc-notes-1-data"), "down keeps volumes: {kept}");
    state.ok(&["up", "-f", file]);
    for (i, port) in [base, base + 1].into_iter().enumerate() {
        let notes = get_when_up(port, "/notes");
        assert_eq!(notes, format!("1 note for replica {}\n", i + 1));
    }

    state.ok(&["down", "--volumes", "-f", file]);
    let left = state.ok(&["volume", "ls"]);
    assert!(!left.contains("vc-notes"), "down --volumes removes them: {left}");
}
