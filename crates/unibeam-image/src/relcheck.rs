//! What a release asks of its start script, checked on the host so that
//! nothing is dropped silently: a dev-mode release is refused, `-args_file`
//! chains must stay inside the release, and files or lines unibeam does not
//! act on become warnings that name them.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};
use thiserror::Error;
use unibeam_spec::{EnvScript, Flavor, ENV_SH_SUBSET};

#[derive(Debug, Error)]
pub enum CheckError {
    #[error("{link}: a dev-mode release (it links to {target}, outside the release); build a standalone one with `rebar3 as prod release`")]
    DevMode { link: PathBuf, target: PathBuf },
    #[error("{file}:{line}: -args_file {target}: {why}")]
    ArgsFile {
        file: PathBuf,
        line: usize,
        target: String,
        why: &'static str,
    },
    #[error("{path}: not a plain name ({what}); a release version is one directory name under releases/")]
    BadVersion { path: PathBuf, what: String },
}

/// Files in `releases/<vsn>/` that relx's or mix's start script reads,
/// or that unibeam handles itself.
const KNOWN_RELEASE_FILES: &[&str] = &[
    "sys.config",
    "sys.config.src",
    "sys.config.orig",
    "vm.args",
    "vm.args.src",
    "vm.args.orig",
    "env.sh",
    "relup",
    "runtime.exs",
    "consolidated",
    // Used by what unibeam does not start: Windows, remote consoles, the
    // elixir/iex wrappers around erl.
    "env.bat",
    "remote.vm.args",
    "elixir",
    "elixir.bat",
    "iex",
    "iex.bat",
];

/// Refuses `rebar3 release` without `as prod`: its `lib/` links into
/// `_build/default/lib`, and it has no ERTS.
pub fn refuse_dev_mode(root: &Path) -> Result<(), CheckError> {
    let Ok(entries) = fs::read_dir(root.join("lib")) else {
        return Ok(());
    };
    let canonical_root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    for entry in entries.filter_map(|e| e.ok()) {
        let link = entry.path();
        let Ok(target) = fs::read_link(&link) else {
            continue;
        };
        let inside = fs::canonicalize(&link).is_ok_and(|real| real.starts_with(&canonical_root));
        if !inside {
            return Err(CheckError::DevMode { link, target });
        }
    }
    Ok(())
}

/// A version from start_erl.data or `--release-version` names one
/// directory: no `/`, no `..`, nothing empty.
pub fn check_version(root: &Path, version: &str) -> Result<(), CheckError> {
    let mut parts = Path::new(version).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) if !version.contains('/') => Ok(()),
        _ => Err(CheckError::BadVersion {
            path: root.join("releases/start_erl.data"),
            what: format!("{version:?}"),
        }),
    }
}

/// What the checks look at in a release; release.rs fills it in (a
/// struct of its own, so this module does not depend on release.rs).
pub struct Shape<'a> {
    pub root: &'a Path,
    pub name: &'a str,
    /// `releases/<vsn>/` on the host.
    pub rel_dir: PathBuf,
    /// The vm.args file the start script reads, if any.
    pub vm_args: Option<PathBuf>,
    pub env_sh: bool,
    pub flavor: Flavor,
}

/// Warnings about what the start script would do and unibeam will not.
pub fn check(release: &Shape) -> Result<Vec<String>, CheckError> {
    let mut warnings = Vec::new();
    let mut chained = BTreeSet::new();
    if let Some(vm_args) = &release.vm_args {
        check_args_files(release.root, vm_args, &mut chained)?;
    }
    if release.env_sh {
        warnings.extend(env_sh_warnings(&release.rel_dir.join("env.sh"), release.root));
    }
    warnings.extend(unknown_files(release, &chained));
    if matches!(release.flavor, Flavor::Relx) {
        for dir in ["bin/hooks", "bin/extensions"] {
            if release.root.join(dir).is_dir() {
                warnings.push(format!(
                    "{}: relx start-script hooks and extensions do not run in a unibeam guest (no start script runs there)",
                    release.root.join(dir).display()
                ));
            }
        }
    }
    Ok(warnings)
}

fn env_sh_warnings(path: &Path, root: &Path) -> Vec<String> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    let shown = path.strip_prefix(root).unwrap_or(path).display().to_string();
    EnvScript::parse(&text)
        .unsupported
        .into_iter()
        .map(|(line, content)| format!("{shown}:{line}: `{content}` is skipped at boot; {ENV_SH_SUBSET}"))
        .collect()
}

