//! Errors as one line, where a log line or a recorded reason has room
//! for no more.

/// An error and its causes on one line, joined by ": ", for where only
/// one line fits: a log line, a recorded reason.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}
