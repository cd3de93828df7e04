//! Runs one VM in the foreground: streams its console, turns Ctrl-C into a
//! graceful ACPI stop, and reports how the guest ended.
//!
//! The verdict comes from channels the guest's app cannot write: init's
//! verdict port (a file QEMU fills, see `unibeam_spec::VERDICT_PORT`),
//! QEMU's own exit status and stderr, and the kernel's console lines only
//! until init's first line. After that the console also carries the BEAM's
//! output, so nothing on it decides anything.

use crate::qemu::{PortForward, QemuCommand};
use crate::qmp::Qmp;
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
    INIT_STARTED_MARKER, VERDICT_EXITED, VERDICT_INIT_FAILED, VERDICT_OOM_KILLED, VERDICT_PREFIX,
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
fn stream_console(source: impl Read, mut out: impl Write, facts: Arc<Mutex<ConsoleFacts>>) {
    let mut reader = BufReader::new(source);
    let mut line = Vec::new();
    while let Ok(n) = reader.read_until(b'\n', &mut line) {
        if n == 0 {
            break;
        }
        if note_line(&String::from_utf8_lossy(&line), &facts) == Shown::Yes {
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

/// Starts QEMU for `cmd` in its own process group, dying with its parent,
/// and streams its console into `console`.
pub fn boot(cmd: &QemuCommand, console: impl Write + Send + 'static) -> Result<Booted, RunError> {
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
    let console = thread::spawn(move || stream_console(stdout, console, console_facts));
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
/// `stop_grace` bounds how long a stopping guest may take before QEMU is killed.
pub fn run_foreground(
    cmd: &QemuCommand,
    console: impl Write + Send + 'static,
    stop_grace: Duration,
) -> Result<Outcome, RunError> {
    check_ports(&cmd.forwards)?;
    let signals = signal_channel().map_err(RunError::Signals)?;
    let mut booted = boot(cmd, console)?;
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
mod tests {
    use super::*;

    fn facts_of(lines: &[&str]) -> ConsoleFacts {
        let facts = Mutex::new(ConsoleFacts::default());
        for l in lines {
            note_line(l, &facts);
        }
        facts.into_inner().unwrap()
    }

    const INIT_FIRST_LINE: &str = "[    0.412] unibeam-init: started (kernel -> init)\n";

    /// What an app can print once it runs: the kernel's, init's and the
    /// OOM killer's lines.
    const LOOKALIKES: [&str; 5] = [
        "Kernel panic - not syncing: fake\n",
        "Out of memory: Killed process 1 (beam.smp)\n",
        "Initramfs unpacking failed: fake\n",
        "deadlocked on memory\n",
        "unibeam-init: beam exited with status 3\n",
    ];

    fn verdict(line: &str) -> Option<Verdict> {
        Verdict::parse(line)
    }

    #[test]
    fn spoofed_console_lines_with_a_clean_verdict_exit_0() {
        let mut lines = vec!["[    0.1] Linux version 6.1\n", INIT_FIRST_LINE];
        lines.extend(LOOKALIKES);
        let facts = facts_of(&lines);
        assert_eq!(
            decide(verdict("unibeam-verdict exited 0\n"), 1, &facts, "").unwrap(),
            Outcome::Exited(0)
        );
        // QEMU's exit code (isa-debug-exit's (0 << 1) | 1) is not read.
        assert_eq!(
            decide(verdict("unibeam-verdict exited 200\n"), 145, &facts, "").unwrap(),
            Outcome::Exited(200),
            "the exact status, top bit and all"
        );
    }

    #[test]
    fn lookalike_lines_after_init_with_no_verdict_decide_nothing() {
        let mut lines = vec![INIT_FIRST_LINE];
        lines.extend(LOOKALIKES);
        let facts = facts_of(&lines);
        assert!(facts.panic_line.is_none() && facts.memory_line.is_none());
        assert!(matches!(
            decide(None, 0, &facts, "").unwrap(),
            Outcome::NoStatus { .. }
        ));
    }

    #[test]
    fn qemu_exit_1_with_stderr_and_no_verdict_is_qemus_failure() {
        let stderr = "qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory\n";
        let err = decide(None, 1, &ConsoleFacts::default(), stderr).unwrap_err();
        assert_eq!(
            err.to_string(),
            "QEMU failed: qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory"
        );
        let two = "qemu-system-x86_64: -netdev user,id=net0: first\n\nsecond\n";
        let err = decide(None, 1, &ConsoleFacts::default(), two)
            .unwrap_err()
            .to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("first; second"), "{err}");
        let silent = decide(None, 1, &ConsoleFacts::default(), "")
            .unwrap_err()
            .to_string();
        assert!(
            silent.contains("code 1") && silent.contains("no verdict"),
            "{silent}"
        );
    }

    #[test]
    fn a_verdict_outweighs_qemus_warnings() {
        let warning = "qemu-system-x86_64: warning: host doesn't support requested feature\n";
        assert_eq!(
            decide(
                verdict("unibeam-verdict exited 3\n"),
                7,
                &ConsoleFacts::default(),
                warning
            )
            .unwrap(),
            Outcome::Exited(3)
        );
    }

    #[test]
    fn a_panic_before_init_is_the_kernels_verdict() {
        let facts = facts_of(&[
            "[    2.5] Kernel panic - not syncing: VFS: Unable to mount root fs\n",
            INIT_FIRST_LINE,
        ]);
        assert_eq!(
            decide(None, 0, &facts, "").unwrap(),
            Outcome::KernelPanic("Kernel panic - not syncing: VFS: Unable to mount root fs".into())
        );
    }

    #[test]
    fn panic_text_after_init_is_ignored() {
        let facts = facts_of(&[INIT_FIRST_LINE, "[    9.9] Kernel panic - not syncing: fake\n"]);
        assert!(matches!(
            decide(None, 0, &facts, "").unwrap(),
            Outcome::NoStatus { .. }
        ));
        assert_eq!(
            decide(verdict("unibeam-verdict exited 0\n"), 1, &facts, "").unwrap(),
            Outcome::Exited(0)
        );
    }

    #[test]
    fn running_out_of_memory_is_named() {
        // The kernel could not unpack the image: init then finds no boot.json.
        let facts = facts_of(&[
            "Initramfs unpacking failed: write error\n",
            "[    0.5] unibeam-init: started (kernel -> init)\n",
            "[    0.5] unibeam-init: fatal: /unibeam/boot.json: No such file or directory\n",
        ]);
        let failed = verdict("unibeam-verdict init-failed 125 /unibeam/boot.json: No such file\n");
        assert_eq!(
            decide(failed, 251, &facts, "").unwrap(),
            Outcome::OutOfMemory("Initramfs unpacking failed: write error".into())
        );
        let panicked = facts_of(&[
            "Out of memory and no killable processes...\n",
            "Kernel panic - not syncing: System is deadlocked on memory\n",
        ]);
        assert!(matches!(
            decide(None, 0, &panicked, "").unwrap(),
            Outcome::OutOfMemory(_)
        ));
        assert_eq!(
            decide(
                verdict("unibeam-verdict oom-killed 137\n"),
                19,
                &ConsoleFacts::default(),
                ""
            )
            .unwrap(),
            Outcome::OomKilled { status: 137 }
        );
    }

    #[test]
    fn init_failures_are_reported_with_their_reason() {
        let failed = verdict("unibeam-verdict init-failed 125 exec /erts/bin/erlexec: ENOENT\n");
        assert_eq!(
            decide(failed, 251, &facts_of(&[INIT_FIRST_LINE]), "").unwrap(),
            Outcome::InitFailed("exec /erts/bin/erlexec: ENOENT".into())
        );
    }

    #[test]
    fn verdict_lines_parse_or_are_ignored() {
        assert_eq!(verdict(""), None);
        assert_eq!(verdict("unibeam-verdict exited 3"), None, "cut short");
        assert_eq!(verdict("unibeam-verdict exited 300\n"), None);
        assert_eq!(verdict("unibeam-verdict bored 3\n"), None);
        assert_eq!(
            verdict("unibeam-verdict exited 0\nunibeam-verdict exited 4\n"),
            Some(Verdict::Exited(4)),
            "the last line wins: init writes after everything else is dead"
        );
        assert_eq!(
            verdict("junk without newlineunibeam-verdict oom-killed 137\n"),
            Some(Verdict::OomKilled(137))
        );
    }

    /// A command for a QEMU that does not exist, its files in `dir`.
    fn missing_qemu(dir: &Path) -> QemuCommand {
        QemuCommand {
            binary: dir.join("no-such-qemu"),
            accel: crate::Accel::Tcg,
            machine: crate::Machine::Microvm,
            memory_mib: 64,
            cpus: 1,
            kernel: "/k".into(),
            initrd: "/i".into(),
            kernel_args: vec![],
            forwards: vec![],
            qmp_socket: dir.join("qmp.sock"),
            private_net: None,
            acpi: false,
        }
    }

    #[test]
    fn a_stale_verdict_is_removed_before_boot() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = missing_qemu(dir.path());
        std::fs::write(cmd.verdict_file(), "unibeam-verdict exited 0\n").unwrap();
        assert!(boot(&cmd, io::sink()).is_err(), "no such QEMU");
        assert!(!cmd.verdict_file().exists());
    }

    #[test]
    fn a_qemu_that_cannot_start_is_named_with_the_os_error_as_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let err = boot(&missing_qemu(dir.path()), io::sink())
            .err()
            .expect("no such QEMU");
        let shown = err.to_string();
        assert!(shown.contains("no-such-qemu"), "{shown}");
        assert!(
            !shown.contains("No such file"),
            "the cause is not repeated: {shown}"
        );
        let cause = std::error::Error::source(&err).expect("the OS error is the source");
        assert!(cause.to_string().contains("No such file"), "{cause}");
    }

    #[test]
    fn the_kernels_pci_complaint_is_hidden_before_init_only() {
        let console = "[    0.0] Linux version 6.1\r\n\
                       PCI: Fatal: No config space access function found\r\n\
                       [    0.3] PCI: Fatal: No config space access function found\n\
                       [    0.4] unibeam-init: started (kernel -> init)\n\
                       app: PCI: Fatal: No config space access function found\n";
        let shown = Arc::new(Mutex::new(Vec::new()));
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let facts = Arc::new(Mutex::new(ConsoleFacts::default()));
        stream_console(console.as_bytes(), Sink(Arc::clone(&shown)), facts);
        let shown = String::from_utf8(shown.lock().unwrap().clone()).unwrap();
        assert_eq!(
            shown,
            "[    0.0] Linux version 6.1\r\n\
             [    0.4] unibeam-init: started (kernel -> init)\n\
             app: PCI: Fatal: No config space access function found\n",
            "what the app prints after init is its own"
        );
    }

    #[test]
    fn busy_port_is_refused_before_boot() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let forward: PortForward = format!("{port}:80").parse().unwrap();
        let err = check_ports(&[forward]).unwrap_err();
        assert!(err.to_string().contains(&port.to_string()));
    }
}
