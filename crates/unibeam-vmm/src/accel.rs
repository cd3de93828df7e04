//! Decides between KVM and TCG. `/dev/kvm` existing proves nothing: under
//! nested virtualisation it opens fine, and even runs real-mode code, yet a
//! Linux guest spins forever before printing a byte. So the probe boots the
//! image's own kernel under KVM, with no root and `panic=-1`, and needs it to
//! reach its "no root fs" panic (a known point at the very end of kernel
//! boot) within a deadline.

use crate::qemu::Accel;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use thiserror::Error;
use unibeam_spec::hostfs;

/// How long the probe kernel gets to reach its panic. Real KVM needs well
/// under a second.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(3);

/// Why KVM cannot be used.
#[derive(Debug, Error)]
pub enum AccelError {
    #[error("/dev/kvm")]
    NoKvm(#[source] io::Error),
    #[error("{}: failed to start", qemu.display())]
    Spawn {
        qemu: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The probe QEMU exited before the guest's panic; `qemu_said` is its
    /// first line that is not a warning.
    #[error("/dev/kvm opens but QEMU could not run a guest on it ({qemu_said}): nested virtualisation?")]
    GuestFailed { qemu_said: String },
    #[error("/dev/kvm opens but the guest never ran within {}s: nested virtualisation?", PROBE_DEADLINE.as_secs())]
    NeverRan,
    #[error("the KVM probe guest did not finish booting within {}s", PROBE_DEADLINE.as_secs())]
    TooSlow,
    /// `--accel kvm` on a host where KVM does not work.
    #[error("--accel kvm: KVM does not work here; use --accel tcg or auto")]
    Forced(#[source] Box<AccelError>),
}

/// What the user asked for with `--accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    Auto,
    Force(Accel),
}

/// The accelerator chosen and the one line that says why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelDecision {
    pub accel: Accel,
    pub reason: String,
}

fn probe_command(qemu: &Path, kernel: &Path) -> Command {
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-machine",
        "pc",
    ])
    .args([
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "128",
        "-serial",
        "stdio",
        "-no-reboot",
    ])
    .args(["-append", "console=ttyS0 quiet panic=-1"])
    .arg("-kernel")
    .arg(kernel)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Boots `kernel` under KVM. `Ok` means the guest kernel ran to its end.
pub fn probe_kvm(qemu: &Path, kernel: &Path) -> Result<(), AccelError> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(AccelError::NoKvm)?;
    let mut child = probe_command(qemu, kernel)
        .spawn()
        .map_err(|source| AccelError::Spawn {
            qemu: qemu.to_path_buf(),
            source,
        })?;
    let start = Instant::now();
    let exited = loop {
        if let Ok(Some(_)) = child.try_wait() {
            break true;
        }
        if start.elapsed() > PROBE_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |pipe: Option<&mut dyn Read>| {
        let mut text = String::new();
        if let Some(p) = pipe {
            let _ = p.read_to_string(&mut text);
        }
        text
    };
    let console = read(child.stdout.as_mut().map(|p| p as &mut dyn Read));
    let stderr = read(child.stderr.as_mut().map(|p| p as &mut dyn Read));
    probe_verdict(exited, &console, &stderr)
}

fn probe_verdict(exited: bool, console: &str, stderr: &str) -> Result<(), AccelError> {
    if exited && console.contains("Kernel panic") {
        return Ok(());
    }
    if exited {
        let why = stderr
            .lines()
            .find(|l| !l.contains("warning:"))
            .or_else(|| stderr.lines().next())
            .unwrap_or("the probe kernel stopped early");
        // /dev/kvm opened, so the host side is there; what fails is running
        // a guest on it, which is what nested setups get wrong.
        return Err(AccelError::GuestFailed {
            qemu_said: why.trim().to_string(),
        });
    }
    if console.is_empty() {
        Err(AccelError::NeverRan)
    } else {
        Err(AccelError::TooSlow)
    }
}

