//! unibeam's control plane: `unibeam dashboard` serves a JSON HTTP API
//! (described at `/api/openapi.json`) and a web UI with live charts, over
//! the same lifecycle library as the CLI. It owns no instance: each has
//! its own monitor, so the dashboard can start and stop at any time.
//!
//! - [`serve`] binds (loopback unless TLS is given), makes or reads the
//!   token, and serves until SIGINT or SIGTERM.
//! - `auth`: every request needs the token; changes need it in a header.
//! - `api_instances`, `api_clusters`, `follow` (SSE) and `charts` (SVG)
//!   are the endpoints; `pages` the built-in UI and OpenAPI document.

#![forbid(unsafe_code)]
// Errors keep their whole chain by value and are returned once per call.
#![allow(clippy::result_large_err)]

mod api_clusters;
mod api_instances;
mod app;
mod auth;
mod charts;
mod error;
mod follow;
mod pages;
mod routes;
mod server;
pub mod token;

pub use server::{serve, ControlError, Options, Started, TlsFiles};

/// The token file, beside the instances' store: `.../unibeam/dashboard/token`.
pub fn token_file(store: &unibeam_vmm::state::Store) -> std::path::PathBuf {
    let parent = store.root.parent().unwrap_or(&store.root);
    parent.join("dashboard").join("token")
}
