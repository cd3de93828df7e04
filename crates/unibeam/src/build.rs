//! `unibeam build`: a release (directory, tarball or project) in, an image
//! directory out.

use crate::paths;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use unibeam_image::shell::ShellMode;
use unibeam_image::{
    build_image, resolve_input, BuildOptions, Compression, ImageManifest, KernelChoice, Release, Selector,
};
use unibeam_spec::CodeLoading;

pub const FAILURE_EXIT: u8 = 1;

#[derive(Clone, Copy, ValueEnum)]
enum CompressionArg {
    /// xz -9e with the x86 filter: the smallest image. `run` unpacks the
    /// layers on the host once and caches them, so the guest never pays
    /// for xz; only loaders that boot the image as is (exports) do
    Xz,
    /// zstd level 19: about 12% bigger, unpacked five times faster than xz
    Zstd,
    /// no compression: nothing to unpack, three times the size
    None,
}

/// Build a bootable microVM image from a release.
///
/// INPUT is a release directory (`_build/prod/rel/<name>` from
/// `rebar3 as prod release` or `MIX_ENV=prod mix release`), a release
/// tarball (`rebar3 as prod tar`), or a project directory, in which
/// `_build/<profile>/rel/<name>` is used.
///
/// The image directory holds `vmlinuz`, `initramfs.img` and `image.json`.
/// The kernel is unibeam's specialised one once `unibeam kernel build` has
/// made it, else Debian's cloud kernel (from /boot, or fetched with
/// `apt-get download`) plus the few modules the guest needs. The initramfs holds the release, its ERTS, the shared
/// libraries its ELF files load, the NIC's kernel modules and unibeam's
/// PID 1, and nothing else: no shell, no busybox. It is made of layers
/// (base, erts, deps, app), each cached by content, so a rebuild after an
/// app change recompresses only the app layer. The same input always gives
/// a byte-identical image.
#[derive(Args)]
pub struct BuildArgs {
    /// Release directory, release tarball, or rebar3/mix project directory
    input: PathBuf,
    /// Image directory to write [default: ./<name>-<version>.unibeam]
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    flags: BuildFlags,
}

/// How to turn a release into an image; `run` takes these too.
#[derive(Args, Clone)]
pub struct BuildFlags {
    /// With a project directory: the profile under _build/
    #[arg(long, value_name = "PROFILE", default_value = "prod")]
    profile: String,
    /// With a project directory that has several releases: which one
    #[arg(long = "release", value_name = "NAME")]
    release_name: Option<String>,
    /// Which of the release's versions to boot, when releases/ holds
    /// several (after upgrades) [default: the one releases/start_erl.data
    /// names, as the start script boots]
    #[arg(long, value_name = "VSN")]
    release_version: Option<String>,
    /// When the release has no ERTS, take it from this host's Erlang install
    #[arg(long)]
    erts_from_host: bool,
    /// Keep .beam debug info and docs chunks (stripped by default)
    #[arg(long)]
    keep_debug: bool,
    /// Layer compression
    #[arg(long, value_enum, default_value = "xz")]
    compression: CompressionArg,
    /// Recompress every layer instead of reusing cached ones
    #[arg(long)]
    no_cache: bool,
    /// Kernel: `specialised` (from `unibeam kernel build`), `debian` (the
    /// cloud kernel), or the path of a kernel with every driver built in.
    /// Default: specialised when it is built, else debian
    #[arg(long, value_name = "specialised|debian|PATH", value_parser = parse_kernel, env = "UNIBEAM_KERNEL")]
    kernel: Option<KernelChoice>,
    /// How the BEAM loads code: `interactive` loads each module on first
    /// use (the faster boot), `embedded` loads the whole release at boot
    #[arg(long, value_enum, default_value = "interactive")]
    code_loading: CodeLoadingArg,
    /// Whether the image gets a POSIX shell (Debian's dash as /bin/sh).
    /// `auto` reads the release's .beam files and adds one when it shells
    /// out: the os_mon application is in it (its ports start through
    /// /bin/sh and disksup runs df), or a module of the release or its
    /// dependencies calls os:cmd/1,2, open_port({spawn, ...}) or
    /// System.shell/1,2. OTP's and Elixir's own modules do not count. The
    /// programs those modules name in string literals (such as uname in
    /// "uname -s"), df for os_mon and what System.cmd/2,3 runs go into
    /// /usr/bin. `never` leaves all of that out and warns about what will
    /// fail; `unibeam inspect` shows what was decided and why
    #[arg(long, value_enum, default_value = "auto")]
    shell: ShellArg,
    /// A host program to put in the image's /usr/bin, for commands the scan
    /// cannot see (a command string built at run time); with --shell auto
    /// it brings the shell too (repeatable)
    #[arg(long = "with-program", value_name = "NAME")]
    with_programs: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ShellArg {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, ValueEnum)]
