//! Helpers shared by the fuzz targets: parsers that read files get a
//! scratch directory made once per process, and the release parsers a
//! small release tree in which one file at a time is replaced by the
//! fuzzer's input.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A directory that lives as long as the fuzzing process: in /dev/shm
/// where there is one, since rewriting files on a disk mounted with
/// `discard` takes most of a millisecond each (100 runs a second, not 10k).
pub fn scratch() -> &'static Path {
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        };
        // libFuzzer ends with exit(), which drops no statics: remove the
        // directory from an exit handler instead.
        // SAFETY: `remove_scratch` is a plain function that does not unwind.
        unsafe { libc::atexit(remove_scratch) };
        dir.expect("a scratch directory").keep()
    })
}

static DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_scratch() {
    if let Some(dir) = DIR.get() {
        let _ = fs::remove_dir_all(dir);
    }
}

/// A relx release as `rebar3 as prod release` lays it out for hello (the
/// real files, less the boot scripts' bulk): version 0.1.0 is current,
/// 0.0.9 an older one beside it, so both `start_erl.data`'s version and
/// the `.rel` file of another version are read.
pub fn release_tree() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = scratch().join("release");
        for vsn in ["0.1.0", "0.0.9"] {
            let rel = root.join("releases").join(vsn);
            fs::create_dir_all(&rel).unwrap();
            fs::write(rel.join("hello.rel"), HELLO_REL.replace("0.1.0", vsn)).unwrap();
            fs::write(rel.join("start.boot"), HELLO_BOOT).unwrap();
            fs::write(rel.join("sys.config"), "[].\n").unwrap();
            fs::write(rel.join("vm.args"), VM_ARGS).unwrap();
        }
        fs::create_dir_all(root.join("lib/hello-0.1.0/ebin")).unwrap();
        fs::create_dir_all(root.join("bin")).unwrap();
        restore_release();
        // The targets vary one file of a release that opens: else they
        // would only ever explore the first error.
        if let Err(e) = unibeam_image::Release::open(&root) {
            panic!("the template release does not open: {e}");
        }
        root
    })
}

/// Puts back the files the release targets replace.
pub fn restore_release() {
    let root = scratch().join("release");
    fs::write(root.join("releases/start_erl.data"), "13.1.5 0.1.0\n").unwrap();
    fs::write(root.join("releases/RELEASES"), "[].\n").unwrap();
    for vsn in ["0.1.0", "0.0.9"] {
        let rel = root.join("releases").join(vsn);
        fs::write(rel.join("hello.rel"), HELLO_REL.replace("0.1.0", vsn)).unwrap();
        fs::write(rel.join("vm.args"), VM_ARGS).unwrap();
    }
}

/// Writes `data` to `path` (relative to the release tree) and returns the
/// tree's root.
pub fn release_with(path: &str, data: &[u8]) -> &'static Path {
    let root = release_tree();
    restore_release();
    fs::write(root.join(path), data).unwrap();
    root
}

const HELLO_REL: &str = r#"{release,{"hello","0.1.0"},
         {erts,"13.1.5"},
         [{kernel,"8.5.3"},{stdlib,"4.2"},{hello,"0.1.0"}]}.
"#;

/// hello's real boot script: `build` checks it is a whole term.
const HELLO_BOOT: &[u8] = include_bytes!("../corpus/boot_script/start.boot");

const VM_ARGS: &str = "-sname hello\n-setcookie hello_cookie\n+K true\n+A30\n";
