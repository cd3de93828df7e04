//! `unibeam start NAME`: boots an exited instance again from what its
//! directory holds (the record, `qemu.json` and the instance's initrd),
//! the way `docker start` does. systemd units (`generate systemd`) run it
//! with `--foreground` after a host reboot.

use crate::detach::{spawn_monitor, wait_until_running};
use crate::instances::store;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use unibeam_vmm::state::{InstanceName, InstanceRecord, ProcessId, Status, Store, QEMU_FILE, STOP_REQUESTED};
use unibeam_vmm::QemuCommand;

/// unibeam's own failures; `--foreground` otherwise exits with the guest's.
pub const FAILURE_EXIT: u8 = 125;

/// Start an exited instance again, with the settings it was run with.
///
/// The instance keeps its name, image, ports, restart policy and config
/// (the initrd `run -d` made for it); its restart count starts again at 0
/// and its console log continues. A running instance is refused.
#[derive(Args)]
pub struct StartArgs {
    /// The instance, as `unibeam ps -a` lists it
    pub(crate) name: InstanceName,
    /// Own the instance from this process until it exits for good (its
    /// restart policy applied), then exit with its status: what a systemd
    /// unit runs (see `unibeam generate systemd --help`)
    #[arg(long)]
    pub(crate) foreground: bool,
}

pub fn start(args: StartArgs) -> Result<ExitCode> {
    let store = store()?;
    if args.foreground {
        // This process is the monitor from the start, so `ps` never sees
        // a starting instance with no live owner.
        reset(&store, &args.name, ProcessId::of(std::process::id()))?;
        eprintln!(
            "unibeam: starting {0}; `unibeam logs {0}` shows its console",
            args.name
        );
        crate::detach::monitor(&args.name)?;
        return Ok(exit_code(&store.load(&args.name)?));
    }
    reset(&store, &args.name, None)?;
    spawn_monitor(&args.name)?;
    let record = wait_until_running(&store, &args.name, Duration::from_secs(30))?;
    if let Status::Exited { code } = record.observed_status() {
        bail!(
            "instance {0} exited at once with status {code}; `unibeam logs {0}` shows why",
            args.name
        );
    }
    println!("{}", args.name);
    Ok(ExitCode::SUCCESS)
}

/// Checks that `name` can start again and puts its record back to
/// `starting`: no QEMU, `monitor` as its owner, no stop request, no
/// restarts yet.
fn reset(store: &Store, name: &InstanceName, monitor: Option<ProcessId>) -> Result<InstanceRecord> {
    let mut record = store.load(name)?;
    if !matches!(record.observed_status(), Status::Exited { .. }) {
        bail!("instance {name} is already running; `unibeam stop {name}` first");
    }
    check_files(&store.dir(name))?;
    // The stop request of the last `unibeam stop` must not stop this run.
    let stop_file = store.dir(name).join(STOP_REQUESTED);
    if let Err(e) = std::fs::remove_file(&stop_file) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(e).with_context(|| format!("{}", stop_file.display()));
        }
    }
    record.status = Status::Starting;
    record.qemu = None;
    record.monitor = monitor;
    record.started = None;
    record.restarts = 0;
    store.save(&record)?;
    Ok(record)
}

/// The files the monitor boots must still be there: a kernel in a cache
/// that was cleaned, or an instance dir emptied by hand, is named here
/// rather than by QEMU in the console log.
fn check_files(dir: &Path) -> Result<()> {
    let path = dir.join(QEMU_FILE);
    let json = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
    let cmd: QemuCommand =
        serde_json::from_slice(&json).with_context(|| format!("{}: corrupt", path.display()))?;
    for file in [&cmd.binary, &cmd.kernel, &cmd.initrd] {
        if !file.is_file() {
            bail!(
                "{}: missing, so the instance cannot start again; `unibeam rm` it and `unibeam run -d` anew",
                file.display()
            );
        }
    }
    Ok(())
}

/// The instance's last status as a process exit status (125 when it does
/// not fit one, as for unibeam's own failures).
fn exit_code(record: &InstanceRecord) -> ExitCode {
    match record.observed_status() {
        Status::Exited { code } => ExitCode::from(u8::try_from(code).unwrap_or(125)),
        _ => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unibeam_vmm::state::Restart;

    fn name(text: &str) -> InstanceName {
        InstanceName::parse(text).unwrap()
    }

    fn record(text: &str, status: Status) -> InstanceRecord {
        InstanceRecord {
            name: name(text),
            image: "/img".into(),
            release: "hello 0.1.0".into(),
            created: 1,
            started: Some(2),
            ports: vec![],
            accel: "tcg".into(),
            restart: Restart::Always,
            restarts: 7,
            status,
            qemu: None,
            monitor: None,
            cluster: None,
        }
    }

    fn store_with(record: &InstanceRecord, files: bool) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store {
            root: dir.path().join("instances"),
        };
        let inst = store.create(record).unwrap();
        let cmd = QemuCommand {
            binary: "/bin/sh".into(),
            kernel: if files {
                "/bin/sh".into()
            } else {
                inst.join("vmlinux")
            },
            initrd: "/bin/sh".into(),
            ..serde_json::from_str(SAMPLE_QEMU).unwrap()
        };
        std::fs::write(inst.join(QEMU_FILE), serde_json::to_vec(&cmd).unwrap()).unwrap();
        std::fs::write(inst.join(STOP_REQUESTED), "").unwrap();
        (dir, store)
    }

    const SAMPLE_QEMU: &str = r#"{"binary": "/q", "accel": "tcg", "memory_mib": 128, "cpus": 1,
        "kernel": "/k", "initrd": "/i", "kernel_args": [], "forwards": [], "qmp_socket": "/s"}"#;

    #[test]
    fn an_exited_instance_is_reset_to_starting() {
        let (_dir, store) = store_with(&record("web", Status::Exited { code: 3 }), true);
        let r = reset(&store, &name("web"), None).unwrap();
        assert_eq!((r.status, r.restarts, r.started), (Status::Starting, 0, None));
        assert!(
            !store.dir(&name("web")).join(STOP_REQUESTED).exists(),
            "a new start may restart"
        );
        assert_eq!(store.load(&name("web")).unwrap().status, Status::Starting);
    }

    #[test]
    fn a_running_instance_is_refused() {
        let mut running = record("web", Status::Running);
        running.monitor = ProcessId::of(std::process::id());
        let (_dir, store) = store_with(&running, true);
        let err = reset(&store, &name("web"), None).unwrap_err().to_string();
        assert!(err.contains("already running"), "{err}");
    }

    #[test]
    fn missing_boot_files_are_named() {
        let (_dir, store) = store_with(&record("web", Status::Exited { code: 0 }), false);
        let err = format!("{:#}", reset(&store, &name("web"), None).unwrap_err());
        assert!(err.contains("vmlinux: missing"), "{err}");
        assert_eq!(
            store.load(&name("web")).unwrap().status,
            Status::Exited { code: 0 },
            "a refused start leaves the record alone"
        );
    }

    #[test]
    fn exit_statuses_map_to_process_codes() {
        assert_eq!(
            exit_code(&record("a", Status::Exited { code: 3 })),
            ExitCode::from(3)
        );
        assert_eq!(
            exit_code(&record("a", Status::Exited { code: 300 })),
            ExitCode::from(125)
        );
    }
}
