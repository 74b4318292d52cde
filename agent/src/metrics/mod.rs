//! Prometheus metrics, rendered at `GET /metrics` on the agent's API
//! listener. Two sources feed one page:
//!
//! * **recorded** families (data-path I/O, store requests, actions) go
//!   through the `metrics` facade into one process-global
//!   `metrics-exporter-prometheus` recorder as they happen;
//! * **scraped** families (states, sizes, health, process) are computed at
//!   each scrape from the cluster state and this agent into a recorder made
//!   for that scrape alone, so a deleted volume or a state left behind
//!   disappears at once instead of lingering at its last value.
//!
//! The two never share a family (the catalogue says which is which), so
//! concatenating their renders is a valid exposition.

pub mod catalogue;
mod collect;
pub mod names;
mod process;
mod scrape;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use catalogue::{FAMILIES, Kind, Source};
use vigil_control::local::Local;

/// Latency buckets for storage, in seconds: 10 µs (a cached read) to 10 s
/// (an I/O timeout), roughly ×2.5 apart.
pub const LATENCY_BUCKETS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static LAST_RENDER_NANOS: AtomicU64 = AtomicU64::new(0);

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("configure the Prometheus recorder: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
}

/// Installs the process-global recorder (once; later calls do nothing) and
/// describes every recorded family so each has its HELP line.
pub fn install() -> Result<(), MetricsError> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    process::mark_start();
    let handle = PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS)?
        .install_recorder()?;
    for fam in FAMILIES.iter().filter(|f| f.source == Source::Recorded) {
        match fam.kind {
            Kind::Counter => metrics::describe_counter!(fam.name, fam.help),
            Kind::Gauge => metrics::describe_gauge!(fam.name, fam.help),
            Kind::Histogram => metrics::describe_histogram!(fam.name, fam.help),
        }
    }
    let _ = HANDLE.set(handle);
    Ok(())
}

/// Drains histogram samples into their buckets now and then, so memory
/// stays flat between scrapes (the exporter asks its user to do this).
pub async fn upkeep() {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if let Some(h) = HANDLE.get() {
            h.run_upkeep();
        }
    }
}

/// The whole `/metrics` page.
pub async fn render(local: &Local) -> String {
    let started = Instant::now();
    let mut out = match HANDLE.get() {
        Some(h) => h.render(),
        None => String::new(),
    };
    let page = scrape::Scrape::new();
    collect::collect(local, &page).await;
    page.gauge(
        names::SCRAPE_DURATION,
        vec![],
        LAST_RENDER_NANOS.load(Ordering::Relaxed) as f64 / 1e9,
    );
    out.push_str(&page.render());
    out.push_str(&crate::ebpf::render(&local.me.name));
    let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    LAST_RENDER_NANOS.store(took, Ordering::Relaxed);
    out
}

/// The recorded families as text (what this process measured itself;
/// `ebpf::summary` reads the engines' write-leg timing from it).
pub fn recorded_text() -> String {
    HANDLE.get().map(|h| h.render()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
