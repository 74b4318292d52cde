//! Logs and traces of the agent: `tracing` events to stderr (text or JSON,
//! level from `RUST_LOG`, else `VIGIL_LOG`, else `info`), a bounded ring of
//! recent lines for the support bundle ([`logs`]), and, when a collector is
//! configured, spans exported over OTLP with W3C context propagation over
//! HTTP ([`propagation`]) and the replica protocol (engine hooks set here).

pub mod file;
pub mod logs;
pub mod propagation;
mod ring;
pub mod traces;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How log lines are written to stderr (`--log-format`).
#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// What the agent's telemetry is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    pub log_format: LogFormat,
    /// This node's name: on every log line and trace resource.
    pub node: String,
    /// `--otlp-endpoint`; `None` falls back to the standard environment.
    pub otlp_endpoint: Option<String>,
    /// Fraction of NBD requests traced (when exporting).
    pub trace_io_sample_rate: f64,
    /// `--log-file`: the ring's lines also go to this rotated file.
    pub log_file: Option<file::LogFile>,
}

/// Keeps the trace exporter; [`Telemetry::shutdown`] sends what is buffered.
#[must_use = "shut telemetry down to send buffered spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// The log filter: `RUST_LOG`, else `VIGIL_LOG`, else `info`.
fn log_filter() -> EnvFilter {
    for var in ["RUST_LOG", "VIGIL_LOG"] {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => match EnvFilter::try_new(&v) {
                Ok(f) => return f,
                Err(e) => eprintln!("warning: ignoring {var}={v:?}: {e}"),
            },
            _ => {}
        }
    }
    EnvFilter::new("info")
}

/// Installs the global subscriber: logs to stderr, the recent-lines ring,
/// and span export when a collector is configured (in which case the engine
/// hooks are registered and I/O sampling set). Call once, early.
pub fn init(config: &Config) -> Telemetry {
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    let stderr = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
            .boxed(),
    };
    layers.push(stderr);
    let mut file_error = None;
    let file = match &config.log_file {
        None => None,
        Some(cfg) => match file::Rotating::open(cfg) {
            Ok(f) => Some(f),
            Err(e) => {
                file_error = Some(e);
                None
            }
        },
    };
    layers.push(
        logs::RingLayer::new(&config.node, file)
            .with_filter(log_filter())
            .boxed(),
    );
    let mut failed = None;
    let provider = match traces::endpoint(config.otlp_endpoint.as_deref()) {
        None => None,
        Some(endpoint) => match traces::provider(&endpoint, &config.node) {
            Ok(p) => Some((p, endpoint)),
            Err(e) => {
                failed = Some(e);
                None
            }
        },
    };
    if let Some((p, _)) = &provider {
        // Our spans only: never the HTTP client's that exports them.
        let ours = Targets::new()
            .with_target("vigil", Level::INFO)
            .with_target("vigil_engine", Level::INFO);
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("vigil"))
                .with_filter(ours)
                .boxed(),
        );
    }
    if let Err(e) = tracing_subscriber::registry().with(layers).try_init() {
        eprintln!("warning: logging already initialised: {e}");
    }
    if let Some(e) = failed {
        tracing::error!(error = %e, "traces will not be exported");
    }
    if let Some(e) = file_error {
        tracing::error!(error = %e, "logs go to stderr only");
    }
    let provider = provider.map(|(p, endpoint)| {
        use vigil_engine::protocol::trace_context;
        trace_context::set_hooks(traces::inject_current, traces::attach_remote);
        trace_context::set_io_sample_rate(config.trace_io_sample_rate);
        tracing::info!(
            ?endpoint,
            io_sample_rate = config.trace_io_sample_rate,
            "exporting traces over OTLP"
        );
        p
    });
    if provider.is_none() && config.trace_io_sample_rate > 0.0 {
        tracing::info!("--trace-io-sample-rate ignored: no OTLP endpoint");
    }
    Telemetry { provider }
}

impl Telemetry {
    /// Sends buffered spans and stops the exporter (waits at most ~5 s).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The exporter blocks; keep it off the async workers.
        let done = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(std::time::Duration::from_secs(5))
        });
        match done.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flush traces on shutdown"),
            Err(e) => tracing::warn!(error = %e, "flush traces on shutdown: task failed"),
        }
    }
}
