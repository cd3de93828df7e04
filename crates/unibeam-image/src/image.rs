//! Builds an image directory: `vmlinuz`, `initramfs.img` (layers back to
//! back) and `image.json`.

use crate::content::{self, ContentError, ContentOptions};
use crate::elf::{self, ElfError, Resolver};
use crate::initramfs::{Node, Tree};
use crate::kernel::{self, KernelError};
use crate::kimage::Kernel;
use crate::layers::{self, Compression, LayerError, LayerName};
use crate::manifest::{
    ImageManifest, InitramfsInfo, KernelInfo, ManifestError, ReleaseInfo, ShellInfo, FORMAT, MANIFEST_FILE,
};
use crate::modules::{self, ModuleError};
use crate::release::{Release, ReleaseError};
use crate::shell::{self, ShellError, ShellMode};
use crate::strip;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::hostfs::{at, PathIo};
use unibeam_spec::{BootSpec, CodeLoading, InstanceSpec, NetworkSpec, ReleaseSpec};

pub const KERNEL_FILE: &str = "vmlinuz";
pub const INITRAMFS_FILE: &str = "initramfs.img";
/// Where the release lives in the guest.
pub const GUEST_RELEASE_ROOT: &str = "/release";
/// Where system libraries go in the guest: a default ld.so directory, so
/// the guest needs no ld.so.cache.
const GUEST_LIB_DIR: &str = "/lib/x86_64-linux-gnu";
const GUEST_MODULE_DIR: &str = "/lib/modules";
/// Where Debian-style Erlang installs keep `erts-<vsn>/`.
const HOST_ERLANG_ROOTS: &[&str] = &["/usr/lib/erlang", "/usr/local/lib/erlang"];
/// Mount points init needs; they go into the base layer.
const MOUNT_POINTS: &[&str] = &["/proc", "/sys", "/dev", "/tmp", "/etc", "/run"];
/// Debian's dash: the POSIX shell images get when the release shells out.
const HOST_DASH: &str = "/usr/bin/dash";

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Module(#[from] ModuleError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Shell(#[from] ShellError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("{0}: not found, and the release needs a shell ({1}); install it with `apt-get install dash`")]
    NoDash(PathBuf, String),
    #[error("--with-program {0}: no such program in /usr/bin or /bin on this host (a name, not a path or a shell builtin)")]
    NoSuchProgram(String),
    #[error("{0}: unibeam-init not found; build it with `make build` (or `cargo build --profile guest -p unibeam-init`) or set UNIBEAM_INIT")]
    InitMissing(PathBuf),
    #[error(
        "{path}: {why}; unibeam replaces only an image it made: choose another -o, or move it away yourself"
    )]
    OutputOccupied { path: PathBuf, why: String },
    #[error("{path}: the release has no ERTS; rebuild it with {{include_erts, true}} (mix: include_erts: true), or pass --erts-from-host to take ERTS {version} from this host")]
    NoErts { path: PathBuf, version: String },
    #[error("--erts-from-host: this host has no erts-{version} (looked in {looked}); install the Erlang/OTP that built the release")]
    NoHostErts { version: String, looked: String },
    #[error(transparent)]
    Io(#[from] PathIo),
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub release_dir: PathBuf,
    /// Another of the release's versions than start_erl.data's.
    pub release_version: Option<String>,
    pub output: PathBuf,
    /// The guest PID 1 binary to install as `/init`.
    pub init_binary: PathBuf,
    /// unibeam's cache, e.g. `~/.cache/unibeam`.
    pub cache_dir: PathBuf,
    pub compression: Compression,
    /// Keep `.beam` debug chunks (Dbgi, Docs, ...).
    pub keep_debug: bool,
    /// Take ERTS from this host when the release has none.
    pub erts_from_host: bool,
    /// Reuse compressed layers from the cache.
    pub use_cache: bool,
    pub kernel: kernel::KernelChoice,
    /// Interactive loads modules on first call: less work at boot.
    pub code_loading: CodeLoading,
    /// Whether the image gets `/bin/sh` (dash) and the programs it runs.
    pub shell: ShellMode,
    /// Host programs to add whatever the scan finds (`--with-program`).
    pub with_programs: Vec<String>,
}

