//! The QEMU command line as typed data, so it can be unit-tested, printed
//! with `--verbose`, and later extended without string surgery.

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use thiserror::Error;
use unibeam_spec::DEBUG_EXIT_PORT;

pub const QEMU_BINARY: &str = "qemu-system-x86_64";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum QemuError {
    #[error("{QEMU_BINARY} not found in PATH; install it with `apt-get install qemu-system-x86`")]
    NotInstalled,
    #[error("bad port mapping {0:?}: expected [IP:]HOST_PORT:GUEST_PORT, e.g. 8080:8080")]
    BadPortMapping(String),
}

/// Finds `qemu-system-x86_64` on PATH.
pub fn find_qemu() -> Result<PathBuf, QemuError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(QEMU_BINARY))
        .find(|candidate| is_executable(candidate))
        .ok_or(QemuError::NotInstalled)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Which QEMU accelerator runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// A TCP port published from the host to the guest (`-p`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortForward {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub guest_port: u16,
}

impl FromStr for PortForward {
    type Err = QemuError;

    /// `8080:80` or `0.0.0.0:8080:80`. Without an IP the port is published
    /// on 127.0.0.1 only: a dev VM should not face the network by surprise.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || QemuError::BadPortMapping(s.to_string());
        let (ip, rest) = match s.rsplitn(3, ':').collect::<Vec<_>>().as_slice() {
            [guest, host] => (IpAddr::V4(Ipv4Addr::LOCALHOST), (*host, *guest)),
            [guest, host, ip] => (ip.parse().map_err(|_| bad())?, (*host, *guest)),
            _ => return Err(bad()),
        };
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
        Ok(PortForward {
            host_ip: ip,
            host_port: port(rest.0)?,
            guest_port: port(rest.1)?,
        })
    }
}

/// Everything that decides how QEMU boots one image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QemuCommand {
    pub binary: PathBuf,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub kernel_args: Vec<String>,
    pub forwards: Vec<PortForward>,
    pub qmp_socket: PathBuf,
}

/// Kernel arguments every image boots with: serial console, few messages
/// (each costs time on an emulated UART), and no reboot loop on panic.
pub fn default_kernel_args() -> Vec<String> {
    ["console=ttyS0", "quiet", "panic=-1", "rdinit=/init"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

impl QemuCommand {
    fn netdev(&self) -> String {
        let mut netdev = String::from("user,id=net0");
        for f in &self.forwards {
            netdev.push_str(&format!(
                ",hostfwd=tcp:{}:{}-:{}",
                f.host_ip, f.host_port, f.guest_port
            ));
        }
        netdev
    }

    pub fn args(&self) -> Vec<OsString> {
        let cpu = match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        };
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
        push(&["-nodefaults", "-no-user-config", "-display", "none"]);
        push(&["-machine", "pc", "-accel", &self.accel.to_string(), "-cpu", cpu]);
        push(&["-m", &self.memory_mib.to_string(), "-smp", &self.cpus.to_string()]);
        push(&["-serial", "stdio", "-no-reboot"]);
        // romfile= skips the PXE option ROM: the kernel is loaded directly.
        push(&[
            "-netdev",
            &self.netdev(),
            "-device",
            "virtio-net-pci,netdev=net0,romfile=",
        ]);
        // Entropy for the guest's random pool, so crypto never waits.
        push(&["-object", "rng-random,id=rng0,filename=/dev/urandom"]);
        push(&["-device", "virtio-rng-pci,rng=rng0"]);
        push(&[
            "-device",
            &format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=1"),
        ]);
        push(&[
            "-qmp",
            &format!("unix:{},server=on,wait=off", self.qmp_socket.display()),
        ]);
        push(&["-append", &self.kernel_args.join(" ")]);
        args.push("-kernel".into());
        args.push(self.kernel.clone().into_os_string());
        args.push("-initrd".into());
        args.push(self.initrd.clone().into_os_string());
        args
    }

    /// The command as one shell-pasteable line, for `--verbose`.
    pub fn display_line(&self) -> String {
        std::iter::once(self.binary.clone().into_os_string())
            .chain(self.args())
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Decodes QEMU's exit code when the guest used isa-debug-exit: a byte `s`
/// written to the port makes QEMU exit with `(s << 1) | 1`.
pub fn debug_exit_status(qemu_code: i32) -> Option<u8> {
    (qemu_code & 1 == 1).then_some(((qemu_code >> 1) & 0x7f) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> QemuCommand {
        QemuCommand {
            binary: "/usr/bin/qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            memory_mib: 256,
            cpus: 1,
            kernel: "/img/vmlinuz".into(),
            initrd: "/img/initramfs.img".into(),
            kernel_args: default_kernel_args(),
            forwards: vec!["8080:8080".parse().unwrap(), "0.0.0.0:9000:90".parse().unwrap()],
            qmp_socket: "/run/x/qmp.sock".into(),
        }
    }

    fn value_after(args: &[OsString], flag: &str) -> String {
        let i = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("{flag} missing"));
        args[i + 1].to_string_lossy().into_owned()
    }

    #[test]
    fn arguments_carry_every_setting() {
        let args = command().args();
        assert_eq!(value_after(&args, "-accel"), "tcg");
        assert_eq!(value_after(&args, "-cpu"), "max");
        assert_eq!(value_after(&args, "-m"), "256");
        assert_eq!(value_after(&args, "-smp"), "1");
        assert_eq!(value_after(&args, "-kernel"), "/img/vmlinuz");
        assert_eq!(value_after(&args, "-initrd"), "/img/initramfs.img");
        assert_eq!(value_after(&args, "-serial"), "stdio");
        assert_eq!(
            value_after(&args, "-netdev"),
            "user,id=net0,hostfwd=tcp:127.0.0.1:8080-:8080,hostfwd=tcp:0.0.0.0:9000-:90"
        );
        assert_eq!(
            value_after(&args, "-append"),
            "console=ttyS0 quiet panic=-1 rdinit=/init"
        );
        assert_eq!(
            value_after(&args, "-qmp"),
            "unix:/run/x/qmp.sock,server=on,wait=off"
        );
        assert!(args.iter().any(|a| a == "isa-debug-exit,iobase=0x501,iosize=1"));
        assert!(args.iter().any(|a| a == "-no-reboot"));
        assert!(args.iter().any(|a| a == "virtio-rng-pci,rng=rng0"));
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let mut cmd = command();
        cmd.accel = Accel::Kvm;
        assert_eq!(value_after(&cmd.args(), "-cpu"), "host");
    }

    #[test]
    fn display_line_quotes_spaces() {
        let line = command().display_line();
        assert!(line.starts_with("/usr/bin/qemu-system-x86_64 -nodefaults"));
        assert!(line.contains("-append 'console=ttyS0 quiet panic=-1 rdinit=/init'"));
    }

    #[test]
    fn port_mappings_parse_or_name_the_culprit() {
        let f: PortForward = "8080:80".parse().unwrap();
        assert_eq!(
            (f.host_ip.to_string(), f.host_port, f.guest_port),
            ("127.0.0.1".into(), 8080, 80)
        );
        for bad in ["8080", "x:80", "8080:0", "1.2.3:80:80", "a:b:c:d", "70000:80"] {
            let err = bad.parse::<PortForward>().unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}");
        }
    }

    #[test]
    fn debug_exit_codes_decode() {
        assert_eq!(debug_exit_status(1), Some(0));
        assert_eq!(debug_exit_status(7), Some(3));
        assert_eq!(debug_exit_status(0), None);
        assert_eq!(debug_exit_status(2), None);
    }
}
