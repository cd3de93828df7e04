//! Runs one VM in the foreground: streams its console, turns Ctrl-C into a
//! graceful ACPI stop, and reports how the guest ended.

use crate::qemu::{debug_exit_status, PortForward, QemuCommand};
use crate::qmp::Qmp;
use signal_hook::consts::{SIGINT, SIGTERM};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use thiserror::Error;
use unibeam_spec::EXIT_STATUS_MARKER;

#[derive(Debug, Error)]
pub enum RunError {
    #[error("host port {addr} is already in use; pick another with -p or stop what holds it")]
    PortInUse { addr: SocketAddr },
    #[error("{binary}: failed to start: {cause}")]
    Spawn { binary: String, cause: io::Error },
    #[error("QEMU failed: {0}")]
    Qemu(String),
}

/// How the guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The BEAM exited and init reported its status.
    Exited(u8),
    /// The guest kernel panicked; the panic line is quoted.
    KernelPanic(String),
    /// QEMU ended without a status from init (killed, or the guest reset).
    NoStatus { detail: String },
    /// The guest ran out of memory before the BEAM ran, or the kernel had
    /// nothing left to kill. The console line is quoted.
    OutOfMemory(String),
    /// The guest's OOM killer ended the BEAM, which exited with `status`
    /// (137, as `docker run` reports it). The console line is quoted.
    OomKilled { status: u8, line: String },
}

/// Console lines that mean the guest's memory was too small.
const OUT_OF_MEMORY_LINES: [&str; 3] = [
    "Initramfs unpacking failed",
    "Out of memory: Killed process",
    "deadlocked on memory",
];

/// What the console reader learned while streaming.
#[derive(Debug, Default)]
struct ConsoleFacts {
    status: Option<u8>,
    panic_line: Option<String>,
    memory_line: Option<String>,
}

pub fn check_ports(forwards: &[PortForward]) -> Result<(), RunError> {
    for f in forwards {
        let addr = SocketAddr::new(f.host_ip, f.host_port);
        // Binding and dropping at once: QEMU's own bind comes right after.
        TcpListener::bind(addr).map_err(|_| RunError::PortInUse { addr })?;
    }
    Ok(())
}

/// Copies the console to `out` as it arrives and notes init's status line
/// and any kernel panic.
fn stream_console(source: impl Read, mut out: impl Write, facts: Arc<Mutex<ConsoleFacts>>) {
    let mut reader = BufReader::new(source);
    let mut line = Vec::new();
    while let Ok(n) = reader.read_until(b'\n', &mut line) {
        if n == 0 {
            break;
        }
        let _ = out.write_all(&line);
        let _ = out.flush();
        note_line(&String::from_utf8_lossy(&line), &facts);
        line.clear();
    }
}

fn note_line(line: &str, facts: &Mutex<ConsoleFacts>) {
    let mut facts = facts.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rest) = line.split(EXIT_STATUS_MARKER).nth(1) {
        facts.status = rest.trim().parse().ok();
    }
    let quoted = || line.split("] ").last().unwrap_or(line).trim().to_string();
    if facts.panic_line.is_none() && line.contains("Kernel panic") {
        facts.panic_line = Some(quoted());
    }
    if facts.memory_line.is_none() && OUT_OF_MEMORY_LINES.iter().any(|m| line.contains(m)) {
        facts.memory_line = Some(quoted());
    }
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
        eprintln!("unibeam: could not press the power button: {e}");
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
}

/// Starts QEMU for `cmd` in its own process group, dying with its parent,
/// and streams its console into `console`.
pub fn boot(cmd: &QemuCommand, console: impl Write + Send + 'static) -> Result<Booted, RunError> {
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
    // async-signal-safe. If unibeam dies, QEMU must not live on unseen.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|cause| RunError::Spawn {
        binary: cmd.binary.display().to_string(),
        cause,
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
    })
}

