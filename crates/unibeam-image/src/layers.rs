//! Splits the image tree into layers, each a compressed newc archive, and
//! caches every compressed layer by a hash of its content, so rebuilding
//! after an app change recompresses only the app layer.
//!
//! The kernel unpacks concatenated archives in order, so the initramfs is
//! simply the layers back to back.

use crate::initramfs::{Node, Tree};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::hostfs::{self, at, PathIo};

#[derive(Debug, Error)]
pub enum LayerError {
    /// A file of the layer cache, of the tree, or the image being written.
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error("the {layer} layer: cannot archive and compress it")]
    Pack {
        layer: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Layers in unpack order. `config` is added per instance by the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerName {
    /// init, the dynamic loader, the libraries, kernel modules.
    Base,
    /// The release's ERTS.
    Erts,
    /// OTP and third-party applications.
    Deps,
    /// The release's own application and its boot files.
    App,
}

impl LayerName {
    pub const ALL: [LayerName; 4] = [LayerName::Base, LayerName::Erts, LayerName::Deps, LayerName::App];

    pub fn as_str(self) -> &'static str {
        match self {
            LayerName::Base => "base",
            LayerName::Erts => "erts",
            LayerName::Deps => "deps",
            LayerName::App => "app",
        }
    }

    /// Which layer a guest path belongs to, for a release at `release_root`
    /// whose own application is `app`.
    pub fn of(path: &str, release_root: &str, app: &str) -> LayerName {
        let Some(rel) = path.strip_prefix(release_root).and_then(|r| r.strip_prefix('/')) else {
            return LayerName::Base;
        };
        let own_app = format!("lib/{app}-");
        if rel.starts_with("erts-") {
            LayerName::Erts
        } else if rel.starts_with(&own_app) {
            LayerName::App
        } else if rel.starts_with("lib/") {
            LayerName::Deps
        } else {
            LayerName::App
        }
    }
}

/// How layers are compressed; the kernel itself unpacks each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format", content = "level", rename_all = "lowercase")]
pub enum Compression {
    Zstd(i32),
    /// xz: x86 BCJ + LZMA2 preset 9 extreme with a dictionary no bigger
    /// than the layer, and a CRC32 check, which the kernel's decoder verifies.
    Xz,
    /// Plain cpio: the biggest image, but nothing to decompress at boot.
    None,
}

impl Compression {
    pub fn label(self) -> String {
        match self {
            Compression::Zstd(level) => format!("zstd-{level}"),
            Compression::Xz => "xz-x86-9e".into(),
            Compression::None => "none".into(),
        }
    }

    pub fn compress(self, data: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Compression::Zstd(level) => zstd::encode_all(data, level),
            Compression::None => Ok(data.to_vec()),
            Compression::Xz => {
                // LZMA_PRESET_EXTREME from lzma.h; xz2 does not re-export it.
                let mut options =
                    xz2::stream::LzmaOptions::new_preset(9 | 0x8000_0000).map_err(io::Error::other)?;
                // The kernel allocates the whole dictionary before it unpacks
                // a layer; preset 9's 64 MiB would not fit a small guest.
                // A dictionary as big as the layer compresses just as well.
                options.dict_size(xz_dict_size(data.len()));
                // The x86 BCJ filter makes machine code compress better, and
                // Debian's kernel decodes it (CONFIG_XZ_DEC_X86).
                let mut filters = xz2::stream::Filters::new();
                filters.x86().lzma2(&options);
                let stream = xz2::stream::Stream::new_stream_encoder(&filters, xz2::stream::Check::Crc32)
                    .map_err(io::Error::other)?;
                let mut out = Vec::new();
                xz2::read::XzEncoder::new_stream(data, stream).read_to_end(&mut out)?;
                Ok(out)
            }
        }
    }
}

/// One built layer, as recorded in image.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub name: LayerName,
    pub offset: u64,
    pub bytes: u64,
    pub uncompressed_bytes: u64,
    /// Archive entries, directories included.
    pub entries: usize,
    /// Content key the cache uses; equal keys mean equal layers.
    pub key: String,
    pub sha256: String,
}

