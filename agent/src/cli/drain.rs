//! `vigil node drain-check N` and `vigil node drain N`: exit codes for
//! scripts (0 = can drain, 1 = blocked or timed out, 2 = error), and the
//! eviction part of `vigil node get N`.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use super::args::Output;
use super::table::{columns, s};
use vigil_client::{ApiClient, CallError};
use vigil_model::wire::UpdateNode;

/// How often `drain` asks again.
const POLL: Duration = Duration::from_secs(2);

fn error(e: CallError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

async fn fetch(api: &ApiClient, name: &str) -> Result<Value, CallError> {
    api.drain_check(name).await
}

fn print(v: &Value, output: Output) {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        print!("{}", render(v));
    }
}

fn render(v: &Value) -> String {
    let node = s(&v["node"]);
    let policy = s(&v["policy"]);
    let blockers: Vec<String> = v["blockers"]
        .as_array()
        .map(|a| a.iter().map(|b| s(&b["reason"])).collect())
        .unwrap_or_default();
    let mut out = if blockers.is_empty() {
        format!(
            "node {node} can be drained (policy {policy}; {} replica(s) on it)\n",
            v["replicas_on_node"]
        )
    } else {
        let mut out = format!(
            "node {node} cannot be drained now (policy {policy}); {} blocker(s):\n",
            blockers.len()
        );
        for b in blockers {
            out.push_str(&format!("  - {b}\n"));
        }
        out
    };
    for n in v["notes"].as_array().into_iter().flatten() {
        out.push_str(&format!("note: {}\n", s(&n["reason"])));
    }
    out
}

fn can_drain(v: &Value) -> bool {
    v["can_drain"] == true
}

pub async fn check(api: &ApiClient, name: &str, output: Output) -> ExitCode {
    match fetch(api, name).await {
        Ok(v) => {
            print(&v, output);
            if can_drain(&v) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => error(e),
    }
}

/// Cordon + evict, then poll the check until it passes or `timeout` ends.
/// The eviction is not cancelled afterwards: the node is being drained.
pub async fn drain(api: &ApiClient, name: &str, timeout: Duration, output: Output) -> ExitCode {
    let set = api
        .update_node(
            name,
            &UpdateNode {
                allow_scheduling: Some(false),
                eviction_requested: Some(true),
                ..UpdateNode::default()
            },
        )
        .await;
    if let Err(e) = set {
        return error(e);
    }
    if output == Output::Table {
        println!(
            "node {name}: scheduling disabled, eviction requested; waiting for the drain check to pass"
        );
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let v = match fetch(api, name).await {
            Ok(v) => v,
            Err(e) => return error(e),
        };
        if can_drain(&v) {
            let node = api
                .cluster_node(name)
                .await
                .map(super::json)
                .unwrap_or(Value::Null);
            if output == Output::Json {
                print(
                    &serde_json::json!({"drained": true, "check": v, "node": node}),
                    output,
                );
            } else {
                let e = &node["eviction"];
                println!(
                    "node {name} drained: {} replica(s) moved off, {} left on it",
                    e["replicas_moved"].as_u64().unwrap_or(0),
                    v["replicas_on_node"]
                );
                print(&v, output);
            }
            return ExitCode::SUCCESS;
        }
        if tokio::time::Instant::now() >= deadline {
            if output == Output::Json {
                print(&serde_json::json!({"drained": false, "check": v}), output);
            } else {
                eprintln!(
                    "node {name} not drained after {} s; still blocking:",
                    timeout.as_secs()
                );
                print(&v, output);
            }
            return ExitCode::from(1);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The eviction section of `vigil node get`.
pub fn eviction_table(e: &Value) -> String {
    if e.is_null() {
        return String::new();
    }
    let mut out = format!(
        "\neviction: {} ({} replica(s) left, {} moved)\n",
        s(&e["phase"]),
        e["replicas_left"],
        e["replicas_moved"]
    );
    let rows = e["volumes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| {
                    let list = |x: &Value| {
                        x.as_array()
                            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                            .unwrap_or_default()
                    };
                    vec![
                        s(&v["volume"]),
                        list(&v["replicas"]),
                        s(&v["state"]),
                        list(&v["replacements"]),
                        s(&v["reason"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if e["phase"] != "completed" {
        out.push_str(&columns(
            &["VOLUME", "REPLICAS", "STATE", "REPLACEMENTS", "REASON"],
            rows,
        ));
    }
    out
}
