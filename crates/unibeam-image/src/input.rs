//! Turns what the user points at (a release directory, a release tarball,
//! or a rebar3/mix project) into a release directory on disk.

use crate::content::MAX_FILE_BYTES;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tempfile::TempDir;
use thiserror::Error;
use unibeam_spec::hostfs::{at, PathIo};
use unibeam_spec::safepath::{self, UnsafePath};

/// Unpacked tarballs are `<scratch>/tarball-<pid>-<random>`: a later run
/// removes those whose process is gone (interrupted, killed).
pub const UNPACKED_PREFIX: &str = "tarball-";

#[derive(Debug, Error)]
pub enum InputError {
    #[error("{0}: no such file or directory")]
    Missing(PathBuf),
    #[error("{path}: truncated or corrupt release tarball: {detail}")]
    BadTarball { path: PathBuf, detail: String },
    #[error("{path}: truncated or corrupt release tarball")]
    CorruptTarball {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: truncated or corrupt release tarball at member {member}")]
    CorruptMember {
        path: PathBuf,
        member: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no release under _build/{1}/rel; run `rebar3 as {1} release` or `MIX_ENV={1} mix release` first")]
    NoBuiltRelease(PathBuf, String),
    #[error("{path}: several releases ({names}); pick one with --release NAME")]
    AmbiguousRelease { path: PathBuf, names: String },
    #[error("{path}: no release named {name} (found: {names})")]
    NoSuchRelease {
        path: PathBuf,
        name: String,
        names: String,
    },
    #[error("{}: member {member}: {problem}; the tarball is refused", path.display())]
    UnsafeMember {
        path: PathBuf,
        member: String,
        problem: UnsafePath,
    },
    #[error("{}: member {member}: {why}; the tarball is refused", path.display())]
    RefusedMember {
        path: PathBuf,
        member: String,
        why: String,
    },
    #[error(transparent)]
    Io(#[from] PathIo),
}

/// Which release to take from a project directory.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// `_build/<profile>/rel`; `prod` when unset.
    pub profile: Option<String>,
    /// The release name, needed when a project has several.
    pub release: Option<String>,
}

/// A release directory, plus the scratch directory that holds it when it
/// came out of a tarball (removed on drop).
#[derive(Debug)]
pub struct ResolvedInput {
    pub dir: PathBuf,
    _unpacked: Option<TempDir>,
}

fn is_release_dir(dir: &Path) -> bool {
    dir.join("releases/start_erl.data").is_file()
}

fn is_tarball(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// Resolves `path`; `scratch` is where tarballs are unpacked.
pub fn resolve(path: &Path, selector: &Selector, scratch: &Path) -> Result<ResolvedInput, InputError> {
    if !path.exists() {
        return Err(InputError::Missing(path.to_path_buf()));
    }
    if path.is_file() && is_tarball(path) {
        let unpacked = unpack_tarball(path, scratch)?;
        return Ok(ResolvedInput {
            dir: unpacked.path().to_path_buf(),
            _unpacked: Some(unpacked),
        });
    }
    let dir = if path.join("_build").is_dir() && !is_release_dir(path) {
        find_in_project(path, selector)?
    } else {
        path.to_path_buf()
    };
    Ok(ResolvedInput { dir, _unpacked: None })
}

fn unpack_tarball(path: &Path, scratch: &Path) -> Result<TempDir, InputError> {
    let io = |source| PathIo {
        path: scratch.to_path_buf(),
        source,
    };
    fs::create_dir_all(scratch).map_err(io)?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("{UNPACKED_PREFIX}{}-", std::process::id()))
        .tempdir_in(scratch)
        .map_err(io)?;
    unpack_members(path, dir.path())?;
    if !is_release_dir(dir.path()) {
        return Err(InputError::BadTarball {
            path: path.to_path_buf(),
            detail: "it holds no releases/start_erl.data".into(),
        });
    }
    Ok(dir)
}

/// Unpacks every member of the tarball at `path` into `dir`, refusing the
/// whole tarball at the first member that would land outside `dir` or
/// under another name than the one it has: `tar`'s own unpack() silently
/// skips `..` members and turns `/x` into `x`.
fn unpack_members(path: &Path, dir: &Path) -> Result<(), InputError> {
    let corrupt = |source| InputError::CorruptTarball {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path).map_err(at::<PathIo>(path))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let name = entry.path_bytes().into_owned();
        let member = name.escape_ascii().to_string();
        let refused = |why: &str| InputError::RefusedMember {
            path: path.to_path_buf(),
            member: member.clone(),
            why: why.into(),
        };
        let kind = entry.header().entry_type();
        match safepath::relative(Path::new(OsStr::from_bytes(&name))) {
            // `./`, the root itself, as `tar -C dir .` writes it.
            Err(UnsafePath::Empty) if kind.is_dir() => continue,
            Err(problem) => {
                return Err(InputError::UnsafeMember {
                    path: path.to_path_buf(),
                    member: member.clone(),
                    problem,
                })
            }
            Ok(_) => {}
        }
        if kind.is_hard_link() {
            let target = entry.link_name_bytes().unwrap_or_default().into_owned();
            if let Err(problem) = safepath::relative(Path::new(OsStr::from_bytes(&target))) {
                return Err(refused(&format!("a hard link to {problem}")));
            }
        } else if !(kind.is_file()
            || kind.is_dir()
            || kind.is_symlink()
            || kind.is_contiguous()
            || kind.is_gnu_sparse())
        {
            return Err(refused("neither a file, a directory nor a link"));
        }
        if entry.size() > MAX_FILE_BYTES {
            let why = format!(
                "{} bytes, over the {} MiB a file in an image may have",
                entry.size(),
                MAX_FILE_BYTES >> 20
            );
            return Err(refused(&why));
        }
        // unpack_in also refuses a member that would be written through a
        // symlink pointing outside (an error, or false); other errors are
        // a tarball cut short or damaged.
        match entry.unpack_in(dir) {
            Ok(true) => {}
            Ok(false) => return Err(refused("it would be written outside the release")),
            Err(e) if e.to_string().contains("outside of destination") => {
                return Err(refused(
                    "it would be written outside the release, through a symlink",
                ))
            }
            Err(source) => {
                return Err(InputError::CorruptMember {
                    path: path.to_path_buf(),
                    member,
                    source,
                })
            }
        }
    }
    Ok(())
}

fn find_in_project(project: &Path, selector: &Selector) -> Result<PathBuf, InputError> {
    let profile = selector.profile.clone().unwrap_or_else(|| "prod".into());
    let rel_root = project.join("_build").join(&profile).join("rel");
    let mut names: Vec<String> = fs::read_dir(&rel_root)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| is_release_dir(&e.path()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    match (&selector.release, names.as_slice()) {
        (_, []) => Err(InputError::NoBuiltRelease(project.to_path_buf(), profile)),
        (Some(name), _) if names.contains(name) => Ok(rel_root.join(name)),
        (Some(name), _) => Err(InputError::NoSuchRelease {
            path: project.to_path_buf(),
            name: name.clone(),
            names: names.join(", "),
        }),
        (None, [only]) => Ok(rel_root.join(only)),
        (None, _) => Err(InputError::AmbiguousRelease {
            path: project.to_path_buf(),
            names: names.join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_release(dir: &Path) {
        fs::create_dir_all(dir.join("releases")).unwrap();
        fs::write(dir.join("releases/start_erl.data"), "13.1.5 0.1.0").unwrap();
    }

    #[test]
    fn project_dirs_lead_to_their_release() {
        let project = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let sel = Selector::default();
        let err = resolve(project.path(), &sel, scratch.path()).unwrap();
        assert_eq!(err.dir, project.path(), "no _build: taken as given");
        fs::create_dir_all(project.path().join("_build/prod/rel")).unwrap();
        assert!(matches!(
            resolve(project.path(), &sel, scratch.path()),
            Err(InputError::NoBuiltRelease(..))
        ));
        fake_release(&project.path().join("_build/prod/rel/a"));
        assert!(resolve(project.path(), &sel, scratch.path())
            .unwrap()
            .dir
            .ends_with("rel/a"));
        fake_release(&project.path().join("_build/prod/rel/b"));
        assert!(matches!(
            resolve(project.path(), &sel, scratch.path()),
            Err(InputError::AmbiguousRelease { .. })
        ));
        let pick_b = Selector {
            release: Some("b".into()),
            ..Selector::default()
        };
        assert!(resolve(project.path(), &pick_b, scratch.path())
            .unwrap()
            .dir
            .ends_with("rel/b"));
    }

    /// A tarball whose one member has the raw name `name`.
    fn tarball_with_member(dir: &Path, name: &[u8]) -> PathBuf {
        let tarball = dir.join("bad-0.1.0.tar.gz");
        let enc =
            flate2::write::GzEncoder::new(fs::File::create(&tarball).unwrap(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(enc);
        builder.append_dir_all(".", dir.join("src")).unwrap();
        let mut header = tar::Header::new_old();
        // set_path() refuses `..` and `/`: write the raw name field.
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_size(1);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, &b"x"[..]).unwrap();
        builder.into_inner().unwrap().finish().unwrap();
        tarball
    }

    #[test]
    fn members_outside_the_release_refuse_the_tarball() {
        let cases: [(&[u8], &str); 4] = [
            (b"../outside", "climb out"),
            (b"/etc/cron.d/x", "absolute"),
            (b"lib/../../x", "climb out"),
            (b"priv/caf\xe9", "not UTF-8"),
        ];
        for (name, problem) in cases {
            let dir = tempfile::tempdir().unwrap();
            fake_release(&dir.path().join("src"));
            let tarball = tarball_with_member(dir.path(), name);
            let scratch = dir.path().join("scratch");
            let err = resolve(&tarball, &Selector::default(), &scratch).unwrap_err();
            let text = err.to_string();
            let shown = name.escape_ascii().to_string();
            assert!(text.contains(&shown) && text.contains(problem), "{text}");
            assert!(!dir.path().join("outside").exists());
            assert_eq!(
                fs::read_dir(&scratch).unwrap().count(),
                0,
                "the unpacked dir is removed"
            );
        }
    }

    #[test]
    fn a_member_written_through_an_escaping_symlink_refuses_the_tarball() {
        let dir = tempfile::tempdir().unwrap();
        fake_release(&dir.path().join("src"));
        let tarball = dir.path().join("sneaky-0.1.0.tar.gz");
        let enc =
            flate2::write::GzEncoder::new(fs::File::create(&tarball).unwrap(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(enc);
        builder.append_dir_all(".", dir.path().join("src")).unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder.append_link(&mut link, "lib", "..").unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_size(1);
        file.set_mode(0o644);
        builder.append_data(&mut file, "lib/planted", &b"x"[..]).unwrap();
        builder.into_inner().unwrap().finish().unwrap();
        let scratch = dir.path().join("scratch");
        let err = resolve(&tarball, &Selector::default(), &scratch).unwrap_err();
        assert!(
            matches!(err, InputError::RefusedMember { ref member, .. } if member == "lib/planted"),
            "{err}"
        );
        assert!(err.to_string().contains("through a symlink"), "{err}");
        assert!(!scratch.join("planted").exists() && !dir.path().join("planted").exists());
        assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);
    }

    #[test]
    fn tarballs_unpack_and_corrupt_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fake_release(&src);
        let tarball = dir.path().join("r-0.1.0.tar.gz");
        let enc =
            flate2::write::GzEncoder::new(fs::File::create(&tarball).unwrap(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(enc);
        builder.append_dir_all(".", &src).unwrap();
        builder.into_inner().unwrap().finish().unwrap();
        let scratch = dir.path().join("scratch");
        let resolved = resolve(&tarball, &Selector::default(), &scratch).unwrap();
        assert!(resolved.dir.join("releases/start_erl.data").is_file());
        let bytes = fs::read(&tarball).unwrap();
        fs::write(&tarball, &bytes[..bytes.len() / 2]).unwrap();
        let err = resolve(&tarball, &Selector::default(), &scratch).unwrap_err();
        assert!(err.to_string().contains("truncated or corrupt"), "{err}");
        fs::write(&tarball, b"garbage").unwrap();
        assert!(matches!(
            resolve(&tarball, &Selector::default(), &scratch),
            Err(InputError::CorruptTarball { .. })
        ));
    }
}
