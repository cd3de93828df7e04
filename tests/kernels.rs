//! End-to-end: the kernels and machine types an image can boot with. The
//! rest of the suite runs on the default (the specialised kernel on
//! `microvm`, once `make kernel` has built it); these cover the others.

use std::fs;
use unibeam_e2e::*;

fn kernel_kind(image: &std::path::Path) -> String {
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(image.join("image.json")).unwrap()).unwrap();
    manifest["kernel"]["origin"]["kind"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn the_default_image_boots_the_specialised_kernel() {
    if std::env::var("UNIBEAM_KERNEL").is_ok_and(|k| k == "debian") {
        eprintln!("UNIBEAM_KERNEL=debian: the suite runs on Debian's kernel this time");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(&hello_release(), &dir.path().join("hello.unibeam"));
    assert_eq!(
        kernel_kind(&image),
        "specialised",
        "run `make kernel` first: the suite is meant to run on the specialised kernel"
    );
    assert!(
        fs::metadata(image.join("vmlinuz")).unwrap().len() <= 2_000_000,
        "the specialised kernel outgrew 2 MB"
    );
    let listing = initramfs_entries(&image.join("initramfs.img"));
    assert!(
        !listing.iter().any(|(p, _)| p.ends_with(".ko")),
        "a kernel with everything built in needs no modules"
    );
}

#[test]
fn debian_kernel_smoke_test() {
    let dir = tempfile::tempdir().unwrap();
    let image = build_image_with(
        &hello_release(),
        &dir.path().join("hello.unibeam"),
        &["--kernel", "debian"],
    );
    let kind = kernel_kind(&image);
    assert!(
        kind == "debian-package" || kind == "host-boot",
        "kernel kind {kind}"
    );
    // Debian's kernel has ACPI: the stop is its power button.
    let out = hello_answers_and_stops(&image, &["--verbose"]);
    assert!(out.contains("microvm,acpi=on"), "{out}");
    // The virtio keyboard is there all the same: it carries the snapshot
    // keys (saved, restored) to init.
    assert!(out.contains("virtio-keyboard-device"), "{out}");
    // Only our kernel reads the APIC bus frequency; Debian's would hand
    // the unknown parameter to init.
    assert!(!out.contains("apic_bus_khz"), "{out}");
}

#[test]
fn pc_machine_boots_too() {
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(&hello_release(), &dir.path().join("hello.unibeam"));
    hello_answers_and_stops(&image, &["--machine", "pc"]);
}

/// Near the specialised kernel's RAM floor (Debian's kernel needs more),
/// booted the fast way: QEMU enters the ELF kernel taken out of the
/// bzImage through its PVH entry point. The floor the bench finds on a
/// quiet host is 48 MiB; with other VMs starving this one of CPU, the
/// BEAM's boot peak grows by a few MiB (56 MiB once ran out when the floor
/// was 54), so the test keeps 6 MiB of margin.
#[test]
fn hello_answers_at_54_mib_through_the_pvh_entry() {
    let dir = tempfile::tempdir().unwrap();
    let image = specialised_hello_image(dir.path());
    let out = hello_answers_and_stops(&image, &["--memory", "54M", "--verbose"]);
    let qemu_line = out
        .lines()
        .find(|l| l.contains(" -kernel "))
        .expect("--verbose prints QEMU's command line");
    assert!(qemu_line.contains(" -m 54 "), "{qemu_line}");
    // No ACPI in the specialised kernel: the stop above came through the
    // virtio keyboard's power key.
    assert!(
        qemu_line.contains("microvm,acpi=off") && qemu_line.contains("virtio-keyboard-device,id=power-key"),
        "{qemu_line}"
    );
    assert!(
        qemu_line.contains(".vmlinux -initrd"),
        "the specialised kernel should boot as PVH ELF: {qemu_line}"
    );
    // ...and skipped calibrating its APIC timer (0.3 s under TCG).
    assert!(qemu_line.contains(" apic_bus_khz=1000000"), "{qemu_line}");
}
