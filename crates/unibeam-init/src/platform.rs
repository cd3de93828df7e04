//! The seam between init's decisions and the kernel: mounts, modules,
//! network, signals and power. `Real` makes the syscalls; tests use a
//! recorder, so the boot and shutdown sequences are checked without root
//! or a VM.

use crate::kmod::KmodError;
use crate::net::NetError;
use crate::volumes::VolumeError;
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use thiserror::Error;
use unibeam_spec::{NetworkSpec, VolumeMount};

#[derive(Debug, Error)]
pub enum PlatformError {
    #[error("mount {fstype} on {target}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        #[source]
        source: Errno,
    },
    #[error("remount / read-only")]
    Seal(#[source] Errno),
}

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
    fn mount(&mut self, mount: &Mount) -> Result<(), PlatformError>;
    fn load_module(&mut self, path: &str) -> Result<(), KmodError>;
    /// Brings the network up; returns a one-line description.
    fn configure_network(&mut self, net: &NetworkSpec, hostname: &str) -> Result<String, NetError>;
    /// Mounts a volume; returns a one-line description.
    fn mount_volume(&mut self, volume: &VolumeMount, run_as_root: bool) -> Result<String, VolumeError>;
    /// Makes the root filesystem read-only; a failure is only a warning.
    fn seal_rootfs(&mut self) -> Result<(), PlatformError>;
    fn signal(&mut self, pid: i32, signal: Signal);
    /// Reports the verdict to the host and powers off; does not return on a VM.
    fn power_off(&mut self, verdict: &crate::power::Verdict);
}

/// The real kernel.
pub struct Real;

impl Platform for Real {
    fn mount(&mut self, m: &Mount) -> Result<(), PlatformError> {
        use nix::mount::MsFlags;
        let flags = match m.fstype {
            "devtmpfs" => MsFlags::MS_NOSUID,
            "tmpfs" => MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            _ => MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        };
        nix::mount::mount(Some(m.source), m.target, Some(m.fstype), flags, m.data).map_err(|source| {
            PlatformError::Mount {
                fstype: m.fstype,
                target: m.target,
                source,
            }
        })
    }

    fn load_module(&mut self, path: &str) -> Result<(), KmodError> {
        crate::kmod::load(path)
    }

    fn configure_network(&mut self, net: &NetworkSpec, hostname: &str) -> Result<String, NetError> {
        crate::net::configure(net, hostname)
    }

    fn mount_volume(&mut self, volume: &VolumeMount, run_as_root: bool) -> Result<String, VolumeError> {
        crate::volumes::mount(volume, run_as_root)
    }

    fn seal_rootfs(&mut self) -> Result<(), PlatformError> {
        use nix::mount::MsFlags;
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        nix::mount::mount(None::<&str>, "/", None::<&str>, flags, None::<&str>).map_err(PlatformError::Seal)
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
        fn mount(&mut self, m: &Mount) -> Result<(), PlatformError> {
            self.calls.push(format!("mount {}", m.target));
            Ok(())
        }
        fn load_module(&mut self, path: &str) -> Result<(), KmodError> {
            self.calls.push(format!("module {path}"));
            Ok(())
        }
        fn configure_network(&mut self, net: &NetworkSpec, hostname: &str) -> Result<String, NetError> {
            self.calls.push(format!("network {} {hostname}", net.interface));
            if self.fail_network {
                return Err(NetError::NoInterface {
                    name: net.interface.clone(),
                    limit: std::time::Duration::ZERO,
                });
            }
            Ok("up".into())
        }
        fn mount_volume(&mut self, volume: &VolumeMount, _: bool) -> Result<String, VolumeError> {
            self.calls
                .push(format!("volume {} on {}", volume.serial, volume.path));
            Ok(String::new())
        }
        fn seal_rootfs(&mut self) -> Result<(), PlatformError> {
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
