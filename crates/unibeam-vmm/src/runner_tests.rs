//! Tests of runner.rs, kept apart to keep that file short.

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
        drives: Vec::new(),
        snapshots: Default::default(),
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
    stream_console(console.as_bytes(), Sink(Arc::clone(&shown)), facts, None);
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
