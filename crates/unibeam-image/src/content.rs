//! Reads a release into the image tree: only what runs, symlinks checked,
//! `.beam` files stripped.

use crate::beam::{self, BeamError};
use crate::initramfs::{Node, Tree};
use crate::strip;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use thiserror::Error;
use unibeam_spec::safepath::{self, UnsafePath};

/// The largest file an image may hold. The guest keeps every file in RAM
/// (ramfs), and the build reads each one whole: a bigger file (a 2 GiB
/// sparse file in priv/, say) is a mistake, refused before it is read.
pub const MAX_FILE_BYTES: u64 = 512 << 20;

#[derive(Debug, Error)]
pub enum ContentError {
    #[error("{path}: broken symlink (its target {target} does not exist)")]
    BrokenSymlink { path: PathBuf, target: PathBuf },
    #[error("{path}: symlink loop (through {target}); links must end at a file or directory")]
    SymlinkLoop { path: PathBuf, target: PathBuf },
    #[error("{path}: symlink points outside the release (to {target}); refused, not followed")]
    SymlinkEscapes { path: PathBuf, target: PathBuf },
    #[error("{path}: cannot read")]
    Unreadable {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("{path}: unusable BEAM file")]
    Beam {
        path: PathBuf,
        #[source]
        cause: BeamError,
    },
    #[error("{path:?}: {problem}; rename it")]
    UnsafeName { path: PathBuf, problem: UnsafePath },
    #[error("{}: {bytes} bytes, over the {} MiB a file in an image may have (the guest holds every file in RAM); leave it out of the release", path.display(), MAX_FILE_BYTES >> 20)]
    TooBig { path: PathBuf, bytes: u64 },
}

/// Directories inside `lib/<app>/` that nothing loads at run time.
const DEV_ONLY_APP_DIRS: &[&str] = &["doc", "src", "include", "examples", "man", "c_src", "emacs"];
/// Directories inside `erts-<vsn>/` besides `bin/`, likewise.
const DEV_ONLY_ERTS_DIRS: &[&str] = &["doc", "include", "lib", "man", "src"];
/// The only ERTS programs a running node uses: erlexec starts beam.smp,
/// which spawns erl_child_setup, and inet_gethost is the native resolver.
/// Everything else (erlc, dialyzer, typer, ct_run, escript, epmd, the
/// shell-script wrappers) is a development tool or needs /bin/sh.
const RUNTIME_ERTS_BINARIES: &[&str] = &["erlexec", "beam.smp", "erl_child_setup", "inet_gethost"];

/// OTP's and Elixir's own applications. Their `.beam` files lose their
/// line-number chunks (see [`beam::Keep`]); the release's code and its
/// third-party dependencies keep theirs, so its stack traces still name
/// the line that failed.
pub(crate) const PLATFORM_APPS: &[&str] = &[
    "asn1",
    "common_test",
    "compiler",
    "crypto",
    "debugger",
    "dialyzer",
    "diameter",
    "edoc",
    "eldap",
    "erl_docgen",
    "erl_interface",
    "erts",
    "et",
    "eunit",
    "ftp",
    "inets",
    "jinterface",
    "kernel",
    "megaco",
    "mnesia",
    "observer",
    "odbc",
    "os_mon",
    "parsetools",
    "public_key",
    "reltool",
    "runtime_tools",
    "sasl",
    "snmp",
    "ssh",
    "ssl",
    "stdlib",
    "syntax_tools",
    "tftp",
    "tools",
    "wx",
    "xmerl",
    "elixir",
    "eex",
    "ex_unit",
    "iex",
    "logger",
    "mix",
];

#[derive(Debug, Clone, Copy)]
pub struct ContentOptions {
    pub keep_debug: bool,
}

fn parts(rel: &Path) -> Vec<&str> {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect()
}

/// What stripping keeps of a `.beam` file, by the application it is in.
fn keep_for(rel: &Path) -> beam::Keep {
    let platform = match parts(rel).as_slice() {
        ["lib", app_vsn, ..] => {
            let app = app_vsn.rsplit_once('-').map_or(*app_vsn, |(name, _)| name);
            PLATFORM_APPS.contains(&app)
        }
        _ => false,
    };
    beam::Keep { lines: !platform }
}