/// The smallest power of two that holds `len` bytes, between 64 KiB and
/// preset 9's 64 MiB.
fn xz_dict_size(len: usize) -> u32 {
    (len.clamp(64 << 10, 64 << 20) as u32).next_power_of_two()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Hashes everything that ends up in the archive, without building it.
fn layer_key(tree: &Tree, compression: Compression) -> Result<String, PathIo> {
    let mut h = Sha256::new();
    h.update(b"unibeam-layer-v2\0");
    h.update(compression.label().as_bytes());
    for (path, node) in tree.nodes() {
        h.update(path.as_bytes());
        h.update([0]);
        match node {
            Node::Dir => h.update(b"d"),
            Node::Symlink(t) => h.update(format!("l{t}\0").as_bytes()),
            Node::CharDevice { major, minor } => h.update(format!("c{major}:{minor}\0").as_bytes()),
            Node::Bytes { data, executable } => {
                h.update(format!("f{executable}{}\0", data.len()).as_bytes());
                h.update(data);
            }
            Node::HostFile { source, executable } => {
                let data = fs::read(source).map_err(at(source))?;
                h.update(format!("f{executable}{}\0", data.len()).as_bytes());
                h.update(&data);
            }
        }
    }
    Ok(hex(&h.finalize()))
}

/// One file of the image, for `inspect --files` and the image's SBOM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub path: String,
    pub layer: LayerName,
    /// `file`, `symlink` or `chardev`.
    pub kind: String,
    pub bytes: u64,
    /// Of the contents, or of the link target for symlinks.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
}

fn file_records(tree: &Tree, layer: LayerName) -> Result<Vec<FileRecord>, PathIo> {
    let mut records = Vec::new();
    for (path, node) in tree.nodes() {
        let (kind, data) = match node {
            Node::Dir => continue,
            Node::CharDevice { .. } => ("chardev", None),
            Node::Symlink(target) => ("symlink", Some(target.as_bytes().to_vec())),
            Node::Bytes { data, .. } => ("file", Some(data.clone())),
            Node::HostFile { source, .. } => ("file", Some(fs::read(source).map_err(at(source))?)),
        };
        records.push(FileRecord {
            path: path.clone(),
            layer,
            kind: kind.into(),
            bytes: data.as_ref().map_or(0, |d| d.len() as u64),
            sha256: data.map(|d| sha256_hex(&d)),
        });
    }
    Ok(records)
}

/// What the cache keeps beside each compressed layer.
#[derive(Serialize, Deserialize)]
struct CachedMeta {
    uncompressed_bytes: u64,
    entries: usize,
    files: Vec<FileRecord>,
}

/// Builds (or fetches from `cache`) each layer and appends it to `out`,
/// the file at `out_path`. Returns the layers and every file in them.
/// With `reuse` false every layer is rebuilt (and the cache refreshed).
pub fn write_layers(
    trees: &BTreeMap<LayerName, Tree>,
    compression: Compression,
    cache: &Path,
    reuse: bool,
    out: &mut impl Write,
    out_path: &Path,
    progress: &dyn Fn(&str),
) -> Result<(Vec<LayerInfo>, Vec<FileRecord>), LayerError> {
    fs::create_dir_all(cache).map_err(at::<PathIo>(cache))?;
    let mut infos = Vec::new();
    let mut files = Vec::new();
    let mut offset = 0u64;
    for (name, tree) in trees {
        let key = layer_key(tree, compression)?;
        let cached = if reuse { read_cached(cache, &key) } else { None };
        let (data, meta) = match cached {
            Some(hit) => hit,
            None => {
                progress(&format!(
                    "compressing the {} layer ({})",
                    name.as_str(),
                    compression.label()
                ));
                let pack = |source| LayerError::Pack {
                    layer: name.as_str(),
                    source,
                };
                let cpio = tree.write_cpio(Vec::new()).map_err(pack)?;
                let data = compression.compress(&cpio).map_err(pack)?;
                let meta = CachedMeta {
                    uncompressed_bytes: cpio.len() as u64,
                    entries: tree.nodes().count(),
                    files: file_records(tree, *name)?,
                };
                store_cached(cache, &key, &data, &meta)?;
                (data, meta)
            }
        };
        out.write_all(&data).map_err(at::<PathIo>(out_path))?;
        infos.push(LayerInfo {
            name: *name,
            offset,
            bytes: data.len() as u64,
            uncompressed_bytes: meta.uncompressed_bytes,
            entries: meta.entries,
            sha256: sha256_hex(&data),
            key,
        });
        files.extend(meta.files);
        offset += data.len() as u64;
    }
    Ok((infos, files))
}

fn cache_paths(cache: &Path, key: &str) -> (PathBuf, PathBuf) {
    (
        cache.join(format!("{key}.cpio")),
        cache.join(format!("{key}.json")),
    )
}

fn read_cached(cache: &Path, key: &str) -> Option<(Vec<u8>, CachedMeta)> {
    let (data_path, meta_path) = cache_paths(cache, key);
    let meta: CachedMeta = serde_json::from_slice(&fs::read(meta_path).ok()?).ok()?;
    Some((fs::read(data_path).ok()?, meta))
}

