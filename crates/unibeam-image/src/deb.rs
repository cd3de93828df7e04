//! Reads Debian packages (ar archives holding compressed tarballs) without
//! dpkg, so that fetching a kernel needs no root.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::hostfs::{at, PathIo};

#[derive(Debug, Error)]
pub enum DebError {
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error("{path}: no {member}.tar.* member; is this a Debian package?")]
    NoMember { path: PathBuf, member: String },
    #[error("{path}: {member} uses a compression unibeam cannot read")]
    UnknownCompression { path: PathBuf, member: String },
}

/// Opens the `<member>.tar.<ext>` entry of a .deb and hands its decompressed
/// tar stream to `read`.
fn with_tar<T>(
    deb: &Path,
    member: &str,
    read: impl FnOnce(tar::Archive<Box<dyn Read + '_>>) -> Result<T, DebError>,
) -> Result<T, DebError> {
    let file = File::open(deb).map_err(at::<PathIo>(deb))?;
    let mut archive = ar::Archive::new(BufReader::new(file));
    let prefix = format!("{member}.tar");
    while let Some(entry) = archive.next_entry() {
        let entry = entry.map_err(at::<PathIo>(deb))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        let Some(ext) = name.strip_prefix(&prefix) else {
            continue;
        };
        let stream: Box<dyn Read> = match ext {
            ".xz" => Box::new(xz2::read::XzDecoder::new(entry)),
            ".zst" => Box::new(zstd::stream::read::Decoder::new(entry).map_err(at::<PathIo>(deb))?),
            "" => Box::new(entry),
            _ => {
                return Err(DebError::UnknownCompression {
                    path: deb.to_path_buf(),
                    member: name,
                })
            }
        };
        return read(tar::Archive::new(stream));
    }
    Err(DebError::NoMember {
        path: deb.to_path_buf(),
        member: member.to_string(),
    })
}

/// One field of the package's `control` file, e.g. `Depends`.
pub fn control_field(deb: &Path, field: &str) -> Result<Option<String>, DebError> {
    with_tar(deb, "control", |mut tar| {
        for entry in tar.entries().map_err(at::<PathIo>(deb))? {
            let mut entry = entry.map_err(at::<PathIo>(deb))?;
            let path = entry.path().map_err(at::<PathIo>(deb))?.into_owned();
            if path.file_name().is_some_and(|n| n == "control") {
                let mut text = String::new();
                entry.read_to_string(&mut text).map_err(at::<PathIo>(deb))?;
                return Ok(find_field(&text, field));
            }
        }
        Ok(None)
    })
}

fn find_field(control: &str, field: &str) -> Option<String> {
    control.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(field).then(|| value.trim().to_string())
    })
}

/// Unpacks the data files for which `keep` is true (paths relative to `/`)
/// under `dest`. Returns how many entries were written.
pub fn extract_data(deb: &Path, dest: &Path, keep: impl Fn(&Path) -> bool) -> Result<usize, DebError> {
    std::fs::create_dir_all(dest).map_err(at::<PathIo>(dest))?;
    with_tar(deb, "data", |mut tar| {
        let mut written = 0;
        for entry in tar.entries().map_err(at::<PathIo>(deb))? {
            let mut entry = entry.map_err(at::<PathIo>(deb))?;
            let path = entry.path().map_err(at::<PathIo>(deb))?.into_owned();
            let relative = path.strip_prefix(".").unwrap_or(&path).to_path_buf();
            if keep(&relative) {
                // unpack_in refuses entries that would escape `dest`.
                entry.unpack_in(dest).map_err(at::<PathIo>(dest))?;
                written += 1;
            }
        }
        Ok(written)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = xz2::read::XzEncoder::new(data, 1);
        enc.read_to_end(&mut out).unwrap();
        out
    }

    fn fake_deb(dir: &Path) -> PathBuf {
        let path = dir.join("fake.deb");
        let mut builder = ar::Builder::new(File::create(&path).unwrap());
        let members: [(&str, Vec<u8>); 3] = [
            ("debian-binary", b"2.0\n".to_vec()),
            (
                "control.tar.xz",
                xz(&tar_bytes(&[(
                    "./control",
                    b"Package: meta\nDepends: linux-image-6.1.0-9-cloud-amd64\n",
                )])),
            ),
            (
                "data.tar.zst",
                zstd::encode_all(
                    &tar_bytes(&[("./boot/vmlinuz-x", b"kernel"), ("./usr/share/doc/x", b"doc")])[..],
                    3,
                )
                .unwrap(),
            ),
        ];
        for (name, data) in members {
            let header = ar::Header::new(name.as_bytes().to_vec(), data.len() as u64);
            builder.append(&header, &data[..]).unwrap();
        }
        path
    }

    #[test]
    fn reads_control_fields() {
        let dir = tempfile::tempdir().unwrap();
        let deb = fake_deb(dir.path());
        assert_eq!(
            control_field(&deb, "Depends").unwrap().as_deref(),
            Some("linux-image-6.1.0-9-cloud-amd64")
        );
        assert_eq!(control_field(&deb, "Nope").unwrap(), None);
    }

    #[test]
    fn extracts_only_kept_files() {
        let dir = tempfile::tempdir().unwrap();
        let deb = fake_deb(dir.path());
        let out = dir.path().join("out");
        let n = extract_data(&deb, &out, |p| p.starts_with("boot")).unwrap();
        assert_eq!(n, 1);
        assert_eq!(std::fs::read(out.join("boot/vmlinuz-x")).unwrap(), b"kernel");
        assert!(!out.join("usr").exists());
    }

    #[test]
    fn non_deb_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.deb");
        std::fs::write(&path, "not an ar archive").unwrap();
        assert!(control_field(&path, "Depends").is_err());
    }
}
