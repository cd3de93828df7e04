//! Helpers for the end-to-end tests and benchmarks: locate the built
//! binaries and example releases, boot VMs through the real CLI, and talk to
//! them over HTTP the way a user would.

pub mod bench;
pub mod browser;
pub mod cluster;
pub mod dashboard;
pub mod export;
pub mod http;
pub mod netns;
pub mod sandbox;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Generous: a TCG boot takes 7-10 s alone, longer beside a second VM.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `target/<profile>`, where cargo put this test and the workspace binaries.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf()
}

fn built_binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (`make test` does, or `cargo build --workspace` with this profile)",
        path.display()
    );
    path
}

/// The `unibeam` CLI binary under test.
pub fn unibeam() -> PathBuf {
    // unibeam finds its guest init beside itself; check it is there too.
    built_binary("unibeam-init");
    built_binary("unibeam")
}

/// Tests run in parallel; two rebar3 (or mix) runs in one project would collide.
static REBAR3: Mutex<()> = Mutex::new(());

fn rebar3(dir: &Path, args: &[&str]) {
    let status = Command::new("rebar3")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .expect("rebar3 runs (apt-get install rebar3)");
    assert!(
        status.success(),
        "rebar3 {} failed in {}",
        args.join(" "),
        dir.display()
    );
}

/// A rebar3 release under the workspace, built with `rebar3 as prod release`
/// if it is not there yet. `project` is relative to the workspace root.
pub fn release(project: &str, name: &str) -> PathBuf {
    let _one_at_a_time = REBAR3.lock().unwrap_or_else(|e| e.into_inner());
    let dir = workspace_root().join(project);
    let rel = dir.join("_build/prod/rel").join(name);
    if !rel.join("releases/start_erl.data").is_file() {
        rebar3(&dir, &["as", "prod", "release"]);
    }
    rel
}

/// examples/hello as a `rebar3 as prod tar` tarball.
pub fn hello_tarball() -> PathBuf {
    let rel = hello_release();
    let _one_at_a_time = REBAR3.lock().unwrap_or_else(|e| e.into_inner());
    let tarball = rel.join("hello-0.1.0.tar.gz");
    if !tarball.is_file() {
        rebar3(&workspace_root().join("examples/hello"), &["as", "prod", "tar"]);
    }
    tarball
}

pub fn hello_release() -> PathBuf {
    release("examples/hello", "hello")
}

/// examples/hello_elixir, built with `MIX_ENV=prod mix release` if needed.
pub fn hello_elixir_release() -> PathBuf {
    mix_release("examples/hello_elixir", "hello_elixir")
}

/// tests/fixtures/stock: `rebar3 new release` plus os_mon, mnesia, crypto, inets.
pub fn stock_release() -> PathBuf {
    release("tests/fixtures/stock", "stock")
}

/// tests/fixtures/srcconf: a rebar3 release with sys.config.src and vm.args.src.
pub fn srcconf_release() -> PathBuf {
    release("tests/fixtures/srcconf", "srcconf")
}

/// tests/fixtures/mixenv: a mix release whose rel/env.sh.eex sets variables.
pub fn mixenv_release() -> PathBuf {
    mix_release("tests/fixtures/mixenv", "mixenv")
}

/// A mix release under the workspace, built with `MIX_ENV=prod mix release`
/// if it is not there yet. `project` is relative to the workspace root.
pub fn mix_release(project: &str, name: &str) -> PathBuf {
    let _one_at_a_time = REBAR3.lock().unwrap_or_else(|e| e.into_inner());
    let dir = workspace_root().join(project);
    let rel = dir.join("_build/prod/rel").join(name);
    if !rel.join("releases/start_erl.data").is_file() {
        let status = Command::new("mix")
            .args(["release", "--overwrite"])
            .env("MIX_ENV", "prod")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("mix runs (apt-get install elixir)");
        assert!(status.success(), "mix release failed in {}", dir.display());
    }
    rel
}

