//! A release tarball (`rebar3 as prod tar`) as `build` unpacks it. The
//! input is the tar stream; it is gzipped here as rebar3 does, since the
//! fuzzer would rarely get a gzip checksum right.
#![no_main]

use flate2::write::GzEncoder;
use flate2::Compression;
use libfuzzer_sys::fuzz_target;
use std::io::Write;
use unibeam_image::{resolve_input, Selector};

fuzz_target!(|data: &[u8]| {
    let dir = unibeam_fuzz::scratch().join("tarball");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hello-0.1.0.tar.gz");
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(data).unwrap();
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    let scratch = dir.join("scratch");
    if let Ok(input) = resolve_input(&path, &Selector::default(), &scratch) {
        // Whatever came out must lie inside the scratch directory.
        assert!(input.dir.starts_with(&scratch), "{}", input.dir.display());
        let _ = unibeam_image::Release::open(&input.dir);
    }
});