/// Builds the image and returns its manifest. Nothing appears at
/// `opts.output` unless the whole build succeeded.
pub fn build_image(opts: &BuildOptions, progress: &dyn Fn(&str)) -> Result<ImageManifest, BuildError> {
    progress("reading release");
    let release = Release::open_version(&opts.release_dir, opts.release_version.as_deref())?;
    if !opts.init_binary.is_file() {
        return Err(BuildError::InitMissing(opts.init_binary.clone()));
    }
    let mut tree = Tree::new();
    let content_opts = ContentOptions {
        keep_debug: opts.keep_debug,
    };
    let mut elf_roots = content::add_tree(&mut tree, &release.root, "", GUEST_RELEASE_ROOT, content_opts)?;
    if !release.has_erts {
        let host_erts = host_erts(&release, opts.erts_from_host)?;
        let guest = format!("{GUEST_RELEASE_ROOT}/{}", release.erts_dir_name());
        elf_roots.extend(content::add_tree(
            &mut tree,
            &host_erts,
            &release.erts_dir_name(),
            &guest,
            content_opts,
        )?);
    }
    elf_roots.push(opts.init_binary.clone());
    progress("looking for shell use");
    let (shell_info, mut warnings) = add_shell(&mut tree, &release, opts, &mut elf_roots)?;
    warnings.splice(0..0, release.warnings.iter().cloned());
    progress("resolving shared libraries");
    add_library_closure(&mut tree, &elf_roots, &release.root)?;
    tree.insert("/init", stripped_elf(&opts.init_binary)?);
    tree.insert("/dev/console", Node::CharDevice { major: 5, minor: 1 });

    let kernel = kernel::resolve(&opts.kernel, &opts.cache_dir, progress)?;
    let module_paths = add_modules(&mut tree, &kernel)?;
    let mut spec = boot_spec(&release, module_paths, opts.code_loading);
    spec.release.start_files = release.start_files(GUEST_RELEASE_ROOT)?;

    let staging = staging_dir(&opts.output)?;
    let written = write_image(&staging, tree, &kernel, &release, spec, opts, progress).and_then(|mut m| {
        m.shell = shell_info;
        m.warnings = warnings;
        write_manifest(&staging, &m)?;
        Ok(m)
    });
    match written {
        Ok(manifest) => {
            replace_dir(&staging, &opts.output)?;
            Ok(manifest)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// Adds dash as `/usr/bin/sh`, `/bin -> usr/bin` (Debian's usrmerge, so
/// `/bin/sh` and `/bin/df` resolve) and the programs the release runs,
/// when `mode` and the release call for them; their ELF files join
/// `elf_roots`. Returns what the manifest records and the warnings.
fn add_shell(
    tree: &mut Tree,
    release: &Release,
    opts: &BuildOptions,
    elf_roots: &mut Vec<PathBuf>,
) -> Result<(ShellInfo, Vec<String>), BuildError> {
    let mode = opts.shell;
    let host = shell::Host::system();
    let mut need = shell::scan(&release.root, &host)?;
    for name in &opts.with_programs {
        if host.program(name).is_none() {
            return Err(BuildError::NoSuchProgram(name.clone()));
        }
        need.reasons.push(format!("--with-program {name}"));
        need.failures.push(format!("--with-program {name} is left out"));
        need.programs.insert(name.clone());
    }
    let with_shell = mode == ShellMode::Always || (mode == ShellMode::Auto && need.needed());
    let mut warnings = Vec::new();
    if mode == ShellMode::Never {
        warnings.extend(need.never_warning());
    }
    if with_shell {
        let dash = Path::new(HOST_DASH);
        if !dash.is_file() {
            return Err(BuildError::NoDash(dash.to_path_buf(), need.reasons.join("; ")));
        }
        tree.insert("/usr/bin/dash", stripped_elf(dash)?);
        tree.insert("/usr/bin/sh", Node::Symlink("dash".into()));
        elf_roots.push(dash.to_path_buf());
    }
    // System.cmd needs its programs even without a shell; `never` adds nothing.
    let mut programs = Vec::new();
    for name in need.programs.iter().filter(|_| mode != ShellMode::Never) {
        let Some((name, host_path)) = host.program(name) else {
            warnings.push(format!(
                "{name}: not found on this host, so not in the image; the release runs it"
            ));
            continue;
        };
        let node = match fs::read(&host_path)
            .map_err(at::<PathIo>(&host_path))?
            .starts_with(b"\x7fELF")
        {
            true => {
                elf_roots.push(host_path.clone());
                stripped_elf(&host_path)?
            }
            false => Node::HostFile {
                source: host_path,
                executable: true,
            },
        };
        tree.insert(&format!("/usr/bin/{name}"), node);
        programs.push(name);
    }
    if with_shell || !programs.is_empty() {
        tree.insert("/bin", Node::Symlink("usr/bin".into()));
    }
    let info = ShellInfo {
        mode,
        included: with_shell,
        reasons: need.reasons,
        programs,
    };
    Ok((info, warnings))
}

/// Puts the kernel's guest modules into the tree, in load order; a kernel
/// with everything built in needs none.
fn add_modules(tree: &mut Tree, kernel: &Kernel) -> Result<Vec<String>, BuildError> {
    let Some(modules_dir) = &kernel.modules_dir else {
        return Ok(Vec::new());
    };
    let mut module_paths = Vec::new();
    for ko in modules::load_order(modules_dir, modules::GUEST_MODULES)? {
        let name = ko.file_name().unwrap_or_default().to_string_lossy();
        let guest = format!("{GUEST_MODULE_DIR}/{name}");
        tree.insert(
            &guest,
            Node::HostFile {
                source: ko.clone(),
                executable: false,
            },
        );
        module_paths.push(guest);
    }
    Ok(module_paths)
}

fn host_erts(release: &Release, allowed: bool) -> Result<PathBuf, BuildError> {
    if !allowed {
        return Err(BuildError::NoErts {
            path: release.root.clone(),
            version: release.erts_version.clone(),
        });
    }
    HOST_ERLANG_ROOTS
        .iter()
        .map(|root| Path::new(root).join(release.erts_dir_name()))
        .find(|dir| dir.join("bin/erlexec").is_file())
        .ok_or_else(|| BuildError::NoHostErts {
            version: release.erts_version.clone(),
            looked: HOST_ERLANG_ROOTS.join(", "),
        })
}

/// An ELF file from the host without its static symbols and debug info.
fn stripped_elf(path: &Path) -> Result<Node, BuildError> {
    let data = fs::read(path).map_err(at::<PathIo>(path))?;
    let data = strip::strip_symbols(&data).unwrap_or(data);
    Ok(Node::Bytes {
        data,
        executable: true,
    })
}

/// Adds every shared library the ELF files need, plus the loader. Libraries
/// that already live inside the release are left where they are.
fn add_library_closure(tree: &mut Tree, roots: &[PathBuf], release_root: &Path) -> Result<(), BuildError> {
    let closure = elf::closure(roots, &Resolver::host())?;
    let release_root = fs::canonicalize(release_root).map_err(at::<PathIo>(release_root))?;
    let mut placed: Vec<(PathBuf, String)> = Vec::new();
    for (name, host_path) in &closure.libraries {
        let real = fs::canonicalize(host_path).map_err(at::<PathIo>(host_path))?;
        if real.starts_with(&release_root) {
            continue;
        }
        let guest = format!("{GUEST_LIB_DIR}/{name}");
        tree.insert(&guest, stripped_elf(&real)?);
        placed.push((real, guest));
    }
    for interp in &closure.interpreters {
        let real = fs::canonicalize(interp).map_err(at::<PathIo>(Path::new(interp)))?;
        match placed.iter().find(|(r, _)| *r == real) {
            Some((_, guest)) if guest != interp => tree.insert(interp, Node::Symlink(guest.clone())),
            Some(_) => {}
            None => tree.insert(
                interp,
                Node::HostFile {
                    source: real,
                    executable: true,
                },
            ),
        }
    }
    Ok(())
}

fn boot_spec(release: &Release, modules: Vec<String>, code_loading: CodeLoading) -> BootSpec {
    BootSpec {
        hostname: release.name.clone(),
        modules,
        network: NetworkSpec::qemu_user(),
        release: ReleaseSpec {
            root: GUEST_RELEASE_ROOT.into(),
            name: release.name.clone(),
            version: release.version.clone(),
            erts_version: release.erts_version.clone(),
            boot_script: release.boot_script.clone(),
            has_sys_config: release.has_sys_config,
            has_vm_args: release.has_vm_args,
            sys_config_source: release.sys_config_source,
            vm_args_source: release.vm_args_source,
            env_sh: release.env_sh,
            start_files: Vec::new(),
            code_loading,
            flavor: release.flavor,
        },
        instance: InstanceSpec::default(),
        launch: None,
    }
}

/// Splits the tree into layers by path. Each layer carries the parent
/// directories of what it holds, since the kernel creates none itself.
fn split_layers(tree: Tree, release: &Release) -> BTreeMap<LayerName, Tree> {
    let mut layers: BTreeMap<LayerName, Tree> = LayerName::ALL.iter().map(|l| (*l, Tree::new())).collect();
    for (path, node) in tree.into_nodes() {
        if node == Node::Dir {
            continue;
        }
        let layer = LayerName::of(&path, GUEST_RELEASE_ROOT, &release.name);
        layers
            .get_mut(&layer)
            .expect("every layer exists")
            .insert(&path, node);
    }
    let base = layers.get_mut(&LayerName::Base).expect("base exists");
    for dir in MOUNT_POINTS {
        base.insert(dir, Node::Dir);
    }
    layers
}

fn write_image(
    dir: &Path,
    tree: Tree,
    kernel: &Kernel,
    release: &Release,
    boot: BootSpec,
    opts: &BuildOptions,
    progress: &dyn Fn(&str),
) -> Result<ImageManifest, BuildError> {
    let layer_trees = split_layers(tree, release);
    let initramfs_path = dir.join(INITRAMFS_FILE);
    let mut initramfs = fs::File::create(&initramfs_path).map_err(at::<PathIo>(&initramfs_path))?;
    let cache = opts.cache_dir.join("layers");
    let (layers, files) = layers::write_layers(
        &layer_trees,
        opts.compression,
        &cache,
        opts.use_cache,
        &mut initramfs,
        &initramfs_path,
        progress,
    )?;
    drop(initramfs);
    let kernel_path = dir.join(KERNEL_FILE);
    let kernel_bytes = fs::copy(&kernel.image, &kernel_path).map_err(at::<PathIo>(&kernel.image))?;
    let manifest = ImageManifest {
        format: FORMAT,
        created_by: format!("unibeam {}", env!("CARGO_PKG_VERSION")),
        release: ReleaseInfo {
            name: release.name.clone(),
            version: release.version.clone(),
        },
        erts_version: release.erts_version.clone(),
        kernel: KernelInfo {
            origin: kernel.origin.clone(),
            release: kernel.release.clone(),
            file: KERNEL_FILE.into(),
            bytes: kernel_bytes,
            sha256: Some(crate::manifest::file_sha256(&kernel_path).map_err(at::<PathIo>(&kernel_path))?),
            acpi: kernel.acpi,
            apic_bus_khz: kernel.apic_bus_khz,
        },
        initramfs: InitramfsInfo {
            file: INITRAMFS_FILE.into(),
            compression: opts.compression.label(),
            bytes: layers.iter().map(|l| l.bytes).sum(),
            uncompressed_bytes: layers.iter().map(|l| l.uncompressed_bytes).sum(),
            layers,
        },
        modules: boot
            .modules
            .iter()
            .filter_map(|m| Path::new(m).file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect(),
        boot,
        files,
        shell: ShellInfo::default(),
        warnings: Vec::new(),
    };
    Ok(manifest)
}

fn write_manifest(dir: &Path, manifest: &ImageManifest) -> Result<(), BuildError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let json = serde_json::to_string_pretty(manifest).expect("manifest serialises");
    fs::write(&manifest_path, json + "\n").map_err(at(&manifest_path))
}

/// The files of an image, the only ones a rebuild may replace.
const IMAGE_FILES: &[&str] = &[KERNEL_FILE, INITRAMFS_FILE, MANIFEST_FILE];

/// Whether `output` may be replaced: missing, an empty directory, or an
/// image unibeam made (its own files, image.json parsing as a manifest,
/// and nothing else). Anything else is the user's and is refused.
fn check_replaceable(output: &Path) -> Result<(), BuildError> {
    let occupied = |why: String| BuildError::OutputOccupied {
        path: output.to_path_buf(),
        why,
    };
    let meta = match fs::symlink_metadata(output) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(at(output)(e)),
        Ok(meta) => meta,
    };
    if !meta.is_dir() {
        return Err(occupied("exists and is not a directory".into()));
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(output).map_err(at::<PathIo>(output))? {
        let entry = entry.map_err(at::<PathIo>(output))?;
        let name = entry.file_name();
        let ours = name.to_str().is_some_and(|n| IMAGE_FILES.contains(&n))
            && entry.file_type().is_ok_and(|t| t.is_file());
        if !ours {
            let why = format!("holds {:?}, which is not part of a unibeam image", name);
            return Err(occupied(why));
        }
        names.push(name);
    }
    if names.is_empty() {
        return Ok(());
    }
    let manifest = output.join(MANIFEST_FILE);
    let parses = fs::read(&manifest)
        .ok()
        .is_some_and(|data| serde_json::from_slice::<ImageManifest>(&data).is_ok());
    if !parses {
        return Err(occupied(format!("holds no {MANIFEST_FILE} that unibeam wrote")));
    }
    Ok(())
}

/// A fresh sibling of `output`, so the final rename stays on one
/// filesystem; `.<name>.partial-<pid>`, so a later build can tell whose it
/// is and sweep it when that process is gone. Refuses at once an output
/// that is not ours to replace, before any work is done.
fn staging_dir(output: &Path) -> Result<PathBuf, BuildError> {
    check_replaceable(output)?;
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(at::<PathIo>(&parent))?;
    let staging = parent.join(staging_name(output, std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir(&staging).map_err(at::<PathIo>(&staging))?;
    Ok(staging)
}

/// The name of `output`'s staging directory while process `pid` builds it.
pub fn staging_name(output: &Path, pid: u32) -> String {
    let name = output.file_name().unwrap_or_default().to_string_lossy();
    format!(".{name}.partial-{pid}")
}

/// Moves a finished image into place, replacing an older image but never
/// anything else: only unibeam's own files are removed, and the directory
/// itself only once it is empty.
fn replace_dir(staging: &Path, output: &Path) -> Result<(), BuildError> {
    if let Err(e) = check_replaceable(output) {
        let _ = fs::remove_dir_all(staging);
        return Err(e);
    }
    if output.exists() {
        for file in IMAGE_FILES {
            let path = output.join(file);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(at(&path)(e)),
                _ => {}
            }
        }
        fs::remove_dir(output).map_err(at::<PathIo>(output))?;
    }
    fs::rename(staging, output).map_err(at(output))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occupied(out: &Path) -> String {
        let staging = staging_dir(out).map(|_| ());
        match staging {
            Err(e @ BuildError::OutputOccupied { .. }) => e.to_string(),
            other => panic!("{} was not refused: {other:?}", out.display()),
        }
    }

    #[test]
    fn foreign_directories_are_refused_before_the_build() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("precious.txt"), "keep me").unwrap();
        assert!(occupied(&out).contains("precious.txt"));
        // A user's directory with a file named image.json in it.
        fs::write(out.join(MANIFEST_FILE), "{}").unwrap();
        assert!(occupied(&out).contains("precious.txt"));
        fs::remove_file(out.join("precious.txt")).unwrap();
        assert!(occupied(&out).contains("no image.json that unibeam wrote"));
        fs::remove_file(out.join(MANIFEST_FILE)).unwrap();
        fs::create_dir(out.join(KERNEL_FILE)).unwrap();
        assert!(occupied(&out).contains("vmlinuz"), "a directory is not our file");
        let file = dir.path().join("file");
        fs::write(&file, "x").unwrap();
        assert!(occupied(&file).contains("not a directory"));
        let entries: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(entries.len(), 2, "no staging dir is left: {entries:?}");
    }

    #[test]
    fn replace_dir_refuses_what_appeared_during_the_build() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let staging = staging_dir(&out).unwrap();
        fs::create_dir(&out).unwrap();
        fs::write(out.join("precious.txt"), "keep me").unwrap();
        assert!(matches!(
            replace_dir(&staging, &out),
            Err(BuildError::OutputOccupied { .. })
        ));
        assert!(out.join("precious.txt").exists());
        assert!(!staging.exists());
    }

    #[test]
    fn replace_dir_fills_an_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("img");
        fs::create_dir(&out).unwrap();
        let staging = staging_dir(&out).unwrap();
        assert_eq!(
            staging.file_name().unwrap().to_str().unwrap(),
            staging_name(&out, std::process::id())
        );
        fs::write(staging.join(KERNEL_FILE), "x").unwrap();
        replace_dir(&staging, &out).unwrap();
        assert!(out.join(KERNEL_FILE).exists() && !staging.exists());
    }
}