/// Whether a path relative to the release root belongs in the image.
fn wanted(rel: &Path) -> bool {
    match parts(rel).as_slice() {
        // relx and mix start scripts: they need /bin/sh, init replaces them.
        ["bin", ..] => false,
        // `rebar3 tar` leaves its tarball inside the release directory.
        [file] if file.ends_with(".tar.gz") => false,
        ["lib", _, dir, ..] => !DEV_ONLY_APP_DIRS.contains(dir),
        [erts, "bin", program, ..] if erts.starts_with("erts-") => RUNTIME_ERTS_BINARIES.contains(program),
        [erts, dir, ..] if erts.starts_with("erts-") => !DEV_ONLY_ERTS_DIRS.contains(dir),
        ["releases", _, file] => !file.ends_with(".script"),
        _ => true,
    }
}

/// Adds `host_root` under `guest_root`. `host_root` is a release, or a
/// part of one taken from elsewhere (the host's ERTS): `in_release` is where
/// it sits in the release layout (`""`, or `erts-<vsn>`), which decides what
/// is kept. Returns the host paths of the ELF files added.
pub fn add_tree(
    tree: &mut Tree,
    host_root: &Path,
    in_release: &str,
    guest_root: &str,
    opts: ContentOptions,
) -> Result<Vec<PathBuf>, ContentError> {
    let canonical_root = fs::canonicalize(host_root).map_err(|cause| ContentError::Unreadable {
        path: host_root.to_path_buf(),
        cause,
    })?;
    let mut walker = Walker {
        tree,
        root: host_root,
        in_release: Path::new(in_release),
        canonical_root,
        guest_root,
        opts,
        elves: Vec::new(),
    };
    walker.walk(host_root)?;
    Ok(walker.elves)
}

struct Walker<'a> {
    tree: &'a mut Tree,
    root: &'a Path,
    in_release: &'a Path,
    canonical_root: PathBuf,
    guest_root: &'a str,
    opts: ContentOptions,
    elves: Vec<PathBuf>,
}

