//! Drops the static symbol table and debug sections from executables and
//! shared objects, like `strip --strip-debug --strip-unneeded`. Nothing at
//! run time reads them: the dynamic loader uses `.dynsym`.
//!
//! Uses `object`'s ELF builder rather than binutils, which the host may
//! not have.

use object::build::elf::Builder;
use object::read::elf::{FileHeader, SectionHeader};
use object::{elf, Endianness};

/// Whether a section only serves linkers and debuggers.
fn removable(name: &[u8]) -> bool {
    name == b".symtab" || name == b".strtab" || name.starts_with(b".debug") || name == b".comment"
}

/// True when an x86_64 ELF executable or shared object has something to strip.
fn strippable(data: &[u8]) -> bool {
    let Ok(header) = elf::FileHeader64::<Endianness>::parse(data) else {
        return false;
    };
    let Ok(endian) = header.endian() else { return false };
    let kind = header.e_type(endian);
    if kind != elf::ET_EXEC && kind != elf::ET_DYN {
        return false;
    }
    let Ok(sections) = header.sections(endian, data) else {
        return false;
    };
    sections
        .iter()
        .any(|s| sections.section_name(endian, s).map(removable).unwrap_or(false) && s.sh_type(endian) != 0)
}

/// The stripped file, or `None` when there is nothing to strip or the file
/// cannot be rewritten safely (it is then kept as it is).
pub fn strip_symbols(data: &[u8]) -> Option<Vec<u8>> {
    if !strippable(data) {
        return None;
    }
    let mut builder = Builder::read(data).ok()?;
    for section in builder.sections.iter_mut() {
        if removable(section.name.as_slice()) {
            section.delete = true;
        }
    }
    for symbol in builder.symbols.iter_mut() {
        symbol.delete = true;
    }
    builder.delete_orphans();
    let mut out = Vec::with_capacity(data.len());
    builder.write(&mut out).ok()?;
    (out.len() < data.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn stripped_test_binary_is_smaller_and_still_runs() {
        // Test binaries of the dev profile carry symbols and debug info.
        let me = std::env::current_exe().unwrap();
        let data = std::fs::read(&me).unwrap();
        // The release profile strips debuginfo only: the symbol table stays.
        assert!(strippable(&data), "the test binary has no symbol table to strip");
        let stripped = strip_symbols(&data).expect("strippable input must be stripped");
        assert!(stripped.len() < data.len());
        assert!(!strippable(&stripped), "nothing left to strip");
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("stripped");
        std::fs::write(&copy, &stripped).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = std::process::Command::new(&copy)
            .args(["--list", "--format", "terse"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "stripped binary failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("stripped_test_binary_is_smaller"));
    }

    #[test]
    fn stripped_or_foreign_input_is_left_alone() {
        assert_eq!(strip_symbols(b"not an elf"), None);
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let stripped = strip_symbols(&me).expect("the test binary has symbols to strip");
        assert_eq!(
            strip_symbols(&stripped),
            None,
            "stripped input must be left alone"
        );
        let libc = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        match strip_symbols(&libc) {
            None => assert!(!strippable(&libc), "strippable input must be stripped"),
            Some(out) => assert!(out.len() < libc.len() && !strippable(&out)),
        }
    }
}
