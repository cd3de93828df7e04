//! The TLS client against a real BEAM on this host speaking TLS
//! distribution (`-proto_dist inet_tls`), with certificates from
//! unibeam's own CA code: what `rpc` does with a `tls = true` node.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use unibeam_cluster::tls::{ensure_ca, ensure_node, NodeTls};
use unibeam_dist::{DistError, Lang, Node, Target, TlsClient};

const COOKIE: &str = "TLSTESTCOOKIE";

struct TlsNode {
    child: Child,
    port: u16,
}

impl Drop for TlsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `erl -name tls@127.0.0.1` over inet_tls with `tls`'s node files, the
/// server asking every client for a certificate from the CA.
fn tls_node(home: &Path, tls: &NodeTls) -> TlsNode {
    let cookie = home.join(".erlang.cookie");
    std::fs::write(&cookie, COOKIE).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400)).unwrap();
    let common = format!(
        "{{cacertfile, {:?}}}, {{certfile, {:?}}}, {{keyfile, {:?}}}, {{verify, verify_peer}}",
        tls.node.ca, tls.node.cert, tls.node.key
    );
    let optfile = home.join("dist.conf");
    std::fs::write(
        &optfile,
        format!("[{{server, [{common}, {{fail_if_no_peer_cert, true}}]}}, {{client, [{common}]}}].\n"),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("erl")
        .args(["-name", "tls@127.0.0.1", "-noinput", "-proto_dist", "inet_tls"])
        .arg("-ssl_dist_optfile")
        .arg(&optfile)
        .args(["-start_epmd", "false", "-erl_epmd_port", &port.to_string()])
        .env("HOME", home)
        .stdout(Stdio::null())
        .spawn()
        .expect("erl runs (apt-get install erlang-base erlang-ssl)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "erl never listened on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    TlsNode { child, port }
}

fn connect(node: &TlsNode, client: &TlsClient) -> Result<Node, DistError> {
    let target = Target {
        port: node.port,
        cookie: COOKIE.into(),
        tls: Some(client.clone()),
    };
    Node::connect(&target, Duration::from_secs(15))
}

fn client_of(tls: &NodeTls, server_name: &str) -> TlsClient {
    TlsClient {
        ca: tls.client.ca.clone(),
        cert: tls.client.cert.clone(),
        key: tls.client.key.clone(),
        server_name: server_name.into(),
    }
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[test]
fn rpc_goes_over_tls_and_both_ends_check_the_ca() {
    let home = tempfile::tempdir().unwrap();
    let ca = ensure_ca(&home.path().join("ca")).unwrap();
    let tls = ensure_node(&ca, &home.path().join("nodes"), "tls", "127.0.0.1").unwrap();
    let node = tls_node(home.path(), &tls);

    let rpc = connect(&node, &client_of(&tls, "127.0.0.1")).expect("connects over TLS");
    assert_eq!(rpc.name(), "tls@127.0.0.1");
    assert_eq!(rpc.eval(Lang::Erlang, "1 + 1").unwrap(), "2");
    let proto = rpc
        .eval(
            Lang::Erlang,
            "net_kernel:get_net_ticktime(), init:get_argument(proto_dist)",
        )
        .unwrap();
    assert!(proto.contains("inet_tls"), "{proto}");
    drop(rpc);

    // A certificate that does not name the node is refused by the host.
    let err = connect(&node, &client_of(&tls, "10.1.2.3"))
        .err()
        .expect("refused");
    let text = chain(&err);
    assert!(text.contains("TLS") && text.contains("handshake"), "{text}");

    // A client certificate from another CA is refused by the node.
    let other = ensure_ca(&home.path().join("other")).unwrap();
    let foreign = ensure_node(&other, &home.path().join("other-nodes"), "x", "127.0.0.1").unwrap();
    let mut client = client_of(&tls, "127.0.0.1");
    client.cert = foreign.client.cert.clone();
    client.key = foreign.client.key.clone();
    let err = connect(&node, &client).err().expect("refused");
    eprintln!("foreign client: {}", chain(&err));
}
