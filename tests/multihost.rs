//! Beyond one host: three network namespaces act as three hosts on one L2
//! (veths into a shared bridge), each running unibeam with a `bridge`
//! network whose uplink is its veth. dnsmasq, in a namespace of its own,
//! answers the service's name with every VM's address; the three
//! replicas, one per host, find each other through it and form one
//! Erlang cluster. Cutting one host's link shows nodedown on the other
//! two; restoring it heals the mesh. Nothing leaves the namespaces, and
//! every namespace, bridge and tap is removed at the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use unibeam_e2e::netns::{ip, ip_in, require_root, Netns};
use unibeam_e2e::{build_image, cluster::cluster_release, unibeam, BOOT_TIMEOUT};

const NAME: &str = "web.mh.test";
const DNS_IP: &str = "10.88.0.53";

/// One "host": a namespace with its own unibeam state and unibeam.toml.
struct Host {
    ns: Netns,
    home: tempfile::TempDir,
    index: u8,
}

impl Host {
    fn unibeam(&self, args: &[&str]) -> Output {
        let state = self.home.path().to_str().unwrap().to_string();
        self.ns.run(&unibeam(), args, &[("XDG_STATE_HOME", &state)])
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.unibeam(args);
        assert!(
            out.status.success(),
            "host {}: unibeam {args:?}: {}",
            self.index,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn vm_address(&self) -> String {
        format!("10.88.{}.2", self.index)
    }

    fn node(&self) -> String {
        format!("web@{}", self.vm_address())
    }

    fn toml(&self) -> PathBuf {
        self.home.path().join("unibeam.toml")
    }

    fn logs(&self) -> String {
        String::from_utf8_lossy(&self.unibeam(&["logs", "mh-web-1"]).stdout).into_owned()
    }

    fn nodes(&self) -> Option<String> {
        let out = self.unibeam(&["rpc", "mh-web-1", "lists:sort(nodes()).", "--timeout", "10"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// dnsmasq answering NAME from a hosts file it rereads on SIGHUP.
struct Dns {
    child: Child,
    hosts: PathBuf,
}

impl Dns {
    fn publish(&mut self, addresses: &[String]) {
        let lines: String = addresses.iter().map(|a| format!("{a} {NAME}\n")).collect();
        std::fs::write(&self.hosts, lines).unwrap();
        let _ = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The shared segment: a bridge in namespace `lan`, a veth from it into
/// every host (`up1`..`up3`, left unaddressed for unibeam's bridge) and
/// into the DNS namespace.
fn wire(lan: &Netns, dns: &Netns, hosts: &[Host]) {
    ip(&["-n", &lan.name, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &lan.name, "link", "set", "br0", "up"]);
    let plug = |port: &str, far_ns: &str, far: &str| {
        ip(&[
            "-n", &lan.name, "link", "add", port, "type", "veth", "peer", "name", far, "netns", far_ns,
        ]);
        ip(&["-n", &lan.name, "link", "set", port, "master", "br0", "up"]);
    };
    for h in hosts {
        plug(&format!("h{}", h.index), &h.ns.name, &format!("up{}", h.index));
    }
    plug("d0", &dns.name, "eth0");
    ip(&[
        "-n",
        &dns.name,
        "addr",
        "add",
        &format!("{DNS_IP}/16"),
        "dev",
        "eth0",
    ]);
    ip(&["-n", &dns.name, "link", "set", "eth0", "up"]);
}

fn start_dns(dns: &Netns, dir: &Path) -> Dns {
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "").unwrap();
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &dns.name,
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
        ])
        .args([
            "--no-resolv",
            "--no-hosts",
            "--local=/mh.test/",
            "--bind-interfaces",
            "--user=root",
        ])
        .arg(format!("--listen-address={DNS_IP}"))
        .arg(format!("--addn-hosts={}", hosts.display()))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq is installed (apt-get install dnsmasq-base)");
    Dns { child, hosts }
}

fn cluster_file(host: &Host, image: &Path, cookie: &Path) -> String {
    format!(
        "[cluster]\nname = \"mh\"\nnet_ticktime = 4\ncookie_file = \"{}\"\n\n\
         [services.web]\nimage = \"{}\"\nreplicas = 1\nmemory = \"128M\"\n\
         network = \"lan\"\ndiscovery = \"dns:{NAME}\"\nports = [\"{}:8080\"]\n",
        cookie.display(),
        image.display(),
        18180 + u16::from(host.index)
    )
}

fn bring_up(h: &Host, image: &Path, cookie: &Path) {
    let gateway = format!("10.88.{}.1", h.index);
    let range = format!("10.88.{}.0/24", h.index);
    let uplink = format!("up{}", h.index);
    h.ok(&[
        "network",
        "create",
        "lan",
        "--driver",
        "bridge",
        "--subnet",
        "10.88.0.0/16",
    ]
    .into_iter()
    .chain([
        "--gateway",
        &gateway,
        "--ip-range",
        &range,
        "--dns",
        DNS_IP,
        "--uplink",
        &uplink,
    ])
    .collect::<Vec<_>>());
    std::fs::write(h.toml(), cluster_file(h, image, cookie)).unwrap();
    h.ok(&["up", "-f", h.toml().to_str().unwrap()]);
}

fn sees(h: &Host, others: &[&Host]) -> bool {
    h.nodes()
        .is_some_and(|n| others.iter().all(|o| n.contains(&o.node())))
}

#[test]
fn three_hosts_form_one_cluster_through_dns_and_heal_after_a_cut() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let image = build_image(&cluster_release(), &work.path().join("web.unibeam"));
    let cookie = work.path().join("cookie");
    std::fs::write(&cookie, "multihostcookie").unwrap();
    std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let tag = format!("ubmh{}", std::process::id() % 100_000);
    let lan = Netns::new(&format!("{tag}-lan"));
    let dns_ns = Netns::new(&format!("{tag}-dns"));
    let hosts: Vec<Host> = (1..=3)
        .map(|index| Host {
            ns: Netns::new(&format!("{tag}-h{index}")),
            home: tempfile::tempdir().unwrap(),
            index,
        })
        .collect();
    wire(&lan, &dns_ns, &hosts);
    let mut dns = start_dns(&dns_ns, work.path());
    for h in &hosts {
        bring_up(h, &image, &cookie);
    }
    // Before DNS knows the name, each node waits, asks again, and says so.
    for h in &hosts {
        wait_until(
            "the console says discovery has no answer yet",
            BOOT_TIMEOUT,
            || {
                h.logs().contains(&format!(
                    "discovery dns:{NAME}: no A records; asking again every 2 s"
                ))
            },
        );
    }
    dns.publish(&hosts.iter().map(Host::vm_address).collect::<Vec<_>>());
    for h in &hosts {
        let others: Vec<&Host> = hosts.iter().filter(|o| o.index != h.index).collect();
        wait_until("every node sees the other two", BOOT_TIMEOUT, || sees(h, &others));
    }

    // Cut host 3 off the segment: the other two see it go.
    let cut = &hosts[2];
    ip(&["-n", &cut.ns.name, "link", "set", "up3", "down"]);
    for h in &hosts[..2] {
        wait_until("nodedown of the cut host", Duration::from_secs(120), || {
            h.logs().contains(&format!("nodedown {}", cut.node()))
        });
        let nodes = h.nodes().expect("the node answers");
        assert!(!nodes.contains(&cut.node()), "{nodes}");
    }
    // Restore it: the mesh heals by itself.
    ip(&["-n", &cut.ns.name, "link", "set", "up3", "up"]);
    for h in &hosts {
        let others: Vec<&Host> = hosts.iter().filter(|o| o.index != h.index).collect();
        wait_until("the mesh heals", Duration::from_secs(120), || sees(h, &others));
    }

    let log = hosts[0].logs();
    assert!(
        log.contains(&format!("discovery dns:{NAME}: 3 address(es)")),
        "{log}"
    );
    // An address that leaves DNS is dropped.
    dns.publish(&hosts[..2].iter().map(Host::vm_address).collect::<Vec<_>>());
    wait_until(
        "a vanished address is disconnected",
        Duration::from_secs(60),
        || {
            hosts[0]
                .logs()
                .contains(&format!("{} left DNS; disconnecting", cut.node()))
        },
    );
    // Clean up through unibeam: no tap and no bridge is left.
    for h in &hosts {
        h.ok(&["down", "-f", h.toml().to_str().unwrap()]);
        h.ok(&["network", "rm", "lan"]);
        let links = ip_in(&h.ns.name, &["-o", "link"]);
        assert!(
            !links.contains("ub-") && !links.contains("ubt"),
            "left behind: {links}"
        );
    }
    drop(dns);
}
