//! `unibeam build`: a release (directory, tarball or project) in, an image
//! directory out.

use crate::progress::Console;
use anyhow::Result;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use unibeam_image::shell::ShellMode;
use unibeam_image::{Compression, KernelChoice};
use unibeam_lifecycle::images::{self, BuildSettings};
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
    /// The flags as the library takes them.
    pub fn settings(&self) -> BuildSettings {
        BuildSettings {
            profile: self.profile.clone(),
            release_name: self.release_name.clone(),
            release_version: self.release_version.clone(),
            erts_from_host: self.erts_from_host,
            keep_debug: self.keep_debug,
            compression: match self.compression {
                CompressionArg::Zstd => Compression::Zstd(19),
                CompressionArg::Xz => Compression::Xz,
                CompressionArg::None => Compression::None,
            },
            no_cache: self.no_cache,
            kernel: self.kernel.clone().unwrap_or(KernelChoice::Auto),
            code_loading: match self.code_loading {
                CodeLoadingArg::Interactive => CodeLoading::Interactive,
                CodeLoadingArg::Embedded => CodeLoading::Embedded,
            },
            shell: match self.shell {
                ShellArg::Auto => ShellMode::Auto,
                ShellArg::Always => ShellMode::Always,
                ShellArg::Never => ShellMode::Never,
            },
            with_programs: self.with_programs.clone(),
        }
    }
}

pub(crate) fn parse_kernel(s: &str) -> Result<KernelChoice, String> {
    Ok(match s {
        "specialised" | "specialized" => KernelChoice::Specialised,
        "debian" => KernelChoice::Debian,
        "" => return Err("empty kernel; use specialised, debian or a path".into()),
        path => KernelChoice::File(PathBuf::from(path)),
    })
}

pub fn build(args: BuildArgs) -> Result<ExitCode> {
    let (output, manifest) = images::build(
        &args.input,
        args.output.as_deref(),
        &args.flags.settings(),
        &Console::default(),
    )?;
    println!(
        "built {} {} -> {} ({})",
        manifest.release.name,
        manifest.release.version,
        output.display(),
        manifest.size_summary()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    #[command(no_binary_name = true)]
    struct Only {
        #[command(flatten)]
        flags: BuildFlags,
    }

    #[test]
    fn the_flags_defaults_are_the_librarys() {
        let mut flags = Only::parse_from(Vec::<String>::new()).flags;
        // The suite may run with UNIBEAM_KERNEL set.
        flags.kernel = None;
        let (cli, lib) = (flags.settings(), BuildSettings::default());
        assert_eq!(format!("{cli:?}"), format!("{lib:?}"));
    }
}
