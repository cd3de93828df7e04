//! What the browser tests need: node, playwright-core in tests/browser
//! (`npm ci` there) and Debian's /usr/bin/chromium. Each test calls
//! [`require_tools`] first, so a missing tool fails it, naming the fix,
//! rather than skipping it.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// tests/browser: the node scripts and their node_modules.
pub fn dir() -> PathBuf {
    crate::workspace_root().join("tests/browser")
}

/// Fails the test when a tool it needs is missing, naming `make tools`.
pub fn require_tools() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is missing ({node:?}): run `make tools` (it installs nodejs, npm, playwright-core and chromium)"
    );
    let playwright = dir().join("node_modules/playwright-core/package.json");
    assert!(
        playwright.is_file(),
        "{} is missing: run `make tools` (npm ci in tests/browser)",
        playwright.display()
    );
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: run `make tools` (apt-get install chromium)"
    );
}