/// The example releases the benchmarks measure, by label.
pub fn example_releases() -> Vec<(&'static str, PathBuf)> {
    vec![
        ("hello", hello_release()),
        ("hello_elixir", hello_elixir_release()),
    ]
}

/// A copy of tests/fixtures/halt in `dir` whose sys.config holds
/// `settings` (e.g. `{mode, error}`).
pub fn halt_release_with(settings: &str, dir: &Path) -> PathBuf {
    let copy = dir.join("halt");
    copy_tree(&release("tests/fixtures/halt", "halt"), &copy);
    std::fs::write(
        copy.join("releases/0.1.0/sys.config"),
        format!("[{{halt, [{settings}]}}].\n"),
    )
    .unwrap();
    copy
}

/// Boots a halt fixture with `settings`, with extra `unibeam run` arguments.
pub fn halt_fixture(settings: &str, args: &[&str]) -> Vm {
    let dir = tempfile::tempdir().unwrap();
    let copy = halt_release_with(settings, dir.path());
    // Given a release, `run` builds the image itself.
    let mut all = vec![copy.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut vm = Vm::run(&all);
    vm.keep(dir);
    vm
}

/// Copies a directory tree (a release) so a test can edit the copy.
pub fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp runs");
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}

/// Runs `unibeam build <release> -o <out>` and insists it succeeds.
pub fn build_image(release: &Path, out: &Path) -> PathBuf {
    build_image_with(release, out, &[])
}

/// hello's image in `dir`, on the specialised kernel whatever
/// `UNIBEAM_KERNEL` says: for tests of that kernel's own behaviour.
pub fn specialised_hello_image(dir: &Path) -> PathBuf {
    build_image_with(
        &hello_release(),
        &dir.join("hello.unibeam"),
        &["--kernel", "specialised"],
    )
}