#[derive(Serialize, Deserialize)]
struct CachedProbe {
    boot_id: String,
    qemu: PathBuf,
    decision: AccelDecision,
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Picks the accelerator. An `auto` probe result is cached per host boot
/// in `cache_dir`, since KVM cannot start or stop working without a reboot.
/// A forced `kvm` is probed too, so it fails with the reason instead of
/// hanging.
pub fn choose(
    choice: AccelChoice,
    qemu: &Path,
    kernel: &Path,
    cache_dir: &Path,
) -> Result<AccelDecision, AccelError> {
    match choice {
        AccelChoice::Force(Accel::Tcg) => {
            return Ok(AccelDecision {
                accel: Accel::Tcg,
                reason: "chosen with --accel".into(),
            })
        }
        AccelChoice::Force(Accel::Kvm) => {
            return probe_kvm(qemu, kernel)
                .map(|()| AccelDecision {
                    accel: Accel::Kvm,
                    reason: "chosen with --accel; probe guest ran".into(),
                })
                .map_err(|why| AccelError::Forced(Box::new(why)))
        }
        AccelChoice::Auto => {}
    }
    let cache_file = cache_dir.join("accel-probe.json");
    let boot = boot_id();
    if let Some(cached) = fs::read(&cache_file)
        .ok()
        .and_then(|b| serde_json::from_slice::<CachedProbe>(&b).ok())
        .filter(|c| c.boot_id == boot && c.qemu == qemu)
    {
        return Ok(cached.decision);
    }
    let decision = match probe_kvm(qemu, kernel) {
        Ok(()) => AccelDecision {
            accel: Accel::Kvm,
            reason: "KVM probe guest ran".into(),
        },
        Err(why) => AccelDecision {
            accel: Accel::Tcg,
            reason: format!(
                "KVM unusable ({}); falling back to TCG emulation, which is much slower",
                crate::error_chain(&why)
            ),
        },
    };
    let record = CachedProbe {
        boot_id: boot,
        qemu: qemu.to_path_buf(),
        decision: decision.clone(),
    };
    // A cache that cannot be written costs the next run a probe, no more.
    if fs::create_dir_all(cache_dir).is_ok() {
        let json = serde_json::to_vec(&record).expect("probe record serialises");
        let _ = hostfs::write_atomic(&cache_file, &json);
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_name_the_cause() {
        assert!(probe_verdict(true, "[ 0.5] Kernel panic - not syncing: VFS", "").is_ok());
        let hang = probe_verdict(false, "", "").unwrap_err().to_string();
        assert!(hang.contains("nested virtualisation"), "{hang}");
        let crash = probe_verdict(true, "", "warning: x\nqemu: failed to set MSR 0x10a\n")
            .unwrap_err()
            .to_string();
        assert!(crash.contains("failed to set MSR"), "{crash}");
        assert!(probe_verdict(false, "[ 0.1] Linux version", "")
            .unwrap_err()
            .to_string()
            .contains("did not finish"));
    }

    #[test]
    fn forced_tcg_skips_the_probe_and_forced_kvm_fails_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (qemu, kernel) = (Path::new("/nonexistent/qemu"), Path::new("/k"));
        let d = choose(AccelChoice::Force(Accel::Tcg), qemu, kernel, dir.path()).unwrap();
        assert_eq!(d.accel, Accel::Tcg);
        assert!(!dir.path().join("accel-probe.json").exists());
        let err = choose(AccelChoice::Force(Accel::Kvm), qemu, kernel, dir.path()).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with("--accel kvm: ") && shown.ends_with("use --accel tcg or auto"),
            "{shown}"
        );
        // Whether this host has /dev/kvm or not, the cause names what failed.
        let cause = std::error::Error::source(&err)
            .expect("why KVM does not work")
            .to_string();
        assert!(
            cause == "/dev/kvm" || cause.contains("/nonexistent/qemu"),
            "{cause}"
        );
        assert!(!shown.contains(&cause), "the cause is not repeated: {shown}");
    }

    #[test]
    fn an_auto_probe_is_cached_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let qemu = Path::new("/nonexistent/qemu");
        let first = choose(AccelChoice::Auto, qemu, Path::new("/k"), &cache).unwrap();
        assert_eq!(first.accel, Accel::Tcg, "no QEMU, no KVM: {}", first.reason);
        assert!(first.reason.starts_with("KVM unusable ("), "{}", first.reason);
        let files: Vec<_> = fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, ["accel-probe.json"]);
        let record: CachedProbe =
            serde_json::from_slice(&fs::read(cache.join("accel-probe.json")).unwrap()).unwrap();
        assert_eq!(record.decision, first);
    }

    #[test]
    fn cached_decision_is_reused_on_the_same_boot() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = Path::new("/nonexistent/qemu");
        let record = CachedProbe {
            boot_id: boot_id(),
            qemu: qemu.to_path_buf(),
            decision: AccelDecision {
                accel: Accel::Kvm,
                reason: "cached".into(),
            },
        };
        fs::write(
            dir.path().join("accel-probe.json"),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        assert_eq!(
            choose(AccelChoice::Auto, qemu, Path::new("/k"), dir.path())
                .unwrap()
                .reason,
            "cached"
        );
    }
}
