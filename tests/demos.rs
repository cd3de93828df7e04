//! The demo apps on real VMs: examples/crud (a REST API over Mnesia on a
//! volume, with /metrics) and examples/chat (a websocket chat, driven in
//! headless chromium by tests/browser/chat.mjs).
//!
//! The CRUD tests share one VM (booted by the first of them, removed at
//! exit) and take turns on it, so each can count exactly what it did in
//! /metrics. Persistence and the browser test boot VMs of their own. Under
//! TCG on two shared cores a boot takes 5-10 s alone and far more beside
//! others, so boots take turns too, and every wait is generous.

use serde_json::{json, Value};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};
use unibeam_e2e::*;

/// One boot at a time: TCG on two shared cores.
static BOOTING: Mutex<()> = Mutex::new(());

fn lock(m: &'static Mutex<()>) -> MutexGuard<'static, ()> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One request, however slow the guest (TCG, other VMs beside it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// An example's image, built once per test binary beside it.
fn image(project: &str, name: &str) -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let out = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join(format!("e2e-demos/{name}.unibeam"));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let release = release(project, name);
    build_image_with(&release, &out, &["--compression", "none"])
        .to_str()
        .unwrap()
        .to_string()
}

fn crud_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| image("examples/crud", "crud"))
}

fn chat_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| image("examples/chat", "chat"))
}

/// An HTTP answer: status, Location header, body.
struct Answer {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// `METHOD http://127.0.0.1:PORT<path>` with an optional JSON body; fails
/// the test if nothing answers.
fn request(port: u16, method: &str, path: &str, body: Option<&str>) -> Answer {
    try_request(port, method, path, body, REQUEST_TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"))
}

fn try_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<Answer, String> {
    let agent = ureq::AgentBuilder::new().timeout(timeout).build();
    let req = agent
        .request(method, &format!("http://127.0.0.1:{port}{path}"))
        .set("Content-Type", "application/json");
    let result = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => return Err(e.to_string()),
    };
    Ok(Answer {
        status: resp.status(),
        location: resp.header("Location").map(String::from),
        body: resp.into_string().unwrap_or_default(),
    })
}

/// `run -d --name NAME -p PORT:8080 [-v ...] IMAGE` in `state`, then polls
/// `GET /` until it answers 200; the port.
fn boot(state: &StateDir, name: &str, image: &str, volume: Option<&str>) -> u16 {
    let _turn = lock(&BOOTING);
    let port = free_port();
    let publish = format!("{port}:8080");
    let mut args = vec!["run", "-d", "--name", name, "-p", &publish];
    if let Some(v) = volume {
        args.extend(["-v", v]);
    }
    args.push(image);
    let started = Instant::now();
    state.ok(&args);
    loop {
        if let Ok(Answer { status: 200, .. }) = try_request(port, "GET", "/", None, Duration::from_secs(2)) {
            eprintln!("{name}: HTTP 200 after {:?}", started.elapsed());
            return port;
        }
        if started.elapsed() > BOOT_TIMEOUT {
            let logs = state.unibeam(&["logs", name]);
            panic!(
                "{name}: no HTTP 200 on port {port} within {BOOT_TIMEOUT:?}; its console:\n{}",
                String::from_utf8_lossy(&logs.stdout)
            );
        }
        thread::sleep(Duration::from_millis(250));
    }
}

// ---------------------------------------------------------------------
// examples/crud on one shared VM

const SHARED: &str = "crud-demo";

struct SharedCrud {
    state: StateDir,
    port: u16,
}

static CRUD: OnceLock<SharedCrud> = OnceLock::new();
/// The CRUD tests take turns on the shared VM.
static CRUD_TURN: Mutex<()> = Mutex::new(());

/// libtest has no teardown and statics are never dropped: the shared VM
/// goes when the test binary exits (a failed test included, as libtest
/// reports failures by returning from main).
extern "C" fn remove_shared_crud() {
    if let Some(shared) = CRUD.get() {
        let _ = shared.state.unibeam(&["rm", "-f", SHARED]);
        let _ = std::fs::remove_dir_all(shared.state.path());
    }
}

/// The shared crud VM's port, booting it on first use; the guard keeps the
/// other CRUD tests off it until the caller is done.
fn shared_crud() -> (u16, MutexGuard<'static, ()>) {
    let turn = lock(&CRUD_TURN);
    let shared = CRUD.get_or_init(|| {
        let image = crud_image();
        // If the boot panics, `state` is dropped on the way out and its
        // Drop removes the instance.
        let state = StateDir::new();
        let port = boot(&state, SHARED, image, Some("crud-data:/data"));
        // SAFETY: registers a plain extern "C" function with no arguments.
        unsafe { libc::atexit(remove_shared_crud) };
        SharedCrud { state, port }
    });
    (shared.port, turn)
}

/// POSTs `item`, expects 201 and returns the created item (with its id).
fn create(port: u16, item: &Value) -> Value {
    let answer = request(port, "POST", "/items", Some(&item.to_string()));
    assert_eq!(answer.status, 201, "POST /items {item}: {}", answer.body);
    let created = answer.json();
    let id = created["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric id in {created}"));
    assert_eq!(
        answer.location.as_deref(),
        Some(format!("/items/{id}").as_str()),
        "Location of item {id}"
    );
    created
}

