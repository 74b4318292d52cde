//! EVICTION_BLOCKED: an eviction asked for (`vigil node evict N`) that
//! cannot progress for some volume, as the eviction controller recorded in
//! the node's status (`controller/eviction.rs`).

use super::codes::*;
use super::evaluate::Eval;
use vigil_model::eviction::VolumeEvictionState;

impl Eval<'_> {
    /// One item per evicted node with a blocked volume, naming each such
    /// volume and why; caused by NODE_DOWN of the node when nothing can be
    /// copied because the node (holding the only copy) is down.
    pub(super) fn evictions(&mut self) {
        for n in &self.view.nodes {
            if !n.spec.eviction_requested {
                continue;
            }
            let Some(e) = &n.status.eviction else {
                continue;
            };
            for v in e
                .volumes
                .iter()
                .filter(|v| v.state == VolumeEvictionState::Blocked)
            {
                let object = format!("node/{}", n.name);
                let caused_by = if v.reason.starts_with("no healthy replica") {
                    self.present(NODE_DOWN, &object).into_iter().collect()
                } else {
                    Vec::new()
                };
                self.add(
                    EVICTION_BLOCKED,
                    object,
                    format!(
                        "eviction of node {} cannot move volume {} (replica(s) {}): {}",
                        n.name,
                        v.volume,
                        v.replicas.join(", "),
                        v.reason
                    ),
                    caused_by,
                );
            }
        }
    }
}
