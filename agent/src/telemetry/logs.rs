//! Recent log lines for the support bundle: a `tracing` layer that renders
//! every event it is given as one JSON line (time, level, target, message,
//! the event's fields and the fields of the spans it happened in, such as
//! volume, replica and node) into a bounded in-memory ring.
//!
//! Memory is fixed ([`MAX_LINES`], [`MAX_BYTES`]); nothing runs when
//! nothing is logged.

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::ring::LineRing;

/// Most lines kept.
pub const MAX_LINES: usize = 5000;
/// Most bytes kept (lines included).
pub const MAX_BYTES: usize = 2 << 20;

static RING: LineRing = LineRing::new(MAX_LINES, MAX_BYTES);

/// The newest `limit` log lines (JSON, one object each), oldest first.
pub fn recent(limit: usize) -> Vec<String> {
    RING.recent(limit)
}

/// The layer that feeds [`recent`]; `node` goes on every line.
pub struct RingLayer {
    node: String,
    /// The log file, when `--log-file` is given: the same lines.
    file: Option<std::sync::Mutex<super::file::Rotating>>,
}

impl RingLayer {
    pub fn new(node: &str, file: Option<super::file::Rotating>) -> RingLayer {
        RingLayer {
            node: node.to_string(),
            file: file.map(std::sync::Mutex::new),
        }
    }
}

/// A span's fields as recorded so far.
#[derive(Default)]
struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, v: Value) {
        // `otel.*` fields steer the trace exporter; they are not log context.
        if !field.name().starts_with("otel.") {
            self.0.insert(field.name().to_string(), v);
        }
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

impl<S> Layer<S> for RingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut JsonVisitor(&mut fields.0));
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(fields) = ext.get_mut::<SpanFields>() {
            values.record(&mut JsonVisitor(&mut fields.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        let message = fields.remove("message").unwrap_or(Value::from(""));
        // Outer spans first, so the innermost value of a field wins.
        let mut span_fields = Map::new();
        let mut span_name = None;
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    span_fields.extend(f.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                span_name = Some(span.name());
            }
        }
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("time".into(), Value::from(vigil_model::time::rfc3339_now()));
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("target".into(), Value::from(meta.target()));
        line.insert("node".into(), Value::from(self.node.as_str()));
        line.insert("message".into(), message);
        line.insert("fields".into(), Value::Object(fields));
        if let Some(name) = span_name {
            line.insert("span".into(), Value::from(name));
            line.insert("span_fields".into(), Value::Object(span_fields));
        }
        let line = Value::Object(line).to_string();
        if let Some(f) = &self.file {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            f.append(&line);
        }
        RING.push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn lines_carry_fields_and_span_fields() {
        let sub = tracing_subscriber::registry().with(RingLayer::new("n1", None));
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("rebuild", volume = "v1", otel.name = "x");
            let _e = span.enter();
            let inner = tracing::info_span!("replica.local", replica = "r2");
            let _i = inner.enter();
            tracing::warn!(bytes = 42u64, "ring test line {}", 7);
        });
        let line = recent(MAX_LINES)
            .into_iter()
            .rev()
            .find(|l| l.contains("ring test line 7"))
            .expect("line in the ring");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["node"], "n1");
        assert_eq!(v["message"], "ring test line 7");
        assert_eq!(v["fields"]["bytes"], 42);
        assert_eq!(v["span"], "replica.local");
        assert_eq!(v["span_fields"]["volume"], "v1");
        assert_eq!(v["span_fields"]["replica"], "r2");
        assert!(v["span_fields"].get("otel.name").is_none());
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }
}
