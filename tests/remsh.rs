//! `unibeam remsh` on a real VM, driven through a pseudo-terminal as a
//! user's terminal drives it: it evaluates on the guest, leaves without
//! stopping it, and never shows the cookie to another process.

use portable_pty::{native_pty_system, Child, CommandBuilder, PtySize};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use unibeam_e2e::{free_port, http_get, shared_hello_image, unibeam, unibeam_output, BOOT_TIMEOUT};

/// A private state directory; its instance goes with it (`rm -f`).
struct State {
    dir: tempfile::TempDir,
    name: &'static str,
}

impl State {
    fn unibeam(&self, args: &[&str]) -> Output {
        unibeam_output(args, &[("XDG_STATE_HOME", self.dir.path().to_str().unwrap())])
    }
}

impl Drop for State {
    fn drop(&mut self) {
        let _ = self.unibeam(&["rm", "-f", self.name]);
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What the pseudo-terminal showed so far.
struct Screen(Arc<Mutex<String>>);

impl Screen {
    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    fn wait_for(&self, needle: &str, child: &mut Box<dyn Child + Send + Sync>, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.text().contains(needle) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("remsh exited ({status:?}) before {needle:?}:\n{}", self.text());
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in {timeout:?}:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Every process below `root`, by pid.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        parents.insert(pid, ppid);
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, p)| **p == parent).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

fn proc_file(pid: u32, file: &str) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn remsh_evaluates_on_the_guest_and_leaves_it_running() {
    let state = State {
        dir: tempfile::tempdir().unwrap(),
        name: "remsh-hello",
    };
    let http = free_port();
    let publish = format!("{http}:8080");
    let image = shared_hello_image().to_str().unwrap();
    let run = state.unibeam(&["run", "-d", "--name", state.name, "-p", &publish, image]);
    assert!(run.status.success(), "run -d: {}", text(&run));

    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let out = state.unibeam(&["rpc", state.name, "1", "--timeout", "10"]);
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "rpc never answered: {}", text(&out));
        std::thread::sleep(Duration::from_secs(1));
    }
    let inspect = state.unibeam(&["inspect", state.name]);
    let record: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("inspect is JSON");
    let node = record["dist"]["node"].as_str().expect("dist.node").to_string();
    let cookie_file = PathBuf::from(record["dist"]["cookie_file"].as_str().expect("dist.cookie_file"));
    let cookie = std::fs::read_to_string(&cookie_file).unwrap().trim().to_string();
    assert!(cookie.len() >= 16, "a real cookie: {}", cookie.len());

    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 40,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("a pseudo-terminal");
    let mut cmd = CommandBuilder::new(unibeam());
    cmd.args(["remsh", state.name]);
    cmd.env("XDG_STATE_HOME", state.dir.path());
    let mut child = pty.slave.spawn_command(cmd).expect("remsh starts");
    drop(pty.slave);
    let pid = child.process_id().expect("a pid");
    let mut reader = pty.master.try_clone_reader().unwrap();
    let mut keys = pty.master.take_writer().unwrap();
    let screen = Screen(Arc::new(Mutex::new(String::new())));
    let into = Arc::clone(&screen.0);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut type_keys = |s: &str| {
        keys.write_all(s.as_bytes()).unwrap();
        keys.flush().unwrap();
    };

    // It says how to leave, and what would stop the guest.
    screen.wait_for("Ctrl-G, then q", &mut child, Duration::from_secs(30));
    assert!(
        screen.text().contains("q(), init:stop() and halt()"),
        "{}",
        screen.text()
    );
    // The prompt is the guest's.
    screen.wait_for(&format!("({node})1> "), &mut child, Duration::from_secs(60));

    // While the shell runs, no process of it holds the cookie in its
    // arguments or environment; its HOME is private.
    let processes = descendants(pid);
    let beam = processes
        .iter()
        .copied()
        .find(|p| contains(&proc_file(*p, "cmdline"), "-remsh"))
        .unwrap_or_else(|| panic!("no erl -remsh below {pid}: {processes:?}"));
    let mut home = None;
    for p in std::iter::once(pid).chain(processes) {
        let (cmdline, environ) = (proc_file(p, "cmdline"), proc_file(p, "environ"));
        assert!(
            !contains(&cmdline, &cookie),
            "the cookie is in {p}'s command line"
        );
        assert!(!contains(&environ, &cookie), "the cookie is in {p}'s environment");
        if p == beam {
            home = environ
                .split(|b| *b == 0)
                .find_map(|v| v.strip_prefix(b"HOME="))
                .map(|h| PathBuf::from(String::from_utf8_lossy(h).into_owned()));
        }
    }
    let home = home.expect("erl's HOME");
    assert!(home.join(".erlang.cookie").is_file(), "{}", home.display());

    // The guest's name, as the shell prints an atom: quoted when it has
    // a `-` (`'hello@remsh-hello'`).
    type_keys("node().\r");
    let atom = if node
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_@".contains(c))
    {
        node.clone()
    } else {
        format!("'{node}'")
    };
    screen.wait_for(&format!("\n{atom}\r\n"), &mut child, Duration::from_secs(30));
    type_keys("1+2.\r");
    screen.wait_for("\n3\r\n", &mut child, Duration::from_secs(30));

    // Ctrl-G, then q: the shell's node stops, the guest's does not.
    type_keys("\x07");
    screen.wait_for("-->", &mut child, Duration::from_secs(10));
    type_keys("q\r");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "remsh did not exit:\n{}",
            screen.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "remsh exited {status:?}:\n{}", screen.text());
    assert!(!home.exists(), "the private HOME is left: {}", home.display());
    assert!(
        !Path::new(&format!("/proc/{beam}")).exists(),
        "erl is still running"
    );

    let (code, body) = http_get(http).expect("the guest still answers HTTP");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hello"), "{body}");
    let ps = text(&state.unibeam(&["ps"]));
    assert!(ps.contains(state.name) && ps.contains("running"), "{ps}");
}