impl Walker<'_> {
    fn walk(&mut self, dir: &Path) -> Result<(), ContentError> {
        let unreadable = |cause| ContentError::Unreadable {
            path: dir.to_path_buf(),
            cause,
        };
        let mut entries: Vec<_> = fs::read_dir(dir)
            .map_err(unreadable)?
            .collect::<Result<_, _>>()
            .map_err(unreadable)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let rel = path
                .strip_prefix(self.root)
                .expect("walk stays under root")
                .to_path_buf();
            if wanted(&self.in_release.join(&rel)) {
                self.add(&path, &rel)?;
            }
        }
        Ok(())
    }

    /// Where `rel` goes in the guest, its name kept byte for byte: a
    /// name that is not UTF-8 is refused, never mangled into another.
    fn guest(&self, path: &Path, rel: &Path) -> Result<String, ContentError> {
        let rel = safepath::relative(rel).map_err(|problem| ContentError::UnsafeName {
            path: path.to_path_buf(),
            problem,
        })?;
        Ok(format!("{}/{rel}", self.guest_root.trim_end_matches('/')))
    }

    fn add(&mut self, path: &Path, rel: &Path) -> Result<(), ContentError> {
        let meta = fs::symlink_metadata(path).map_err(|cause| ContentError::Unreadable {
            path: path.to_path_buf(),
            cause,
        })?;
        let guest = self.guest(path, rel)?;
        if meta.file_type().is_symlink() {
            let target = self.check_symlink(path)?;
            self.tree.insert(&guest, Node::Symlink(target));
        } else if meta.is_dir() {
            self.tree.insert(&guest, Node::Dir);
            self.walk(path)?;
        } else if meta.is_file() {
            if meta.len() > MAX_FILE_BYTES {
                return Err(ContentError::TooBig {
                    path: path.to_path_buf(),
                    bytes: meta.len(),
                });
            }
            let data = fs::read(path).map_err(|cause| ContentError::Unreadable {
                path: path.to_path_buf(),
                cause,
            })?;
            let executable = meta.permissions().mode() & 0o111 != 0;
            let data = self.transform(path, &self.in_release.join(rel), data)?;
            self.tree.insert(&guest, Node::Bytes { data, executable });
        }
        Ok(())
    }

    /// `rel` is where `path` sits in the release layout.
    fn transform(&mut self, path: &Path, rel: &Path, data: Vec<u8>) -> Result<Vec<u8>, ContentError> {
        if data.starts_with(b"\x7fELF") {
            self.elves.push(path.to_path_buf());
            return Ok(strip::strip_symbols(&data).unwrap_or(data));
        }
        if path.extension().is_some_and(|e| e == "beam") {
            let beam_err = |cause| ContentError::Beam {
                path: path.to_path_buf(),
                cause,
            };
            let plain = beam::decompress(&data).map_err(beam_err)?;
            if self.opts.keep_debug {
                return Ok(plain);
            }
            return beam::strip(&plain, keep_for(rel)).map_err(beam_err);
        }
        Ok(data)
    }

    /// A symlink is kept as a symlink, but only if it resolves inside the
    /// release: the image must not depend on, or leak, host files.
    fn check_symlink(&self, path: &Path) -> Result<String, ContentError> {
        let target = fs::read_link(path).map_err(|cause| ContentError::Unreadable {
            path: path.to_path_buf(),
            cause,
        })?;
        let resolved = path.parent().unwrap_or(self.root).join(&target);
        // Decide on the lexical path first, so an escaping link is refused
        // without ever touching what it points at.
        if !lexically_inside(&resolved, self.root) {
            return Err(ContentError::SymlinkEscapes {
                path: path.to_path_buf(),
                target,
            });
        }
        let real = fs::canonicalize(&resolved).map_err(|e| match e.raw_os_error() {
            Some(code) if code == nix::errno::Errno::ELOOP as i32 => ContentError::SymlinkLoop {
                path: path.to_path_buf(),
                target: target.clone(),
            },
            _ => ContentError::BrokenSymlink {
                path: path.to_path_buf(),
                target: target.clone(),
            },
        })?;
        if !real.starts_with(&self.canonical_root) {
            return Err(ContentError::SymlinkEscapes {
                path: path.to_path_buf(),
                target,
            });
        }
        match target.into_os_string().into_string() {
            Ok(target) => Ok(target),
            Err(_) => Err(ContentError::UnsafeName {
                path: path.to_path_buf(),
                problem: UnsafePath::NotUtf8,
            }),
        }
    }
}

