//! Computes which kernel modules to load, and in what order, from each
//! module's `.modinfo` `depends=` field. Debian's kernel package ships no
//! `modules.dep`, and running depmod would need the host's kmod.

use object::read::elf::{FileHeader, SectionHeader};
use object::{elf, Endianness};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::hostfs::{at, PathIo};

/// Modules a Debian-kernel guest needs: both virtio transports (PCI for
/// `pc`, MMIO for `microvm`; the runner drops the unused one from the
/// boot spec), the NIC, the entropy source, the ACPI power button (with
/// evdev so init can read it) for graceful stops, the virtio keyboard that
/// brings the snapshot keys, and volumes: virtio-blk,
/// ext4 and the crc32c it asks the crypto API for at mount (built into
/// Debian's cloud kernel, where only virtio_blk is a module).
pub const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_mmio",
    "virtio_net",
    "virtio_rng",
    "button",
    "evdev",
    "virtio_input",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
];

#[derive(Debug, Error)]
pub enum ModuleError {
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error("{path}: unreadable module")]
    Parse {
        path: PathBuf,
        #[source]
        source: object::read::Error,
    },
    #[error("{path}: a module without a .modinfo section")]
    NoModinfo { path: PathBuf },
    #[error("kernel module {name} (needed by {needed_by}) is neither in {dir} nor built in")]
    NotFound {
        name: String,
        needed_by: String,
        dir: PathBuf,
    },
}

/// Module file name to module name: the kernel treats `-` and `_` alike.
fn module_name(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?.strip_suffix(".ko")?;
    Some(name.replace('-', "_"))
}

fn index_dir(dir: &Path, index: &mut BTreeMap<String, PathBuf>) -> Result<(), ModuleError> {
    let entries = fs::read_dir(dir).map_err(at::<PathIo>(dir))?;
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() {
            index_dir(&path, index)?;
        } else if let Some(name) = module_name(&path) {
            index.insert(name, path);
        }
    }
    Ok(())
}

/// Names of modules compiled into the kernel, from `modules.builtin`.
fn builtin(modules_dir: &Path) -> BTreeSet<String> {
    fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| module_name(Path::new(l)))
        .collect()
}

/// The `depends=` list of one `.ko` file.
pub fn depends(ko: &Path) -> Result<Vec<String>, ModuleError> {
    let parse_err = |source| ModuleError::Parse {
        path: ko.to_path_buf(),
        source,
    };
    let data = fs::read(ko).map_err(at::<PathIo>(ko))?;
    let header = elf::FileHeader64::<Endianness>::parse(&*data).map_err(parse_err)?;
    let endian = header.endian().map_err(parse_err)?;
    let sections = header.sections(endian, &*data).map_err(parse_err)?;
    let Some((_, section)) = sections.section_by_name(endian, b".modinfo") else {
        return Err(ModuleError::NoModinfo {
            path: ko.to_path_buf(),
        });
    };
    let modinfo = section.data(endian, &*data).map_err(parse_err)?;
    Ok(parse_depends(modinfo))
}

fn parse_depends(modinfo: &[u8]) -> Vec<String> {
    modinfo
        .split(|b| *b == 0)
        .filter_map(|field| field.strip_prefix(b"depends="))
        .flat_map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every module that `roots` need, dependencies first. Roots built into
/// the kernel are skipped.
pub fn load_order(modules_dir: &Path, roots: &[&str]) -> Result<Vec<PathBuf>, ModuleError> {
    let mut index = BTreeMap::new();
    index_dir(&modules_dir.join("kernel"), &mut index)?;
    let builtin = builtin(modules_dir);
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    for root in roots {
        visit(
            root,
            "unibeam",
            &index,
            &builtin,
            &mut done,
            &mut order,
            modules_dir,
        )?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    needed_by: &str,
    index: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    done: &mut BTreeSet<String>,
    order: &mut Vec<PathBuf>,
    dir: &Path,
) -> Result<(), ModuleError> {
    let name = name.replace('-', "_");
    if builtin.contains(&name) || !done.insert(name.clone()) {
        return Ok(());
    }
    let path = index.get(&name).ok_or_else(|| ModuleError::NotFound {
        name: name.clone(),
        needed_by: needed_by.to_string(),
        dir: dir.to_path_buf(),
    })?;
    for dep in depends(path)? {
        visit(&dep, &name, index, builtin, done, order, dir)?;
    }
    order.push(path.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_field_is_split_and_normalised() {
        let info = b"license=GPL\0depends=virtio_ring,virtio,net-failover\0name=virtio_net\0";
        assert_eq!(parse_depends(info), ["virtio_ring", "virtio", "net_failover"]);
        assert!(parse_depends(b"depends=\0name=virtio\0").is_empty());
    }

    #[test]
    fn file_names_become_module_names() {
        assert_eq!(
            module_name(Path::new("a/virtio-rng.ko")).as_deref(),
            Some("virtio_rng")
        );
        assert_eq!(module_name(Path::new("a/README")), None);
    }

    #[test]
    fn missing_root_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("kernel")).unwrap();
        let err = load_order(dir.path(), &["virtio_net"]).unwrap_err();
        assert!(err.to_string().contains("virtio_net"));
        fs::write(
            dir.path().join("modules.builtin"),
            "kernel/drivers/net/virtio_net.ko\n",
        )
        .unwrap();
        assert!(load_order(dir.path(), &["virtio_net"]).unwrap().is_empty());
    }
}
