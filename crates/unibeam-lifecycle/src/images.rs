//! From a release (directory, tarball or project) to an image directory:
//! what `unibeam build` does, and `run` and `up` when given a release.

use crate::paths::{self, PathsError};
use crate::progress::Progress;
use crate::scratch::{self, ScratchError};
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_image::shell::ShellMode;
use unibeam_image::{
    build_image, resolve_input, BuildError, BuildOptions, Compression, ImageManifest, InputError,
    KernelChoice, Release, ResolvedInput, Selector,
};
use unibeam_spec::CodeLoading;

#[derive(Debug, Error)]
pub enum ImagesError {
    #[error(transparent)]
    Paths(#[from] PathsError),
    #[error(transparent)]
    Scratch(#[from] ScratchError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Release(#[from] unibeam_image::release::ReleaseError),
    #[error("building an image from {}", .0.display())]
    Build(PathBuf, #[source] BuildError),
}

/// How to turn a release into an image: the flags `build` and `run`
/// share, as values.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// With a project directory: the profile under _build/.
    pub profile: String,
    /// With a project directory that has several releases: which one.
    pub release_name: Option<String>,
    /// Another of the release's versions than start_erl.data names.
    pub release_version: Option<String>,
    pub erts_from_host: bool,
    pub keep_debug: bool,
    pub compression: Compression,
    /// Recompress every layer instead of reusing cached ones.
    pub no_cache: bool,
    pub kernel: KernelChoice,
    pub code_loading: CodeLoading,
    pub shell: ShellMode,
    pub with_programs: Vec<String>,
}

impl Default for BuildSettings {
    /// What a plain `unibeam build` does.
    fn default() -> Self {
        BuildSettings {
            profile: "prod".into(),
            release_name: None,
            release_version: None,
            erts_from_host: false,
            keep_debug: false,
            compression: Compression::Xz,
            no_cache: false,
            kernel: KernelChoice::Auto,
            code_loading: CodeLoading::Interactive,
            shell: ShellMode::Auto,
            with_programs: Vec::new(),
        }
    }
}

/// A release directory for `input`; a tarball is unpacked into the cache
/// and removed when the result is dropped.
pub fn resolve(input: &Path, settings: &BuildSettings) -> Result<ResolvedInput, ImagesError> {
    let selector = Selector {
        profile: Some(settings.profile.clone()),
        release: settings.release_name.clone(),
    };
    let unpacked = paths::cache_dir()?.join("unpacked");
    scratch::sweep_unpacked(&unpacked);
    Ok(resolve_input(input, &selector, &unpacked)?)
}

/// The release `settings` pick in `dir`.
pub fn release_of(dir: &Path, settings: &BuildSettings) -> Result<Release, ImagesError> {
    Ok(Release::open_version(dir, settings.release_version.as_deref())?)
}

/// Builds `release_dir` into `output`, reporting each step; the image's
/// warnings go to `progress` too.
pub fn build_to(
    release_dir: &Path,
    output: &Path,
    settings: &BuildSettings,
    progress: &dyn Progress,
) -> Result<ImageManifest, ImagesError> {
    let opts = BuildOptions {
        release_dir: release_dir.to_path_buf(),
        release_version: settings.release_version.clone(),
        output: output.to_path_buf(),
        init_binary: paths::init_binary()?,
        cache_dir: paths::cache_dir()?,
        compression: settings.compression,
        keep_debug: settings.keep_debug,
        erts_from_host: settings.erts_from_host,
        use_cache: !settings.no_cache,
        kernel: settings.kernel.clone(),
        code_loading: settings.code_loading,
        with_programs: settings.with_programs.clone(),
        shell: settings.shell,
    };
    progress.begin("build");
    let result = build_image(&opts, &|step| progress.step(step));
    progress.end();
    let manifest = result.map_err(|e| ImagesError::Build(release_dir.to_path_buf(), e))?;
    for warning in &manifest.warnings {
        progress.warn(warning);
    }
    Ok(manifest)
}

/// `unibeam build`: `input` into `output` (default
/// `./<name>-<version>.unibeam`). An interrupted build removes what it
/// wrote. Returns where the image went and its manifest.
pub fn build(
    input: &Path,
    output: Option<&Path>,
    settings: &BuildSettings,
    progress: &dyn Progress,
) -> Result<(PathBuf, ImageManifest), ImagesError> {
    let guard = scratch::guard_build(&paths::cache_dir()?.join("unpacked"))?;
    let resolved = resolve(input, settings)?;
    let release = release_of(&resolved.dir, settings)?;
    let output = output
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("{}-{}.unibeam", release.name, release.version)));
    guard.building(&output);
    let manifest = build_to(&resolved.dir, &output, settings, progress)?;
    Ok((output, manifest))
}
