//! Recognises a rebar3/relx release directory and reads what the guest needs
//! to start it.

use std::fs;
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::hostfs::{at, PathIo};
use unibeam_spec::{ConfigSource, Flavor};

#[derive(Debug, Error)]
pub enum ReleaseError {
    #[error("{0}: no such directory")]
    Missing(PathBuf),
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    #[error(
        "{0}: not an Erlang release (no releases/start_erl.data); build one with `rebar3 as prod release`"
    )]
    NotARelease(PathBuf),
    #[error("{path}: malformed, expected \"<erts-vsn> <release-vsn>\"")]
    BadStartErlData { path: PathBuf },
    #[error("{0}: no <name>.rel file, so the release name is unknown")]
    NoRelFile(PathBuf),
    #[error("{0}: no boot script (start.boot or <name>.boot)")]
    NoBootScript(PathBuf),
    #[error("{root}: no release version {version} (releases/ has: {found}); choose one of those with --release-version")]
    NoSuchVersion {
        root: PathBuf,
        version: String,
        found: String,
    },
    #[error("{rel}: no {{erts, \"<vsn>\"}} entry, so the ERTS version of release {version} is unknown")]
    NoErtsVersion { rel: PathBuf, version: String },
    #[error(transparent)]
    Check(#[from] crate::relcheck::CheckError),
    #[error(transparent)]
    ErlFile(#[from] crate::erlfiles::ErlFileError),
    #[error(transparent)]
    Io(#[from] PathIo),
}

/// A plain sys.config up to this size travels in image.json too, for
/// `RELX_REPLACE_OS_VARS`; bigger ones are read in the guest as they are.
const MAX_INLINE_SYS_CONFIG: u64 = 256 * 1024;

/// A release on the host, as relx lays it out.
#[derive(Debug, Clone)]
pub struct Release {
    pub root: PathBuf,
    pub name: String,
    pub version: String,
    pub erts_version: String,
    pub boot_script: String,
    pub has_sys_config: bool,
    pub has_vm_args: bool,
    /// Whether the release carries its own `erts-<vsn>/`.
    pub has_erts: bool,
    pub sys_config_source: ConfigSource,
    pub vm_args_source: ConfigSource,
    /// mix's `releases/<vsn>/env.sh`, interpreted at boot.
    pub env_sh: bool,
    pub flavor: Flavor,
    /// What the release relies on that unibeam cannot do in the guest, one
    /// line each, naming the file: `unibeam build` prints them.
    pub warnings: Vec<String>,
}

impl Release {
    /// The release that `releases/start_erl.data` names, as relx's and
    /// mix's start scripts boot it.
    pub fn open(dir: &Path) -> Result<Release, ReleaseError> {
        Release::open_version(dir, None)
    }

    /// `version` picks another of the release's versions (several live
    /// side by side after upgrades); None takes start_erl.data's.
    pub fn open_version(dir: &Path, version: Option<&str>) -> Result<Release, ReleaseError> {
        let meta = fs::metadata(dir).map_err(|_| ReleaseError::Missing(dir.to_path_buf()))?;
        if !meta.is_dir() {
            return Err(ReleaseError::NotADirectory(dir.to_path_buf()));
        }
        let start_erl = dir.join("releases/start_erl.data");
        let text = crate::erlfiles::read_start_erl_data(&start_erl)?
            .ok_or_else(|| ReleaseError::NotARelease(dir.to_path_buf()))?;
        let (current_erts, current) =
            parse_start_erl_data(&text).ok_or_else(|| ReleaseError::BadStartErlData {
                path: start_erl.clone(),
            })?;
        crate::relcheck::refuse_dev_mode(dir)?;
        let version = version.unwrap_or(&current).to_string();
        crate::relcheck::check_version(dir, &version)?;
        let rel_dir = dir.join("releases").join(&version);
        if !rel_dir.is_dir() {
            return Err(ReleaseError::NoSuchVersion {
                root: dir.to_path_buf(),
                version,
                found: versions(dir).join(", "),
            });
        }
        let name = release_name(&rel_dir)?;
        let (erts_version, named_in) = if version == current {
            (current_erts, start_erl)
        } else {
            let rel = rel_dir.join(format!("{name}.rel"));
            (rel_erts_version(&rel, &version)?, rel)
        };
        crate::erlfiles::check_erts_named(dir, &erts_version, &named_in)?;
        let boot_script = boot_script(&rel_dir, &name)?;
        crate::erlfiles::check_boot_file(&rel_dir.join(format!("{boot_script}.boot")))?;
        let has_erts = dir.join(format!("erts-{erts_version}/bin/erlexec")).is_file();
        let (sys_config_source, has_sys_config) = config_source(&rel_dir, "sys.config");
        let (vm_args_source, has_vm_args) = config_source(&rel_dir, "vm.args");
        let flavor = flavor(dir, &rel_dir);
        let mut release = Release {
            has_erts,
            env_sh: matches!(flavor, Flavor::Mix { .. }) && rel_dir.join("env.sh").is_file(),
            flavor,
            root: dir.to_path_buf(),
            has_sys_config,
            has_vm_args,
            sys_config_source,
            vm_args_source,
            name,
            version,
            erts_version,
            boot_script,
            warnings: Vec::new(),
        };
        release.warnings = crate::relcheck::check(&crate::relcheck::Shape {
            root: &release.root,
            name: &release.name,
            rel_dir: release.release_dir(),
            vm_args: release.has_vm_args.then(|| {
                release
                    .release_dir()
                    .join(release.vm_args_source.file_name("vm.args"))
            }),
            env_sh: release.env_sh,
            flavor: release.flavor,
        })?;
        Ok(release)
    }

    /// `releases/<vsn>/` on the host.
    pub fn release_dir(&self) -> PathBuf {
        self.root.join("releases").join(&self.version)
    }

    /// The texts of the files a start script reads, by their path under
    /// `guest_root`: vm.args's family and its `-args_file` chain, the
    /// `.src`/`.orig` forms of sys.config, the plain one when it is small
    /// (for `RELX_REPLACE_OS_VARS`), and env.sh. `run` plans the BEAM's
    /// command line from them on the host.
    pub fn start_files(&self, guest_root: &str) -> Result<Vec<(String, String)>, ReleaseError> {
        let rel_dir = self.release_dir();
        let mut paths: Vec<PathBuf> = [
            "vm.args",
            "vm.args.src",
            "vm.args.orig",
            "sys.config.src",
            "sys.config.orig",
            "env.sh",
        ]
        .iter()
        .map(|name| rel_dir.join(name))
        .collect();
        let plain_sys_config = rel_dir.join("sys.config");
        if fs::metadata(&plain_sys_config).is_ok_and(|m| m.len() <= MAX_INLINE_SYS_CONFIG) {
            paths.push(plain_sys_config);
        }
        if self.has_vm_args {
            let vm_args = rel_dir.join(self.vm_args_source.file_name("vm.args"));
            let mut chain = std::collections::BTreeSet::new();
            crate::relcheck::check_args_files(&self.root, &vm_args, &mut chain)?;
            paths.extend(chain);
        }
        let mut files = Vec::new();
        for path in paths.into_iter().filter(|p| p.is_file()) {
            let text = fs::read_to_string(&path).map_err(at::<PathIo>(&path))?;
            let inside = path
                .strip_prefix(&self.root)
                .expect("start files are inside the release");
            files.push((format!("{guest_root}/{}", inside.display()), text));
        }
        Ok(files)
    }

    /// Guest-relative name of the ERTS directory, `erts-<vsn>`.
    pub fn erts_dir_name(&self) -> String {
        format!("erts-{}", self.erts_version)
    }
}

fn parse_start_erl_data(text: &str) -> Option<(String, String)> {
    let mut words = text.split_whitespace();
    let erts = words.next()?;
    let rel = words.next()?;
    words
        .next()
        .is_none()
        .then(|| (erts.to_string(), rel.to_string()))
}

/// Which of `<file>.src`, `<file>.orig` and `<file>` the start script
/// reads (in relx's order of preference), and whether there is any.
fn config_source(rel_dir: &Path, plain: &str) -> (ConfigSource, bool) {
    [ConfigSource::Template, ConfigSource::Orig, ConfigSource::Plain]
        .into_iter()
        .find(|source| rel_dir.join(source.file_name(plain)).is_file())
        .map_or((ConfigSource::Plain, false), |source| (source, true))
}

/// The version directories under `releases/`.
fn versions(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(dir.join("releases"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect();
    found.sort();
    found
}

/// The ERTS version a `.rel` file names: `{erts, "13.1.5"}`.
fn rel_erts_version(rel: &Path, version: &str) -> Result<String, ReleaseError> {
    let text = fs::read_to_string(rel).map_err(at::<PathIo>(rel))?;
    let compact: String = text.split_whitespace().collect();
    compact
        .split_once("{erts,\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(vsn, _)| vsn.to_string())
        .filter(|vsn| !vsn.is_empty() && vsn.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'))
        .ok_or_else(|| ReleaseError::NoErtsVersion {
            rel: rel.to_path_buf(),
            version: version.to_string(),
        })
}

fn release_name(rel_dir: &Path) -> Result<String, ReleaseError> {
    let entries = fs::read_dir(rel_dir).map_err(at::<PathIo>(rel_dir))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            (path.extension()? == "rel").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .ok_or_else(|| ReleaseError::NoRelFile(rel_dir.to_path_buf()))
}

/// `mix release` writes `releases/COOKIE` and marks its `sys.config` with
/// whether Config.Provider rewrites it at boot; relx does neither.
fn flavor(root: &Path, rel_dir: &Path) -> Flavor {
    if !root.join("releases/COOKIE").is_file() {
        return Flavor::Relx;
    }
    let sys_config = fs::read_to_string(rel_dir.join("sys.config")).unwrap_or_default();
    Flavor::Mix {
        runtime_config_rewrite: sys_config
            .lines()
            .take(5)
            .any(|l| l.trim() == "%% RUNTIME_CONFIG=true"),
    }
}

/// relx's start script prefers `<name>.boot` and falls back to `start.boot`.
fn boot_script(rel_dir: &Path, name: &str) -> Result<String, ReleaseError> {
    [name, "start"]
        .into_iter()
        .find(|stem| rel_dir.join(format!("{stem}.boot")).is_file())
        .map(String::from)
        .ok_or_else(|| ReleaseError::NoBootScript(rel_dir.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_release(root: &Path) {
        fs::create_dir_all(root.join("releases/0.1.0")).unwrap();
        fs::create_dir_all(root.join("erts-13.1.5/bin")).unwrap();
        fs::write(root.join("erts-13.1.5/bin/erlexec"), b"").unwrap();
        fs::write(root.join("releases/start_erl.data"), "13.1.5 0.1.0\n").unwrap();
        fs::write(root.join("releases/0.1.0/hello.rel"), "").unwrap();
        fs::write(
            root.join("releases/0.1.0/start.boot"),
            crate::erlfiles::MINIMAL_BOOT,
        )
        .unwrap();
        fs::write(root.join("releases/0.1.0/vm.args"), "").unwrap();
    }

    #[test]
    fn reads_a_relx_layout() {
        let dir = tempfile::tempdir().unwrap();
        fake_release(dir.path());
        let rel = Release::open(dir.path()).unwrap();
        assert_eq!(rel.name, "hello");
        assert_eq!(rel.version, "0.1.0");
        assert_eq!(rel.erts_version, "13.1.5");
        assert_eq!(rel.boot_script, "start");
        assert!(rel.has_vm_args && !rel.has_sys_config);
        assert_eq!(rel.flavor, Flavor::Relx);
    }

    #[test]
    fn mix_releases_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        fake_release(dir.path());
        fs::write(dir.path().join("releases/COOKIE"), "SECRET").unwrap();
        let sys = dir.path().join("releases/0.1.0/sys.config");
        fs::write(&sys, "%% coding: utf-8\n%% RUNTIME_CONFIG=false\n[].\n").unwrap();
        let rewrite = |r: Release| {
            r.flavor
                == Flavor::Mix {
                    runtime_config_rewrite: true,
                }
        };
        assert!(!rewrite(Release::open(dir.path()).unwrap()));
        fs::write(&sys, "%% coding: utf-8\n%% RUNTIME_CONFIG=true\n[].\n").unwrap();
        assert!(rewrite(Release::open(dir.path()).unwrap()));
    }

    #[test]
    fn named_boot_script_wins() {
        let dir = tempfile::tempdir().unwrap();
        fake_release(dir.path());
        fs::write(
            dir.path().join("releases/0.1.0/hello.boot"),
            crate::erlfiles::MINIMAL_BOOT,
        )
        .unwrap();
        assert_eq!(Release::open(dir.path()).unwrap().boot_script, "hello");
    }

    #[test]
    fn rejects_missing_and_non_release_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(Release::open(&missing), Err(ReleaseError::Missing(_))));
        assert!(matches!(
            Release::open(dir.path()),
            Err(ReleaseError::NotARelease(_))
        ));
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(matches!(
            Release::open(&file),
            Err(ReleaseError::NotADirectory(_))
        ));
    }

    #[test]
    fn rejects_release_without_boot_and_notes_missing_erts() {
        let dir = tempfile::tempdir().unwrap();
        fake_release(dir.path());
        fs::remove_file(dir.path().join("releases/0.1.0/start.boot")).unwrap();
        assert!(matches!(
            Release::open(dir.path()),
            Err(ReleaseError::NoBootScript(_))
        ));
        fake_release(dir.path());
        assert!(Release::open(dir.path()).unwrap().has_erts);
        fs::remove_dir_all(dir.path().join("erts-13.1.5")).unwrap();
        assert!(!Release::open(dir.path()).unwrap().has_erts);
    }

    #[test]
    fn start_erl_data_needs_two_words() {
        assert_eq!(
            parse_start_erl_data("13.1.5 0.1.0\n"),
            Some(("13.1.5".into(), "0.1.0".into()))
        );
        assert_eq!(parse_start_erl_data("13.1.5"), None);
        assert_eq!(parse_start_erl_data("a b c"), None);
    }
}
