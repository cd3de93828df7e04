//! `sys.config` and `--sys-config` files: checked to be one list term
//! ended by `.` before anything boots.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = unibeam_image::erlfiles::check_config(text);
});
