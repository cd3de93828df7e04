//! The ELF closure reader: what `build` reads from every executable and
//! shared library (interpreter, DT_NEEDED, RPATH, RUNPATH), the machine
//! check, and the library search those names drive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;
use unibeam_image::elf::{ElfInfo, Resolver};

fuzz_target!(|data: &[u8]| {
    static RESOLVER: OnceLock<Resolver> = OnceLock::new();
    let path = Path::new("/release/lib/app/priv/nif.so");
    let Ok(info) = ElfInfo::parse(data, path) else {
        return;
    };
    let _ = info.check_x86_64(path);
    let resolver = RESOLVER.get_or_init(Resolver::host);
    for name in info.needed.iter().take(8) {
        let _ = resolver.find(name, &info, path);
    }
});
