//! Decides between KVM and TCG. `/dev/kvm` existing proves nothing: under
//! nested virtualisation it opens fine, and even runs real-mode code, yet a
//! Linux guest spins forever before printing a byte. So the probe boots the
//! image's own kernel under KVM, with no root and `panic=-1`, and needs it to
//! reach its "no root fs" panic (a known point at the very end of kernel
//! boot) within a deadline.

use crate::qemu::Accel;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the probe kernel gets to reach its panic. Real KVM needs well
/// under a second.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(3);

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
pub fn probe_kvm(qemu: &Path, kernel: &Path) -> Result<(), String> {
    if let Err(e) = fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return Err(format!("/dev/kvm: {e}"));
    }
    let mut child = probe_command(qemu, kernel)
        .spawn()
        .map_err(|e| format!("{}: {e}", qemu.display()))?;
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

fn probe_verdict(exited: bool, console: &str, stderr: &str) -> Result<(), String> {
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
        return Err(format!(
            "/dev/kvm opens but QEMU could not run a guest on it ({}): nested virtualisation?",
            why.trim()
        ));
    }
    if console.is_empty() {
        Err(format!(
            "/dev/kvm opens but the guest never ran within {}s: nested virtualisation?",
            PROBE_DEADLINE.as_secs()
        ))
    } else {
        Err(format!(
            "the KVM probe guest did not finish booting within {}s",
            PROBE_DEADLINE.as_secs()
        ))
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
) -> Result<AccelDecision, String> {
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
                .map_err(|why| format!("--accel kvm: {why}; use --accel tcg or auto"))
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
            reason: format!("KVM unusable ({why}); falling back to TCG emulation, which is much slower"),
        },
    };
    let record = CachedProbe {
        boot_id: boot,
        qemu: qemu.to_path_buf(),
        decision: decision.clone(),
    };
    if fs::create_dir_all(cache_dir).is_ok() {
        let tmp = cache_file.with_extension(format!("tmp{}", std::process::id()));
        let json = serde_json::to_vec(&record).expect("probe record serialises");
        if fs::write(&tmp, json).is_ok() {
            let _ = fs::rename(&tmp, &cache_file);
        }
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_name_the_cause() {
        assert!(probe_verdict(true, "[ 0.5] Kernel panic - not syncing: VFS", "").is_ok());
        let hang = probe_verdict(false, "", "").unwrap_err();
        assert!(hang.contains("nested virtualisation"), "{hang}");
        let crash = probe_verdict(true, "", "warning: x\nqemu: failed to set MSR 0x10a\n").unwrap_err();
        assert!(crash.contains("failed to set MSR"), "{crash}");
        assert!(probe_verdict(false, "[ 0.1] Linux version", "")
            .unwrap_err()
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
        assert!(err.starts_with("--accel kvm: "), "{err}");
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
