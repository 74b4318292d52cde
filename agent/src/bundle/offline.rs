//! Diagnosis from a bundle alone (no agent, no store): `vigil doctor
//! --bundle FILE` evaluates the health view the bundle holds with the
//! same [`vigil_control::health::evaluate`] the live doctor's agent runs, and
//! `vigil bundle inspect` prints what the bundle holds or one volume's
//! timeline.

use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use super::archive::{Bundle, BundleError};
use super::cluster;
use crate::cli::args::Output;
use vigil_control::health::{Report, View, evaluate};
use vigil_model::Event;
use vigil_model::replica::ReplicaMode;

/// Reads a bundle and evaluates its health view: the report the live
/// doctor would have printed when the bundle was made.
pub fn report(file: &Path) -> Result<(Bundle, View, Report), BundleError> {
    let bundle = Bundle::read(file)?;
    let view: View = bundle.json(cluster::VIEW)?;
    let report = evaluate(&view);
    Ok((bundle, view, report))
}

/// Where a bundle came from, for stderr above the offline report.
pub fn origin(b: &Bundle) -> String {
    let m = &b.manifest;
    let failed: Vec<String> = m
        .nodes
        .iter()
        .filter(|n| n.status != "answered")
        .map(|n| format!("{} {}", n.node, n.status))
        .collect();
    format!(
        "from bundle {} made {} by {} (vigil {}); nodes answered: {}/{}{}",
        b.path,
        vigil_model::time::utc_seconds(m.created_unix as u64),
        m.coordinator,
        m.vigil_version,
        m.nodes.len() - failed.len(),
        m.nodes.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" ({})", failed.join(", "))
        }
    )
}

/// `vigil bundle inspect FILE [--volume V]`.
pub fn inspect(file: &Path, volume: Option<&str>, output: Output) -> ExitCode {
    let (bundle, view, report) = match report(file) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let events: Vec<Event> = bundle.json(cluster::EVENTS).unwrap_or_default();
    match volume {
        None => {
            if output == Output::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "manifest": bundle.manifest,
                        "status": report.status,
                        "volumes": view.volumes.iter().map(|v| &v.name).collect::<Vec<_>>(),
                    }))
                    .unwrap_or_default()
                );
            } else {
                print!("{}", summary(&bundle, &view, &report));
            }
            ExitCode::SUCCESS
        }
        Some(v) => {
            if !view.volumes.iter().any(|x| x.name == v)
                && !events.iter().any(|e| cluster::concerns(e, v))
            {
                eprintln!(
                    "error: volume {v:?} is not in bundle {} (volumes: {})",
                    bundle.path,
                    view.volumes
                        .iter()
                        .map(|x| x.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return ExitCode::FAILURE;
            }
            let entries = timeline(&bundle, &events, v);
            if output == Output::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "volume": v,
                        "timeline": entries.iter().map(|e| serde_json::json!({
                            "time": e.time, "source": e.source, "node": e.node, "what": e.what,
                        })).collect::<Vec<_>>(),
                        "state": state(&view, v),
                        "health": health_items(&report, &view, v),
                    }))
                    .unwrap_or_default()
                );
            } else {
                print!("{}", render_timeline(&bundle, &view, &report, v, &entries));
            }
            ExitCode::SUCCESS
        }
    }
}

/// One line of a volume's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` (sorts as time).
    pub time: String,
    /// `event` or `log`.
    pub source: &'static str,
    pub node: String,
    pub what: String,
}

/// Events about the volume (itself, its engine, its replicas) and the
/// warnings and errors its nodes logged about it, oldest first.
pub fn timeline(bundle: &Bundle, events: &[Event], volume: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = events
        .iter()
        .filter(|e| cluster::concerns(e, volume))
        .map(|e| {
            let ms = (e.time * 1000.0).max(0.0) as u64;
            Entry {
                time: vigil_model::time::rfc3339(ms / 1000, (ms % 1000) as u32),
                source: "event",
                node: e.node.clone(),
                what: format!(
                    "{} {}/{} {}: {}",
                    e.severity, e.kind, e.object, e.reason, e.message
                ),
            }
        })
        .collect();
    for (path, data) in &bundle.files {
        let Some(node) = path
            .strip_prefix("nodes/")
            .and_then(|p| p.strip_suffix("/logs.jsonl"))
        else {
            continue;
        };
        for line in String::from_utf8_lossy(data).lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let level = v["level"].as_str().unwrap_or("");
            // Events are logged too: they are already in the timeline.
            if !matches!(level, "WARN" | "ERROR") || v["message"] == "event" {
                continue;
            }
            if !about_volume(&v, volume) {
                continue;
            }
            let mut fields = String::new();
            if let Some(f) = v["fields"].as_object() {
                for (k, val) in f {
                    fields.push_str(&format!(
                        " {k}={}",
                        val.as_str().map_or(val.to_string(), str::to_string)
                    ));
                }
            }
            out.push(Entry {
                time: v["time"].as_str().unwrap_or("").to_string(),
                source: "log",
                node: node.to_string(),
                what: format!("{level} {}{fields}", v["message"].as_str().unwrap_or("")),
            });
        }
    }
    out.sort_by(|a, b| a.time.cmp(&b.time));
    out
}

