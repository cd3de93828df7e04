//! The shell scanner's reader of literals in the external term format.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = unibeam_image::shell::etf_terms(data);
});
