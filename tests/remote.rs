//! `unibeam rpc` on real VMs: values, errors, Elixir, stopped and unknown
//! instances, a wrong cookie, and the per-instance cookie kept secret.

use unibeam_e2e::{build_image, hello_elixir_release, one_line, shared_hello_image, StateDir as State};

/// Every place on the host where a process's secrets could show.
fn host_processes_mention(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        for file in ["cmdline", "environ"] {
            let path = entry.path().join(file);
            if let Ok(bytes) = std::fs::read(&path) {
                if String::from_utf8_lossy(&bytes).contains(needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

#[test]
fn rpc_evaluates_on_hello_and_reports_failures() {
    let state = State::new();
    state.start("rpc-hello", shared_hello_image());
    assert_eq!(state.ok(&["rpc", "rpc-hello", "node()"]), "'hello@rpc-hello'\n");
    assert_eq!(state.ok(&["rpc", "rpc-hello", "1+1"]), "2\n");
    assert_eq!(state.ok(&["rpc", "rpc-hello", "X = 6, X * 7."]), "42\n");

    let bad = state.unibeam(&["rpc", "rpc-hello", "lists:seq(1,"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(one_line(&bad).contains("syntax error"), "{}", one_line(&bad));
    let raised = state.unibeam(&["rpc", "rpc-hello", "erlang:error(boom)"]);
    assert_eq!(raised.status.code(), Some(1));
    assert!(one_line(&raised).contains("error: boom"), "{}", one_line(&raised));
    let slow = state.unibeam(&["rpc", "rpc-hello", "timer:sleep(20000)", "--timeout", "2"]);
    assert_eq!(slow.status.code(), Some(1));
    assert!(one_line(&slow).contains("no answer"), "{}", one_line(&slow));
}

#[test]
fn the_instance_cookie_is_private_and_a_wrong_one_is_refused() {
    let state = State::new();
    state.start("rpc-cookie", shared_hello_image());
    let cookie_file = state.instance_dir("rpc-cookie").join("cookie");
    let cookie = std::fs::read_to_string(&cookie_file).unwrap();
    assert!(cookie.len() >= 20, "a random cookie: {cookie:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cookie_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(host_processes_mention(&cookie), Vec::<String>::new());
    for args in [
        &["logs", "rpc-cookie"][..],
        &["ps", "--format", "json"][..],
        &["ps"][..],
        &["inspect", "rpc-cookie"][..],
    ] {
        let shown = state.ok(args);
        assert!(!shown.contains(&cookie), "{args:?} shows the cookie");
    }

    std::fs::write(&cookie_file, "WRONGCOOKIEWRONGCOOKIE").unwrap();
    let refused = state.unibeam(&["rpc", "rpc-cookie", "1", "--timeout", "10"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        one_line(&refused).contains("cannot reach"),
        "{}",
        one_line(&refused)
    );
    std::fs::write(&cookie_file, &cookie).unwrap();
    assert_eq!(state.ok(&["rpc", "rpc-cookie", "1"]), "1\n");
}

#[test]
fn stopped_and_unknown_instances_are_one_line_errors() {
    let state = State::new();
    let unknown = state.unibeam(&["rpc", "nope", "1"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(one_line(&unknown).contains("\"nope\""), "{}", one_line(&unknown));
    state.start("rpc-stop", shared_hello_image());
    state.ok(&["stop", "rpc-stop"]);
    let stopped = state.unibeam(&["rpc", "rpc-stop", "1"]);
    assert_eq!(stopped.status.code(), Some(1));
    assert!(
        one_line(&stopped).contains("not running"),
        "{}",
        one_line(&stopped)
    );
    let no_dist = state.unibeam(&[
        "run",
        "-d",
        "--no-dist",
        "--name",
        "rpc-nodist",
        shared_hello_image().to_str().unwrap(),
    ]);
    assert!(
        no_dist.status.success(),
        "{}",
        String::from_utf8_lossy(&no_dist.stderr)
    );
    let refused = state.unibeam(&["rpc", "rpc-nodist", "1"]);
    assert!(one_line(&refused).contains("--no-dist"), "{}", one_line(&refused));
}

#[test]
fn rpc_takes_elixir_on_an_elixir_release() {
    let state = State::new();
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(&hello_elixir_release(), &dir.path().join("hello_elixir.unibeam"));
    state.start("rpc-ex", &image);
    assert_eq!(
        state.ok(&["rpc", "rpc-ex", "--elixir", "Enum.sum([1, 2])"]),
        "3\n"
    );
    let raised = state.unibeam(&["rpc", "rpc-ex", "--elixir", "raise \"nope\""]);
    assert_eq!(raised.status.code(), Some(1));
    assert!(one_line(&raised).contains("nope"), "{}", one_line(&raised));
}
