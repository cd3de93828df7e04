use super::*;

fn named(copy: &str) -> RamInfo {
    RamInfo {
        bytes: 0,
        sha256: String::new(),
        compressed_bytes: 0,
        copy: copy.to_string(),
    }
}

/// A guest's RAM: some pages of data among pages of zeros.
fn guest_ram(pages: usize) -> Vec<u8> {
    let mut ram = vec![0u8; pages * PAGE];
    for page in (0..pages).step_by(3) {
        ram[page * PAGE + 7] = page as u8 | 1;
    }
    ram
}

#[test]
fn a_live_ram_file_copies_and_round_trips_through_its_entry() {
    let entry = tempfile::tempdir().unwrap();
    let ram = guest_ram(600);
    let live = LiveRam::create(ram.len() as u64).unwrap();
    live.file.write_all_at(&ram, 0).unwrap();
    assert!(live
        .qemu_path()
        .starts_with(format!("/proc/{}/fd/", std::process::id())));
    let copy = entry.path().join(new_copy_name(entry.path()));
    live.copy_to(&copy).unwrap();
    assert_eq!(fs::read(&copy).unwrap(), ram);
    // Zero pages are holes: the copy takes about a third of its length.
    let used = fs::metadata(&copy).unwrap().blocks() * 512;
    assert!(used < ram.len() as u64 / 2, "{used} bytes used");

    let info = compress(&copy, entry.path(), 1).unwrap();
    assert_eq!(info.bytes, ram.len() as u64);
    fs::remove_file(&copy).unwrap();
    let again = materialize(entry.path(), &info).unwrap();
    assert_eq!(fs::read(&again).unwrap(), ram, "decompressed whole");
    discard(entry.path(), &info);
    assert!(!again.exists());
}

#[test]
fn a_damaged_ram_file_is_named_and_leaves_no_copy() {
    let entry = tempfile::tempdir().unwrap();
    let ram = guest_ram(64);
    let copy = entry.path().join(new_copy_name(entry.path()));
    fs::write(&copy, &ram).unwrap();
    let info = compress(&copy, entry.path(), 1).unwrap();
    fs::remove_file(&copy).unwrap();
    let stored = entry.path().join(RAM_ZST);
    let mut bytes = fs::read(&stored).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&stored, &bytes).unwrap();
    let err = materialize(entry.path(), &info).unwrap_err();
    assert!(
        matches!(err, RamFileError::Damaged(ref p) if p == &stored),
        "{err}"
    );
    assert!(!copy_path(entry.path(), &info).unwrap().exists());
    // Truncated: damaged too.
    fs::write(&stored, &bytes[..bytes.len() / 3]).unwrap();
    assert!(matches!(
        materialize(entry.path(), &info),
        Err(RamFileError::Damaged(_))
    ));
}

#[test]
fn copy_names_from_a_record_are_plain_file_names() {
    let entry = Path::new("/cache/snapshots/0123abcd");
    for bad in [
        "../../etc/passwd.ram",
        "/tmp/x.ram",
        ".hidden.ram",
        "x.img",
        "",
        "a/b.ram",
    ] {
        let err = copy_path(entry, &named(bad)).unwrap_err();
        assert!(err.to_string().contains("not a RAM file name"), "{bad}: {err}");
    }
    let name = new_copy_name(entry);
    assert!(name.starts_with("0123abcd-") && name.ends_with(".ram"), "{name}");
    assert!(copy_path(entry, &named(&name)).unwrap().ends_with(&name));
}

#[test]
fn the_sweep_removes_copies_whose_entry_is_gone_and_keeps_named_ones() {
    let Some(dir) = shared_dir() else {
        panic!("no private directory under /dev/shm on this host");
    };
    let kept_entry = tempfile::tempdir().unwrap();
    let gone_entry = kept_entry.path().join("removed");
    let kept = dir.join(new_copy_name(kept_entry.path()));
    let orphan = dir.join(new_copy_name(&gone_entry));
    for (copy, entry) in [(&kept, kept_entry.path()), (&orphan, gone_entry.as_path())] {
        fs::write(copy, b"ram").unwrap();
        own(copy, entry);
    }
    let kept_name = kept.file_name().unwrap().to_str().unwrap().to_string();
    sweep(|entry, name| entry == kept_entry.path() && name == kept_name);
    assert!(kept.exists(), "named by its entry");
    assert!(!orphan.exists(), "its entry is gone");
    assert!(!dir
        .join(format!(
            "{}{OWNER_SUFFIX}",
            orphan.file_name().unwrap().to_str().unwrap()
        ))
        .exists());
    remove_copy(&kept);
}