impl Booted {
    /// How the guest ended, once QEMU exited with `code`.
    pub fn finish(self, code: i32) -> Result<Outcome, RunError> {
        let _ = self.console.join();
        let qemu_stderr = self.stderr.join().unwrap_or_default();
        let facts = self.facts.lock().unwrap_or_else(|e| e.into_inner());
        decide(code, &facts, qemu_stderr.trim())
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
    let signals = signal_channel().map_err(|e| RunError::Qemu(format!("signal handler: {e}")))?;
    let mut booted = boot(cmd, console)?;
    let code = wait_with_signals(&mut booted.child, cmd, &signals, stop_grace)
        .map_err(|e| RunError::Qemu(e.to_string()))?;
    booted.finish(code)
}

fn decide(code: i32, facts: &ConsoleFacts, qemu_stderr: &str) -> Result<Outcome, RunError> {
    // Init's own failure (125) or no status at all: the guest never got to
    // run the BEAM. A BEAM the OOM killer ended keeps its status (137),
    // as `docker run` does.
    if let Some(line) = &facts.memory_line {
        let line = line.clone();
        return Ok(match facts.status {
            None | Some(125) => Outcome::OutOfMemory(line),
            Some(status) => Outcome::OomKilled { status, line },
        });
    }
    if let Some(line) = &facts.panic_line {
        return Ok(Outcome::KernelPanic(line.clone()));
    }
    if let Some(status) = facts.status.or_else(|| debug_exit_status(code)) {
        return Ok(Outcome::Exited(status));
    }
    if code != 0 && !qemu_stderr.is_empty() {
        let last = qemu_stderr.lines().last().unwrap_or_default();
        return Err(RunError::Qemu(last.to_string()));
    }
    Ok(Outcome::NoStatus {
        // Seen when the guest ran out of memory before init could report.
        detail: format!(
            "QEMU exited with code {code} and the guest reported no exit status; \
             if the console shows no panic, try a larger --memory"
        ),
    })
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

    #[test]
    fn marker_line_gives_the_exact_status() {
        let facts = facts_of(&["boot\n", "unibeam-init: beam exited with status 200\n"]);
        // 200 does not survive the debug-exit encoding; the marker does.
        assert_eq!(decide(145, &facts, "").unwrap(), Outcome::Exited(200));
    }

    #[test]
    fn debug_exit_code_is_the_fallback() {
        assert_eq!(
            decide(7, &ConsoleFacts::default(), "").unwrap(),
            Outcome::Exited(3)
        );
    }

    #[test]
    fn kernel_panic_is_quoted() {
        let facts = facts_of(&["[    2.5] Kernel panic - not syncing: VFS: Unable to mount root fs\n"]);
        assert_eq!(
            decide(0, &facts, "").unwrap(),
            Outcome::KernelPanic("Kernel panic - not syncing: VFS: Unable to mount root fs".into())
        );
    }

    #[test]
    fn running_out_of_memory_is_named() {
        let facts = facts_of(&[
            "Initramfs unpacking failed: write error\n",
            "[    0.5] unibeam-init: fatal: /unibeam/boot.json: No such file or directory\n",
            "unibeam-init: beam exited with status 125\n",
        ]);
        assert_eq!(
            decide(0, &facts, "").unwrap(),
            Outcome::OutOfMemory("Initramfs unpacking failed: write error".into())
        );
        let panicked = facts_of(&[
            "Out of memory and no killable processes...\n",
            "deadlocked on memory\n",
        ]);
        assert!(matches!(
            decide(0, &panicked, "").unwrap(),
            Outcome::OutOfMemory(_)
        ));
        let killed = facts_of(&[
            "[ 2.7] Out of memory: Killed process 26 (beam.smp)\n",
            "unibeam-init: beam exited with status 137\n",
        ]);
        assert_eq!(
            decide(0, &killed, "").unwrap(),
            Outcome::OomKilled {
                status: 137,
                line: "Out of memory: Killed process 26 (beam.smp)".into()
            }
        );
    }

    #[test]
    fn qemu_errors_are_reported() {
        let err = decide(
            1 << 1,
            &ConsoleFacts::default(),
            "qemu: could not load kernel 'x'",
        )
        .unwrap_err();
        assert!(err.to_string().contains("could not load kernel"));
        assert!(matches!(
            decide(0, &ConsoleFacts::default(), "").unwrap(),
            Outcome::NoStatus { .. }
        ));
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
