//! HTTP by hand, for answers that a client library would hide: a POST
//! cut by `kill -9` between its head and its body, and the notes example's
//! acknowledged writes.

use crate::http_get_path;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `POST <path>` with a Content-Length and `Connection: close`: status and
/// body, or None if nothing answered in time. HTTP/1.1, as curl speaks it:
/// inets answers an HTTP/1.0 request's 507 as 403.
pub fn http_post(port: u16, path: &str, body: &str, timeout: Duration) -> Option<(u16, String)> {
    let addr = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    // A kill -9 can cut the answer between its head and its body: the
    // status was sent, so the write was acknowledged, but its id is not
    // known. Such an answer carries no id; the caller matches on the body.
    let promised = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|n| n.trim().parse::<usize>())
        })
        .and_then(Result::ok);
    if promised.is_some_and(|n| body.len() < n) {
        return Some((code, String::new()));
    }
    Some((code, body.to_string()))
}

/// Stores `body` as a note, which must be acknowledged: its id.
pub fn add_note(port: u16, body: &str) -> String {
    match http_post(port, "/notes", body, Duration::from_secs(30)) {
        Some((201, id)) => {
            let id = id.trim().to_string();
            assert!(
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
                "201 without an id: {id:?}"
            );
            id
        }
        other => panic!("POST /notes {body:?}: {other:?}"),
    }
}

/// `GET /notes` as a set of `<id> <body>` lines.
pub fn listed_notes(port: u16) -> HashSet<String> {
    match http_get_path(port, "/notes") {
        Some((200, text)) => text.lines().map(String::from).collect(),
        other => panic!("GET /notes: {other:?}"),
    }
}
