//! Tests of qemu.rs, kept apart to keep that file short.

use super::*;

fn command() -> QemuCommand {
    QemuCommand {
        binary: "/usr/bin/qemu-system-x86_64".into(),
        accel: Accel::Tcg,
        machine: Machine::Pc,
        memory_mib: 256,
        cpus: 1,
        kernel: "/img/vmlinuz".into(),
        initrd: "/img/initramfs.img".into(),
        kernel_args: default_kernel_args(Machine::Pc, Accel::Tcg),
        forwards: vec!["8080:8080".parse().unwrap(), "0.0.0.0:9000:90".parse().unwrap()],
        qmp_socket: "/run/x/qmp.sock".into(),
        private_net: None,
        acpi: true,
        drives: Vec::new(),
        snapshots: Default::default(),
    }
}

fn devices(args: &[OsString]) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == "-device")
        .map(|w| w[1].to_string_lossy().into_owned())
        .collect()
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
    assert_eq!(value_after(&args, "-accel"), "tcg,tb-size=32");
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
        "console=ttyS0 quiet panic=-1 rdinit=/init rootfstype=ramfs tsc=reliable rcupdate.rcu_cpu_stall_suppress=1"
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
fn tcg_bounds_its_translation_cache_and_kvm_has_none() {
    let mut cmd = command();
    assert_eq!(
        value_after(&cmd.args(), "-accel"),
        format!("tcg,tb-size={TCG_TB_SIZE_MIB}")
    );
    // Small enough to bound a fleet's memory, not so small that a boot
    // spends its time retranslating (docs/benchmarks.md, Density).
    assert!((16..=64).contains(&TCG_TB_SIZE_MIB));
    cmd.accel = Accel::Kvm;
    assert_eq!(value_after(&cmd.args(), "-accel"), "kvm");
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
    assert!(
        line.contains("-append 'console=ttyS0 quiet panic=-1 rdinit=/init rootfstype=ramfs tsc=reliable rcupdate.rcu_cpu_stall_suppress=1'")
    );
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
fn the_verdict_port_goes_to_a_file_beside_the_qmp_socket() {
    let mut cmd = command();
    let args = cmd.args();
    assert!(devices(&args).contains(&"isa-debugcon,iobase=0x508,chardev=verdict".to_string()));
    assert_eq!(
        value_after(&args, "-chardev"),
        "file,id=verdict,path=/run/x/verdict"
    );
    cmd.qmp_socket = "/run/a,b/qmp.sock".into();
    assert_eq!(
        value_after(&cmd.args(), "-chardev"),
        "file,id=verdict,path=/run/a,,b/verdict",
        "a comma in the path is doubled"
    );
}

#[test]
fn the_host_tsc_is_measured_and_handed_to_tcg_microvms() {
    let khz = host_tsc_khz().expect("an x86_64 host has a TSC");
    assert!(khz > 500_000, "{khz} kHz");
    let args = default_kernel_args(Machine::Microvm, Accel::Tcg);
    assert!(args.iter().any(|a| a.starts_with("tsc_early_khz=")), "{args:?}");
    for machine in [Machine::Microvm, Machine::Pc] {
        let tcg = default_kernel_args(machine, Accel::Tcg);
        assert!(tcg.contains(&"tsc=reliable".to_string()), "{tcg:?}");
        assert!(!default_kernel_args(machine, Accel::Kvm).contains(&"tsc=reliable".to_string()));
    }
    assert!(!default_kernel_args(Machine::Microvm, Accel::Kvm)
        .iter()
        .any(|a| a.starts_with("tsc_early_khz=")));
    assert!(!default_kernel_args(Machine::Pc, Accel::Tcg).contains(&"pci=off".to_string()));
}

#[test]
fn microvm_uses_mmio_devices_and_acpi() {
    let mut cmd = command();
    cmd.machine = Machine::Microvm;
    let args = cmd.args();
    assert_eq!(value_after(&args, "-machine"), "microvm,acpi=on");
    let devices = devices(&args);
    assert!(
        devices.contains(&"virtio-net-device,netdev=net0".to_string()),
        "{devices:?}"
    );
    assert!(
        devices.contains(&"virtio-rng-device,rng=rng0".to_string()),
        "{devices:?}"
    );
    assert!(!devices.iter().any(|d| d.contains("-pci")), "{devices:?}");
    assert!(
        devices.contains(&"virtio-keyboard-device,id=power-key".to_string()),
        "the snapshot keys' keyboard is there with ACPI too: {devices:?}"
    );
    assert_eq!(cmd.power_button(), PowerButton::Acpi);
}

#[test]
fn pc_without_acpi_refuses_more_than_one_cpu() {
    assert_eq!(
        check_cpus(Machine::Pc, 2, true),
        Ok(()),
        "an ACPI kernel finds its CPUs on pc"
    );
    let err = check_cpus(Machine::Pc, 2, false).unwrap_err().to_string();
    assert!(
        err.contains("--cpus 2") && err.contains("--machine microvm"),
        "{err}"
    );
    assert_eq!(check_cpus(Machine::Pc, 1, false), Ok(()));
    assert_eq!(
        check_cpus(Machine::Microvm, 4, false),
        Ok(()),
        "microvm's MP table lists every CPU"
    );
}

#[test]
fn a_kernel_without_acpi_gets_a_power_key() {
    let mut cmd = command();
    cmd.machine = Machine::Microvm;
    cmd.acpi = false;
    let args = cmd.args();
    assert_eq!(value_after(&args, "-machine"), "microvm,acpi=off");
    assert_eq!(value_after(&args, "-global"), "virtio-mmio.force-legacy=false");
    assert!(devices(&args).contains(&"virtio-keyboard-device,id=power-key".to_string()));
    assert_eq!(cmd.power_button(), PowerButton::VirtioKey);
    cmd.machine = Machine::Pc;
    let args = cmd.args();
    assert!(devices(&args).contains(&"virtio-keyboard-pci,id=power-key".to_string()));
    assert_eq!(value_after(&args, "-machine"), "pc,i8042=off");
}

#[test]
fn each_machine_drops_the_other_transport() {
    let m = "/lib/modules/virtio_pci_modern_dev.ko";
    assert!(!Machine::Microvm.needs_module(m));
    assert!(Machine::Pc.needs_module(m));
    assert!(!Machine::Pc.needs_module("/lib/modules/virtio_mmio.ko"));
    assert!(Machine::Microvm.needs_module("/lib/modules/virtio_mmio.ko"));
    assert!(Machine::Microvm.needs_module("/lib/modules/virtio_net.ko"));
}

#[test]
fn private_net_is_a_second_nic_on_loopback_multicast() {
    let mut cmd = command();
    cmd.machine = Machine::Microvm;
    cmd.private_net = Some(PrivateNet {
        carrier: Carrier::Multicast {
            group: "239.255.7.9".parse().unwrap(),
            port: 40001,
        },
        mac: "52:54:00:4d:00:02".into(),
    });
    let line = cmd.display_line();
    assert!(
        line.contains("-netdev socket,id=net1,mcast=239.255.7.9:40001,localaddr=127.0.0.1"),
        "{line}"
    );
    assert!(
        line.contains("virtio-net-device,netdev=net1,mac=52:54:00:4d:00:02"),
        "{line}"
    );
    assert!(line.contains("netdev=net0,mac=52:54:00:12:34:56"), "{line}");
}

#[test]
fn a_bridge_network_nic_is_the_inherited_tap() {
    let mut cmd = command();
    let tap = |fd| PrivateNet {
        carrier: Carrier::Tap {
            tap: "ubt0123456789ab".into(),
            bridge: "ub-lan".into(),
            fd,
        },
        mac: "52:54:00:58:01:02".into(),
    };
    cmd.private_net = Some(tap(Some(7)));
    assert!(cmd.display_line().contains("-netdev tap,id=net1,fd=7"));
    cmd.private_net = Some(tap(None));
    assert!(cmd
        .display_line()
        .contains("tap,id=net1,ifname=ubt0123456789ab,script=no"));
    // The descriptor is never recorded; records of multicast NICs made
    // before taps existed still read.
    let json = serde_json::to_string(&tap(Some(7))).unwrap();
    assert!(!json.contains("fd"), "{json}");
    let old: PrivateNet =
        serde_json::from_str(r#"{"group":"239.255.1.2","port":40000,"mac":"52:54:00:4d:00:02"}"#).unwrap();
    assert!(matches!(old.carrier, Carrier::Multicast { port: 40000, .. }));
}

#[test]
fn a_ram_file_backs_the_machine_shared_or_copy_on_write() {
    let mut cmd = command();
    assert!(!value_after(&cmd.args(), "-machine").contains("memory-backend"));
    cmd.snapshots.ram = Some(RamBacking {
        path: "/dev/shm/unibeam-0/a,b.ram".into(),
        shared: false,
    });
    let args = cmd.args();
    assert!(value_after(&args, "-machine").ends_with(",memory-backend=ram0"));
    assert_eq!(
        value_after(&args, "-object"),
        "memory-backend-file,id=ram0,size=256M,mem-path=/dev/shm/unibeam-0/a,,b.ram,share=off",
        "the comma in the path is doubled, as QEMU's option syntax wants"
    );
    cmd.snapshots.ram.as_mut().unwrap().shared = true;
    assert!(value_after(&cmd.args(), "-object").ends_with(",share=on"));
}
