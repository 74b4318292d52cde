//! The agent process itself, from /proc/self (Linux only, like vigil).

use std::sync::OnceLock;

static STARTED_UNIX: OnceLock<f64> = OnceLock::new();

/// Remembers when the process started (called when metrics are installed,
/// early in `vigil agent`).
pub fn mark_start() {
    let _ = STARTED_UNIX.set(vigil_model::time::now_unix());
}

pub fn start_time() -> Option<f64> {
    STARTED_UNIX.get().copied()
}

/// What `/proc/self` says about us; `None` for a figure it did not give.
#[derive(Debug, Default)]
pub struct ProcessFacts {
    pub rss_bytes: Option<u64>,
    pub threads: Option<u64>,
    pub open_fds: Option<u64>,
}

pub fn facts() -> ProcessFacts {
    let mut f = ProcessFacts::default();
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("VmRSS:") {
                // "    1234 kB"
                f.rss_bytes = v
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .map(|kb| kb * 1024);
            } else if let Some(v) = line.strip_prefix("Threads:") {
                f.threads = v.trim().parse().ok();
            }
        }
    }
    f.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    f
}
