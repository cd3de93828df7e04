//! relx's start-script work on `sys.config.src` and `vm.args(.src)`:
//! `${VAR}` replacement, `-args_file` chains, and dropping the lines an
//! instance overrides. The input is a vm.args, then NUL-separated the
//! other files of a chain: `-args_file PATH` reads the file numbered by
//! PATH's last byte, so chains, diamonds and cycles get explored.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibeam_spec::{filter_vm_args, inline_args_files, replace_os_vars};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = vec![
        ("NODE".to_string(), "web@10.0.0.2".to_string()),
        ("EMPTY".to_string(), String::new()),
        ("LOOP".to_string(), "${LOOP}".to_string()),
    ];
    let files: Vec<&str> = text.split('\0').collect();
    let read = |path: &str| -> Option<String> {
        let index = path.bytes().last()? as usize % (files.len() + 1);
        files.get(index).map(|f| f.to_string())
    };
    let replaced = replace_os_vars(files[0], &env);
    if let Ok(inlined) = inline_args_files(&replaced, "/release", &read) {
        let _ = filter_vm_args(&inlined, true, true);
    }
});
