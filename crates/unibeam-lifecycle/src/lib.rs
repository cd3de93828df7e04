//! The lifecycle of unibeam's microVMs, as a library: building an image
//! from a release, preparing and booting a VM, detached instances
//! (create, start, stop, kill, remove, list, inspect, logs) and clusters
//! (plan, up, down). The `unibeam` CLI parses arguments, calls these
//! functions and prints what they return; the control plane calls the
//! same functions.
//!
//! Long steps report through [`Progress`]; nothing here prints.

// Errors keep their whole chain by value. They are returned once per
// command or API call, never in a loop, so their size costs nothing.
#![allow(clippy::result_large_err)]

pub mod clusters;
pub mod dist_tls;
pub mod down;
pub mod foreground;
pub mod images;
pub mod instances;
pub mod logs;
pub mod networks;
pub mod overview;
pub mod paths;
pub mod progress;
pub mod remote;
pub mod remsh;
pub mod scratch;
pub mod settings;
pub mod snapshots;
pub mod stats;
pub mod suspend;
pub mod systemd;
#[cfg(test)]
mod testing;
pub mod timeline;
pub mod up;
pub mod up_networks;
pub mod vm;
pub mod volume_archive;
pub mod volumes;

pub use progress::{Progress, Quiet};
