//! `/api/clusters` and `/api/volumes`: what `ps` groups by cluster, the
//! mesh each cluster's nodes form, and `volume ls` / `volume inspect`.

use crate::app::{blocking, App};
use crate::error::ApiError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;
use std::time::Duration;
use unibeam_cluster::volume::VolumeName;
use unibeam_lifecycle::{overview, volumes};

/// How long each node may take to say whom it is connected to.
const MESH_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn list(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let all = overview::clusters(&app.store);
        Ok(Json(serde_json::to_value(all).expect("summaries serialise")))
    })
    .await
}

pub async fn inspect(State(app): State<App>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let view = overview::cluster(&app.store, &name, MESH_TIMEOUT)?;
        Ok(Json(
            serde_json::to_value(view).expect("a cluster view serialises"),
        ))
    })
    .await
}

/// As `volume ls --format json`.
pub async fn volumes(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        Ok(Json(
            serde_json::to_value(app.volumes.list()).expect("volumes serialise"),
        ))
    })
    .await
}

/// As `volume inspect`.
pub async fn volume(State(app): State<App>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let name: VolumeName = name
        .parse()
        .map_err(|why: String| ApiError::new(StatusCode::BAD_REQUEST, why))?;
    blocking(move || Ok(Json(volumes::inspect(&app.store, &app.volumes, &name)?))).await
}
