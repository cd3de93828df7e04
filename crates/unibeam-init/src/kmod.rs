//! Loads one kernel module; the image builder computed the order.

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};
use std::ffi::CString;
use std::fs::File;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KmodError {
    #[error("{path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: finit_module")]
    Load {
        path: String,
        #[source]
        source: Errno,
    },
}

pub fn load(path: &str) -> Result<(), KmodError> {
    let file = File::open(path).map_err(|source| KmodError::Open {
        path: path.into(),
        source,
    })?;
    match finit_module(&file, &CString::default(), ModuleInitFlags::empty()) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(source) => Err(KmodError::Load {
            path: path.into(),
            source,
        }),
    }
}
