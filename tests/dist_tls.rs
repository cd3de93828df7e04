//! End-to-end: TLS distribution. A `tls = true` cluster of the tlscluster
//! fixture (examples/cluster's counter with ssl in its release) meshes
//! over `inet_tls`, `unibeam rpc` reaches its nodes over TLS, a node with
//! a certificate from another CA is refused (and the members log why),
//! and a capture of the cluster's segment shows no distribution
//! handshake in clear text, where the same capture of a plain cluster does.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use unibeam_e2e::cluster::free_port_range;
use unibeam_e2e::{fails_naming, release, unibeam, BOOT_TIMEOUT};

fn tls_release() -> PathBuf {
    release("tests/fixtures/tlscluster", "tlscluster")
}

/// A cluster of `replicas` tlscluster counters in a private state dir.
struct TlsCluster {
    home: tempfile::TempDir,
    name: String,
    replicas: u16,
}

impl TlsCluster {
    fn new(name: &str, replicas: u16, tls: bool) -> TlsCluster {
        let home = tempfile::tempdir().unwrap();
        let base = free_port_range(replicas);
        let toml = format!(
            "[cluster]\nname = \"{name}\"\nnet_ticktime = 10\ntls = {tls}\n\n\
             [services.counter]\nrelease = \"{}\"\nreplicas = {replicas}\n\
             ports = [\"{base}:8080\"]\nrestart = \"no\"\n",
            tls_release().display()
        );
        std::fs::write(home.path().join("unibeam.toml"), toml).unwrap();
        TlsCluster {
            home,
            name: name.into(),
            replicas,
        }
    }

    fn state(&self) -> PathBuf {
        self.home.path().join("state")
    }

    fn unibeam(&self, args: &[&str]) -> Output {
        Command::new(unibeam())
            .args(args)
            .env("XDG_STATE_HOME", self.state())
            .output()
            .expect("unibeam runs")
    }

    fn file(&self) -> String {
        self.home.path().join("unibeam.toml").display().to_string()
    }

