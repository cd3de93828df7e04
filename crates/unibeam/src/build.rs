//! `unibeam build`: release directory in, image directory out.

use crate::paths;
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use unibeam_image::{build_image, BuildOptions, ImageManifest, Release};

pub const FAILURE_EXIT: u8 = 1;

/// zstd level for the initramfs: small images, and the kernel inflates
/// zstd quickly.
const ZSTD_LEVEL: i32 = 19;

/// Build a bootable microVM image from a release.
///
/// The image directory holds `vmlinuz` (Debian's cloud kernel, taken from
/// /boot or fetched with `apt-get download`), `initramfs.img` (the release,
/// its ERTS, the shared libraries its ELF files load, the NIC's kernel
/// modules and unibeam's PID 1, and nothing else: no shell, no busybox) and
/// `image.json` describing both.
#[derive(Args)]
pub struct BuildArgs {
    /// Release directory, e.g. _build/prod/rel/<name> from `rebar3 as prod release`
    release: PathBuf,
    /// Image directory to write [default: ./<name>-<version>.unibeam]
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub fn build(args: BuildArgs) -> Result<ExitCode> {
    let release = Release::open(&args.release)?;
    let output = args
        .output
        .unwrap_or_else(|| PathBuf::from(format!("{}-{}.unibeam", release.name, release.version)));
    let manifest = build_to(&args.release, &output)?;
    println!("{}", summary(&manifest, &output));
    Ok(ExitCode::SUCCESS)
}

/// Builds `release_dir` into `output` with a spinner; shared with `run`.
pub fn build_to(release_dir: &Path, output: &Path) -> Result<ImageManifest> {
    let opts = BuildOptions {
        release_dir: release_dir.to_path_buf(),
        output: output.to_path_buf(),
        init_binary: paths::init_binary()?,
        cache_dir: paths::cache_dir()?,
        zstd_level: ZSTD_LEVEL,
    };
    let bar = paths::spinner("build");
    let result = build_image(&opts, &|step| bar.set_message(step.to_string()));
    bar.finish_and_clear();
    result.with_context(|| format!("building an image from {}", release_dir.display()))
}

fn summary(m: &ImageManifest, output: &Path) -> String {
    format!(
        "built {} {} -> {} ({})",
        m.release.name,
        m.release.version,
        output.display(),
        m.size_summary()
    )
}
