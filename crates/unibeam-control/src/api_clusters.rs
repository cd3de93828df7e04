//! `/api/clusters` and `/api/volumes`: what `ps` groups by cluster, the
//! mesh each cluster's nodes form, and `volume ls` / `volume inspect`.

use crate::app::{blocking, App};
use crate::error::ApiError;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;
use unibeam_cluster::volume::VolumeName;
use unibeam_lifecycle::overview::{self, ClusterSummary, ClusterView, MESH_TIMEOUT};
use unibeam_lifecycle::volumes::{self, VolumeInfo};

pub async fn list(State(app): State<App>) -> Result<Json<Vec<ClusterSummary>>, ApiError> {
    blocking(move || Ok(Json(overview::clusters(&app.store)))).await
}

pub async fn inspect(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<ClusterView>, ApiError> {
    blocking(move || Ok(Json(overview::cluster(&app.store, &name, MESH_TIMEOUT)?))).await
}

/// As `volume ls --format json`.
pub async fn volumes(State(app): State<App>) -> Result<Json<Vec<VolumeInfo>>, ApiError> {
    blocking(move || Ok(Json(app.volumes.list()))).await
}

/// As `volume inspect`.
pub async fn volume(State(app): State<App>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let name: VolumeName = name.parse().map_err(|why: String| ApiError::bad_request(why))?;
    blocking(move || Ok(Json(volumes::inspect(&app.store, &app.volumes, &name)?))).await
}
