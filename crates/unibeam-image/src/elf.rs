//! Reads ELF dynamic sections and resolves shared-library dependencies the
//! way glibc's ld.so does, so the image carries exactly what the BEAM, its
//! port programs and its NIFs load at run time.

use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::{Endianness, FileKind};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::hostfs::{at, PathIo};

#[derive(Debug, Error)]
pub enum ElfError {
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error("{path}: not an ELF file")]
    NotElf { path: PathBuf },
    #[error("{path}: unreadable ELF file")]
    Parse {
        path: PathBuf,
        #[source]
        source: object::read::Error,
    },
    #[error("{path}: built for {machine}, but images are x86_64; rebuild it for x86_64")]
    ForeignArch { path: PathBuf, machine: String },
    #[error("{needed_by}: needs {library}, which is not installed on this host")]
    MissingLibrary { library: String, needed_by: PathBuf },
}

/// What the dynamic loader needs to know about one ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    pub machine: u16,
    pub is_64: bool,
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
}

impl ElfInfo {
    pub fn read(path: &Path) -> Result<ElfInfo, ElfError> {
        let data = fs::read(path).map_err(at::<PathIo>(path))?;
        ElfInfo::parse(&data, path)
    }

    /// Reads `data`, the contents of `path` (named in errors).
    pub fn parse(data: &[u8], path: &Path) -> Result<ElfInfo, ElfError> {
        let parsed = match FileKind::parse(data) {
            Ok(FileKind::Elf64) => parse::<elf::FileHeader64<Endianness>>(data),
            Ok(FileKind::Elf32) => parse::<elf::FileHeader32<Endianness>>(data),
            _ => {
                return Err(ElfError::NotElf {
                    path: path.to_path_buf(),
                })
            }
        };
        parsed.map_err(|source| ElfError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Refuses anything the x86_64 guest cannot execute.
    pub fn check_x86_64(&self, path: &Path) -> Result<(), ElfError> {
        if self.is_64 && self.machine == elf::EM_X86_64 {
            return Ok(());
        }
        let machine = match self.machine {
            elf::EM_AARCH64 => "aarch64".to_string(),
            elf::EM_ARM => "arm".to_string(),
            elf::EM_386 => "i386".to_string(),
            elf::EM_RISCV => "riscv".to_string(),
            elf::EM_X86_64 => "x86_64 with 32-bit ELF class".to_string(),
            other => format!("ELF machine {other}"),
        };
        Err(ElfError::ForeignArch {
            path: path.to_path_buf(),
            machine,
        })
    }
}

fn parse<H: FileHeader<Endian = Endianness>>(data: &[u8]) -> object::Result<ElfInfo> {
    let header = H::parse(data)?;
    let endian = header.endian()?;
    let mut info = ElfInfo {
        machine: header.e_machine(endian),
        is_64: header.is_class_64(),
        interpreter: None,
        needed: Vec::new(),
        rpath: Vec::new(),
        runpath: Vec::new(),
    };
    for ph in header.program_headers(endian, data)? {
        if let Some(bytes) = ph.interpreter(endian, data)? {
            info.interpreter = Some(String::from_utf8_lossy(bytes).into_owned());
        }
    }
    let sections = header.sections(endian, data)?;
    let Some((dyns, link)) = sections.dynamic(endian, data)? else {
        return Ok(info);
    };
    let strings = sections.strings(endian, data, link)?;
    for d in dyns {
        let Some(tag) = d.tag32(endian) else { continue };
        if !d.is_string(endian) {
            continue;
        }
        let value = String::from_utf8_lossy(d.string(endian, strings)?).into_owned();
        match tag {
            elf::DT_NEEDED => info.needed.push(value),
            elf::DT_RPATH => info.rpath.extend(split_path_list(&value)),
            elf::DT_RUNPATH => info.runpath.extend(split_path_list(&value)),
            _ => {}
        }
    }
    Ok(info)
}

fn split_path_list(value: &str) -> Vec<String> {
    value
        .split(':')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Expands `$ORIGIN` the way ld.so does: the directory of the object that
/// carries the RPATH/RUNPATH.
fn expand_origin(entry: &str, object: &Path) -> PathBuf {
    let origin = object.parent().unwrap_or(Path::new("/"));
    let origin = origin.to_string_lossy();
    PathBuf::from(entry.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin))
}

/// The library search path of the host's dynamic loader.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// Directories from /etc/ld.so.conf, standing in for ld.so.cache.
    pub conf_dirs: Vec<PathBuf>,
    /// ld.so's built-in trusted directories on Debian x86_64.
    pub default_dirs: Vec<PathBuf>,
}

impl Resolver {
    pub fn host() -> Resolver {
        let mut conf_dirs = Vec::new();
        read_ld_so_conf(Path::new("/etc/ld.so.conf"), &mut conf_dirs, 0);
        Resolver {
            conf_dirs,
            default_dirs: [
                "/lib/x86_64-linux-gnu",
                "/usr/lib/x86_64-linux-gnu",
                "/lib64",
                "/usr/lib64",
                "/lib",
                "/usr/lib",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
        }
    }

    /// Finds `name` for `requester`, in ld.so's order: RPATH (only when there
    /// is no RUNPATH), RUNPATH, the ld.so.conf directories, the defaults.
    /// LD_LIBRARY_PATH is left out on purpose: the host's environment must
    /// not change what goes into an image.
    pub fn find(&self, name: &str, requester: &ElfInfo, requester_path: &Path) -> Option<PathBuf> {
        if name.contains('/') {
            let path = PathBuf::from(name);
            return compatible(&path, requester).then_some(path);
        }
        let rpath = if requester.runpath.is_empty() {
            requester.rpath.as_slice()
        } else {
            &[]
        };
        let tagged = rpath
            .iter()
            .chain(requester.runpath.iter())
            .map(|entry| expand_origin(entry, requester_path));
        tagged
            .chain(self.conf_dirs.iter().cloned())
            .chain(self.default_dirs.iter().cloned())
            .map(|dir| dir.join(name))
            .find(|candidate| compatible(candidate, requester))
    }
}

/// ld.so skips candidates of another class or machine and keeps searching.
fn compatible(candidate: &Path, requester: &ElfInfo) -> bool {
    candidate.is_file()
        && ElfInfo::read(candidate)
            .map(|info| info.machine == requester.machine && info.is_64 == requester.is_64)
            .unwrap_or(false)
}

fn read_ld_so_conf(path: &Path, dirs: &mut Vec<PathBuf>, depth: u32) {
    let Ok(text) = fs::read_to_string(path) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include") {
            if depth < 8 {
                for file in expand_simple_glob(pattern.trim()) {
                    read_ld_so_conf(&file, dirs, depth + 1);
                }
            }
        } else if line.starts_with('/') && !dirs.iter().any(|d| d == Path::new(line)) {
            dirs.push(PathBuf::from(line));
        }
    }
}

