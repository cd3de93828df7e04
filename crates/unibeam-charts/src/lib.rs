//! Server-side SVG charts for `unibeam dashboard`.
//!
//! The dashboard server renders these on each refresh and the browser
//! inserts the returned string into the page, so every function here
//! returns a complete, self-contained `<svg>` document (no XML
//! declaration, no scripts, no external fonts) and never panics: bad
//! input (NaN, empty, out-of-range indices, hostile names) degrades to a
//! smaller or explanatory chart instead.
//!
//! Text is drawn by plotters' SVG backend as `<text>` elements with
//! `font-family="sans-serif"`; the browser picks the font. Built without
//! plotters' `ttf`/`ab_glyph` features, plotters only *estimates* text
//! widths (a fixed per-character width), which is all the layout needs
//! and keeps fontconfig/freetype and font files out of the build. The
//! backend XML-escapes text content and attribute values, so names from
//! state files cannot inject markup.
//!
//! Each root `<svg>` carries `data-*` counts (`data-points`,
//! `data-slices`, `data-nodes`, `data-links`) so browser tests can check
//! what was drawn without parsing geometry.
#![forbid(unsafe_code)]

mod graph;
mod line;
mod pie;
mod svg;

pub use graph::{cluster_graph, GraphNode};
pub use line::{line_chart, LineChart, Series};
pub use pie::pie_chart;
