//! The cluster-wide part of the bundle, read once by the coordinator:
//! every store object as the store has it, events, the health view and
//! report (the view is what `vigil doctor --bundle` evaluates), mutes and
//! settings.

use serde_json::{Value, json};

use super::Request;
use super::redact::{self, Redactor};
use crate::daemon::Agent;
use vigil_control::health;
use vigil_model::{Event, Object};

/// Paths of the cluster part (under `cluster/`).
pub const STORE: &str = "cluster/store.jsonl";
pub const EVENTS: &str = "cluster/events.json";
pub const VIEW: &str = "cluster/health/view.json";
pub const REPORT: &str = "cluster/health/report.json";
pub const SETTINGS: &str = "cluster/settings.json";
pub const MUTES: &str = "cluster/mutes.json";

/// Reads the cluster part; `red` learns the secrets found (a setting
/// marked secret). A store that cannot be read is said in each file.
pub async fn collect(agent: &Agent, req: &Request, red: &mut Redactor) -> Vec<(String, Value)> {
    let now = vigil_model::now_unix();
    let view = vigil_control::health::local::view(&agent.local).await;
    // Evaluated from the view as read, before redaction; the offline
    // doctor evaluates the redacted view and must (and does) agree:
    // redaction touches no field a check reads.
    let report = health::evaluate(&view);
    let mut files = Vec::new();
    let store_dump = store_dump(agent, red).await;
    files.push((STORE.to_string(), store_dump));
    let events = match agent.local.cluster.list::<Event>().await {
        Ok(list) => {
            let cutoff = req.cutoff_unix(now);
            let events: Vec<Event> = list
                .into_iter()
                .map(|v| v.object)
                .filter(|e| cutoff.is_none_or(|c| e.time >= c))
                .filter(|e| req.volumes.is_empty() || concerns_volumes(e, &req.volumes))
                .collect();
            serde_json::to_value(&events).unwrap_or(Value::Null)
        }
        Err(e) => json!({"error": format!("list events: {e}")}),
    };
    files.push((EVENTS.to_string(), events));
    let settings = match agent.local.cluster.settings().await {
        Ok(s) => Value::Array(
            s.all()
                .into_iter()
                .map(|(d, value, is_default)| {
                    let value = if redact::is_secret_name(d.name) {
                        red.learn(value);
                        redact::REDACTED.to_string()
                    } else {
                        value
                    };
                    json!({"name": d.name, "value": value, "default": d.default, "is_default": is_default})
                })
                .collect(),
        ),
        Err(e) => json!({"error": format!("read settings: {e}")}),
    };
    files.push((SETTINGS.to_string(), settings));
    files.push((
        MUTES.to_string(),
        serde_json::to_value(&view.mutes).unwrap_or(Value::Null),
    ));
    files.push((
        REPORT.to_string(),
        serde_json::to_value(&report).unwrap_or(Value::Null),
    ));
    files.push((
        VIEW.to_string(),
        serde_json::to_value(&view).unwrap_or(Value::Null),
    ));
    files
        .into_iter()
        .map(|(p, v)| {
            let v = red.json(v);
            (p, v)
        })
        .collect()
}

/// Whether an event is about one of `volumes` (the volume, its engine or
/// one of its replicas).
pub fn concerns_volumes(e: &Event, volumes: &[String]) -> bool {
    volumes.iter().any(|v| concerns(e, v))
}

/// Whether an event is about `volume`.
pub fn concerns(e: &Event, volume: &str) -> bool {
    match e.kind.as_str() {
        "volume" | "engine" => e.object == volume,
        "replica" => super::volume_of_replica(&e.object) == volume,
        _ => false,
    }
}

/// Every key of the store but events (they are in `events.json`), one JSON
/// object a line: key, revisions, lease, and the value (JSON when it is).
/// Settings whose name looks like a credential's have their value
/// replaced, and the value is learnt.
async fn store_dump(agent: &Agent, red: &mut Redactor) -> Value {
    let listing = match agent.local.cluster.dump().await {
        Ok(l) => l,
        Err(e) => return json!({"error": format!("list the store: {e}")}),
    };
    let mut lines = Vec::with_capacity(listing.kvs.len());
    for kv in listing.kvs {
        if kv.key.starts_with(Event::PREFIX) {
            continue;
        }
        let mut value = serde_json::from_slice::<Value>(&kv.value)
            .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&kv.value).into_owned()));
        if let Some(name) = kv
            .key
            .strip_prefix(vigil_model::settings::StoredSetting::PREFIX)
            && redact::is_secret_name(name)
        {
            if let Some(v) = value.get("value").and_then(Value::as_str) {
                red.learn(v.to_string());
            }
            value = Value::from(redact::REDACTED);
        }
        lines.push(json!({
            "key": kv.key,
            "create_revision": kv.create_revision,
            "mod_revision": kv.mod_revision,
            "lease": kv.lease,
            "value": value,
        }));
    }
    json!({"revision": listing.revision, "kvs": lines})
}

/// Renders the store dump as JSON lines (the file's format).
pub fn store_lines(dump: &Value) -> String {
    match dump.get("kvs").and_then(Value::as_array) {
        Some(kvs) => {
            let mut out = String::new();
            for kv in kvs {
                out.push_str(&kv.to_string());
                out.push('\n');
            }
            out
        }
        None => format!("{dump}\n"),
    }
}
