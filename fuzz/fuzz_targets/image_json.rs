//! `image.json`: the manifest `run` and `inspect` read, checked against
//! the image's files, then what they compute from it (sizes,
//! per-application sums) and the layer reader that goes by its offsets
//! and sizes. The image's files are small stand-ins: a 64-byte kernel and
//! an initramfs of four plain 16-byte layers, which the seed describes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use unibeam_image::manifest::unpack_layers;
use unibeam_image::{ImageManifest, MANIFEST_FILE};

const INITRAMFS: &[u8; 64] = b"base-layer-16by!erts-layer-16by!deps-layer-16by!app--layer-16by!";

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = unibeam_fuzz::scratch().join("image");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vmlinuz"), [b'k'; 64]).unwrap();
        std::fs::write(dir.join("initramfs.img"), INITRAMFS).unwrap();
        dir
    });
    std::fs::write(dir.join(MANIFEST_FILE), data).unwrap();
    let Ok(manifest) = ImageManifest::read(dir) else {
        return;
    };
    let _ = manifest.total_bytes();
    let _ = manifest.size_summary();
    let _ = manifest.application_sizes();
    let _ = unpack_layers(INITRAMFS, &manifest.initramfs.layers);
});