    fn up(&self) {
        let out = self.unibeam(&["up", "-f", &self.file()]);
        assert!(
            out.status.success(),
            "unibeam up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn instance(&self, i: u16) -> String {
        format!("{}-counter-{i}", self.name)
    }

    fn node(&self, i: u16) -> String {
        format!("counter-{i}@10.77.0.{}", i + 1)
    }

    fn cluster_dir(&self) -> PathBuf {
        self.state().join("unibeam/clusters").join(&self.name)
    }

    /// `unibeam rpc` on replica `i`; its printed value, or the error.
    fn rpc(&self, i: u16, expr: &str) -> Result<String, String> {
        let out = self.unibeam(&["rpc", &self.instance(i), expr, "--timeout", "10"]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Waits until `rpc nodes()` on every replica names all the others.
    fn wait_meshed(&self) {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            let seen: Vec<_> = (1..=self.replicas)
                .map(|i| self.rpc(i, "lists:sort(nodes())"))
                .collect();
            let meshed = seen.iter().enumerate().all(|(i, r)| {
                let me = i as u16 + 1;
                r.as_ref().is_ok_and(|v| {
                    (1..=self.replicas)
                        .filter(|j| *j != me)
                        .all(|j| v.contains(&format!("'{}'", self.node(j))))
                })
            });
            if meshed {
                return;
            }
            assert!(Instant::now() < deadline, "not meshed: {seen:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn logs(&self, i: u16) -> String {
        String::from_utf8_lossy(&self.unibeam(&["logs", &self.instance(i)]).stdout).into_owned()
    }

    /// The cluster's segment: QEMU's multicast port on the loopback.
    fn segment(&self) -> (String, u16) {
        let plan: Value =
            serde_json::from_slice(&std::fs::read(self.cluster_dir().join("plan.json")).unwrap()).unwrap();
        (
            plan["group"].as_str().unwrap().to_string(),
            plan["port"].as_u64().unwrap() as u16,
        )
    }

    /// Captures the segment while node 1 drops its link to node 2 and the
    /// mesh keeper makes it again: a fresh distribution handshake.
    fn capture_a_handshake(&self) -> Vec<u8> {
        let (_, port) = self.segment();
        let file = self.home.path().join("segment.pcap");
        let tcpdump = Tcpdump::start(&file, port);
        let dropped = self.rpc(1, &format!("erlang:disconnect_node('{}')", self.node(2)));
        assert_eq!(dropped.as_deref(), Ok("true"), "{dropped:?}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self
            .rpc(1, "nodes()")
            .is_ok_and(|v| v.contains(&format!("'{}'", self.node(2))))
        {
            assert!(Instant::now() < deadline, "node 1 never reconnected to node 2");
            std::thread::sleep(Duration::from_millis(250));
        }
        tcpdump.stop();
        std::fs::read(&file).unwrap()
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = self.unibeam(&["down", "-f", &self.file(), "-t", "0"]);
        let _ = self.unibeam(&["rm", "-f", "intruder"]);
    }
}

/// `tcpdump -i lo` on one UDP port, written as it arrives.
struct Tcpdump(Child);

impl Tcpdump {
    fn start(file: &Path, port: u16) -> Tcpdump {
        let child = Command::new("tcpdump")
            .args(["-i", "lo", "-U", "-n", "-w"])
            .arg(file)
            .args(["udp", "port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tcpdump runs (`make deps` installs it; captures need root or CAP_NET_RAW)");
        // tcpdump opens the interface before it writes the file's header.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(file).map_or(true, |m| m.len() == 0) {
            assert!(Instant::now() < deadline, "tcpdump never started capturing");
            std::thread::sleep(Duration::from_millis(100));
        }
        Tcpdump(child)
    }

    fn stop(mut self) {
        std::thread::sleep(Duration::from_secs(1));
        // SAFETY: kill(2) on the tcpdump this test started; SIGINT makes
        // it flush and close the capture.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

/// `unibeam remsh` on replica `i` through a pseudo-terminal: the guest's
/// prompt, `node().` evaluated there, then Ctrl-G q; the screen.
fn remsh_node_name(c: &TlsCluster, i: u16) -> String {
    use portable_pty::{native_pty_system, CommandBuilder, PtySize};
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 40,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut cmd = CommandBuilder::new(unibeam());
    cmd.args(["remsh", &c.instance(i)]);
    cmd.env("XDG_STATE_HOME", c.state());
    let mut child = pty.slave.spawn_command(cmd).expect("remsh starts");
    drop(pty.slave);
    let mut reader = pty.master.try_clone_reader().unwrap();
    let mut keys = pty.master.take_writer().unwrap();
    let screen = Arc::new(Mutex::new(String::new()));
    let into = Arc::clone(&screen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !screen.lock().unwrap().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} from remsh:\n{}",
                screen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(&format!("({})1> ", c.node(i)));
    keys.write_all(b"node().\r").unwrap();
    wait_for(&format!("'{}'\r\n", c.node(i)));
    keys.write_all(b"\x07").unwrap();
    wait_for("-->");
    keys.write_all(b"q\r").unwrap();
    let _ = child.wait();
    let text = screen.lock().unwrap().clone();
    text
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Whether a `send_name` of node 1 or 2 is in `capture`: the handshake's
/// first message ends with the name after its 2-byte length (version 6,
/// `N`), whichever of the two reconnected first.
fn send_name_seen(c: &TlsCluster, capture: &[u8]) -> bool {
    (1..=2).any(|i| {
        let name = c.node(i);
        let mut framed = (name.len() as u16).to_be_bytes().to_vec();
        framed.extend(name.as_bytes());
        capture.windows(framed.len()).any(|w| w == framed.as_slice())
    })
}

#[test]
fn a_tls_cluster_meshes_answers_rpc_and_refuses_a_foreign_ca() {
    let c = TlsCluster::new("tlsmesh", 3, true);
    c.up();
    c.wait_meshed();
    // rpc over TLS: the record names the client files, never a key.
    let inspect: Value = serde_json::from_slice(&c.unibeam(&["inspect", &c.instance(1)]).stdout).unwrap();
    let tls = &inspect["dist"]["tls"];
    assert!(tls["cert"].as_str().unwrap().ends_with("client.pem"), "{inspect}");
    assert_eq!(tls["server_name"], "10.77.0.2");
    assert_eq!(c.rpc(2, "1 + 1").as_deref(), Ok("2"));
    let proto = c.rpc(3, "init:get_argument(proto_dist)");
    assert_eq!(proto.as_deref(), Ok("{ok,[[\"inet_tls\"]]}"));
    // remsh's host erl speaks inet_tls too.
    let screen = remsh_node_name(&c, 1);
    eprintln!("remsh over TLS:\n{screen}");
    let key_mode = std::fs::metadata(c.cluster_dir().join("tls/ca.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode.permissions()) & 0o777,
        0o600
    );

    // The segment shows no handshake in clear text.
    let capture = c.capture_a_handshake();
    assert!(
        capture.len() > 2000,
        "the capture saw the reconnection: {} bytes",
        capture.len()
    );
    for i in 1..=3 {
        assert!(
            !contains(&capture, &c.node(i)),
            "{} in clear on the segment",
            c.node(i)
        );
    }
    assert!(!send_name_seen(&c, &capture));

    // A node whose certificate comes from another CA (unibeam's host-wide
    // one for `run --dist-tls`) joins the segment with the right cookie
    // and the cluster's flags, and is refused.
    let (group, port) = c.segment();
    let cookie = c.cluster_dir().join("cookie");
    let out = c.unibeam(&[
        "run",
        "-d",
        "--name",
        "intruder",
        "--dist-tls",
        "--cluster",
        &c.name,
        "--node-name",
        "intruder@10.77.0.9",
        "--private-net",
        &format!("{group}:{port}"),
        "--private-ip",
        "10.77.0.9/24",
        "--peer",
        &c.node(1),
        "--cookie-file",
        cookie.to_str().unwrap(),
        tls_release().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Its own rpc works (over TLS, with the host-wide CA's files).
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let intruder_rpc = |expr: &str| {
        let out = c.unibeam(&["rpc", "intruder", expr, "--timeout", "10"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    while intruder_rpc("ok").is_none() {
        assert!(Instant::now() < deadline, "the intruder never answered rpc");
        std::thread::sleep(Duration::from_millis(500));
    }
    let connected = intruder_rpc(&format!("net_kernel:connect_node('{}')", c.node(1)));
    assert_eq!(connected.as_deref(), Some("false"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !c.logs(1).contains("Unknown CA") {
        assert!(
            Instant::now() < deadline,
            "node 1 never logged the refusal:\n{}",
            c.logs(1)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "node 1 logged: {}",
        c.logs(1)
            .lines()
            .find(|l| l.contains("Unknown CA"))
            .unwrap_or_default()
    );
    assert_eq!(intruder_rpc("nodes()").as_deref(), Some("[]"));
    let nodes = c.rpc(1, "nodes()").unwrap();
    assert!(!nodes.contains("intruder"), "{nodes}");
}

#[test]
fn a_plain_cluster_shows_its_handshake_on_the_segment() {
    // The TLS test's capture, on a cluster without tls: proof the capture
    // would see the names if they went in clear.
    let c = TlsCluster::new("plainmesh", 3, false);
    c.up();
    c.wait_meshed();
    let capture = c.capture_a_handshake();
    assert!(
        contains(&capture, &c.node(1)),
        "node 1's name in the plain capture"
    );
    assert!(
        send_name_seen(&c, &capture),
        "the reconnection's send_name in the plain capture"
    );
    let inspect: Value = serde_json::from_slice(&c.unibeam(&["inspect", &c.instance(1)]).stdout).unwrap();
    assert!(inspect["dist"].get("tls").is_none(), "{inspect}");
}

#[test]
fn tls_without_distribution_is_one_line_naming_both_flags() {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(unibeam())
        .args(["run", "-d", "--dist-tls", "--no-dist"])
        .arg(tls_release())
        .env("XDG_STATE_HOME", state.path())
        .output()
        .unwrap();
    fails_naming(&out, 125, &["--dist-tls", "--no-dist"]);
}

#[test]
fn a_release_without_ssl_is_refused_before_any_vm_starts() {
    let state = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(unibeam())
            .args(args)
            .env("XDG_STATE_HOME", state.path())
            .output()
            .unwrap()
    };
    let hello = unibeam_e2e::hello_release();
    let out = run(&[
        "run",
        "-d",
        "--name",
        "nossl",
        "--dist-tls",
        hello.to_str().unwrap(),
    ]);
    fails_naming(&out, 125, &["release hello 0.1.0", "add ssl to the relx release"]);
    // `up` with tls = true refuses the same way, with nothing started.
    let file = state.path().join("unibeam.toml");
    let cluster = unibeam_e2e::cluster::cluster_release();
    std::fs::write(
        &file,
        format!(
            "[cluster]\nname = \"nossl\"\ntls = true\n[services.counter]\nrelease = \"{}\"\nreplicas = 2\n",
            cluster.display()
        ),
    )
    .unwrap();
    let out = run(&["up", "-f", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    // `up` notes what it builds first; the error is its last line.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("unibeam: error: release cluster 0.1.0 has no ssl application")
            && last.contains("add ssl to the relx release"),
        "{stderr}"
    );
    let ps = run(&["ps", "-a"]);
    assert!(!String::from_utf8_lossy(&ps.stdout).contains("nossl"));
}

#[test]
fn broken_ca_files_in_the_state_dir_are_named_with_the_fix() {
    let state = tempfile::tempdir().unwrap();
    let ca_dir = state.path().join("unibeam/dist-tls");
    std::fs::create_dir_all(&ca_dir).unwrap();
    let run = || {
        Command::new(unibeam())
            .args(["run", "-d", "--name", "broken", "--dist-tls"])
            .arg(tls_release())
            .env("XDG_STATE_HOME", state.path())
            .output()
            .unwrap()
    };
    let (cert, key) = (ca_dir.join("ca.pem"), ca_dir.join("ca.key"));
    // A CA key others can read.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&key, ca_key.serialize_pem()).unwrap();
    std::fs::write(&cert, "garbage").unwrap();
    set_mode(&key, 0o644);
    fails_naming(
        &run(),
        125,
        &[key.to_str().unwrap(), "readable by others", "chmod 600"],
    );
    // Garbage where the CA's certificate should be.
    set_mode(&key, 0o600);
    fails_naming(
        &run(),
        125,
        &[cert.to_str().unwrap(), "not a PEM certificate", "remove"],
    );
    // An unreadable key file.
    std::fs::write(&key, [0xffu8, 0, 1]).unwrap();
    fails_naming(&run(), 125, &[key.to_str().unwrap(), "not text"]);
    let ps = Command::new(unibeam())
        .args(["ps", "-a"])
        .env("XDG_STATE_HOME", state.path())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&ps.stdout).contains("broken"));
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