fn without_id(item: &Value) -> Value {
    let mut v = item.clone();
    v.as_object_mut().expect("an object").remove("id");
    v
}

#[test]
fn crud_create_answers_201_with_location_and_the_item() {
    let (port, _turn) = shared_crud();
    let item = json!({"name": "milk", "qty": 2, "tags": ["dairy"]});
    let created = create(port, &item);
    assert_eq!(without_id(&created), item, "the body echoes the item");
    // It is now in the collection.
    let list = request(port, "GET", "/items", None);
    assert_eq!(list.status, 200);
    let items = list.json();
    assert!(
        items.as_array().unwrap().contains(&created),
        "{created} not in GET /items: {items}"
    );
    // An "id" in the body is the server's to choose, not the client's.
    let chosen = create(port, &json!({"id": 424242, "name": "eggs"}));
    assert_ne!(chosen["id"], json!(424242), "{chosen}");
}

#[test]
fn crud_read_answers_the_stored_item() {
    let (port, _turn) = shared_crud();
    let created = create(port, &json!({"name": "bread", "price": 2.5, "fresh": true}));
    let id = &created["id"];
    let answer = request(port, "GET", &format!("/items/{id}"), None);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json(), created);
}

#[test]
fn crud_update_replaces_the_item() {
    let (port, _turn) = shared_crud();
    let created = create(port, &json!({"name": "tea", "qty": 1}));
    let id = &created["id"];
    let path = format!("/items/{id}");
    let new = json!({"name": "green tea", "qty": 3});
    let answer = request(port, "PUT", &path, Some(&new.to_string()));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json(), json!({"id": id, "name": "green tea", "qty": 3}));
    let read = request(port, "GET", &path, None);
    assert_eq!(read.status, 200);
    assert_eq!(read.json(), json!({"id": id, "name": "green tea", "qty": 3}));
    // Updating what is not there creates nothing.
    let missing = request(port, "PUT", "/items/987654321", Some(&new.to_string()));
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_eq!(request(port, "GET", "/items/987654321", None).status, 404);
}

#[test]
fn crud_delete_answers_204_then_404() {
    let (port, _turn) = shared_crud();
    let created = create(port, &json!({"name": "coffee"}));
    let path = format!("/items/{}", created["id"]);
    let answer = request(port, "DELETE", &path, None);
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert!(answer.body.is_empty(), "a 204 with a body: {:?}", answer.body);
    assert_eq!(request(port, "GET", &path, None).status, 404);
    assert_eq!(request(port, "DELETE", &path, None).status, 404);
    let items = request(port, "GET", "/items", None).json();
    assert!(
        !items.as_array().unwrap().contains(&created),
        "{created} still listed: {items}"
    );
}

#[test]
fn crud_bad_json_is_400_with_a_json_error() {
    let (port, _turn) = shared_crud();
    let created = create(port, &json!({"name": "jam"}));
    let path = format!("/items/{}", created["id"]);
    for (method, path, body) in [
        ("POST", "/items", "{\"name\": "),
        ("POST", "/items", "not json"),
        ("POST", "/items", "[1, 2]"),
        ("POST", "/items", ""),
        ("PUT", path.as_str(), "{bad"),
    ] {
        let answer = request(port, method, path, Some(body));
        assert_eq!(answer.status, 400, "{method} {path} {body:?}: {}", answer.body);
        assert!(
            answer.json()["error"].is_string(),
            "{method} {path} {body:?}: no JSON error: {}",
            answer.body
        );
    }
    // The item a bad PUT aimed at is unchanged.
    assert_eq!(request(port, "GET", &path, None).json(), created);
}

#[test]
fn crud_missing_id_is_404_and_a_wrong_method_405() {
    let (port, _turn) = shared_crud();
    for path in ["/items/99999999", "/items/0", "/items/abc", "/nothing"] {
        let answer = request(port, "GET", path, None);
        assert_eq!(answer.status, 404, "GET {path}: {}", answer.body);
        assert!(answer.json()["error"].is_string(), "{}", answer.body);
    }
    assert_eq!(request(port, "DELETE", "/items/99999999", None).status, 404);
    for (method, path) in [
        ("PUT", "/items"),
        ("DELETE", "/items"),
        ("POST", "/items/1"),
        ("POST", "/metrics"),
    ] {
        let answer = request(port, method, path, Some("{}"));
        assert_eq!(answer.status, 405, "{method} {path}: {}", answer.body);
    }
}

