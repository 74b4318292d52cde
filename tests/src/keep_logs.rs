//! A test's temporary directory that keeps its logs when the test fails.

use std::path::Path;

/// A temporary directory; on a panic its `*.log` files (agents, etcd) are
/// copied to `/tmp/<name>` before it is removed.
pub struct LogsOnPanic {
    dir: tempfile::TempDir,
    name: &'static str,
}

impl LogsOnPanic {
    /// A new directory whose logs go to `/tmp/<name>` on a failure.
    pub fn new(name: &'static str) -> LogsOnPanic {
        LogsOnPanic {
            dir: tempfile::tempdir().unwrap(),
            name,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let to = Path::new("/tmp").join(self.name);
        let _ = std::fs::create_dir_all(&to);
        for e in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "log") {
                let _ = std::fs::copy(e.path(), to.join(e.file_name()));
            }
        }
        eprintln!("logs kept in {}", to.display());
    }
}
