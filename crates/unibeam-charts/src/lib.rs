//! Server-side SVG charts for the dashboard (being written).
#![forbid(unsafe_code)]
