//! init's `boot.json`: the boot spec the host writes into the config layer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibeam_spec::BootSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = BootSpec::from_json(text) {
        // What the host writes, init must read back the same.
        let again = BootSpec::from_json(&spec.to_json()).expect("a written spec reads back");
        assert_eq!(again, spec);
    }
});
