//! The agent's log file (`--log-file`): the same JSON lines as the recent
//! ring, appended to a file rotated by size through `file-rotate`
//! (`PATH`, then `PATH.1` … `PATH.N`, newest first), so a support bundle
//! can collect what the ring has already forgotten.

use std::io::Write;
use std::path::{Path, PathBuf};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};

/// Where the log file is and how it rotates.
#[derive(Debug, Clone)]
pub struct LogFile {
    pub path: PathBuf,
    /// A file is rotated once it passes this size (whole lines: a line is
    /// never split between two files).
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep: usize,
}

impl LogFile {
    /// The current file (0) and the rotated ones (1 = the newest), with
    /// their index, those that exist.
    pub fn files(&self) -> Vec<(usize, PathBuf)> {
        (0..=self.keep)
            .map(|i| (i, rotated(&self.path, i)))
            .filter(|(_, p)| p.exists())
            .collect()
    }
}

fn rotated(path: &Path, i: usize) -> PathBuf {
    if i == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

/// Why the log file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("log file {path}: {source}")]
pub struct LogFileError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// The open log file.
pub struct Rotating {
    inner: FileRotate<AppendCount>,
    /// Whether a failed write was reported already (once, on stderr: the
    /// logger cannot log its own failure).
    failed: bool,
}

impl Rotating {
    /// Opens (creating its directory) the log file for appending.
    pub fn open(cfg: &LogFile) -> Result<Rotating, LogFileError> {
        let err = |source| LogFileError {
            path: cfg.path.display().to_string(),
            source,
        };
        if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        // Open it ourselves first, so that a path that cannot be written
        // is a clear error at start rather than lines silently lost.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.path)
            .map_err(err)?;
        let max = usize::try_from(cfg.max_bytes).unwrap_or(usize::MAX);
        Ok(Rotating {
            inner: FileRotate::new(
                &cfg.path,
                AppendCount::new(cfg.keep),
                ContentLimit::BytesSurpassed(max),
                Compression::None,
                None,
            ),
            failed: false,
        })
    }

    /// Appends one line (one write, so rotation never splits it).
    pub fn append(&mut self, line: &str) {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        if let Err(e) = self.inner.write_all(&buf).and_then(|()| self.inner.flush()) {
            if !self.failed {
                eprintln!("warning: cannot write the log file: {e} (lines go to stderr only)");
            }
            self.failed = true;
        } else {
            self.failed = false;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

    use super::*;

    #[test]
    fn rotation_keeps_whole_lines_and_at_most_keep_files() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogFile {
            path: dir.path().join("sub").join("vigil.log"),
            max_bytes: 4096,
            keep: 2,
        };
        let mut f = Rotating::open(&cfg).unwrap();
        for i in 0..1000 {
            f.append(&format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(40)));
        }
        let files = cfg.files();
        assert_eq!(
            files.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 1, 2],
            "{files:?}"
        );
        let mut numbers = Vec::new();
        for (_, path) in files.iter().rev() {
            let text = std::fs::read_to_string(path).unwrap();
            // a rotated file passes the limit by at most one line
            assert!(
                text.len() <= 4096 + 64,
                "{} is {} bytes",
                path.display(),
                text.len()
            );
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                numbers.push(v["n"].as_u64().unwrap());
            }
        }
        // oldest first across the files, the newest line last, no gap
        assert_eq!(numbers.last(), Some(&999));
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    }

    #[test]
    fn a_path_that_cannot_be_written_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let cfg = LogFile {
            path: blocker.join("vigil.log"),
            max_bytes: 4096,
            keep: 1,
        };
        let e = Rotating::open(&cfg).err().unwrap().to_string();
        assert!(e.contains("vigil.log"), "{e}");
    }
}