/// `build_image` with extra flags, e.g. `--kernel debian`.
pub fn build_image_with(release: &Path, out: &Path, flags: &[&str]) -> PathBuf {
    let output = Command::new(unibeam())
        .arg("build")
        .arg(release)
        .arg("-o")
        .arg(out)
        .args(flags)
        .output()
        .expect("unibeam build runs");
    assert!(
        output.status.success(),
        "unibeam build failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out.to_path_buf()
}

/// Runs the CLI to completion with extra environment.
pub fn unibeam_output(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(unibeam());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("unibeam runs")
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// `GET http://127.0.0.1:<port>/` → status and body, or None if nothing answered.
pub fn http_get(port: u16) -> Option<(u16, String)> {
    get(port, "/", Duration::from_secs(3))
}

/// `GET http://127.0.0.1:<port><path>`, for requests that may take a while.
pub fn http_get_path(port: u16, path: &str) -> Option<(u16, String)> {
    get(port, path, Duration::from_secs(20))
}

/// Polls `GET <path>` on `port` until it answers 200 (within `limit`);
/// returns the body. For a VM that is up but whose app or port forward
/// may not answer yet.
pub fn http_200_within(port: u16, path: &str, limit: Duration) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some((200, body)) = get(port, path, Duration::from_secs(3)) {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no 200 for {path} on port {port} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// How long one try of [`Vm::wait_http_ok`] waits for an answer.
const POLL_TIMEOUT: Duration = Duration::from_millis(500);

/// One GET. An answer whose body could not be read whole (the timeout hit
/// after the status line, or the connection dropped) counts as no answer:
/// under TCG a loaded guest can send the headers well before the body.
fn get(port: u16, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let agent = ureq::AgentBuilder::new().timeout(timeout).build();
    let resp = match agent.get(&format!("http://127.0.0.1:{port}{path}")).call() {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(_) => return None,
    };
    let status = resp.status();
    resp.into_string().ok().map(|body| (status, body))
}

/// Boots `image` with `flags`, checks the HTTP answer, then stops it with
/// Ctrl-C (the power button) and expects a clean exit.
/// Boots hello, checks its answer and its graceful stop; returns what
/// `unibeam run` printed.
pub fn hello_answers_and_stops(image: &Path, flags: &[&str]) -> String {
    let port = free_port();
    let publish = format!("{port}:8080");
    let mut args = vec![image.to_str().unwrap(), "-p", &publish];
    args.extend(flags);
    let mut vm = Vm::run(&args);
    let (body, took) = vm.wait_http_ok(port, BOOT_TIMEOUT);
    eprintln!("first HTTP 200 after {took:?}: {body}");
    assert!(body.starts_with("hello from hello on hello "), "body: {body}");
    vm.interrupt();
    let status = vm.wait(Duration::from_secs(90));
    let out = vm.output();
    assert!(
        out.contains("power button pressed"),
        "graceful stop path not taken:\n{out}"
    );
    assert!(
        out.contains("SIGTERM received - shutting down"),
        "BEAM did not run init:stop():\n{out}"
    );
    assert_eq!(status.code(), Some(0), "output:\n{out}");
    assert!(
        !out.contains("PCI: Fatal"),
        "a kernel line users read as an error:\n{out}"
    );
    out
}

/// A `unibeam run` in the background, with everything it prints captured.
pub struct Vm {
    child: Child,
    started: Instant,
    output: Arc<Mutex<String>>,
    /// Scratch directories that must outlive the VM.
    kept: Vec<tempfile::TempDir>,
    /// The threads copying stdout and stderr into `output`; they end when
    /// the last writer of their pipe closes it.
    readers: Vec<thread::JoinHandle<()>>,
}

fn capture(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
}

impl Vm {
    /// `unibeam run <args>`.
    pub fn run(args: &[&str]) -> Vm {
        let mut cmd = Command::new(unibeam());
        cmd.arg("run").args(args);
        Vm::spawn(cmd)
    }

    /// Any VM-running command, e.g. a plain QEMU for the naive baseline.
    pub fn spawn(mut cmd: Command) -> Vm {
        use std::os::unix::process::CommandExt;
        // A shell without job control starts background jobs with SIGINT
        // ignored, and children inherit that: a suite or bench run with `&`
        // would then lose a Ctrl-C that lands before unibeam installs its
        // handler. The command gets SIGINT as a terminal user's would.
        // SAFETY: runs between fork and exec and only calls signal(2), which
        // is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("VM command starts");
        let output = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            capture(child.stdout.take().unwrap(), Arc::clone(&output)),
            capture(child.stderr.take().unwrap(), Arc::clone(&output)),
        ];
        Vm {
            child,
            started: Instant::now(),
            output,
            kept: Vec::new(),
            readers,
        }
    }

    /// The command's pid, for signals other than Ctrl-C.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the command has ended (without waiting).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn keep(&mut self, dir: tempfile::TempDir) {
        self.kept.push(dir);
    }

    /// Time since the command started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits until the output contains `needle` `times` times.
    pub fn wait_for_output(&mut self, needle: &str, times: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.output().matches(needle).count() < times {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "VM exited ({status}) before printing {needle:?} {times}x:\n{}",
                    self.output()
                );
            }
            if Instant::now() > deadline {
                panic!("no {needle:?} {times}x within {timeout:?}:\n{}", self.output());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Polls `port` until it answers 200; returns the body and the time
    /// since `run` started.
    ///
    /// Each try gives up after [`POLL_TIMEOUT`]: QEMU's user network
    /// accepts the connection on the host at once, and while the guest is
    /// not yet taking packets its SYN is lost; a patient client then waits
    /// for the next retransmission or its own timeout (3 s with
    /// `http_get`), which hid up to 3 s of boot time in every measurement.
    pub fn wait_http_ok(&mut self, port: u16, timeout: Duration) -> (String, Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((200, body)) = get(port, "/", POLL_TIMEOUT) {
                return (body, self.started.elapsed());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "unibeam run exited ({status}) before answering HTTP:\n{}",
                    self.output()
                );
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "no HTTP 200 on port {port} within {timeout:?}:\n{}",
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Joins the capture threads once they have read everything: the
    /// pipes close when the command and any child it left holding them
    /// (QEMU dies with it) are gone. Fails if that takes past `deadline`.
    fn join_readers(&mut self, deadline: Instant) {
        while self.readers.iter().any(|r| !r.is_finished()) {
            assert!(
                Instant::now() < deadline,
                "the command exited but its output pipes stayed open:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(10));
        }
        for reader in self.readers.drain(..) {
            reader.join().expect("a capture thread panicked");
        }
    }

    /// Kills the VM command outright (for the baseline, which has no stop path).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Ctrl-C, as a terminal would send it.
    pub fn interrupt(&self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
    }

    /// Waits for `unibeam run` to exit and for its output to end; kills it
    /// and fails past `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait on unibeam") {
                self.join_readers(deadline);
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("unibeam run did not exit within {timeout:?}:\n{}", self.output());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // A failed test must not leave a VM behind: Ctrl-C first, then
        // SIGKILL, which takes QEMU down too (it dies with its parent).
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
        }
    }
}

/// Entries of a layered initramfs (xz- or zstd-compressed newc archives
/// back to back): (path, mode), in archive order.
pub fn initramfs_entries(path: &Path) -> Vec<(String, u32)> {
    let compressed = std::fs::read(path).expect("read initramfs");
    let archives = if compressed.starts_with(b"\xfd7zXZ\0") {
        let mut out = Vec::new();
        // One xz stream per layer, with stream padding between them.
        std::io::Read::read_to_end(
            &mut xz2::read::XzDecoder::new_multi_decoder(&compressed[..]),
            &mut out,
        )
        .expect("initramfs is xz");
        out
    } else {
        zstd::decode_all(&compressed[..]).expect("initramfs is zstd or xz")
    };
    let mut entries = Vec::new();
    let mut rest = &archives[..];
    while !rest.is_empty() {
        let reader = cpio::NewcReader::new(rest).expect("valid newc entry");
        let trailer = reader.entry().is_trailer();
        if !trailer {
            entries.push((reader.entry().name().to_string(), reader.entry().mode()));
        }
        rest = reader.finish().expect("skip entry data");
        if trailer {
            // The next layer's archive starts after the trailer's padding.
            let zeros = rest.iter().take_while(|b| **b == 0).count();
            rest = &rest[zeros..];
        }
    }
    entries
}

/// hello's release plus the host's os_mon application, in `dir`: the
/// presence of `lib/os_mon-*` alone makes unibeam add a shell.
pub fn os_mon_release(dir: &Path) -> PathBuf {
    let release = dir.join("hello_os_mon");
    copy_tree(&hello_release(), &release);
    let os_mon = std::fs::read_dir("/usr/lib/erlang/lib")
        .expect("/usr/lib/erlang/lib")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("os_mon-"))
        .expect("no os_mon on this host: apt-get install erlang-os-mon (make deps)");
    copy_tree(&os_mon, &release.join("lib").join(os_mon.file_name().unwrap()));
    release
}

/// The error of a failed command: its line and its `caused by:` lines,
/// joined as one (never a panic message). Progress notes the command
/// printed before it (`unibeam: <note>`, such as the accelerator probe's
/// verdict, which the first run on a host prints) are not part of it.
pub fn one_line(out: &Output) -> String {
    let all = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let notes = all
        .lines()
        .take_while(|l| l.starts_with("unibeam: ") && !l.starts_with("unibeam: error: "))
        .count();
    let text = all.lines().skip(notes).collect::<Vec<_>>().join("\n");
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    assert!(
        lines.all(|l| l.starts_with("  caused by: ")),
        "expected one error line and its causes, got:\n{all}"
    );
    assert!(!all.contains("panicked") && !first.is_empty(), "{all}");
    text.replace("\n  caused by: ", ": ")
}

/// Asserts `out` failed with `code` and one stderr line holding every needle.
pub fn fails_naming(out: &Output, code: i32, needles: &[&str]) -> String {
    let line = one_line(out);
    assert_eq!(out.status.code(), Some(code), "{line}");
    for needle in needles {
        assert!(line.contains(needle), "expected {needle:?} in: {line}");
    }
    line
}

/// A private state directory (`XDG_STATE_HOME`): the instances of one
/// test only, each removed (`rm -f`) when it is dropped.
pub struct StateDir {
    dir: tempfile::TempDir,
    env: Vec<(&'static str, &'static str)>,
}

impl StateDir {
    pub fn new() -> StateDir {
        StateDir::with_env(&[])
    }

    /// With a snapshot cache (`XDG_CACHE_HOME`) of its own, which the
    /// caller keeps alive as long as the state dir.
    pub fn with_own_cache() -> (StateDir, tempfile::TempDir) {
        let cache = tempfile::tempdir().unwrap();
        // `env` holds &'static str; one leaked path per state dir.
        let path: &'static str = Box::leak(cache.path().to_str().unwrap().to_string().into_boxed_str());
        (StateDir::with_env(&[("XDG_CACHE_HOME", path)]), cache)
    }

    /// With `env` set for every command, and so for the monitors they start.
    pub fn with_env(env: &[(&'static str, &'static str)]) -> StateDir {
        StateDir {
            dir: tempfile::tempdir().unwrap(),
            env: env.to_vec(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn unibeam(&self, args: &[&str]) -> Output {
        let mut env = vec![("XDG_STATE_HOME", self.dir.path().to_str().unwrap())];
        env.extend(self.env.iter().copied());
        unibeam_output(args, &env)
    }

    /// The stdout of a command that must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.unibeam(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn instance_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join("unibeam/instances").join(name)
    }

    /// Runs `image` detached as `name` and waits until its node answers rpc.
    pub fn start(&self, name: &str, image: &Path) {
        self.ok(&["run", "-d", "--name", name, image.to_str().unwrap()]);
        rpc_when_up(name, "ok", |args| self.unibeam(args));
    }
}

/// Polls `rpc NAME EXPR` (through `unibeam`, which runs a unibeam command
/// in the caller's state) until the node answers, for up to BOOT_TIMEOUT;
/// the value printed.
pub fn rpc_when_up(name: &str, expr: &str, unibeam: impl Fn(&[&str]) -> Output) -> String {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let out = unibeam(&["rpc", name, expr, "--timeout", "10"]);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{name}'s node never answered: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        thread::sleep(Duration::from_millis(500));
    }
}

impl Default for StateDir {
    fn default() -> Self {
        StateDir::new()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let instances = self.dir.path().join("unibeam/instances");
        for entry in std::fs::read_dir(instances).into_iter().flatten().flatten() {
            let _ = self.unibeam(&["rm", "-f", &entry.file_name().to_string_lossy()]);
        }
    }
}

/// hello's image, built once per test binary under target/ (the layer
/// cache makes it quick); tests that alter it work on a copy.
pub fn shared_hello_image() -> &'static Path {
    static IMAGE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        let stem = exe
            .file_stem()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        let out = workspace_root().join(format!("target/e2e-{stem}/hello.unibeam"));
        build_image_with(&hello_release(), &out, &["--compression", "none"])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `wait` returns all the command printed, even output that reaches
    /// the pipes after it exits (here from a child it left behind).
    #[test]
    fn wait_returns_output_written_after_the_command_exits() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "(sleep 0.5; echo drained) & exit 0"]);
        let mut vm = Vm::spawn(cmd);
        assert!(vm.wait(Duration::from_secs(10)).success());
        assert_eq!(vm.output(), "drained\n");
    }
}