/// Follows `-args_file` lines: each must name a file inside the release
/// by a path relative to its root (the start script's working directory;
/// the root sits elsewhere in the guest). Templates' `${...}` paths are
/// left to boot.
pub(crate) fn check_args_files(
    root: &Path,
    file: &Path,
    seen: &mut BTreeSet<PathBuf>,
) -> Result<(), CheckError> {
    let Ok(text) = fs::read_to_string(file) else {
        return Ok(());
    };
    for (i, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        let (Some("-args_file"), Some(target)) = (words.next(), words.next()) else {
            continue;
        };
        if target.contains("${") {
            continue;
        }
        let err = |why| CheckError::ArgsFile {
            file: file.to_path_buf(),
            line: i + 1,
            target: target.to_string(),
            why,
        };
        if Path::new(target).is_absolute() {
            return Err(err(
                "an absolute path does not exist in the guest; make it relative to the release root",
            ));
        }
        if Path::new(target).components().any(|c| c == Component::ParentDir) {
            return Err(err("leaves the release; keep chained files inside it"));
        }
        let nested = root.join(target);
        if !nested.is_file() {
            return Err(err(
                "no such file in the release (paths are relative to the release root)",
            ));
        }
        if seen.insert(nested.clone()) {
            check_args_files(root, &nested, seen)?;
        } else {
            return Err(err("circular -args_file chain"));
        }
    }
    Ok(())
}

/// Files in `releases/<vsn>/` that no start-script step reads.
fn unknown_files(release: &Shape, chained: &BTreeSet<PathBuf>) -> Vec<String> {
    let rel_dir = &release.rel_dir;
    let Ok(entries) = fs::read_dir(rel_dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| !chained.contains(&e.path()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            !(KNOWN_RELEASE_FILES.contains(&name.as_str())
                || name.ends_with(".boot")
                || name.ends_with(".script")
                || *name == format!("{}.rel", release.name))
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            format!(
                "{}: unibeam does not know this release file; it is in the image, but nothing reads it at start",
                rel_dir.join(name).display()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn release_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("releases/0.1.0")).unwrap();
        fs::create_dir_all(dir.path().join("lib")).unwrap();
        fs::write(dir.path().join("releases/start_erl.data"), "13.1.5 0.1.0\n").unwrap();
        fs::write(dir.path().join("releases/0.1.0/app.rel"), "").unwrap();
        fs::write(dir.path().join("releases/0.1.0/start.boot"), "").unwrap();
        dir
    }

    #[test]
    fn dev_mode_releases_are_refused() {
        let dir = release_dir();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), dir.path().join("lib/app-0.1.0")).unwrap();
        let err = refuse_dev_mode(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("rebar3 as prod release") && err.contains("lib/app-0.1.0"),
            "{err}"
        );
        let dir = release_dir();
        fs::create_dir(dir.path().join("lib/real-1")).unwrap();
        symlink("real-1", dir.path().join("lib/app")).unwrap();
        assert!(refuse_dev_mode(dir.path()).is_ok(), "a link inside is fine");
    }

    #[test]
    fn versions_are_plain_names() {
        let root = Path::new("/r");
        assert!(check_version(root, "0.1.0").is_ok());
        for bad in ["../../outside/0.1.0", "..", "a/b", "/abs", ""] {
            assert!(check_version(root, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn args_file_chains_stay_inside() {
        let dir = release_dir();
        let vm_args = dir.path().join("releases/0.1.0/vm.args");
        let check = |text: &str| {
            fs::write(&vm_args, text).unwrap();
            check_args_files(dir.path(), &vm_args, &mut BTreeSet::new()).map_err(|e| e.to_string())
        };
        fs::write(dir.path().join("releases/0.1.0/extra.args"), "+K true\n").unwrap();
        assert!(check("-sname a\n-args_file releases/0.1.0/extra.args\n").is_ok());
        let err = check("-sname a\n-args_file /etc/extra.args\n").unwrap_err();
        assert!(
            err.contains("vm.args:2: -args_file /etc/extra.args") && err.contains("relative"),
            "{err}"
        );
        let err = check("-args_file releases/0.1.0/missing.args\n").unwrap_err();
        assert!(err.contains("vm.args:1") && err.contains("no such file"), "{err}");
        assert!(check("-args_file ../x.args\n")
            .unwrap_err()
            .contains("leaves the release"));
        assert!(check("-args_file releases/0.1.0/vm.args\n")
            .unwrap_err()
            .contains("circular"));
        assert!(
            check("-args_file ${EXTRA}\n").is_ok(),
            "templates are read at boot"
        );
    }
}
