//! Boot scripts (`releases/<vsn>/start.boot`): `build` checks that one is
//! a whole `{script, ...}` term before it goes into an image.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = unibeam_image::erlfiles::check_boot_script(data);
});
