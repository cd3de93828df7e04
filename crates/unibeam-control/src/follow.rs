//! `/api/instances/{name}/logs/follow`: the console log as server-sent
//! events, one per line: the last lines first, then each new one, then
//! an `end` event once the instance has exited and its log is read.

use crate::app::{blocking, instance_name, App};
use crate::error::ApiError;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use std::convert::Infallible;
use std::io::Write;
use tokio::sync::mpsc;
use unibeam_lifecycle::logs;

/// How many lines of what is already there come first.
const BACKLOG_LINES: usize = 200;

/// Hands what `logs::follow` writes to the response. Its `flush`, which
/// `follow` calls on every poll even when nothing was read, fails once
/// the client has gone, so the follower's thread ends with the client.
struct ToClient(mpsc::Sender<Vec<u8>>);

impl Write for ToClient {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(buf.to_vec())
            .map_err(|_| std::io::ErrorKind::BrokenPipe)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.is_closed() {
            true => Err(std::io::ErrorKind::BrokenPipe.into()),
            false => Ok(()),
        }
    }
}

/// Splits a byte stream into lines, keeping a cut-off last line until
/// the rest of it comes.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(chunk);
        let Some(last) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(last + 1);
        let whole = std::mem::replace(&mut self.partial, rest);
        String::from_utf8_lossy(&whole)
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect()
    }

    fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.partial);
        (!rest.is_empty()).then(|| String::from_utf8_lossy(&rest).trim_end_matches('\r').to_string())
    }
}

enum Phase {
    Following(mpsc::Receiver<Vec<u8>>, Lines),
    Ended,
    Done,
}

pub async fn follow(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let name = instance_name(&name)?;
    let (store, who) = (app.store.clone(), name.clone());
    let backlog = blocking(move || Ok(logs::read(&store, &who, Some(BACKLOG_LINES))?)).await?;
    let (sender, receiver) = mpsc::channel(64);
    // A thread of its own, not the blocking pool's: a follow lasts as long
    // as the client watches, and open log tabs must not starve the API.
    std::thread::spawn(move || {
        // Its only possible failures are the client leaving or the log
        // going away with the instance: either way, the stream ends.
        let _ = logs::follow(&app.store, &name, &mut ToClient(sender));
    });
    let mut lines = Lines::default();
    let first: Vec<Result<Event, Infallible>> = lines.feed(&backlog).into_iter().map(line_event).collect();
    let rest = stream::unfold(Phase::Following(receiver, lines), next_events);
    let events = stream::iter(first).chain(rest.flat_map(stream::iter));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn line_event(line: String) -> Result<Event, Infallible> {
    Ok(Event::default().data(line))
}

async fn next_events(phase: Phase) -> Option<(Vec<Result<Event, Infallible>>, Phase)> {
    match phase {
        Phase::Following(mut receiver, mut lines) => match receiver.recv().await {
            Some(chunk) => {
                let events = lines.feed(&chunk).into_iter().map(line_event).collect();
                Some((events, Phase::Following(receiver, lines)))
            }
            None => Some((lines.finish().into_iter().map(line_event).collect(), Phase::Ended)),
        },
        Phase::Ended => Some((
            vec![Ok(Event::default().event("end").data("exited"))],
            Phase::Done,
        )),
        Phase::Done => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_for_their_end() {
        let mut lines = Lines::default();
        assert_eq!(lines.feed(b"one\ntw"), vec!["one"]);
        assert_eq!(lines.feed(b"o\r\nthree\n"), vec!["two", "three"]);
        assert!(lines.feed(b"four").is_empty());
        assert_eq!(lines.finish().as_deref(), Some("four"));
        assert_eq!(lines.finish(), None);
    }

    #[test]
    fn bytes_that_are_not_utf8_do_not_stop_the_stream() {
        let mut lines = Lines::default();
        assert_eq!(lines.feed(b"a\xffb\n"), vec!["a\u{fffd}b"]);
    }
}
