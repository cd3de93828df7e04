//! `/api/instances`: what `ps`, `inspect`, `stats`, `logs`, `stop`,
//! `kill`, `start`, `rm` and `rpc` do on the command line, with the same
//! JSON shapes as their `--format json`.

use crate::app::{blocking, instance_name, App};
use crate::error::ApiError;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use unibeam_dist::Lang;
use unibeam_lifecycle::{instances, logs, overview, remote, stats};

/// `stop`'s default grace, as the CLI's `stop -t`.
const STOP_GRACE: u64 = 30;
/// The longest grace a caller may ask for.
const MAX_GRACE: u64 = 600;
/// How long one `rpc` may take the node, connecting and evaluating.
const RPC_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest expression `rpc` takes.
const MAX_EXPR: usize = 16 << 10;
/// The most log lines `?tail=` returns.
const MAX_TAIL: usize = 100_000;

#[derive(Deserialize)]
pub struct ListQuery {
    /// Exited instances too (as `ps -a`); on unless `all=false`.
    all: Option<bool>,
}

pub async fn list(State(app): State<App>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let all = q.all.unwrap_or(true);
    blocking(move || Ok(Json(overview::instances_json(&app.store, all).into()))).await
}

pub async fn inspect(State(app): State<App>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let name = instance_name(&name)?;
    blocking(move || Ok(Json(instances::inspect(&app.store, &name)?))).await
}

#[derive(Deserialize)]
pub struct SinceQuery {
    /// Only samples of the last this many seconds.
    pub since: Option<u64>,
}

pub async fn metrics(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<SinceQuery>,
) -> Result<Json<Value>, ApiError> {
    let name = instance_name(&name)?;
    let since = q.since.map(Duration::from_secs);
    blocking(move || {
        let samples = stats::read(&app.store, &name, since)?;
        Ok(Json(samples.iter().map(stats::StatSample::to_json).collect()))
    })
    .await
}

pub async fn timeline(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<Vec<overview::TimelineStep>>, ApiError> {
    let name = instance_name(&name)?;
    blocking(move || Ok(Json(overview::boot_timeline(&app.store, &name)?))).await
}

#[derive(Deserialize)]
pub struct TailQuery {
    tail: Option<usize>,
}

pub async fn logs(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<TailQuery>,
) -> Result<Response, ApiError> {
    let name = instance_name(&name)?;
    if q.tail.is_some_and(|k| k > MAX_TAIL) {
        return Err(ApiError::bad_request(format!("tail: at most {MAX_TAIL} lines")));
    }
    let text = blocking(move || Ok(logs::read(&app.store, &name, q.tail)?)).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

#[derive(Deserialize)]
pub struct StopQuery {
    /// Seconds to wait for the guest to power off before forcing it.
    timeout: Option<u64>,
}

fn grace(q: &StopQuery) -> Result<Duration, ApiError> {
    match q.timeout.unwrap_or(STOP_GRACE) {
        secs if secs <= MAX_GRACE => Ok(Duration::from_secs(secs)),
        _ => Err(ApiError::bad_request(format!(
            "timeout: at most {MAX_GRACE} seconds"
        ))),
    }
}

pub async fn stop(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<Json<Value>, ApiError> {
    let (name, grace) = (instance_name(&name)?, grace(&q)?);
    blocking(move || {
        let record = instances::stop(&app.store, &name, grace)?;
        Ok(Json(overview::instance_json(&app.store, &record)))
    })
    .await
}

pub async fn kill(State(app): State<App>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let name = instance_name(&name)?;
    blocking(move || {
        let record = instances::kill(&app.store, &name)?;
        Ok(Json(overview::instance_json(&app.store, &record)))
    })
    .await
}

/// Stop (if running), then start again, as `stop` + `start` would.
pub async fn restart(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<Json<Value>, ApiError> {
    let (name, grace) = (instance_name(&name)?, grace(&q)?);
    blocking(move || {
        let record = app.store.load(&name)?;
        if record.foreground {
            return Err(instances::InstancesError::Foreground(name).into());
        }
        instances::stop(&app.store, &name, grace)?;
        instances::start(&app.store, &name)?;
        let record = app.store.load(&name)?;
        Ok(Json(overview::instance_json(&app.store, &record)))
    })
    .await
}

#[derive(Deserialize)]
pub struct RemoveQuery {
    /// Kill it first if it still runs (`rm -f`).
    force: Option<bool>,
}

pub async fn remove(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    let name = instance_name(&name)?;
    let force = q.force.unwrap_or(false);
    blocking(move || Ok(instances::remove(&app.store, &name, force)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RpcLang {
    Erlang,
    Elixir,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcRequest {
    expr: String,
    lang: Option<RpcLang>,
}

/// Evaluates an expression on the node, as `unibeam rpc` does.
pub async fn rpc(
    State(app): State<App>,
    Path(name): Path<String>,
    Json(request): Json<RpcRequest>,
) -> Result<Json<Value>, ApiError> {
    let name = instance_name(&name)?;
    if request.expr.trim().is_empty() || request.expr.len() > MAX_EXPR {
        return Err(ApiError::bad_request(format!(
            "expr: give an expression of 1 to {MAX_EXPR} bytes"
        )));
    }
    let lang = match request.lang {
        Some(RpcLang::Elixir) => Lang::Elixir,
        _ => Lang::Erlang,
    };
    blocking(move || {
        let result = remote::rpc(&app.store, &name, lang, &request.expr, RPC_TIMEOUT)?;
        Ok(Json(serde_json::json!({ "result": result })))
    })
    .await
}
