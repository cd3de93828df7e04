//! Loads kernel modules in the order the image builder computed.

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};
use std::ffi::CString;
use std::fs::File;

pub fn load_all(paths: &[String]) -> Result<(), String> {
    let no_params = CString::default();
    for path in paths {
        let file = File::open(path).map_err(|e| format!("{path}: {e}"))?;
        match finit_module(&file, &no_params, ModuleInitFlags::empty()) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(format!("{path}: finit_module: {e}")),
        }
    }
    Ok(())
}