/// Data first, then the metadata that marks the entry complete; each
/// written atomically, so readers never see half a layer.
fn store_cached(cache: &Path, key: &str, data: &[u8], meta: &CachedMeta) -> Result<(), PathIo> {
    let (data_path, meta_path) = cache_paths(cache, key);
    let json = serde_json::to_vec(meta).expect("layer metadata serialises");
    hostfs::write_atomic(&data_path, data)?;
    hostfs::write_atomic(&meta_path, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_layers() {
        let of = |p| LayerName::of(p, "/release", "hello");
        assert_eq!(of("/init"), LayerName::Base);
        assert_eq!(of("/lib/x86_64-linux-gnu/libc.so.6"), LayerName::Base);
        assert_eq!(of("/release"), LayerName::Base);
        assert_eq!(of("/release/erts-13.1.5/bin/beam.smp"), LayerName::Erts);
        assert_eq!(of("/release/lib/stdlib-4.2/ebin/lists.beam"), LayerName::Deps);
        assert_eq!(of("/release/lib/hello-0.1.0/ebin/hello_app.beam"), LayerName::App);
        assert_eq!(of("/release/lib/hello_web-0.1.0/ebin/x.beam"), LayerName::Deps);
        assert_eq!(of("/release/releases/0.1.0/start.boot"), LayerName::App);
    }

    fn tree_with(data: &[u8]) -> Tree {
        let mut t = Tree::new();
        t.insert(
            "/a/b",
            Node::Bytes {
                data: data.to_vec(),
                executable: false,
            },
        );
        t
    }

    #[test]
    fn only_changed_layers_are_recompressed() {
        let cache = tempfile::tempdir().unwrap();
        let mut trees = BTreeMap::new();
        trees.insert(LayerName::Base, tree_with(b"base"));
        trees.insert(LayerName::App, tree_with(b"v1"));
        let compressed = std::cell::RefCell::new(Vec::new());
        let note = |m: &str| compressed.borrow_mut().push(m.to_string());
        let mut first = Vec::new();
        let (infos, files) = write_layers(
            &trees,
            Compression::Zstd(3),
            cache.path(),
            true,
            &mut first,
            Path::new("first"),
            &note,
        )
        .unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[1].path, "/a/b");
        assert_eq!(files[1].layer, LayerName::App);
        assert_eq!(files[1].sha256.as_deref(), Some(sha256_hex(b"v1").as_str()));
        assert_eq!(compressed.borrow().len(), 2);
        assert_eq!(infos[1].offset, infos[0].bytes);
        assert_eq!(first.len() as u64, infos[0].bytes + infos[1].bytes);

        trees.insert(LayerName::App, tree_with(b"v2"));
        compressed.borrow_mut().clear();
        let mut second = Vec::new();
        let (again, _) = write_layers(
            &trees,
            Compression::Zstd(3),
            cache.path(),
            true,
            &mut second,
            Path::new("second"),
            &note,
        )
        .unwrap();
        assert_eq!(*compressed.borrow(), ["compressing the app layer (zstd-3)"]);
        assert_eq!(again[0], infos[0]);
        assert_ne!(again[1].key, infos[1].key);
    }

    #[test]
    fn a_failed_cache_write_names_the_layer_file() {
        use std::error::Error;
        let cache = tempfile::tempdir().unwrap();
        let mut trees = BTreeMap::new();
        trees.insert(LayerName::App, tree_with(b"v1"));
        let key = layer_key(&trees[&LayerName::App], Compression::None).unwrap();
        // A directory where the layer file goes: its write fails.
        let (data_path, _) = cache_paths(cache.path(), &key);
        fs::create_dir(&data_path).unwrap();
        let err = write_layers(
            &trees,
            Compression::None,
            cache.path(),
            true,
            &mut Vec::new(),
            Path::new("out"),
            &|_| {},
        )
        .unwrap_err();
        assert_eq!(err.to_string(), data_path.display().to_string());
        assert!(err.source().is_some(), "the OS error is the source: {err:?}");
    }

    #[test]
    fn both_compressions_round_trip() {
        let data = b"unibeam ".repeat(1000);
        let z = Compression::Zstd(19).compress(&data).unwrap();
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), data);
        let x = Compression::Xz.compress(&data).unwrap();
        let mut back = Vec::new();
        xz2::read::XzDecoder::new(&x[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn xz_dictionary_fits_the_layer() {
        assert_eq!(xz_dict_size(10), 64 << 10);
        assert_eq!(xz_dict_size(3 << 20), 4 << 20);
        assert_eq!(xz_dict_size(1 << 30), 64 << 20);
        // What a kernel would allocate: the LZMA2 dictionary byte in the
        // block header, after the 12-byte stream header, the header size,
        // flags, the BCJ filter (id, no properties) and LZMA2's id and
        // property size. 64 KiB encodes as 8.
        let x = Compression::Xz.compress(b"tiny layer").unwrap();
        assert_eq!(x[x.len() - 2..], *b"YZ");
        assert_eq!(x[12..18], [0x02, 0x01, 0x04, 0x00, 0x21, 0x01]);
        assert_eq!(x[18], 8);
    }
}
