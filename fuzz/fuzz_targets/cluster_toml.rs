//! `unibeam.toml`: parsing, the checks with `file:line:column`, and the
//! replica layout that `up` computes from a file that passed them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use unibeam_cluster::{config, plan};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = unibeam_fuzz::scratch().join("unibeam.toml");
    if let Ok(compose) = config::parse(&path, text) {
        let layout = plan::plan(&compose, Path::new("/nonexistent/state"));
        let _ = plan::fits(&layout);
        let _ = layout.peers();
    }
});