/// Whether a log line's fields or span fields name the volume or one of
/// its replicas.
fn about_volume(line: &Value, volume: &str) -> bool {
    ["fields", "span_fields"].iter().any(|f| {
        let m = &line[f];
        m["volume"] == volume
            || m["engine"] == volume
            || m["replica"]
                .as_str()
                .is_some_and(|r| super::volume_of_replica(r) == volume)
    })
}

/// The volume and its replicas as the bundle's view has them.
fn state(view: &View, volume: &str) -> Value {
    let v = view.volumes.iter().find(|v| v.name == volume);
    let replicas: Vec<&vigil_model::Replica> = view
        .replicas
        .iter()
        .filter(|r| r.spec.volume == volume)
        .collect();
    serde_json::json!({"volume": v, "replicas": replicas})
}

/// Health items about the volume or its replicas.
fn health_items(report: &Report, view: &View, volume: &str) -> Vec<String> {
    let mut objects = vec![format!("volume/{volume}")];
    objects.extend(
        view.replicas
            .iter()
            .filter(|r| r.spec.volume == volume)
            .map(|r| format!("replica/{}", r.name)),
    );
    let mut out = Vec::new();
    for c in &report.checks {
        for i in &c.items {
            if objects.contains(&i.object) {
                out.push(format!(
                    "[{}] {}{}: {}: {}",
                    c.severity.as_str(),
                    c.code,
                    if report.is_root_item(i) {
                        " (root cause)"
                    } else {
                        ""
                    },
                    i.object,
                    i.message
                ));
            }
        }
    }
    out
}

fn render_timeline(
    bundle: &Bundle,
    view: &View,
    report: &Report,
    volume: &str,
    entries: &[Entry],
) -> String {
    let mut out = format!("Volume {volume} — {}\n\nTimeline (UTC):\n", origin(bundle));
    if entries.is_empty() {
        out.push_str("  (no events or warnings about it in the bundle's window)\n");
    }
    for e in entries {
        out.push_str(&format!(
            "  {}  {:<5} {:<10} {}\n",
            e.time.replace('T', " ").trim_end_matches('Z'),
            e.source,
            e.node,
            e.what
        ));
    }
    out.push_str(&format!(
        "\nState when the bundle was made ({}):\n",
        vigil_model::time::utc_seconds(view.now_unix)
    ));
    match view.volumes.iter().find(|v| v.name == volume) {
        Some(v) => out.push_str(&format!(
            "  volume {}: state {:?}, robustness {:?}, attached to {}, {} transition(s){}\n",
            v.name,
            v.status.state,
            v.status.robustness,
            v.status.attached_node.as_deref().unwrap_or("-"),
            v.status.transitions,
            if v.status.message.is_empty() {
                String::new()
            } else {
                format!(", message: {}", v.status.message)
            }
        )),
        None => out.push_str("  (the volume no longer exists)\n"),
    }
    for r in view.replicas.iter().filter(|r| r.spec.volume == volume) {
        let live = if view.live.contains(&r.spec.node) {
            "node up"
        } else {
            "node DOWN"
        };
        out.push_str(&format!(
            "  replica {} on {} ({live}): state {:?}, mode {}{}{}\n",
            r.name,
            r.spec.node,
            r.status.state,
            if r.status.mode == ReplicaMode::Unreported {
                "-"
            } else {
                r.status.mode.as_str()
            },
            r.status
                .fault
                .as_ref()
                .map(|f| format!(", fault {}", serde_json::to_string(f).unwrap_or_default()))
                .unwrap_or_default(),
            r.status
                .integrity
                .as_ref()
                .map(|i| format!(
                    ", integrity {}",
                    serde_json::to_string(i).unwrap_or_default()
                ))
                .unwrap_or_default(),
        ));
    }
    let items = health_items(report, view, volume);
    out.push_str("\nHealth checks about it:\n");
    if items.is_empty() {
        out.push_str("  none failing\n");
    }
    for i in items {
        out.push_str(&format!("  {i}\n"));
    }
    out
}

fn summary(bundle: &Bundle, view: &View, report: &Report) -> String {
    let m = &bundle.manifest;
    let mut out = format!("{}\n\nNodes:\n", origin(bundle));
    out.push_str(&super::cli::progress(m));
    out.push_str(&format!(
        "\nHealth: {} ({} failing check(s); `vigil doctor --bundle {}` for the diagnosis)\n",
        report.status.as_str(),
        report.checks.len(),
        bundle.path
    ));
    out.push_str("\nVolumes:\n");
    for v in &view.volumes {
        out.push_str(&format!(
            "  {:<24} {:?} {:?} attached to {}\n",
            v.name,
            v.status.state,
            v.status.robustness,
            v.status.attached_node.as_deref().unwrap_or("-")
        ));
    }
    out.push_str(&format!(
        "\nFiles: {} ({} bytes uncompressed); `vigil bundle inspect {} --volume V` for a volume's timeline\n",
        m.files.len(),
        m.files.iter().map(|f| f.size).sum::<u64>(),
        bundle.path
    ));
    out
}