enum CodeLoadingArg {
    Interactive,
    Embedded,
}

impl BuildFlags {
    /// The defaults, as a plain `unibeam build` gets them.
    pub fn defaults() -> BuildFlags {
        #[derive(clap::Parser)]
        #[command(no_binary_name = true)]
        struct Only {
            #[command(flatten)]
            flags: BuildFlags,
        }
        <Only as clap::Parser>::parse_from(Vec::<String>::new()).flags
    }
}

fn parse_kernel(s: &str) -> Result<KernelChoice, String> {
    Ok(match s {
        "specialised" | "specialized" => KernelChoice::Specialised,
        "debian" => KernelChoice::Debian,
        "" => return Err("empty kernel; use specialised, debian or a path".into()),
        path => KernelChoice::File(PathBuf::from(path)),
    })
}

pub fn build(args: BuildArgs) -> Result<ExitCode> {
    let guard = crate::scratch::guard_build(&paths::cache_dir()?.join("unpacked"))?;
    let input = resolve(&args.input, &args.flags)?;
    let release = flags_release(&input.dir, &args.flags)?;
    let output = args
        .output
        .unwrap_or_else(|| PathBuf::from(format!("{}-{}.unibeam", release.name, release.version)));
    guard.building(&output);
    let manifest = build_to(&input.dir, &output, &args.flags)?;
    println!(
        "built {} {} -> {} ({})",
        manifest.release.name,
        manifest.release.version,
        output.display(),
        manifest.size_summary()
    );
    Ok(ExitCode::SUCCESS)
}

/// A release directory for `input`; a tarball is unpacked into the cache
/// and removed when the result is dropped.
pub fn resolve(input: &Path, flags: &BuildFlags) -> Result<unibeam_image::ResolvedInput> {
    let selector = Selector {
        profile: Some(flags.profile.clone()),
        release: flags.release_name.clone(),
    };
    let unpacked = paths::cache_dir()?.join("unpacked");
    crate::scratch::sweep_unpacked(&unpacked);
    Ok(resolve_input(input, &selector, &unpacked)?)
}

/// The release `flags` pick in `dir`; shared with `run`.
pub fn flags_release(dir: &Path, flags: &BuildFlags) -> Result<Release> {
    Ok(Release::open_version(dir, flags.release_version.as_deref())?)
}

/// Builds `release_dir` into `output` with a spinner; shared with `run`.
pub fn build_to(release_dir: &Path, output: &Path, flags: &BuildFlags) -> Result<ImageManifest> {
    let opts = BuildOptions {
        release_dir: release_dir.to_path_buf(),
        release_version: flags.release_version.clone(),
        output: output.to_path_buf(),
        init_binary: paths::init_binary()?,
        cache_dir: paths::cache_dir()?,
        compression: match flags.compression {
            CompressionArg::Zstd => Compression::Zstd(19),
            CompressionArg::Xz => Compression::Xz,
            CompressionArg::None => Compression::None,
        },
        keep_debug: flags.keep_debug,
        erts_from_host: flags.erts_from_host,
        use_cache: !flags.no_cache,
        kernel: flags.kernel.clone().unwrap_or(KernelChoice::Auto),
        code_loading: match flags.code_loading {
            CodeLoadingArg::Interactive => CodeLoading::Interactive,
            CodeLoadingArg::Embedded => CodeLoading::Embedded,
        },
        with_programs: flags.with_programs.clone(),
        shell: match flags.shell {
            ShellArg::Auto => ShellMode::Auto,
            ShellArg::Always => ShellMode::Always,
            ShellArg::Never => ShellMode::Never,
        },
    };
    let bar = paths::spinner("build");
    let result = build_image(&opts, &|step| bar.set_message(step.to_string()));
    bar.finish_and_clear();
    let manifest = result.with_context(|| format!("building an image from {}", release_dir.display()))?;
    for warning in &manifest.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(manifest)
}
