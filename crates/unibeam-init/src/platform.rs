//! The seam between init's decisions and the kernel: mounts, modules,
//! network, signals and power. `Real` makes the syscalls; tests use a
//! recorder, so the boot and shutdown sequences are checked without root
//! or a VM.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use unibeam_spec::NetworkSpec;

/// A pseudo-filesystem to mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub data: Option<&'static str>,
}

/// Everything init asks of the kernel.
pub trait Platform {
    fn mount(&mut self, mount: &Mount) -> Result<(), String>;
    fn load_module(&mut self, path: &str) -> Result<(), String>;
    /// Brings the network up; returns a one-line description.
    fn configure_network(&mut self, net: &NetworkSpec, hostname: &str) -> Result<String, String>;
    /// Makes the root filesystem read-only; a failure is only a warning.
    fn seal_rootfs(&mut self) -> Result<(), String>;
    fn signal(&mut self, pid: i32, signal: Signal);
    /// Reports the verdict to the host and powers off; does not return on a VM.
    fn power_off(&mut self, verdict: &crate::power::Verdict);
}

/// The real kernel.
pub struct Real;

impl Platform for Real {
    fn mount(&mut self, m: &Mount) -> Result<(), String> {
        use nix::mount::MsFlags;
        let flags = match m.fstype {
            "devtmpfs" => MsFlags::MS_NOSUID,
            "tmpfs" => MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            _ => MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        };
        nix::mount::mount(Some(m.source), m.target, Some(m.fstype), flags, m.data)
            .map_err(|e| format!("mount {} on {}: {e}", m.fstype, m.target))
    }

    fn load_module(&mut self, path: &str) -> Result<(), String> {
        crate::kmod::load(path)
    }

    fn configure_network(&mut self, net: &NetworkSpec, hostname: &str) -> Result<String, String> {
        crate::net::configure(net, hostname)
    }

    fn seal_rootfs(&mut self) -> Result<(), String> {
        use nix::mount::MsFlags;
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        nix::mount::mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
            .map_err(|e| format!("remount / read-only: {e}"))
    }

    fn signal(&mut self, pid: i32, signal: Signal) {
        let _ = kill(Pid::from_raw(pid), signal);
    }

    fn power_off(&mut self, verdict: &crate::power::Verdict) {
        crate::power::off(verdict)
    }
}

#[cfg(test)]
pub mod recorder {
    use super::*;

    /// Records every call, in order, as a short line.
    #[derive(Default)]
    pub struct Recorder {
        pub calls: Vec<String>,
        pub fail_network: bool,
    }

    impl Platform for Recorder {
        fn mount(&mut self, m: &Mount) -> Result<(), String> {
            self.calls.push(format!("mount {}", m.target));
            Ok(())
        }
        fn load_module(&mut self, path: &str) -> Result<(), String> {
            self.calls.push(format!("module {path}"));
            Ok(())
        }
        fn configure_network(&mut self, net: &NetworkSpec, hostname: &str) -> Result<String, String> {
            self.calls.push(format!("network {} {hostname}", net.interface));
            if self.fail_network {
                return Err("no eth0".into());
            }
            Ok("up".into())
        }
        fn seal_rootfs(&mut self) -> Result<(), String> {
            self.calls.push("seal /".into());
            Ok(())
        }
        fn signal(&mut self, pid: i32, signal: Signal) {
            self.calls.push(format!("signal {pid} {signal}"));
        }
        fn power_off(&mut self, verdict: &crate::power::Verdict) {
            self.calls.push(format!("power off {}", verdict.status()));
        }
    }
}
