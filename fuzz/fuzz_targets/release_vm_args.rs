//! `releases/<vsn>/vm.args` as `build` checks it: `-args_file` chains must
//! stay inside the release.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibeam_image::Release;

fuzz_target!(|data: &[u8]| {
    let root = unibeam_fuzz::release_with("releases/0.1.0/vm.args", data);
    let _ = Release::open(root);
});
