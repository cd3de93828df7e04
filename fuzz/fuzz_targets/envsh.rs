//! mix's `env.sh`, read without a shell, then applied to an environment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibeam_spec::EnvScript;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let script = EnvScript::parse(text);
    let env = vec![
        ("RELEASE_NAME".to_string(), "hello".to_string()),
        ("HOME".to_string(), String::new()),
    ];
    let _ = script.apply(&env);
});
