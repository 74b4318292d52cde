//! OpenTelemetry export of `tracing` spans over OTLP/HTTP (protobuf), with a
//! batch span processor, and the hooks that let the engine crate carry
//! trace contexts over the replica protocol.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The standard variables that name a collector.
const ENDPOINT_ENVS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Where spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `--otlp-endpoint`: the full URL of the traces resource.
    Url(String),
    /// The standard environment variables (resolved by the exporter).
    Env,
}

/// The collector to export to, if any: the flag, else the environment.
pub fn endpoint(flag: Option<&str>) -> Option<Endpoint> {
    if let Some(url) = flag.map(str::trim).filter(|u| !u.is_empty()) {
        return Some(Endpoint::Url(traces_url(url)));
    }
    ENDPOINT_ENVS
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
        .then_some(Endpoint::Env)
}

/// `base` + `/v1/traces`, like OTEL_EXPORTER_OTLP_ENDPOINT, unless `base`
/// already names the resource.
fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// Builds the exporter and the tracer provider (batch processor) whose
/// resource names the service and this node.
pub fn provider(endpoint: &Endpoint, node: &str) -> Result<SdkTracerProvider, String> {
    let mut builder = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(Duration::from_secs(5));
    if let Endpoint::Url(url) = endpoint {
        builder = builder.with_endpoint(url.clone());
    }
    let exporter = builder
        .build()
        .map_err(|e| format!("build the OTLP exporter: {e}"))?;
    let resource = Resource::builder()
        .with_service_name("vigil")
        .with_attributes([
            KeyValue::new("service.instance.id", node.to_string()),
            KeyValue::new("vigil.node", node.to_string()),
        ])
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The W3C `traceparent` of `span`, if it belongs to a sampled trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` (not yet entered) a child of the remote context in
/// `carrier` (`traceparent`, `tracestate`); malformed contexts are ignored.
pub fn set_remote_parent(span: &tracing::Span, carrier: &HashMap<String, String>) {
    let cx = TraceContextPropagator::new().extract(carrier);
    if cx.span().span_context().is_valid() {
        // Fails only if the span is disabled or already started.
        let _ = span.set_parent(cx);
    }
}

/// Engine hook: the current span's context.
pub fn inject_current() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// Engine hook: `span`'s parent is the remote `traceparent`.
pub fn attach_remote(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    set_remote_parent(span, &carrier);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_is_a_base_url() {
        assert_eq!(
            endpoint(Some("http://127.0.0.1:4318")),
            Some(Endpoint::Url("http://127.0.0.1:4318/v1/traces".into()))
        );
        assert_eq!(
            endpoint(Some("http://c:4318/v1/traces/")),
            Some(Endpoint::Url("http://c:4318/v1/traces".into()))
        );
    }

    #[test]
    fn context_round_trips_through_a_span() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let provider = SdkTracerProvider::builder().build();
        let sub = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        tracing::subscriber::with_default(sub, || {
            let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let span = tracing::info_span!("replica.request");
            attach_remote(&span, parent);
            let child = span.in_scope(inject_current).expect("a context");
            assert!(child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
            assert_ne!(child, parent);
            // Outside any span there is nothing to send.
            assert_eq!(inject_current(), None);
            // Garbage is ignored: the span starts a trace of its own.
            let other = tracing::info_span!("x");
            attach_remote(&other, "garbage");
            let own = other.in_scope(inject_current).expect("a context");
            assert!(!own.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
        });
    }
}
