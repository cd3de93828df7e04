//! The BEAM chunk reader: relx's per-file gzip, the chunk walk, stripping
//! (with the literal table re-encoded) and the atom, import and literal
//! tables the shell scanner reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibeam_image::beam::{chunks, decompress, strip, tables, Keep};

fuzz_target!(|data: &[u8]| {
    let Ok(plain) = decompress(data) else {
        return;
    };
    let _ = chunks(&plain);
    if let Ok(stripped) = strip(&plain, Keep { lines: false }) {
        // What strip writes, build writes into the image: it must read back.
        assert!(chunks(&stripped).is_ok(), "stripped output is not a BEAM file");
    }
    if let Ok(t) = tables(&plain) {
        for literal in &t.literals {
            let _ = unibeam_image::shell::etf_terms(literal);
        }
    }
});
