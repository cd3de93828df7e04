//! An instance's console log: all of it or its last lines, and followed
//! across rotations until the instance exits.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;
use thiserror::Error;
use unibeam_vmm::logfile::rotated;
use unibeam_vmm::state::{InstanceName, StateError, Status, Store, CONSOLE_LOG};

#[derive(Debug, Error)]
pub enum LogsError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("reading {}", .0.display())]
    Read(std::path::PathBuf, #[source] std::io::Error),
    #[error("writing the log out")]
    Write(#[source] std::io::Error),
}

/// The whole log: the rotated part, then the current file.
fn read_all(dir: &Path) -> Vec<u8> {
    let log = dir.join(CONSOLE_LOG);
    let mut all = std::fs::read(rotated(&log)).unwrap_or_default();
    all.extend(std::fs::read(&log).unwrap_or_default());
    all
}

/// The last `k` lines of `data` (a last line without its newline counts).
pub fn tail_lines(data: &[u8], k: usize) -> &[u8] {
    if k == 0 {
        return &[];
    }
    let mut newlines = 0;
    for (i, b) in data.iter().enumerate().rev().skip(1) {
        if *b == b'\n' {
            newlines += 1;
            if newlines == k {
                return &data[i + 1..];
            }
        }
    }
    data
}

/// `name`'s log, or its last `tail` lines.
pub fn read(store: &Store, name: &InstanceName, tail: Option<usize>) -> Result<Vec<u8>, LogsError> {
    store.load(name)?;
    let data = read_all(&store.dir(name));
    Ok(match tail {
        Some(k) => tail_lines(&data, k).to_vec(),
        None => data,
    })
}

/// Writes what is appended to `name`'s log to `out`, across rotations,
/// until the instance has exited and nothing is left to read.
pub fn follow(store: &Store, name: &InstanceName, out: &mut dyn Write) -> Result<(), LogsError> {
    let log = store.dir(name).join(CONSOLE_LOG);
    let read_err = |e| LogsError::Read(log.clone(), e);
    let mut file = std::fs::File::open(&log).ok();
    let mut pos = file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .map_or(0, |m| m.len());
    loop {
        let len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        if len < pos {
            // Rotated: the old file became .1, this is a new one.
            file = std::fs::File::open(&log).ok();
            pos = 0;
        }
        if let Some(f) = file.as_mut() {
            f.seek(SeekFrom::Start(pos)).map_err(read_err)?;
            let mut buf = Vec::new();
            pos += f.read_to_end(&mut buf).map_err(read_err)? as u64;
            out.write_all(&buf)
                .and_then(|()| out.flush())
                .map_err(LogsError::Write)?;
        } else {
            file = std::fs::File::open(&log).ok();
        }
        let exited = matches!(
            store.load(name).map(|r| r.observed_status()),
            Ok(Status::Exited { .. } | Status::Suspended) | Err(_)
        );
        if exited && std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) <= pos {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc\n", 5), b"a\nb\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc", 1), b"c");
    }

    #[test]
    fn tail_zero_shows_nothing() {
        assert_eq!(tail_lines(b"a\nb\nc\n", 0), b"");
        assert_eq!(tail_lines(b"", 0), b"");
    }
}
