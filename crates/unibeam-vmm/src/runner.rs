//! Runs one VM in the foreground: streams its console, turns Ctrl-C into a
//! graceful ACPI stop, and reports how the guest ended.
//!
//! The verdict comes from channels the guest's app cannot write: init's
//! verdict port (a file QEMU fills, see `unibeam_spec::VERDICT_PORT`),
//! QEMU's own exit status and stderr, and the kernel's console lines only
//! until init's first line. After that the console also carries the BEAM's
//! output, so nothing on it decides anything.

use crate::qemu::{PortForward, QemuCommand, RamBacking};
use crate::qmp::Qmp;
use crate::ramfile::LiveRam;
use crate::snapshot;
use signal_hook::consts::{SIGINT, SIGTERM};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use thiserror::Error;
use unibeam_spec::hostfs::PathIo;
use unibeam_spec::{
    milestone, INIT_STARTED_MARKER, VERDICT_EXITED, VERDICT_INIT_FAILED, VERDICT_OOM_KILLED, VERDICT_PREFIX,
};

#[derive(Debug, Error)]
pub enum RunError {
    #[error("host port {addr} is already in use; pick another with -p or stop what holds it")]
    PortInUse { addr: SocketAddr },
    #[error("host port {addr} cannot be bound")]
    Port {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{}: failed to start", binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A verdict file left by an earlier boot that cannot be removed.
    #[error("removing the verdict of an earlier boot")]
    StaleVerdict(#[source] PathIo),
    #[error("installing the Ctrl-C handler")]
    Signals(#[source] io::Error),
    #[error("waiting for QEMU")]
    Wait(#[source] io::Error),
    /// QEMU's own message: what it printed, or that it printed nothing.
    #[error("QEMU failed: {0}")]
    Qemu(String),
    #[error(transparent)]
    Drive(#[from] crate::drives::DriveError),
}

/// How the guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The BEAM exited and init reported its status.
    Exited(u8),
    /// The guest kernel panicked before init started; the line is quoted.
    KernelPanic(String),
    /// QEMU ended without a verdict from init (killed, or the guest reset).
    NoStatus { detail: String },
    /// The guest ran out of memory before init could start the BEAM. The
    /// kernel's console line is quoted.
    OutOfMemory(String),
    /// The guest's OOM killer ended the BEAM, which exited with `status`
    /// (137, as `docker run` reports it), as init saw it.
    OomKilled { status: u8 },
    /// init itself failed; its reason is quoted.
    InitFailed(String),
}

/// Kernel console lines that mean the guest's memory was too small, read
/// only before init starts.
const OUT_OF_MEMORY_LINES: [&str; 3] = [
    "Initramfs unpacking failed",
    "Out of memory",
    "deadlocked on memory",
];

/// What the kernel said on the console before init's first line.
#[derive(Debug, Default)]
struct ConsoleFacts {
    init_started: bool,
    panic_line: Option<String>,
    memory_line: Option<String>,
}

/// What init wrote to its verdict port: its last complete line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Exited(u8),
    OomKilled(u8),
    InitFailed(String),
}

impl Verdict {
    /// The last complete verdict line in `text`. Only PID 1 can write the
    /// port; a BEAM run with `--root` could, but init writes last.
    fn parse(text: &str) -> Option<Verdict> {
        let start = text.rfind(VERDICT_PREFIX)?;
        let (line, _) = text[start + VERDICT_PREFIX.len()..].split_once('\n')?;
        let mut words = line.splitn(3, ' ');
        let kind = words.next()?;
        let status: u8 = words.next()?.parse().ok()?;
        match kind {
            VERDICT_EXITED => Some(Verdict::Exited(status)),
            VERDICT_OOM_KILLED => Some(Verdict::OomKilled(status)),
            VERDICT_INIT_FAILED => Some(Verdict::InitFailed(
                words.next().unwrap_or("no reason given").trim().to_string(),
            )),
            _ => None,
        }
    }

    fn read(path: &Path) -> Option<Verdict> {
        let bytes = std::fs::read(path).ok()?;
        Verdict::parse(&String::from_utf8_lossy(&bytes))
    }
}

pub fn check_ports(forwards: &[PortForward]) -> Result<(), RunError> {
    for f in forwards {
        let addr = SocketAddr::new(f.host_ip, f.host_port);
        // Binding and dropping at once: QEMU's own bind comes right after.
        TcpListener::bind(addr).map_err(|source| match source.kind() {
            io::ErrorKind::AddrInUse => RunError::PortInUse { addr },
            _ => RunError::Port { addr, source },
        })?;
    }
    Ok(())
}

/// Kernel console lines that are not shown, read only before init starts.
///
/// A microvm has no PCI bus, and the kernel (ours and Debian's, both
/// built with PCI for the `pc` machine) says so at error level on every
/// boot: `pci=off` does not stop it, since it is printed whenever no PCI
/// config access method is found. Users read it as an error.
const HIDDEN_KERNEL_LINES: [&str; 1] = ["PCI: Fatal: No config space access function found"];

/// Copies the console to `out` as it arrives, but for
/// [`HIDDEN_KERNEL_LINES`], and notes what the kernel says before init
/// starts.
/// `ready` hears of init's "applications started" milestone, once.
fn stream_console(
    source: impl Read,
    mut out: impl Write,
    facts: Arc<Mutex<ConsoleFacts>>,
    mut ready: Option<mpsc::Sender<()>>,
) {
    let mut reader = BufReader::new(source);
    let mut line = Vec::new();
    while let Ok(n) = reader.read_until(b'\n', &mut line) {
        if n == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        if ready.is_some() && text.contains(milestone::APPS_STARTED) {
            let _ = ready.take().map(|r| r.send(()));
        }
        if note_line(&text, &facts) == Shown::Yes {
            let _ = out.write_all(&line);
            let _ = out.flush();
        }
        line.clear();
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Shown {
    Yes,
    No,
}

/// Notes what a console line says; whether it is shown.
fn note_line(line: &str, facts: &Mutex<ConsoleFacts>) -> Shown {
    let mut facts = facts.lock().unwrap_or_else(|e| e.into_inner());
    if facts.init_started || line.contains(INIT_STARTED_MARKER) {
        facts.init_started = true;
        return Shown::Yes;
    }
    let text = line.trim_end();
    if HIDDEN_KERNEL_LINES.iter().any(|h| text.ends_with(h)) {
        return Shown::No;
    }
    let quoted = || line.split("] ").last().unwrap_or(line).trim().to_string();
    if facts.panic_line.is_none() && line.contains("Kernel panic") {
        facts.panic_line = Some(quoted());
    }
    if facts.memory_line.is_none() && OUT_OF_MEMORY_LINES.iter().any(|m| line.contains(m)) {
        facts.memory_line = Some(quoted());
    }
    Shown::Yes
}

fn signal_channel() -> io::Result<mpsc::Receiver<i32>> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for sig in signals.forever() {
            if tx.send(sig).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Presses the power button over QMP; reports but survives failure, since
/// the grace timer kills QEMU anyway.
fn press_power_button(cmd: &QemuCommand) {
    let pressed = Qmp::connect(&cmd.qmp_socket, Duration::from_secs(5))
        .and_then(|mut q| q.press_power_button(cmd.power_button()));
    if let Err(e) = pressed {
        eprintln!(
            "unibeam: could not press the power button: {}",
            crate::error_chain(&e)
        );
    }
}

/// How often a stop presses the power button again: a press that lands
/// before the guest's ACPI driver and init are listening is lost, and
/// init ignores presses after the first it sees.
const PRESS_AGAIN: Duration = Duration::from_secs(2);

fn wait_with_signals(
    child: &mut Child,
    cmd: &QemuCommand,
    signals: &mpsc::Receiver<i32>,
    stop_grace: Duration,
) -> io::Result<i32> {
    let mut kill_at: Option<Instant> = None;
    let mut pressed_at = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.code().unwrap_or(-1));
        }
        match signals.recv_timeout(Duration::from_millis(50)) {
            Ok(_) if kill_at.is_none() => {
                eprintln!("unibeam: stopping the VM gracefully (Ctrl-C again to kill it)");
                press_power_button(cmd);
                pressed_at = Instant::now();
                kill_at = Some(Instant::now() + stop_grace);
            }
            Ok(_) => kill_at = Some(Instant::now()),
            Err(_) => {}
        }
        if kill_at.is_some() && pressed_at.elapsed() >= PRESS_AGAIN {
            press_power_button(cmd);
            pressed_at = Instant::now();
        }
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            eprintln!("unibeam: killing QEMU");
            let _ = child.kill();
        }
    }
}

/// A started QEMU whose console and stderr are being read.
pub struct Booted {
    pub child: Child,
    console: thread::JoinHandle<()>,
    stderr: thread::JoinHandle<String>,
    facts: Arc<Mutex<ConsoleFacts>>,
    verdict_file: PathBuf,
}

/// The console's writer, shared by the boots of one run: a state that
/// fails to load is followed by a cold boot on the same console.
#[derive(Clone)]
struct SharedConsole(Arc<Mutex<Box<dyn Write + Send>>>);

impl Write for SharedConsole {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

fn note(console: &mut SharedConsole, text: &str) {
    let _ = writeln!(console, "unibeam: {text}");
}

/// Boots `cmd`: from a saved state when it has a loadable one (a
/// suspended instance's, then `run --snapshot`'s), else cold, saving the
/// state at "applications started" under `run --snapshot`. A state that
/// does not load is dropped with a line on the console, and the guest
/// boots cold.
pub fn boot(cmd: &QemuCommand, console: impl Write + Send + 'static) -> Result<Booted, RunError> {
    let mut console = SharedConsole(Arc::new(Mutex::new(Box::new(console))));
    let states = [(&cmd.snapshots.resume, true), (&cmd.snapshots.cache, false)];
    for (dir, once) in states
        .into_iter()
        .filter_map(|(d, once)| Some((d.as_ref()?, once)))
    {
        if !dir.join(snapshot::META_FILE).exists() {
            continue;
        }
        match boot_restored(cmd, dir, console.clone()) {
            Ok(booted) => {
                if once {
                    snapshot::discard(dir);
                }
                return Ok(booted);
            }
            Err(why) => {
                note(
                    &mut console,
                    &format!("warning: {}: {why}; booting cold", dir.display()),
                );
                snapshot::discard(dir);
            }
        }
    }
    let Some(dir) = cmd.snapshots.cache.clone() else {
        return boot_cold(cmd, console, None);
    };
    let (ready_tx, ready) = mpsc::channel();
    let mut saving = cmd.clone();
    let live = live_ram(&mut saving, &mut console);
    let booted = boot_cold(&saving, console.clone(), Some(ready_tx))?;
    thread::spawn(move || save_when_ready(&saving, &dir, &ready, live.as_ref(), console));
    Ok(booted)
}

/// For a boot that saves a snapshot: the guest's RAM in a shared file,
/// so that the save can leave it out of the stream (ramfile.rs). Without
/// one, the stream holds the RAM, as it did before.
fn live_ram(cmd: &mut QemuCommand, console: &mut SharedConsole) -> Option<LiveRam> {
    match LiveRam::create(u64::from(cmd.memory_mib) << 20) {
        Ok(live) => {
            cmd.snapshots.ram = Some(RamBacking {
                path: live.qemu_path(),
                shared: true,
            });
            Some(live)
        }
        Err(e) => {
            let why = crate::error_chain(&e);
            note(
                console,
                &format!("warning: a file for the guest's RAM: {why}; the snapshot will hold it"),
            );
            None
        }
    }
}

/// Loads the state in `dir`; the error is one line for the console.
fn boot_restored(cmd: &QemuCommand, dir: &Path, console: SharedConsole) -> Result<Booted, String> {
    let chain = |e: &dyn std::error::Error| crate::error_chain(e);
    let meta = snapshot::check(cmd, dir).map_err(|e| chain(&e))?;
    let mut restoring = cmd.clone();
    let (incoming, ram) = snapshot::incoming(dir, &meta).map_err(|e| chain(&e))?;
    restoring.snapshots.incoming = Some(incoming);
    restoring.snapshots.ram = ram;
    let mut booted = boot_cold(&restoring, console, None).map_err(|e| chain(&e))?;
    if let Err(e) = snapshot::resume(&restoring, dir, &mut booted.child) {
        let _ = booted.child.kill();
        let code = booted.child.wait().map(|s| s.code().unwrap_or(-1)).unwrap_or(-1);
        let said = booted.stderr.join().unwrap_or_default();
        let said = said.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
        return Err(format!("{} (QEMU exit {code}) {said}", chain(&e))
            .trim_end()
            .to_string());
    }
    Ok(booted)
}

/// `run --snapshot`'s first boot: once the applications have started
/// (init has frozen the BEAM), saves the state and lets the guest go on.
/// A failed save costs the snapshot, never the VM.
fn save_when_ready(
    cmd: &QemuCommand,
    dir: &Path,
    ready: &mpsc::Receiver<()>,
    live: Option<&LiveRam>,
    mut console: SharedConsole,
) {
    if ready.recv().is_err() {
        return; // the guest ended first
    }
    let started = Instant::now();
    // With the RAM in a file, the guest goes on once it is copied, and
    // the copy is compressed while the guest runs.
    let (saved, went_on) = match live {
        Some(live) => {
            let paused = snapshot::save_mapped(cmd, dir, live);
            let went_on = snapshot::carry_on(cmd);
            (paused.and_then(|p| snapshot::finish_mapped(cmd, dir, p)), went_on)
        }
        None => {
            let saved = snapshot::save(cmd, dir, crate::snapstream::Compression::Small);
            (saved, snapshot::carry_on(cmd))
        }
    };
    match saved {
        Ok(meta) => note(
            &mut console,
            &format!(
                "snapshot saved in {:.2}s ({:.1} MB): later starts with these settings load it",
                started.elapsed().as_secs_f64(),
                meta.bytes_on_disk() as f64 / 1e6
            ),
        ),
        Err(e) => {
            snapshot::discard(dir);
            note(
                &mut console,
                &format!("warning: saving the snapshot: {}", crate::error_chain(&e)),
            );
        }
    }
    if let Err(e) = went_on {
        note(
            &mut console,
            &format!("warning: resuming after the snapshot: {}", crate::error_chain(&e)),
        );
    }
}

/// Starts QEMU for `cmd` in its own process group, dying with its parent,
/// and streams its console into `console`.
fn boot_cold(
    cmd: &QemuCommand,
    console: SharedConsole,
    ready: Option<mpsc::Sender<()>>,
) -> Result<Booted, RunError> {
    // Every boot, restarts too: a guest killed mid-write leaves a journal
    // to replay and, rarely, damage that must not reach the guest. Never
    // under a restored guest, which has the file systems mounted: their
    // state in its memory is what the disks must match.
    if cmd.snapshots.incoming.is_none() {
        crate::drives::check_all(&cmd.drives)?;
    }
    // A verdict left by an earlier boot must not speak for this one, even
    // if this QEMU fails before it opens the file.
    let verdict_file = cmd.verdict_file();
    match std::fs::remove_file(&verdict_file) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(RunError::StaleVerdict(PathIo {
                path: verdict_file,
                source: e,
            }))
        }
        _ => {}
    }
    // The last QEMU's socket file would have a restore connect, be refused
    // and back off, instead of waiting for this QEMU to make its own.
    let _ = std::fs::remove_file(&cmd.qmp_socket);
    let mut command = Command::new(&cmd.binary);
    command
        .args(cmd.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group: Ctrl-C reaches us, not QEMU, so we can stop
        // the guest gracefully instead of QEMU dying on SIGINT.
        .process_group(0);
    // SAFETY: runs between fork and exec and only calls prctl, which is
    // async-signal-safe and touches no memory of ours. If unibeam dies,
    // QEMU must not live on unseen.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(io::Error::from)
        });
    }
    let mut child = command.spawn().map_err(|source| RunError::Spawn {
        binary: cmd.binary.clone(),
        source,
    })?;
    let facts = Arc::new(Mutex::new(ConsoleFacts::default()));
    let stdout = child.stdout.take().expect("stdout is piped");
    let console_facts = Arc::clone(&facts);
    let console = thread::spawn(move || stream_console(stdout, console, console_facts, ready));
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    Ok(Booted {
        child,
        console,
        stderr,
        facts,
        verdict_file,
    })
}