/// `a/b/../c` is inside `a`; `a/../../x` is not. No filesystem access.
fn lexically_inside(path: &Path, root: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(root) else {
        return false;
    };
    let mut depth: i32 = 0;
    for c in rel.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn drops_what_never_runs() {
        for dropped in [
            "bin/hello",
            "lib/stdlib-4.2/src/lists.erl",
            "lib/stdlib-4.2/doc/x.html",
            "lib/kernel-8.5/include/file.hrl",
            "erts-13.1.5/bin/erlc",
            "erts-13.1.5/bin/epmd",
            "erts-13.1.5/bin/dialyzer",
            "erts-13.1.5/include/erl_nif.h",
            "erts-13.1.5/lib/liberts.a",
            "releases/0.1.0/start.script",
            "hello-0.1.0.tar.gz",
        ] {
            assert!(!wanted(Path::new(dropped)), "{dropped} should be dropped");
        }
        for kept in [
            "lib/stdlib-4.2/ebin/lists.beam",
            "lib/crypto-5.1/priv/lib/crypto.so",
            "erts-13.1.5/bin/beam.smp",
            "erts-13.1.5/bin/erl_child_setup",
            "releases/0.1.0/start.boot",
            "releases/start_erl.data",
        ] {
            assert!(wanted(Path::new(kept)), "{kept} should be kept");
        }
    }

    #[test]
    fn only_platform_apps_lose_line_numbers() {
        for (rel, lines) in [
            ("lib/stdlib-4.2/ebin/lists.beam", false),
            ("lib/elixir-1.14.0/ebin/Elixir.Enum.beam", false),
            ("lib/hello-0.1.0/ebin/hello_app.beam", true),
            ("lib/cowboy-2.10.0/ebin/cowboy.beam", true),
            ("lib/stdlib_ext-1.0/ebin/x.beam", true),
        ] {
            assert_eq!(keep_for(Path::new(rel)), beam::Keep { lines }, "{rel}");
        }
    }

    #[test]
    fn stack_trace_lines_stay_in_the_release_own_code() {
        // FOR1, size, BEAM, then one 4-byte Line chunk.
        let beam = [
            &b"FOR1"[..],
            &16u32.to_be_bytes(),
            b"BEAM",
            b"Line",
            &4u32.to_be_bytes(),
            b"1234",
        ]
        .concat();
        let dir = tempfile::tempdir().unwrap();
        for app in ["stdlib-4.2", "hello-0.1.0"] {
            fs::create_dir_all(dir.path().join(format!("lib/{app}/ebin"))).unwrap();
            fs::write(dir.path().join(format!("lib/{app}/ebin/m.beam")), &beam).unwrap();
        }
        let tree = add(dir.path()).unwrap();
        let has_lines = |app: &str| match tree.get(&format!("/release/lib/{app}/ebin/m.beam")) {
            Some(Node::Bytes { data, .. }) => data.windows(4).any(|w| w == b"Line"),
            other => panic!("{app}: {other:?}"),
        };
        assert!(has_lines("hello-0.1.0"));
        assert!(!has_lines("stdlib-4.2"));
    }

    #[test]
    fn lexical_containment() {
        let root = Path::new("/r");
        assert!(lexically_inside(Path::new("/r/lib/../x"), root));
        assert!(!lexically_inside(Path::new("/r/lib/../../etc/passwd"), root));
        assert!(!lexically_inside(Path::new("/etc/passwd"), root));
    }

    fn release_with(link: &str, target: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("lib/a-1/ebin")).unwrap();
        fs::write(dir.path().join("lib/a-1/ebin/a.app"), "{application, a, []}.").unwrap();
        symlink(target, dir.path().join(link)).unwrap();
        dir
    }

    fn add(dir: &Path) -> Result<Tree, ContentError> {
        let mut tree = Tree::new();
        add_tree(
            &mut tree,
            dir,
            "",
            "/release",
            ContentOptions { keep_debug: false },
        )
        .map(|_| tree)
    }

    #[test]
    fn symlinks_inside_are_kept() {
        let dir = release_with("lib/a", "a-1");
        let tree = add(dir.path()).unwrap();
        assert_eq!(tree.get("/release/lib/a"), Some(&Node::Symlink("a-1".into())));
    }

    #[test]
    fn names_that_are_not_utf8_are_refused_not_mangled() {
        use std::os::unix::ffi::OsStrExt;
        let dir = release_with("lib/a", "a-1");
        let priv_dir = dir.path().join("lib/a-1/priv");
        fs::create_dir_all(&priv_dir).unwrap();
        let names: [&[u8]; 2] = [b"caf\xe9", b"caf\xe8"];
        for name in names {
            fs::write(priv_dir.join(std::ffi::OsStr::from_bytes(name)), "x").unwrap();
        }
        match add(dir.path()) {
            Err(e @ ContentError::UnsafeName { .. }) => {
                assert!(e.to_string().to_lowercase().contains("caf\\xe8"), "{e}");
                assert!(e.to_string().contains("not UTF-8"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn files_over_the_limit_are_refused_before_they_are_read() {
        let dir = release_with("lib/a", "a-1");
        let big = dir.path().join("lib/a-1/priv.img");
        let file = fs::File::create(&big).unwrap();
        file.set_len(MAX_FILE_BYTES + 1).unwrap(); // sparse: costs no disk
        match add(dir.path()) {
            Err(e @ ContentError::TooBig { .. }) => assert!(e.to_string().contains("priv.img"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn broken_and_escaping_symlinks_are_refused() {
        let dir = release_with("lib/broken", "nowhere");
        assert!(matches!(add(dir.path()), Err(ContentError::BrokenSymlink { .. })));
        let dir = release_with("lib/escape", "/etc/passwd");
        assert!(matches!(
            add(dir.path()),
            Err(ContentError::SymlinkEscapes { .. })
        ));
        let dir = release_with("lib/sneaky", "../../../../../../etc");
        assert!(matches!(
            add(dir.path()),
            Err(ContentError::SymlinkEscapes { .. })
        ));
    }
}
