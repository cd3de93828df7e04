//! Every request needs the token. A read may carry it as `?token=` (what
//! the browser's first page load and `EventSource` can send); a call that
//! changes state must carry it in the `Authorization` header, which a page
//! on another origin cannot make a browser send. No cookie is ever set or
//! read, so nothing the browser adds by itself authorises anything.

use crate::app::App;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Where a request's token came from.
#[derive(Debug, PartialEq, Eq)]
enum Presented<'a> {
    Header(&'a str),
    Query(&'a str),
    Nothing,
}

fn presented(request: &Request) -> Presented<'_> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let bearer = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer "));
        return Presented::Header(bearer.unwrap_or(""));
    }
    let query = request.uri().query().unwrap_or("");
    match query.split('&').find_map(|pair| pair.strip_prefix("token=")) {
        Some(token) => Presented::Query(token),
        None => Presented::Nothing,
    }
}

fn reads_only(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Why `request` may not go on, if it may not.
fn refusal(app: &App, request: &Request) -> Option<&'static str> {
    match presented(request) {
        Presented::Header(t) if app.token.matches(t) => None,
        Presented::Query(t) if app.token.matches(t) && reads_only(request.method()) => None,
        Presented::Query(t) if app.token.matches(t) => Some(
            "calls that change state need the token in the Authorization header (Bearer), not in the URL",
        ),
        Presented::Nothing => {
            Some("no token: send `Authorization: Bearer TOKEN` (the token `unibeam dashboard` printed)")
        }
        _ => Some("wrong token: use the one `unibeam dashboard` printed, kept in its token file"),
    }
}

pub async fn require_token(State(app): State<App>, request: Request, next: Next) -> Response {
    match refusal(&app, &request) {
        None => next.run(request).await,
        Some(why) => {
            let mut response = (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({ "error": why })),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn request(method: Method, uri: &str, auth: Option<&str>) -> Request {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(a) = auth {
            builder = builder.header(header::AUTHORIZATION, a);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[test]
    fn the_token_is_taken_from_the_header_before_the_query() {
        let r = request(Method::GET, "/api/x?token=q", Some("Bearer h"));
        assert_eq!(presented(&r), Presented::Header("h"));
        let r = request(Method::GET, "/api/x?a=1&token=q", None);
        assert_eq!(presented(&r), Presented::Query("q"));
        let r = request(Method::GET, "/api/x?mytoken=q", None);
        assert_eq!(presented(&r), Presented::Nothing);
        let r = request(Method::GET, "/api/x", Some("Basic abc"));
        assert_eq!(presented(&r), Presented::Header(""));
    }

    #[test]
    fn only_reads_take_the_token_from_the_url() {
        let app = App::for_tests("t".repeat(64));
        let token = "t".repeat(64);
        let get = request(Method::GET, &format!("/api/instances?token={token}"), None);
        assert_eq!(refusal(&app, &get), None);
        let post = request(
            Method::POST,
            &format!("/api/instances/a/stop?token={token}"),
            None,
        );
        assert!(refusal(&app, &post).unwrap().contains("Authorization header"));
        let post = request(
            Method::POST,
            "/api/instances/a/stop",
            Some(&format!("Bearer {token}")),
        );
        assert_eq!(refusal(&app, &post), None);
        let wrong = request(Method::GET, "/api/instances", Some("Bearer nope"));
        assert!(refusal(&app, &wrong).unwrap().contains("wrong token"));
        let none = request(Method::DELETE, "/api/instances/a", None);
        assert!(refusal(&app, &none).unwrap().contains("no token"));
    }
}
