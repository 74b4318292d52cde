//! W3C trace context over the HTTP API: each request runs in a span named
//! after its method and route pattern, the child of the caller's
//! `traceparent` when there is one; calls to other agents carry ours.

use std::collections::HashMap;

use hyper::{HeaderMap, Method};

use super::traces;

/// The span of one API request: `http.request` exported as
/// `"{METHOD} {route pattern}"` (names become `{name}`, so span names stay
/// few), with the volume, node or replica it is about. Health probes and
/// scrapes get none.
pub fn request_span(method: &Method, path: &str, headers: &HeaderMap) -> tracing::Span {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if matches!(segs.as_slice(), ["healthz"] | ["readyz"] | ["metrics"]) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {}", route_pattern(&segs)),
        otel.kind = "server",
        method = %method,
        path = %path,
        volume = tracing::field::Empty,
        node = tracing::field::Empty,
        replica = tracing::field::Empty,
    );
    match segs.as_slice() {
        ["v1", "volumes" | "engines", name, ..] => {
            span.record("volume", *name);
        }
        ["v1", "nodes", name, ..] => {
            span.record("node", *name);
        }
        ["v1", "replicas", name, ..] => {
            span.record("replica", *name);
        }
        _ => {}
    }
    if vigil_engine::protocol::trace_context::enabled() {
        let carrier: HashMap<String, String> = ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|k| Some((k.to_string(), headers.get(k)?.to_str().ok()?.to_string())))
            .collect();
        if !carrier.is_empty() {
            traces::set_remote_parent(&span, &carrier);
        }
    }
    span
}

/// `/v1/volumes/{name}/snapshots/{name}`: under `/v1/`, every second
/// segment after the collection is a name.
fn route_pattern(segs: &[&str]) -> String {
    if segs.first() != Some(&"v1") {
        return "/{other}".to_string();
    }
    let mut out = String::new();
    for (i, s) in segs.iter().enumerate() {
        out.push('/');
        out.push_str(if i >= 2 && i % 2 == 0 { "{name}" } else { s });
    }
    out
}

/// The `traceparent` to send with a call to another agent, if traced.
pub fn outgoing_traceparent() -> Option<String> {
    if !vigil_engine::protocol::trace_context::enabled() {
        return None;
    }
    traces::inject_current()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(path: &str) -> String {
        route_pattern(&path.trim_matches('/').split('/').collect::<Vec<_>>())
    }

    #[test]
    fn patterns_hide_names() {
        assert_eq!(pattern("/v1/volumes"), "/v1/volumes");
        assert_eq!(pattern("/v1/volumes/vol-1"), "/v1/volumes/{name}");
        assert_eq!(
            pattern("/v1/volumes/vol-1/snapshots/s1/revert"),
            "/v1/volumes/{name}/snapshots/{name}/revert"
        );
        assert_eq!(
            pattern("/v1/engines/e/replicas"),
            "/v1/engines/{name}/replicas"
        );
        assert_eq!(pattern("/whatever/x"), "/{other}");
    }
}
