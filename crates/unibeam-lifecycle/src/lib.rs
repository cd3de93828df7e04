//! The lifecycle of unibeam's microVMs, as a library: building an image
//! from a release, preparing and booting a VM, detached instances
//! (create, start, stop, kill, remove, list, inspect, logs) and clusters
//! (plan, up, down). The `unibeam` CLI parses arguments, calls these
//! functions and prints what they return; the control plane calls the
//! same functions.
//!
//! Long steps report through [`Progress`]; nothing here prints.

pub mod clusters;
pub mod down;
pub mod images;
pub mod instances;
pub mod logs;
pub mod paths;
pub mod progress;
pub mod scratch;
pub mod settings;
pub mod systemd;
pub mod timeline;
pub mod up;
pub mod vm;

pub use progress::{Progress, Quiet};
