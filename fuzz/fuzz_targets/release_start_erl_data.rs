//! `releases/start_erl.data`: the ERTS and release versions `build` boots,
//! and everything `Release::open` then reads from the directory it names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibeam_image::Release;

fuzz_target!(|data: &[u8]| {
    let root = unibeam_fuzz::release_with("releases/start_erl.data", data);
    let _ = Release::open(root);
});
