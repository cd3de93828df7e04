//! The UI's one page and the API's description, both built into the
//! binary: the page works offline and nothing is fetched from elsewhere.
//! The page's script and style are inlined, so loading it is one request
//! (which carries the token), and the Content-Security-Policy allows
//! exactly that script by its hash and nothing from any other origin.

use crate::error::ApiError;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");
const OPENAPI_JSON: &str = include_str!("../assets/openapi.json");

const JS_SLOT: &str = "<script>/*APP_JS*/</script>";
const CSS_SLOT: &str = "<style>/*STYLE_CSS*/</style>";

struct Page {
    html: String,
    policy: String,
}

fn sha256_source(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

fn build_page() -> Page {
    let html = INDEX_HTML
        .replacen(JS_SLOT, &format!("<script>{APP_JS}</script>"), 1)
        .replacen(CSS_SLOT, &format!("<style>{STYLE_CSS}</style>"), 1);
    let policy = format!(
        "default-src 'none'; script-src {}; style-src {}; img-src 'self' data:; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sha256_source(APP_JS),
        sha256_source(STYLE_CSS)
    );
    Page { html, policy }
}

fn page() -> &'static Page {
    static PAGE: OnceLock<Page> = OnceLock::new();
    PAGE.get_or_init(build_page)
}

/// `/`: the single-page UI (its views are `#/`, `#/instances/NAME` and
/// `#/clusters/NAME`).
pub async fn index() -> Response {
    let page = page();
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, page.policy.as_str()),
        ],
        page.html.clone(),
    )
        .into_response()
}

/// `/api/openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}; /api/openapi.json lists them", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_inlines_its_script_and_style_once() {
        assert_eq!(
            INDEX_HTML.matches(JS_SLOT).count(),
            1,
            "index.html needs one {JS_SLOT}"
        );
        assert_eq!(
            INDEX_HTML.matches(CSS_SLOT).count(),
            1,
            "index.html needs one {CSS_SLOT}"
        );
        let page = build_page();
        assert!(!page.html.contains("/*APP_JS*/") && !page.html.contains("/*STYLE_CSS*/"));
        assert!(page.policy.contains(&sha256_source(APP_JS)));
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for text in [INDEX_HTML, APP_JS, STYLE_CSS] {
            for needle in [
                "src=\"http",
                "href=\"http",
                "//cdn",
                "<script src",
                "@import",
                "url(http",
            ] {
                assert!(!text.contains(needle), "an asset mentions {needle}");
            }
        }
    }

    #[test]
    fn the_openapi_document_is_json() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    }
}
