//! A console log with a size cap and one rotation, so a chatty or hostile
//! guest cannot fill the host's disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Default cap for the log and its one rotated predecessor together.
pub const DEFAULT_CAP: u64 = 16 * 1024 * 1024;

pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Appends to `path`; past half the cap, the file becomes `<path>.1` and a
/// new one starts, so both together never exceed the cap.
pub struct BoundedLog {
    path: PathBuf,
    limit: u64,
    file: File,
    written: u64,
}

impl BoundedLog {
    pub fn open(path: &Path, cap: u64) -> io::Result<BoundedLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(BoundedLog {
            path: path.to_path_buf(),
            limit: (cap / 2).max(1),
            file,
            written,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        fs::rename(&self.path, rotated(&self.path))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for BoundedLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written >= self.limit {
            self.rotate()?;
        }
        let room = (self.limit - self.written) as usize;
        let n = self.file.write(&buf[..buf.len().min(room)])?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_and_rotation_stay_under_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut log = BoundedLog::open(&path, 1000).unwrap();
        for i in 0..500 {
            writeln!(log, "line {i}").unwrap();
        }
        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(size(&path) + size(&rotated(&path)) <= 1000);
        let last = fs::read_to_string(&path).unwrap();
        assert!(last.ends_with("line 499\n"), "the newest output is kept");
    }
}