impl Booted {
    /// How the guest ended, once QEMU exited with `code`.
    pub fn finish(self, code: i32) -> Result<Outcome, RunError> {
        let _ = self.console.join();
        let qemu_stderr = self.stderr.join().unwrap_or_default();
        let facts = self.facts.lock().unwrap_or_else(|e| e.into_inner());
        let verdict = Verdict::read(&self.verdict_file);
        decide(verdict, code, &facts, &qemu_stderr)
    }
}

/// Boots `cmd` and blocks until QEMU exits. The console goes to `console`.
/// `stop_grace` bounds how long a stopping guest may take before QEMU is
/// killed. `started` is told QEMU's pid once it runs.
pub fn run_foreground(
    cmd: &QemuCommand,
    console: impl Write + Send + 'static,
    stop_grace: Duration,
    started: impl FnOnce(u32),
) -> Result<Outcome, RunError> {
    check_ports(&cmd.forwards)?;
    let signals = signal_channel().map_err(RunError::Signals)?;
    let mut booted = boot(cmd, console)?;
    started(booted.child.id());
    let code = wait_with_signals(&mut booted.child, cmd, &signals, stop_grace).map_err(RunError::Wait)?;
    booted.finish(code)
}

/// How the run ended, from the trusted channels in order: init's verdict,
/// the kernel's console before init, QEMU's own exit and stderr.
fn decide(
    verdict: Option<Verdict>,
    qemu_code: i32,
    facts: &ConsoleFacts,
    qemu_stderr: &str,
) -> Result<Outcome, RunError> {
    match verdict {
        Some(Verdict::Exited(status)) => return Ok(Outcome::Exited(status)),
        Some(Verdict::OomKilled(status)) => return Ok(Outcome::OomKilled { status }),
        // Unpacking that ran out of memory is why init found no boot.json.
        Some(Verdict::InitFailed(reason)) => {
            return Ok(match &facts.memory_line {
                Some(line) => Outcome::OutOfMemory(line.clone()),
                None => Outcome::InitFailed(reason),
            })
        }
        None => {}
    }
    if let Some(line) = &facts.memory_line {
        return Ok(Outcome::OutOfMemory(line.clone()));
    }
    if let Some(line) = &facts.panic_line {
        return Ok(Outcome::KernelPanic(line.clone()));
    }
    if qemu_code > 0 {
        return Err(RunError::Qemu(qemu_message(qemu_code, qemu_stderr)));
    }
    Ok(Outcome::NoStatus {
        detail: format!(
            "QEMU exited with code {qemu_code} and the guest's init left no verdict; \
             if the console shows a panic or an out-of-memory kill, try a larger --memory"
        ),
    })
}

/// QEMU's own error lines, on one line.
fn qemu_message(code: i32, stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        // Also an image whose init predates the verdict port: its
        // isa-debug-exit code is all it says.
        format!(
            "QEMU exited with code {code}, printed nothing and the guest's init left no verdict \
             (an image built by an older unibeam needs `unibeam build` again)"
        )
    } else {
        lines.join("; ")
    }
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
