//! The charts the UI shows, drawn as SVG on the server from the metrics
//! history and the cluster's mesh (unibeam-charts), so the page needs no
//! charting code of its own.

use crate::app::{blocking, instance_name, App};
use crate::error::ApiError;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::time::Duration;
use unibeam_charts::{GraphNode, LineChart, Series};
use unibeam_lifecycle::overview::{self, MESH_TIMEOUT};
use unibeam_lifecycle::stats::{self, now_ms, StatSample};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 300;
/// Charts cover the last ten minutes unless asked otherwise.
const DEFAULT_SPAN: u64 = 600;
/// At most a day.
const MAX_SPAN: u64 = 86_400;
/// The memory types `erlang:memory/0` reports that the line chart draws.
const MEMORY_TYPES: [&str; 7] = ["total", "processes", "system", "binary", "code", "ets", "atom"];

#[derive(Deserialize)]
pub struct SpanQuery {
    since: Option<u64>,
}

fn svg(body: String) -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml")], body).into_response()
}

/// `memory.svg`, `processes.svg`, `run_queue.svg`, `cpu.svg` and
/// `memory-pie.svg`.
pub async fn instance_chart(
    State(app): State<App>,
    Path((name, chart)): Path<(String, String)>,
    Query(q): Query<SpanQuery>,
) -> Result<Response, ApiError> {
    let name = instance_name(&name)?;
    let span = q.since.unwrap_or(DEFAULT_SPAN);
    if span > MAX_SPAN {
        return Err(ApiError::bad_request(format!(
            "since: at most {MAX_SPAN} seconds"
        )));
    }
    let draw = drawing(&chart).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no chart {chart:?}: memory.svg, processes.svg, run_queue.svg, cpu.svg or memory-pie.svg"
            ),
        )
    })?;
    let samples =
        blocking(move || Ok(stats::read(&app.store, &name, Some(Duration::from_secs(span)))?)).await?;
    Ok(svg(draw(&samples, now_ms())))
}

type Drawing = fn(&[StatSample], u64) -> String;

fn drawing(chart: &str) -> Option<Drawing> {
    Some(match chart {
        "memory.svg" => memory_chart,
        "processes.svg" => |s, now| {
            one_line("Processes", "", "processes", s, now, |s| {
                Some(s.beam.as_ref()?.process_count as f64)
            })
        },
        "run_queue.svg" => |s, now| {
            one_line("Run queue", "", "run queue", s, now, |s| {
                Some(s.beam.as_ref()?.run_queue as f64)
            })
        },
        "cpu.svg" => |s, now| {
            one_line("Host CPU (QEMU)", "% of a core", "cpu", s, now, |s| {
                s.qemu_cpu_percent
            })
        },
        "memory-pie.svg" => |s, _| memory_pie(s),
        _ => return None,
    })
}

/// Seconds before `now`, as the charts' x axis counts (negative).
fn ago(sample: &StatSample, now: u64) -> f64 {
    -((now.saturating_sub(sample.time_ms)) as f64 / 1000.0)
}

fn series(
    name: &str,
    samples: &[StatSample],
    now: u64,
    value: impl Fn(&StatSample) -> Option<f64>,
) -> Series {
    Series {
        name: name.to_string(),
        points: samples
            .iter()
            .filter_map(|s| Some((ago(s, now), value(s)?)))
            .collect(),
    }
}

fn one_line(
    title: &str,
    unit: &str,
    name: &str,
    samples: &[StatSample],
    now: u64,
    value: impl Fn(&StatSample) -> Option<f64>,
) -> String {
    let series = [series(name, samples, now, value)];
    unibeam_charts::line_chart(&LineChart {
        title,
        y_unit: unit,
        series: &series,
        width: WIDTH,
        height: HEIGHT,
    })
}

fn memory_chart(samples: &[StatSample], now: u64) -> String {
    let series: Vec<Series> = MEMORY_TYPES
        .iter()
        .map(|kind| {
            series(kind, samples, now, |s| {
                Some(*s.beam.as_ref()?.memory.get(*kind)? as f64 / 1048576.0)
            })
        })
        .collect();
    unibeam_charts::line_chart(&LineChart {
        title: "BEAM memory by type",
        y_unit: "MB",
        series: &series,
        width: WIDTH,
        height: HEIGHT,
    })
}

/// The newest sample's memory as disjoint parts: processes, atom, binary,
/// code, ets, and the rest of `system`.
fn memory_pie(samples: &[StatSample]) -> String {
    let memory = samples.iter().rev().find_map(|s| Some(&s.beam.as_ref()?.memory));
    let get = |k: &str| memory.and_then(|m| m.get(k)).copied().unwrap_or(0);
    let parts = ["atom", "binary", "code", "ets"];
    let other = parts
        .iter()
        .fold(get("system"), |left, k| left.saturating_sub(get(k)));
    let mut slices: Vec<(String, f64)> = std::iter::once("processes")
        .chain(parts)
        .map(|k| (k.to_string(), get(k) as f64))
        .collect();
    slices.push(("other system".into(), other as f64));
    unibeam_charts::pie_chart("Memory by type (now)", &slices, WIDTH, HEIGHT)
}

/// `/api/clusters/{name}/graph.svg`: the mesh, nodes up or down.
pub async fn cluster_graph(State(app): State<App>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let view = blocking(move || Ok(overview::cluster(&app.store, &name, MESH_TIMEOUT)?)).await?;
    let nodes: Vec<GraphNode> = view
        .mesh
        .nodes
        .iter()
        .map(|n| GraphNode {
            name: n.name.clone(),
            up: n.up,
        })
        .collect();
    let links: Vec<(usize, usize)> = view.mesh.links.iter().map(|[a, b]| (*a, *b)).collect();
    Ok(svg(unibeam_charts::cluster_graph(
        &nodes,
        &links,
        WIDTH,
        HEIGHT + 60,
    )))
}
