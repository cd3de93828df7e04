//! One tap per VM. Linux makes tun/tap devices only through an ioctl on
//! /dev/net/tun (netlink refuses them), and no maintained crate opens a
//! named tap and hands back its descriptor without also owning the I/O,
//! hence this small piece. The tap is not persistent: it lives exactly as
//! long as its descriptor, which the instance's owner holds and QEMU
//! inherits, so a crash of both leaves no tap behind.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TapError {
    #[error("opening /dev/net/tun (the bridge driver needs root and the tun module)")]
    Open(#[source] std::io::Error),
    #[error("creating tap {0}")]
    Create(String, #[source] std::io::Error),
    #[error("letting QEMU inherit tap {0}")]
    Inherit(String, #[source] nix::Error),
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: a name, then the flags, padded
/// to the union's 24 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates tap `name` and returns its descriptor, which child processes
/// inherit (QEMU takes it as `-netdev tap,fd=N`).
pub fn open(name: &str) -> Result<OwnedFd, TapError> {
    let file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(TapError::Open)?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    let bytes = name.as_bytes();
    let len = bytes.len().min(libc::IFNAMSIZ - 1);
    req.name[..len].copy_from_slice(&bytes[..len]);
    // SAFETY: the descriptor is open and ours; TUNSETIFF reads and writes
    // one `struct ifreq`, which `req` is (repr(C), the union padded to its
    // full size), and nothing keeps the pointer after the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(TapError::Create(
            name.to_string(),
            std::io::Error::last_os_error(),
        ));
    }
    let fd = OwnedFd::from(file);
    // std opens files close-on-exec; QEMU must inherit this one.
    nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .map_err(|e| TapError::Inherit(name.to_string(), e))?;
    Ok(fd)
}
