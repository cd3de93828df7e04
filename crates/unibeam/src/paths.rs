//! Where unibeam keeps things on the host, and the progress display that
//! long steps share.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Duration;

/// `$XDG_CACHE_HOME/unibeam`, else `~/.cache/unibeam`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("unibeam"));
    }
    let home = std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/unibeam"))
}

/// The guest PID 1: `$UNIBEAM_INIT`, else `unibeam-init` beside this binary,
/// where `cargo build` and `make install` put it.
pub fn init_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("UNIBEAM_INIT") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the unibeam binary")?;
    Ok(exe.with_file_name("unibeam-init"))
}

/// A spinner on stderr; indicatif hides it when stderr is not a terminal.
pub fn spinner(prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
            .expect("static template is valid"),
    );
    bar.set_prefix(prefix.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}
