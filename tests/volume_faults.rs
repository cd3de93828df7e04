//! A damaged volume at boot: what `e2fsck -p` can repair is repaired and
//! the VM boots; what it cannot is refused before QEMU starts, with one
//! line naming the file and the fix; what it does not look at (a
//! filesystem marked clean) the guest's mount refuses, with a console
//! line and exit status 125.

use std::process::Command;
use std::time::Duration;
use unibeam_e2e::sandbox::Sandbox;
use unibeam_e2e::{free_port, shared_hello_image, BOOT_TIMEOUT};

/// Runs debugfs's write-mode `request` on `disk`, as a fault injector.
fn debugfs_write(disk: &std::path::Path, request: &str) {
    let out = Command::new("/usr/sbin/debugfs")
        .args(["-w", "-R", request])
        .arg(disk)
        .output()
        .expect("debugfs (e2fsprogs) runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_damaged_volume_is_repaired_or_refused_at_boot() {
    let s = Sandbox::new();
    let hello = shared_hello_image().to_str().unwrap();
    s.ok(&["volume", "create", "dmg", "--size", "32M"]);
    let disk = s.state().join("unibeam/volumes/dmg/disk.ext4");

    // A wrong free-block count: e2fsck -p fixes it, and the VM boots.
    debugfs_write(&disk, "ssv free_blocks_count 1");
    let port = free_port();
    let mut vm = s.spawn(&["run", "-p", &format!("{port}:8080"), "-v", "dmg:/data", hello]);
    vm.wait_http_ok(port, BOOT_TIMEOUT);
    assert!(
        vm.output().contains("volume dmg (/dev/vda) on /data (rw)"),
        "{}",
        vm.output()
    );
    vm.interrupt();
    assert!(vm.wait(Duration::from_secs(60)).success(), "{}", vm.output());
    let clean = Command::new("/usr/sbin/e2fsck")
        .args(["-n", "-f"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );

    // No root directory, on a filesystem marked clean: e2fsck -p trusts
    // the mark (as at any boot), and the guest's mount refuses it, with
    // the console line and exit status saying why.
    debugfs_write(&disk, "clri <2>");
    let refused = s.unibeam(&["run", "-v", "dmg:/data", hello]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(125), "{said}");
    assert!(
        said.contains("volume dmg: mount /dev/vda (ext4) on /data"),
        "{said}"
    );
    // Marked as not clean, as a guest killed mid-write leaves it: e2fsck
    // -p checks, cannot repair it alone, and the boot stops before QEMU.
    debugfs_write(&disk, "ssv state 0");
    let refused = s.unibeam(&["run", "-v", "dmg:/data", hello]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(125), "{said}");
    // After run's notes (accelerator, booting), one error line.
    let error = said.lines().last().unwrap_or_default();
    for needle in [
        "unibeam: error: volume dmg",
        disk.to_str().unwrap(),
        "e2fsck -f",
        "Root inode",
    ] {
        assert!(error.contains(needle), "{needle:?} not in {error:?}");
    }
    let console = String::from_utf8_lossy(&refused.stdout);
    assert!(!console.contains("unibeam-init"), "QEMU never started: {console}");
    s.ok(&["volume", "rm", "dmg"]);
    s.assert_clean();
}