/// ld.so.conf only ever uses `dir/*.conf`-style patterns, so a full glob
/// crate would be more than this needs.
fn expand_simple_glob(pattern: &str) -> Vec<PathBuf> {
    let path = Path::new(pattern);
    let (Some(dir), Some(file)) = (path.parent(), path.file_name().and_then(|f| f.to_str())) else {
        return Vec::new();
    };
    let Some((prefix, suffix)) = file.split_once('*') else {
        return vec![path.to_path_buf()];
    };
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// The shared-library closure of a set of ELF files.
#[derive(Debug, Default, Clone)]
pub struct Closure {
    /// Program interpreters named by PT_INTERP, as absolute paths.
    pub interpreters: BTreeSet<String>,
    /// Each library by the name it was asked for, with the host file found.
    pub libraries: BTreeMap<String, PathBuf>,
}

/// Walks DT_NEEDED from every root, breadth first, until nothing new appears.
pub fn closure(roots: &[PathBuf], resolver: &Resolver) -> Result<Closure, ElfError> {
    let mut result = Closure::default();
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    let mut queue: VecDeque<PathBuf> = roots.iter().cloned().collect();
    while let Some(path) = queue.pop_front() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let info = ElfInfo::read(&path)?;
        info.check_x86_64(&path)?;
        if let Some(interp) = &info.interpreter {
            result.interpreters.insert(interp.clone());
        }
        for name in &info.needed {
            let found = resolver
                .find(name, &info, &path)
                .ok_or_else(|| ElfError::MissingLibrary {
                    library: name.clone(),
                    needed_by: path.clone(),
                })?;
            result.libraries.entry(name.clone()).or_insert(found.clone());
            queue.push_back(found);
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_exe() -> PathBuf {
        std::env::current_exe().unwrap()
    }

    #[test]
    fn reads_the_test_binary_itself() {
        let info = ElfInfo::read(&self_exe()).unwrap();
        assert!(info.is_64);
        assert_eq!(info.machine, elf::EM_X86_64);
        assert!(info.needed.iter().any(|n| n.starts_with("libc.so")));
        assert!(info.interpreter.unwrap().contains("ld-linux"));
    }

    #[test]
    fn closure_of_the_test_binary_holds_libc() {
        let closure = closure(&[self_exe()], &Resolver::host()).unwrap();
        let libc = &closure.libraries["libc.so.6"];
        assert!(libc.is_file());
        assert!(closure.interpreters.contains("/lib64/ld-linux-x86-64.so.2"));
        // libc itself needs the loader, so the walk went past the first level.
        assert!(closure.libraries.contains_key("ld-linux-x86-64.so.2"));
    }

    #[test]
    fn origin_expands_to_the_object_dir() {
        let obj = Path::new("/rel/erts/bin/beam.smp");
        assert_eq!(
            expand_origin("$ORIGIN/../lib", obj),
            Path::new("/rel/erts/bin/../lib")
        );
        assert_eq!(expand_origin("${ORIGIN}/x", obj), Path::new("/rel/erts/bin/x"));
    }

    #[test]
    fn runpath_hides_rpath_and_is_searched_first() {
        let dir = tempfile::tempdir().unwrap();
        let libc = Resolver::host()
            .find("libc.so.6", &ElfInfo::read(&self_exe()).unwrap(), &self_exe())
            .unwrap();
        std::fs::create_dir(dir.path().join("lib")).unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::copy(&libc, dir.path().join("lib/libc.so.6")).unwrap();
        let requester_path = dir.path().join("bin/app");
        let mut info = ElfInfo::read(&self_exe()).unwrap();
        info.runpath = vec!["$ORIGIN/../lib".into()];
        let found = Resolver::host()
            .find("libc.so.6", &info, &requester_path)
            .unwrap();
        assert_eq!(found, dir.path().join("bin/../lib/libc.so.6"));
        info.rpath = info.runpath.clone();
        info.runpath = vec!["/nonexistent".into()];
        let found = Resolver::host()
            .find("libc.so.6", &info, &requester_path)
            .unwrap();
        assert_ne!(
            found,
            dir.path().join("bin/../lib/libc.so.6"),
            "RPATH is ignored when RUNPATH is set"
        );
    }

    #[test]
    fn missing_library_names_the_needer() {
        let mut info = ElfInfo::read(&self_exe()).unwrap();
        info.needed = vec!["libunibeam-nope.so.9".into()];
        assert!(Resolver::host()
            .find("libunibeam-nope.so.9", &info, &self_exe())
            .is_none());
    }

    #[test]
    fn non_elf_is_a_parse_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("text");
        std::fs::write(&f, "hello").unwrap();
        assert!(matches!(ElfInfo::read(&f), Err(ElfError::NotElf { .. })));
    }

    #[test]
    fn foreign_machine_is_refused() {
        let mut info = ElfInfo::read(&self_exe()).unwrap();
        info.machine = elf::EM_AARCH64;
        let err = info.check_x86_64(Path::new("/x/nif.so")).unwrap_err();
        assert!(err.to_string().contains("aarch64"));
    }

    #[test]
    fn simple_glob_lists_matching_files_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.conf", "a.conf", "c.txt"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let found = expand_simple_glob(&format!("{}/*.conf", dir.path().display()));
        let names: Vec<_> = found.iter().map(|p| p.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, ["a.conf", "b.conf"]);
    }
}
