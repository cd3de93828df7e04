//! What QEMU boots for an image, prepared on the host and cached by content.
//!
//! Under TCG every instruction the guest runs is emulated, so work the host
//! can do once should never run in the guest at each boot:
//! - the layers are unpacked into one uncompressed newc stream, so the guest
//!   kernel decompresses nothing;
//! - a bzImage whose kernel has a PVH entry point is unwrapped into its ELF
//!   `vmlinux`, which QEMU enters directly, skipping the real-mode setup code
//!   and the in-guest decompressor (seconds of emulated xz under TCG).
//!
//! The image on disk stays as built: compressed, and bootable as is by any
//! loader that takes a bzImage and an initramfs.

use crate::layers::LayerInfo;
use crate::manifest::{unpack_layers, ImageManifest};
use crate::verify::{self, Verified, VerifyError};
use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::Endianness;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::hostfs::{self, at, PathIo};

#[derive(Debug, Error)]
pub enum BootFilesError {
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error("{path}: its layers do not unpack; rebuild the image")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

/// The kernel QEMU should load, and the image's layers unpacked.
pub struct BootFiles {
    /// The PVH ELF taken out of the image's bzImage, or the bzImage itself.
    pub kernel: PathBuf,
    /// One uncompressed newc stream, 4-byte aligned, ready for more
    /// layers: the cached file, open, so that pruning the cache cannot
    /// pull it from under this boot.
    pub layers: fs::File,
}

/// Checks the image in `image_dir` against its `manifest` (verify.rs),
/// then unpacks (or finds in `cache`) what booting it needs; with `pvh`
/// false the bzImage is booted as it is. Every boot comes through here.
pub fn prepare(
    image_dir: &Path,
    manifest: &ImageManifest,
    cache: &Path,
    pvh: bool,
) -> Result<BootFiles, BootFilesError> {
    let kernel = image_dir.join(&manifest.kernel.file);
    let initramfs = image_dir.join(&manifest.initramfs.file);
    let layers = &manifest.initramfs.layers;
    let (bz, packed) = (
        verify::kernel(&kernel, &manifest.kernel)?,
        verify::layers(&initramfs, layers)?,
    );
    let dir = cache.join("boot");
    fs::create_dir_all(&dir).map_err(at::<PathIo>(&dir))?;
    let vmlinux = if pvh { cached_vmlinux(&bz, &dir)? } else { None };
    Ok(BootFiles {
        kernel: vmlinux.unwrap_or(kernel),
        layers: cached_layers(&initramfs, packed, layers, &dir)?,
    })
}

fn store(path: &Path, data: &[u8]) -> Result<(), BootFilesError> {
    Ok(hostfs::write_atomic(path, data)?)
}

/// The layers unpacked, from the cache under `packed`'s verified key, else
/// unpacked now.
fn cached_layers(
    initramfs: &Path,
    packed: Verified,
    layers: &[LayerInfo],
    dir: &Path,
) -> Result<fs::File, BootFilesError> {
    let path = dir.join(format!("{}.cpio", &packed.key[..32]));
    if let Ok(file) = fs::File::open(&path) {
        mark_used(&path);
        return Ok(file);
    }
    let data = unpack_layers(&packed.bytes, layers).map_err(|source| BootFilesError::Corrupt {
        path: initramfs.to_path_buf(),
        source,
    })?;
    store(&path, &data)?;
    // Opened before pruning, which keeps the newest: this one.
    let file = fs::File::open(&path).map_err(at::<PathIo>(&path))?;
    prune_unpacked(dir, KEEP_UNPACKED);
    Ok(file)
}

/// Unpacked images the cache keeps. Each holds a whole image's files
/// (14 MB for hello) and every rebuild of an app makes a new one, so
/// without a bound the cache grew by a gigabyte in a day of work. A boot
/// holds its copy open, so pruning never pulls one from under a starting
/// VM. Kernels are kept: QEMU opens them by path.
const KEEP_UNPACKED: usize = 8;

/// Records a cache hit in the mtime that pruning goes by; best effort.
fn mark_used(path: &Path) {
    if let Ok(file) = fs::File::options().write(true).open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Removes all but the `keep` most recently used unpacked images; best
/// effort, as a cache that cannot shrink still works.
fn prune_unpacked(dir: &Path, keep: usize) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mut unpacked: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "cpio"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    unpacked.sort_by_key(|(used, _)| std::cmp::Reverse(*used));
    for (_, path) in unpacked.into_iter().skip(keep) {
        let _ = fs::remove_file(path);
    }
}

/// The PVH-capable ELF inside `kernel`, from the cache or extracted now;
/// `None` when the kernel cannot be entered that way (no PVH note, or a
/// compression we do not unpack), and QEMU boots the bzImage as is.
fn cached_vmlinux(bz: &Verified, dir: &Path) -> Result<Option<PathBuf>, BootFilesError> {
    let key = &bz.key[..32];
    let path = dir.join(format!("{key}.vmlinux"));
    let none = dir.join(format!("{key}.no-pvh"));
    if path.is_file() {
        return Ok(Some(path));
    }
    if none.is_file() {
        return Ok(None);
    }
    match pvh_vmlinux(&bz.bytes) {
        Some(elf) => {
            store(&path, &elf)?;
            Ok(Some(path))
        }
        None => {
            store(&none, b"")?;
            Ok(None)
        }
    }
}

/// Takes the compressed `vmlinux` out of a bzImage (boot protocol 2.08+:
/// `payload_offset`/`payload_length` in the setup header) and returns it if
/// it carries the PVH entry note.
pub fn pvh_vmlinux(bz: &[u8]) -> Option<Vec<u8>> {
    let u32_at = |at: usize| Some(u32::from_le_bytes(bz.get(at..at + 4)?.try_into().ok()?) as usize);
    if bz.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let setup_sects = match *bz.get(0x1f1)? as usize {
        0 => 4,
        n => n,
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
    let payload = bz.get(start..start + u32_at(0x24c)?)?;
    let elf = decompress(payload)?;
    has_pvh_note(&elf).then_some(elf)
}

/// The kernel's own decompressor formats we also read on the host.
fn decompress(payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    if payload.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return xz_one_stream(payload);
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        // The kernel appends the uncompressed size after the frame.
        zstd::stream::Decoder::new(payload)
            .ok()?
            .single_frame()
            .read_to_end(&mut out)
            .ok()?;
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(payload).read_to_end(&mut out).ok()?;
    } else {
        return None;
    }
    Some(out)
}

/// Decodes the first xz stream and ignores what follows it (the kernel's
/// size trailer), which `XzDecoder` would reject as a corrupt stream.
fn xz_one_stream(payload: &[u8]) -> Option<Vec<u8>> {
    use xz2::stream::{Action, Status, Stream};
    let mut stream = Stream::new_stream_decoder(u64::MAX, 0).ok()?;
    let mut out = Vec::with_capacity(payload.len() * 4);
    loop {
        out.reserve(1 << 20);
        let input = payload.get(stream.total_in() as usize..)?;
        let before = (stream.total_in(), out.len());
        match stream.process_vec(input, &mut out, Action::Run).ok()? {
            Status::StreamEnd => return Some(out),
            _ if (stream.total_in(), out.len()) == before => return None,
            _ => {}
        }
    }
}

/// XEN_ELFNOTE_PHYS32_ENTRY in a "Xen" note: the 32-bit PVH entry point
/// QEMU looks for when it is given an ELF kernel.
fn has_pvh_note(data: &[u8]) -> bool {
    const PHYS32_ENTRY: u32 = 18;
    let Ok(file) = ElfFile64::<Endianness>::parse(data) else {
        return false;
    };
    let endian = file.endian();
    let Ok(headers) = file.elf_header().program_headers(endian, data) else {
        return false;
    };
    headers
        .iter()
        .filter(|h| h.p_type(endian) == elf::PT_NOTE)
        .any(|h| {
            let Ok(Some(mut notes)) = h.notes(endian, data) else {
                return false;
            };
            while let Ok(Some(note)) = notes.next() {
                if note.name() == b"Xen" && note.n_type(endian) == PHYS32_ENTRY {
                    return true;
                }
            }
            false
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_most_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
        for i in 0..5u64 {
            let path = dir.path().join(format!("{i}.cpio"));
            fs::write(&path, b"x").unwrap();
            let file = fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(base + std::time::Duration::from_secs(i))
                .unwrap();
        }
        fs::write(dir.path().join("k.vmlinux"), b"x").unwrap();
        // The oldest, just used, outlives the two after it.
        mark_used(&dir.path().join("0.cpio"));
        prune_unpacked(dir.path(), 3);
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["0.cpio", "3.cpio", "4.cpio", "k.vmlinux"]);
    }

    #[test]
    fn non_bzimage_has_no_vmlinux() {
        assert!(pvh_vmlinux(b"").is_none());
        assert!(pvh_vmlinux(&[0u8; 4096]).is_none());
    }

    #[test]
    fn payload_past_the_end_is_refused() {
        let mut bz = vec![0u8; 2048];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x1f1] = 1;
        bz[0x248..0x24c].copy_from_slice(&100u32.to_le_bytes());
        bz[0x24c..0x250].copy_from_slice(&1_000_000u32.to_le_bytes());
        assert!(pvh_vmlinux(&bz).is_none());
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        xz2::read::XzEncoder::new(data, 6).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn xz_payload_with_size_trailer_decodes() {
        let mut payload = xz(b"vmlinux bytes");
        payload.extend_from_slice(&13u32.to_le_bytes());
        assert_eq!(xz_one_stream(&payload).unwrap(), b"vmlinux bytes");
        assert!(xz_one_stream(&payload[..payload.len() / 2]).is_none());
    }

    #[test]
    fn payload_that_is_not_elf_is_booted_as_bzimage() {
        let payload = xz(b"not an ELF file");
        let mut bz = vec![0u8; 1024];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x1f1] = 1;
        bz[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        bz.extend_from_slice(&payload);
        assert!(pvh_vmlinux(&bz).is_none());
    }

    #[test]
    fn elf_without_notes_is_not_pvh() {
        assert!(!has_pvh_note(b"\x7fELF"));
        assert!(!has_pvh_note(&[0u8; 64]));
    }
}
