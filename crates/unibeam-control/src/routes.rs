//! The dashboard's routes, behind the token check, and what is added to
//! every answer.

use crate::app::App;
use crate::{api_clusters, api_instances, auth, charts, follow, pages};
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

/// The largest request body: an `rpc` expression, nothing bigger.
const BODY_LIMIT: usize = 64 << 10;

/// Every route, behind the token check, with headers that keep the UI's
/// pages from being framed, sniffed or leaking their URL (which holds
/// the token) to other sites.
pub fn router(app: App) -> Router {
    let api = Router::new()
        .route("/api/openapi.json", get(pages::openapi))
        .route("/api/instances", get(api_instances::list))
        .route(
            "/api/instances/{name}",
            get(api_instances::inspect).delete(api_instances::remove),
        )
        .route("/api/instances/{name}/metrics", get(api_instances::metrics))
        .route("/api/instances/{name}/timeline", get(api_instances::timeline))
        .route("/api/instances/{name}/logs", get(api_instances::logs))
        .route("/api/instances/{name}/logs/follow", get(follow::follow))
        .route("/api/instances/{name}/stop", post(api_instances::stop))
        .route("/api/instances/{name}/kill", post(api_instances::kill))
        .route("/api/instances/{name}/restart", post(api_instances::restart))
        .route("/api/instances/{name}/rpc", post(api_instances::rpc))
        .route(
            "/api/instances/{name}/charts/{chart}",
            get(charts::instance_chart),
        )
        .route("/api/clusters", get(api_clusters::list))
        .route("/api/clusters/{name}", get(api_clusters::inspect))
        .route("/api/clusters/{name}/graph.svg", get(charts::cluster_graph))
        .route("/api/volumes", get(api_clusters::volumes))
        .route("/api/volumes/{name}", get(api_clusters::volume))
        .route("/", get(pages::index));
    api.fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_token,
        ))
        .layer(axum::middleware::map_response(errors_as_json))
        .layer(axum::middleware::map_response(protective_headers))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

/// axum's own refusals (a query or body that does not parse, a wrong
/// method, a body too big) are plain text; the API answers every error
/// as `{"error": ...}`, as its OpenAPI document says.
async fn errors_as_json(response: Response) -> Response {
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    let status = response.status();
    if !(plain && (status.is_client_error() || status.is_server_error())) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, BODY_LIMIT).await.unwrap_or_default();
    let json = serde_json::json!({ "error": String::from_utf8_lossy(&text) }).to_string();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(json))
}

async fn protective_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
