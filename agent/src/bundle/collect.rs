//! The coordinator (`POST /v1/support-bundle`): asks every node for its
//! part in parallel, each under its own timeout, reads the cluster part
//! meanwhile, runs the central redaction pass over every file and writes
//! one archive with its manifest.
//!
//! Every node is asked, even one whose liveness lease is gone (an agent
//! cut off from the store still answers, and its part is then the most
//! useful); one that fails or does not answer in time is recorded with
//! why (and, when its lease is gone, since when). None holds up the rest:
//! all are asked at once and each has its own timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::archive::{self, Manifest, NodeOutcome};
use super::node::{self, NodePart};
use super::{DEFAULT_NODE_TIMEOUT_SECS, Request, cluster};
use crate::daemon::Agent;
use vigil_model::Node;

/// Why no bundle could be made.
#[derive(Debug, Error)]
pub enum CollectError {
    #[error("write the archive: {0}")]
    Archive(#[source] std::io::Error),
    #[error("the archive task failed: {0}")]
    Task(String),
}

/// A node to ask.
struct Target {
    name: String,
    api_address: String,
    /// Why it is known down (lease gone), if it is.
    down: Option<String>,
    /// Why it cannot be asked at all (not a node of the cluster).
    skip: Option<String>,
}

/// Makes a bundle: the archive's bytes and its manifest.
pub async fn make(agent: &Arc<Agent>, req: Request) -> Result<(Vec<u8>, Manifest), CollectError> {
    let started = Instant::now();
    let created_unix = vigil_model::now_unix();
    let timeout = Duration::from_secs(
        req.node_timeout_secs
            .unwrap_or(DEFAULT_NODE_TIMEOUT_SECS)
            .clamp(1, 600),
    );
    let targets = targets(agent, &req).await;
    let asks = targets.iter().map(|t| ask(agent, t, &req, timeout));
    let mut red = node::redactor(agent);
    let (answers, cluster_files) = tokio::join!(
        futures_util::future::join_all(asks),
        cluster::collect(agent, &req, &mut red)
    );
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (path, value) in cluster_files {
        let text = if path == cluster::STORE {
            cluster::store_lines(&value)
        } else {
            serde_json::to_string_pretty(&value).unwrap_or_default()
        };
        files.push((path, text.into_bytes()));
    }
    let mut outcomes = Vec::new();
    for (outcome, part) in answers {
        let mut outcome = outcome;
        if let Some(part) = part {
            for f in part.files {
                let Some(path) = safe_path(&f.path) else {
                    tracing::warn!(node = %part.node, path = %f.path, "support bundle: file with an unsafe path skipped");
                    continue;
                };
                outcome.bytes += f.content.len() as u64;
                files.push((
                    format!("nodes/{}/{path}", outcome.node),
                    f.content.into_bytes(),
                ));
            }
        }
        outcomes.push(outcome);
    }
    // The central pass: every file, whatever its source, just before it
    // is written.
    for (path, data) in &mut files {
        *data = red.file(path, data);
    }
    let manifest = Manifest {
        format: archive::FORMAT,
        vigil_version: super::VERSION.to_string(),
        created_unix,
        duration_secs: started.elapsed().as_secs_f64(),
        coordinator: agent.config.node_name.clone(),
        request: req,
        nodes: outcomes,
        files: files.iter().map(|(p, d)| archive::entry(p, d)).collect(),
    };
    let m = manifest.clone();
    let bytes = tokio::task::spawn_blocking(move || archive::write(&m, &files))
        .await
        .map_err(|e| CollectError::Task(e.to_string()))?
        .map_err(CollectError::Archive)?;
    tracing::info!(
        nodes = manifest.nodes.len(),
        answered = manifest
            .nodes
            .iter()
            .filter(|n| n.status == "answered")
            .count(),
        bytes = bytes.len(),
        seconds = started.elapsed().as_secs_f64(),
        "support bundle made"
    );
    Ok((bytes, manifest))
}

/// The nodes to ask: every registered node (or those requested), with
/// the ones whose lease is gone marked down.
async fn targets(agent: &Agent, req: &Request) -> Vec<Target> {
    let me = &agent.config.node_name;
    let nodes = agent.local.cluster.list::<Node>().await;
    let live = agent.local.cluster.ready_nodes().await;
    let mut out: Vec<Target> = match (&nodes, &live) {
        (Ok(nodes), Ok(live)) => nodes
            .iter()
            .map(|v| {
                let n = &v.object;
                let down =
                    (!live.contains(&n.name) && n.name != *me).then(|| match n.status.down_since {
                        Some(t) => format!(
                            "its liveness lease is gone (node down since {})",
                            vigil_model::time::rfc3339(t, 0)
                        ),
                        None => "its liveness lease is gone (node down)".to_string(),
                    });
                Target {
                    name: n.name.clone(),
                    api_address: n.spec.api_address.clone(),
                    down,
                    skip: None,
                }
            })
            .collect(),
        // Without the store only this node is known.
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "support bundle: cannot list nodes; collecting this node only");
            vec![Target {
                name: me.clone(),
                api_address: agent.local.me.api_address.clone(),
                down: None,
                skip: None,
            }]
        }
    };
    if !out.iter().any(|t| t.name == *me) {
        out.push(Target {
            name: me.clone(),
            api_address: agent.local.me.api_address.clone(),
            down: None,
            skip: None,
        });
    }
    if !req.nodes.is_empty() {
        for n in &req.nodes {
            if !out.iter().any(|t| t.name == *n) {
                out.push(Target {
                    name: n.clone(),
                    api_address: String::new(),
                    down: None,
                    skip: Some("not a node of the cluster".into()),
                });
            }
        }
        out.retain(|t| req.nodes.contains(&t.name));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Asks one node (this one directly) under `timeout`.
async fn ask(
    agent: &Arc<Agent>,
    t: &Target,
    req: &Request,
    timeout: Duration,
) -> (NodeOutcome, Option<NodePart>) {
    let mut outcome = NodeOutcome {
        node: t.name.clone(),
        status: "failed".into(),
        reason: t.skip.clone(),
        api_address: t.api_address.clone(),
        seconds: 0.0,
        clock_offset_secs: None,
        bytes: 0,
    };
    if t.skip.is_some() {
        return (outcome, None);
    }
    let sent_unix = vigil_model::now_unix();
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, async {
        if t.name == agent.config.node_name {
            Ok(node::collect(agent, req).await)
        } else {
            let client = vigil_client::ApiClient::new(&t.api_address)
                .with_token(Some(agent.token.expose().to_string()))
                .with_traceparent(crate::telemetry::propagation::outgoing_traceparent());
            client
                .support_bundle_node::<NodePart>(&node_query(req))
                .await
        }
    })
    .await;
    outcome.seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(Ok(part)) => {
            outcome.status = "answered".into();
            outcome.reason = t.down.as_ref().map(|d| format!("answered, but {d}"));
            let midpoint = sent_unix + outcome.seconds / 2.0;
            outcome.clock_offset_secs = Some(part.unix_time - midpoint);
            if part.node != t.name {
                outcome.reason = Some(format!(
                    "answered as node {:?} (its address is registered for {})",
                    part.node, t.name
                ));
            }
            (outcome, Some(part))
        }
        Ok(Err(e)) => {
            outcome.status = "failed".into();
            outcome.reason = Some(with_down(e.to_string(), &t.down));
            (outcome, None)
        }
        Err(_) => {
            outcome.status = "timed_out".into();
            outcome.reason = Some(with_down(
                format!("no answer within {} s", timeout.as_secs()),
                &t.down,
            ));
            (outcome, None)
        }
    }
}

fn with_down(reason: String, down: &Option<String>) -> String {
    match down {
        Some(d) => format!("{d}; {reason}"),
        None => reason,
    }
}

/// `GET /v1/support-bundle/node?...` for a request.
pub fn node_query(req: &Request) -> String {
    let mut q = Vec::new();
    if let Some(s) = req.since_secs {
        q.push(format!("since={s}"));
    }
    for v in &req.volumes {
        q.push(format!("volume={v}"));
    }
    q.join("&")
}

/// A node's file path, if it is a plain relative path (no `..`, no
/// absolute path, only name characters).
fn safe_path(p: &str) -> Option<&str> {
    let ok = !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    ok.then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_paths_are_plain() {
        assert_eq!(safe_path("logs.jsonl"), Some("logs.jsonl"));
        assert_eq!(safe_path("a/b.json"), Some("a/b.json"));
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a b", "./x"] {
            assert_eq!(safe_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn node_query_names_the_window_and_volumes() {
        let mut r = Request::default();
        assert_eq!(node_query(&r), "");
        r.since_secs = Some(60);
        r.volumes = vec!["a".into(), "b".into()];
        assert_eq!(node_query(&r), "since=60&volume=a&volume=b");
    }
}
