//! `unibeam dashboard`'s API on real instances: every endpoint refuses a
//! request without the token, the API and the CLI show the same JSON, the
//! actions work, schemathesis finds nothing wrong against the OpenAPI
//! document, and off loopback it serves only with TLS.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use unibeam_e2e::dashboard::Dashboard;
use unibeam_e2e::{shared_hello_image, unibeam, workspace_root, StateDir};

/// Every documented operation, with the path's parameters filled in.
fn documented_operations(dashboard: &Dashboard) -> Vec<(String, String)> {
    let doc = dashboard.json("/api/openapi.json");
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let path = path.replace("{name}", "web").replace("{chart}", "memory.svg");
        for method in item.as_object().unwrap().keys() {
            operations.push((method.to_uppercase(), path.clone()));
        }
    }
    assert!(operations.len() >= 17, "too few operations: {operations:?}");
    operations
}

#[test]
fn every_endpoint_answers_401_without_the_token() {
    let state = StateDir::new();
    let dashboard = Dashboard::start(state.path(), &[]);
    let mut operations = documented_operations(&dashboard);
    operations.push(("GET".into(), "/".into()));
    operations.push(("GET".into(), "/no/such/endpoint".into()));
    for (method, path) in &operations {
        let (status, body) = dashboard.call_without_token(method, path);
        assert_eq!(status, 401, "{method} {path}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(error["error"].as_str().unwrap().contains("token"), "{body}");
        let wrong = ureq::request(method, &format!("{}{path}", dashboard.base))
            .set("Authorization", "Bearer 0000")
            .call();
        assert!(
            matches!(wrong, Err(ureq::Error::Status(401, _))),
            "{method} {path} with a wrong token"
        );
    }
    // With the token, each is a real route, not the fallback.
    for (method, path) in &operations[..operations.len() - 2] {
        let (status, body) = dashboard.call(method, path, (method == "POST").then_some("{\"expr\":\"1.\"}"));
        assert!(
            !body.contains("no such endpoint"),
            "{method} {path} is not served: {status} {body}"
        );
    }
}

#[test]
fn changes_need_the_token_in_a_header_not_the_url() {
    let state = StateDir::new();
    let dashboard = Dashboard::start(state.path(), &[]);
    let token = &dashboard.token;
    let read = ureq::get(&format!("{}/api/instances?token={token}", dashboard.base)).call();
    assert_eq!(read.map(|r| r.status()).ok(), Some(200));
    for (method, path) in [
        ("POST", "/api/instances/web/stop"),
        ("DELETE", "/api/instances/web"),
    ] {
        let change = ureq::request(method, &format!("{}{path}?token={token}", dashboard.base)).call();
        match change {
            Err(ureq::Error::Status(401, r)) => {
                assert!(r.into_string().unwrap().contains("Authorization header"))
            }
            other => panic!("{method} {path} with the token in the URL: {other:?}"),
        }
    }
    // A cookie is never taken for the token.
    let cookie = ureq::post(&format!("{}/api/instances/web/kill", dashboard.base))
        .set("Cookie", &format!("token={token}"))
        .call();
    assert!(matches!(cookie, Err(ureq::Error::Status(401, _))));
}

#[test]
fn the_token_is_private_kept_and_a_tampered_file_refused() {
    use std::os::unix::fs::PermissionsExt;
    let state = StateDir::new();
    let first = Dashboard::start(state.path(), &[]).token.clone();
    let file = state.path().join("unibeam/dashboard/token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), first);
    assert_eq!(
        Dashboard::start(state.path(), &[]).token,
        first,
        "a restart keeps the token"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = state.unibeam(&["dashboard", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(file.to_str().unwrap()) && stderr.contains("chmod 600"),
        "{stderr}"
    );
}

#[test]
fn a_port_in_use_is_named_and_nothing_is_served() {
    let state = StateDir::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = state.unibeam(&["dashboard", "--listen", &addr]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("listening on {addr}")) && stderr.contains("in use"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "no URL is printed for a dashboard that is not serving"
    );
}

fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    (cert_file, key_file)
}

#[test]
fn off_loopback_it_serves_only_with_tls() {
    let state = StateDir::new();
    let out = state.unibeam(&["dashboard", "--listen", "0.0.0.0:0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("0.0.0.0") && stderr.contains("--tls-cert"),
        "{stderr}"
    );

    let (cert, key) = certificate(state.path());
    let bad = state.unibeam(&[
        "dashboard",
        "--listen",
        "0.0.0.0:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent/key.pem"));
    let swapped = state.unibeam(&[
        "dashboard",
        "--listen",
        "0.0.0.0:0",
        "--tls-cert",
        key.to_str().unwrap(),
        "--tls-key",
        cert.to_str().unwrap(),
    ]);
    assert!(!swapped.status.success());
    assert!(
        String::from_utf8_lossy(&swapped.stderr).contains("PEM"),
        "{}",
        String::from_utf8_lossy(&swapped.stderr)
    );

    let mut child = Command::new(unibeam())
        .args([
            "dashboard",
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
        .env("XDG_STATE_HOME", state.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("{line}"));
    let (base, token) = url.split_once("/?token=").unwrap();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20"])
            .args(extra)
            .arg(format!("{base}/api/instances"))
            .output()
            .expect("curl runs (apt-get install curl)")
    };
    let trusted = curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        "-H",
        &format!("Authorization: Bearer {token}"),
    ]);
    assert_eq!(String::from_utf8_lossy(&trusted.stdout), "200");
    let untrusted = curl(&["-H", &format!("Authorization: Bearer {token}")]);
    assert!(
        !untrusted.status.success(),
        "a self-signed certificate is not trusted without --cacert"
    );
    let plain = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"])
        .arg(base.replace("https://", "http://") + "/api/instances")
        .output()
        .unwrap();
    assert_ne!(
        String::from_utf8_lossy(&plain.stdout),
        "200",
        "plain HTTP is not served"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Samples every second, so metrics pile up quickly.
fn sampled_state() -> StateDir {
    StateDir::with_env(&[("UNIBEAM_SAMPLE_SECS", "1")])
}

fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The fields that do not change from one second to the next.
fn stable(mut instance: Value) -> Value {
    instance.as_object_mut().unwrap().remove("beam_memory");
    instance
}

#[test]
fn the_api_shows_what_the_cli_shows_and_acts_like_it() {
    let state = sampled_state();
    state.start("web", shared_hello_image());
    let dashboard = Dashboard::start(state.path(), &[]);

    let cli: Value = serde_json::from_str(&state.ok(&["ps", "-a", "--format", "json"])).unwrap();
    let api = dashboard.json("/api/instances");
    assert_eq!(
        stable(api[0].clone()),
        stable(cli[0].clone()),
        "ps -a --format json"
    );
    let cli: Value = serde_json::from_str(&state.ok(&["inspect", "web"])).unwrap();
    assert_eq!(dashboard.json("/api/instances/web"), cli, "inspect");

    let samples = wait_for("3 metrics samples", Duration::from_secs(60), || {
        let all = dashboard.json("/api/instances/web/metrics");
        (all.as_array()?.len() >= 3).then_some(all)
    });
    assert!(samples[2]["beam"]["memory"]["total"].as_u64().unwrap() > 1 << 20);
    let (status, svg) = dashboard.call("GET", "/api/instances/web/charts/memory.svg", None);
    assert_eq!(status, 200);
    assert!(
        svg.contains("<svg") && svg.contains("data-points=\"") && svg.contains("<circle"),
        "{svg}"
    );
    let (status, pie) = dashboard.call("GET", "/api/instances/web/charts/memory-pie.svg", None);
    assert!(status == 200 && pie.contains("processes"), "{pie}");

    let timeline = dashboard.json("/api/instances/web/timeline");
    let steps: Vec<&str> = timeline
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps.first(), Some(&"kernel -> init"), "{timeline}");
    assert_eq!(steps.last(), Some(&"applications started"), "{timeline}");

    let (status, tail) = dashboard.call("GET", "/api/instances/web/logs?tail=5", None);
    assert_eq!(status, 200);
    assert!(tail.lines().count() <= 5 && !tail.is_empty(), "{tail}");

    let (status, body) = dashboard.call("POST", "/api/instances/web/rpc", Some(r#"{"expr": "node()."}"#));
    assert_eq!((status, body.contains("hello@web")), (200, true), "{body}");
    let (status, body) = dashboard.call("POST", "/api/instances/web/rpc", Some(r#"{"expr": "1 +"}"#));
    assert_eq!(status, 422, "{body}");
    let (status, _) = dashboard.call("DELETE", "/api/instances/web", None);
    assert_eq!(status, 409, "a running instance is not removed without force");

    let follower = follow_log(&dashboard, "web");
    let stopped = dashboard.call("POST", "/api/instances/web/stop", None);
    assert_eq!(stopped.0, 200, "{}", stopped.1);
    let stopped: Value = serde_json::from_str(&stopped.1).unwrap();
    assert_eq!(stopped["state"], "exited", "{stopped}");
    let events = follower.join().unwrap();
    assert!(
        events.contains("data: ") && events.contains("unibeam-init"),
        "{events}"
    );
    assert!(
        events.trim_end().ends_with("event: end\ndata: exited"),
        "{events}"
    );

    let restarted = dashboard.call("POST", "/api/instances/web/restart", None);
    assert_eq!(restarted.0, 200, "{}", restarted.1);
    wait_for("web running again", Duration::from_secs(120), || {
        (dashboard.json("/api/instances/web")["state"] == "running").then_some(())
    });
    // The dashboard owns nothing: the monitor its restart started outlives
    // it, and a new dashboard shows the instance as it is.
    drop(dashboard);
    std::thread::sleep(Duration::from_secs(2));
    let cli: Value = serde_json::from_str(&state.ok(&["inspect", "web"])).unwrap();
    assert_eq!(cli["state"], "running", "{cli}");
    let dashboard = Dashboard::start(state.path(), &[]);
    assert_eq!(dashboard.json("/api/instances/web")["state"], "running");
    let killed: Value =
        serde_json::from_str(&dashboard.call("POST", "/api/instances/web/kill", None).1).unwrap();
    assert_eq!(killed["state"], "exited", "{killed}");
    let (status, _) = dashboard.call("DELETE", "/api/instances/web", None);
    assert_eq!(status, 204);
    let (status, body) = dashboard.call("GET", "/api/instances/web", None);
    assert_eq!(status, 404, "{body}");
    assert_eq!(state.ok(&["ps", "-a", "--format", "json"]).trim(), "[]");
}

/// Reads `name`'s log as server-sent events until the stream ends.
fn follow_log(dashboard: &Dashboard, name: &str) -> std::thread::JoinHandle<String> {
    let url = format!(
        "{}/api/instances/{name}/logs/follow?token={}",
        dashboard.base, dashboard.token
    );
    let reader = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build()
        .get(&url)
        .call()
        .expect("the log follows")
        .into_reader();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(reader).read_to_string(&mut text);
        text
    })
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_off_the_schema() {
    let schemathesis = workspace_root().join("build/venv/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "{} is missing: `make tools` installs schemathesis",
        schemathesis.display()
    );
    let state = sampled_state();
    state.start("web", shared_hello_image());
    state.ok(&["volume", "create", "data", "--size", "16M"]);
    let dashboard = Dashboard::start(state.path(), &[]);
    let out = Command::new(&schemathesis)
        .current_dir(state.path())
        .args(["run", &format!("{}/api/openapi.json", dashboard.base)])
        .args(["-H", &format!("Authorization: Bearer {}", dashboard.token)])
        // Every check but positive_data_acceptance, which takes a 404 for
        // a name that fits the schema but names nothing as a failure.
        .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
        // The follow stream is endless while the instance runs.
        .args([
            "--exclude-path-regex",
            "follow",
            "--max-examples",
            "40",
            "--workers",
            "2",
        ])
        // A restart is a stop (30 s grace at most) and a TCG boot, on a
        // host that may be busy with other tests' VMs.
        .args([
            "--request-timeout",
            "300",
            "--max-response-time",
            "300",
            "--seed",
            "7",
        ])
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
}
