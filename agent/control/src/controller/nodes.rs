//! When a node went down: the first agent that sees a node's liveness lease
//! gone writes `status.down_since` into its node object (compare-and-swap
//! on the version it read, so a node registering again meanwhile wins), and
//! clears it once the node is ready again. Every agent then measures the
//! same down time against `node-down-timeout` ([`super::Snapshot::node_gone`]).

use super::Snapshot;
use crate::cluster::Cluster;
use crate::cluster::events::Severity;
use vigil_model::EventReason;

/// Records `down_since` for nodes whose lease is gone, and clears it for
/// nodes ready again.
pub async fn mark_down(cluster: &Cluster, snap: &Snapshot) {
    for (name, n) in &snap.nodes {
        let ready = snap.ready.contains(name);
        let down_since = n.object.status.down_since;
        let next_since = match (ready, down_since) {
            (false, None) => Some(snap.now),
            (true, Some(_)) => None,
            _ => continue,
        };
        let mut next = n.clone();
        next.object.status.down_since = next_since;
        match cluster.update(&next).await {
            Ok(_) if next_since.is_some() => {
                tracing::warn!(node = %name, "node is down (liveness lease gone)");
                cluster
                    .event(
                        Severity::Warning,
                        "node",
                        name,
                        EventReason::NodeDown,
                        format!(
                            "node {name} stopped renewing its liveness lease; its replicas are replaced after node-down-timeout ({} s) and replica-replenishment-wait-interval ({} s)",
                            snap.settings.node_down_timeout().as_secs(),
                            snap.settings.replenishment_wait().as_secs()
                        ),
                    )
                    .await;
            }
            Ok(_) => {}
            Err(e) if e.is_conflict() => {}
            Err(e) => {
                tracing::debug!(node = %name, error = %e, "cannot record node liveness change")
            }
        }
    }
}
