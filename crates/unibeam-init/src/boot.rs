//! The steps between the kernel handing over and the BEAM's exec.

use crate::kmod::KmodError;
use crate::log;
use crate::net::NetError;
use crate::platform::{Mount, Platform, PlatformError};
use crate::volumes::VolumeError;
use thiserror::Error;
use unibeam_spec::{milestone, BootSpec};

#[derive(Debug, Error)]
pub enum BootError {
    #[error(transparent)]
    Mount(#[from] PlatformError),
    #[error(transparent)]
    Module(#[from] KmodError),
    #[error(transparent)]
    Network(#[from] NetError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
}

/// What init and the BEAM need mounted, in order.
pub const MOUNTS: [Mount; 4] = [
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        data: None,
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        data: None,
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        data: Some("mode=0755"),
    },
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        data: Some("mode=1777"),
    },
];

/// Mounts, kernel modules, network, volumes, then a read-only root.
pub fn bring_up(p: &mut impl Platform, spec: &BootSpec) -> Result<(), BootError> {
    for m in &MOUNTS {
        p.mount(m)?;
    }
    for module in &spec.modules {
        p.load_module(module)?;
    }
    crate::log::milestone(milestone::MODULES_LOADED, &format!(" ({})", spec.modules.len()));
    let network = p.configure_network(&spec.network, &spec.hostname)?;
    crate::log::milestone(milestone::NETWORK_UP, &format!(": {network}"));
    // Mount points are made on the root while it is still writable.
    for volume in &spec.instance.volumes {
        let mounted = p.mount_volume(volume, spec.instance.run_as_root)?;
        log!("{mounted}");
    }
    // /etc is written by now; the BEAM writes only to /tmp.
    if let Err(e) = p.seal_rootfs() {
        log!("warning: {}", log::chain(&e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::recorder::Recorder;
    use unibeam_spec::BootSpec;

    fn spec() -> BootSpec {
        BootSpec::sample()
    }

    #[test]
    fn boot_sequence_order() {
        let mut p = Recorder::default();
        bring_up(&mut p, &spec()).unwrap();
        assert_eq!(
            p.calls,
            [
                "mount /proc",
                "mount /sys",
                "mount /dev",
                "mount /tmp",
                "module /lib/modules/virtio.ko",
                "module /lib/modules/virtio_net.ko",
                "network eth0 hello",
                "seal /",
            ]
        );
    }

    #[test]
    fn volumes_are_mounted_after_the_network_and_before_sealing() {
        let mut spec = spec();
        spec.instance.volumes = vec![unibeam_spec::VolumeMount {
            name: "data".into(),
            serial: "vol0".into(),
            path: "/var/lib/app".into(),
            read_only: false,
        }];
        let mut p = Recorder::default();
        bring_up(&mut p, &spec).unwrap();
        let tail: Vec<&str> = p.calls.iter().rev().take(3).rev().map(String::as_str).collect();
        assert_eq!(
            tail,
            ["network eth0 hello", "volume vol0 on /var/lib/app", "seal /"]
        );
    }

    #[test]
    fn network_failure_stops_the_boot_before_sealing() {
        let mut p = Recorder {
            fail_network: true,
            ..Recorder::default()
        };
        let err = bring_up(&mut p, &spec()).unwrap_err();
        assert!(
            matches!(err, BootError::Network(NetError::NoInterface { .. })),
            "{err}"
        );
        assert_eq!(p.calls.last().unwrap(), "network eth0 hello");
    }
}