#[test]
fn crud_metrics_count_the_requests_made() {
    let (port, _turn) = shared_crud();
    let before = request(port, "GET", "/metrics", None);
    assert_eq!(before.status, 200, "{}", before.body);
    let before = before.json();
    let created = create(port, &json!({"name": "counted"}));
    let path = format!("/items/{}", created["id"]);
    request(port, "GET", &path, None);
    request(port, "GET", "/items", None);
    request(port, "PUT", &path, Some(r#"{"name": "counted twice"}"#));
    request(port, "DELETE", &path, None);
    request(port, "DELETE", &path, None); // 404
    request(port, "PATCH", &path, Some("{}")); // 405
    let after = request(port, "GET", "/metrics", None).json();
    let delta = |method: &str| {
        after["requests"][method].as_u64().unwrap() - before["requests"][method].as_u64().unwrap()
    };
    // GET: two, plus this second GET /metrics itself.
    assert_eq!(delta("GET"), 3, "before {before}\nafter {after}");
    assert_eq!(delta("POST"), 1, "before {before}\nafter {after}");
    assert_eq!(delta("PUT"), 1, "before {before}\nafter {after}");
    assert_eq!(delta("DELETE"), 2, "before {before}\nafter {after}");
    assert_eq!(delta("other"), 1, "before {before}\nafter {after}");
    let total = after["requests_total"].as_u64().unwrap() - before["requests_total"].as_u64().unwrap();
    assert_eq!(total, 8, "before {before}\nafter {after}");
    let four = after["responses"]["4xx"].as_u64().unwrap() - before["responses"]["4xx"].as_u64().unwrap();
    assert_eq!(four, 2, "a 404 and a 405: before {before}\nafter {after}");
    // The item count agrees with the collection.
    let listed = request(port, "GET", "/items", None).json();
    let now = request(port, "GET", "/metrics", None).json();
    assert_eq!(
        now["items"].as_u64().unwrap() as usize,
        listed.as_array().unwrap().len(),
        "{now}"
    );
    assert!(now["memory_bytes"].as_u64().unwrap() > 1_000_000, "{now}");
    assert!(now["uptime_seconds"].as_f64().unwrap() > 0.0, "{now}");
    assert_eq!(now["node"], json!(format!("crud@{SHARED}")), "{now}");
    // The Prometheus form carries the same counters.
    let text = request(port, "GET", "/metrics?format=prometheus", None);
    assert_eq!(text.status, 200);
    assert!(
        text.body.contains("crud_requests_total{method=\"POST\"}"),
        "{}",
        text.body
    );
}

// ---------------------------------------------------------------------
// examples/crud: the data is on the volume

#[test]
fn crud_data_survives_a_stop_and_a_new_run_on_the_same_volume() {
    let state = StateDir::new();
    let name = "crud-keep";
    let volume = "keep:/data";
    let port = boot(&state, name, crud_image(), Some(volume));
    // The node is named <release>@<instance>: the Mnesia schema's owner.
    assert_eq!(
        state.ok(&["rpc", name, "node()"]).trim().trim_matches('\''),
        "crud@crud-keep"
    );
    let kept = create(port, &json!({"name": "kept", "n": 1}));
    let gone = create(port, &json!({"name": "deleted"}));
    let gone_path = format!("/items/{}", gone["id"]);
    assert_eq!(request(port, "DELETE", &gone_path, None).status, 204);

    let t = Instant::now();
    state.ok(&["stop", name]);
    state.ok(&["rm", name]);
    eprintln!("{name}: stopped and removed in {:?}", t.elapsed());

    let port = boot(&state, name, crud_image(), Some(volume));
    let answer = request(port, "GET", &format!("/items/{}", kept["id"]), None);
    assert_eq!(answer.status, 200, "item lost across runs: {}", answer.body);
    assert_eq!(answer.json(), kept);
    assert_eq!(request(port, "GET", &gone_path, None).status, 404);
    // Ids go on after the last one handed out, deleted or not.
    let next = create(port, &json!({"name": "after"}));
    assert!(
        next["id"].as_u64() > gone["id"].as_u64(),
        "id {} reused after {}",
        next["id"],
        gone["id"]
    );
}

// ---------------------------------------------------------------------
// examples/chat in a real browser

#[test]
fn chat_echoes_and_broadcasts_in_a_browser() {
    unibeam_e2e::browser::require_tools();
    let script = unibeam_e2e::browser::dir().join("chat.mjs");
    let state = StateDir::new();
    let port = boot(&state, "chat-demo", chat_image(), None);
    let shots = workspace_root().join("target/test-output/demos");
    std::fs::create_dir_all(&shots).unwrap();
    let t = Instant::now();
    let out = Command::new("node")
        .arg(&script)
        .env("CHAT_URL", format!("http://127.0.0.1:{port}/"))
        .env("SCREENSHOT_DIR", &shots)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("chat.mjs ({:?}):\n{stdout}{stderr}", t.elapsed());
    assert!(
        out.status.success(),
        "tests/browser/chat.mjs failed ({}):\n{stdout}{stderr}",
        out.status
    );
    assert!(shots.join("chat-page-a.png").is_file());
    // The chat survived two browsers coming and going.
    let answer = request(port, "GET", "/", None);
    assert_eq!(answer.status, 200);
    assert!(
        answer.body.contains("<title>unibeam chat</title>"),
        "{}",
        answer.body
    );
}
