//! The client against a real BEAM on this host, started the way unibeam's
//! guests run: no EPMD, a fixed distribution port, a cookie from a file.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use unibeam_dist::{metrics, DistError, Lang, Node, Target};

struct HostNode {
    child: Child,
    port: u16,
    _home: tempfile::TempDir,
}

impl Drop for HostNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const COOKIE: &str = "TESTCOOKIEXYZ";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `erl` with `-sname`/`-name` `name`, listening on a free port.
fn host_node(flag: &str, name: &str) -> HostNode {
    let home = tempfile::tempdir().unwrap();
    let cookie = home.path().join(".erlang.cookie");
    std::fs::write(&cookie, COOKIE).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400)).unwrap();
    let port = free_port();
    let child = Command::new("erl")
        .args([flag, name, "-noinput", "-start_epmd", "false", "-erl_epmd_port"])
        .arg(port.to_string())
        .env("HOME", home.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("erl runs (apt-get install erlang-base)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "erl never listened on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    HostNode {
        child,
        port,
        _home: home,
    }
}

fn connect(node: &HostNode, cookie: &str) -> Result<Node, DistError> {
    let target = Target {
        port: node.port,
        cookie: cookie.into(),
        tls: None,
    };
    Node::connect(&target, Duration::from_secs(10))
}

#[test]
fn expressions_evaluate_on_a_short_named_node() {
    let host = host_node("-sname", "unibeam_dist_test");
    let node = connect(&host, COOKIE).expect("connects");
    assert!(node.name().starts_with("unibeam_dist_test@"), "{}", node.name());
    assert_eq!(node.eval(Lang::Erlang, "1+1").unwrap(), "2");
    assert_eq!(node.eval(Lang::Erlang, "X = 20, X * 2.").unwrap(), "40");
    let who = node.eval(Lang::Erlang, "node()").unwrap();
    assert!(who.contains("unibeam_dist_test@"), "{who}");
    let err = node.eval(Lang::Erlang, "1 +").unwrap_err().to_string();
    assert!(err.contains("syntax error"), "{err}");
    let err = node
        .eval(Lang::Erlang, "erlang:error(boom)")
        .unwrap_err()
        .to_string();
    assert!(err.contains("error") && err.contains("boom"), "{err}");
    let unicode = node.eval(Lang::Erlang, "<<\"caf\u{e9}\"/utf8>>").unwrap();
    assert!(unicode.contains("caf\u{e9}"), "{unicode}");
}

#[test]
fn a_long_named_node_is_reached_too() {
    let host = host_node("-name", "unibeam_long@127.0.0.1");
    let node = connect(&host, COOKIE).expect("connects");
    assert_eq!(node.name(), "unibeam_long@127.0.0.1");
    assert_eq!(node.eval(Lang::Erlang, "3*3").unwrap(), "9");
}

#[test]
fn a_wrong_cookie_is_refused() {
    let host = host_node("-sname", "unibeam_cookie_test");
    let err = connect(&host, "WRONG").err().expect("refused");
    let chain = format!("{err}: {:?}", std::error::Error::source(&err));
    assert!(chain.contains(&host.port.to_string()), "{chain}");
}

#[test]
fn metrics_are_sampled() {
    let host = host_node("-sname", "unibeam_metrics_test");
    let node = connect(&host, COOKIE).unwrap();
    let first = metrics::sample(&node).expect("a sample");
    assert!(first.memory["total"] > 1_000_000, "{:?}", first.memory);
    assert!(first.process_count > 10 && first.process_limit > first.process_count);
    assert!(!first.processes.is_empty());
    assert!(first.processes.iter().any(|p| p.name == "code_server"));
    std::thread::sleep(Duration::from_millis(300));
    let second = metrics::sample(&node).unwrap();
    let rates = metrics::rates(&first, &second).expect("time passed");
    assert!(rates.reductions_per_s > 0.0, "{rates:?}");
    let top = metrics::top(&second, metrics::SortKey::Memory, 3);
    assert!(top[0].memory >= top[1].memory);
}
