//! `releases/<vsn>/<name>.rel`: read for the ERTS version of a release
//! other than the one `start_erl.data` names (`--release-version`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibeam_image::Release;

fuzz_target!(|data: &[u8]| {
    let root = unibeam_fuzz::release_with("releases/0.0.9/hello.rel", data);
    let _ = Release::open_version(root, Some("0.0.9"));
});
