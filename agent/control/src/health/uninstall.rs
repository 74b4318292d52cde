//! UNINSTALL_STUCK: an uninstall whose record has not progressed (nothing
//! deleted, no phase change) for longer than `uninstall-stuck-timeout`.
//! Caused by NODE_DOWN of the nodes that hold what is left (replicas
//! waiting for node-down-timeout, volumes detaching from a down node).

use std::collections::BTreeSet;

use super::codes::UNINSTALL_STUCK;
use super::evaluate::Eval;
use vigil_model::VolumeState;

impl Eval<'_> {
    pub(super) fn uninstall(&mut self) {
        let Some(u) = &self.view.uninstall else {
            return;
        };
        if u.is_done() {
            return;
        }
        let idle = self.view.now_unix.saturating_sub(u.progressed_at as u64);
        if idle < self.view.uninstall_stuck_secs {
            return;
        }
        // Nodes holding what is left and not live: the likely cause.
        let mut holders = BTreeSet::new();
        for r in &self.view.replicas {
            holders.insert(r.spec.node.clone());
        }
        for v in &self.view.volumes {
            if v.status.state == VolumeState::Detaching
                && let Some(n) = &v.status.attached_node
            {
                holders.insert(n.clone());
            }
        }
        let down: Vec<String> = holders
            .iter()
            .filter(|n| !self.is_live(n))
            .cloned()
            .collect();
        let caused_by = down.iter().filter_map(|n| self.node_down(n)).collect();
        let mut message = format!(
            "uninstall claimed by {} (last driven by {}) is in phase {} with no progress for {idle} s (uninstall-stuck-timeout {} s): {}",
            u.by_node, u.driven_by, u.phase, self.view.uninstall_stuck_secs, u.message
        );
        if !down.is_empty() {
            message.push_str(&format!(
                "; node(s) holding what is left are down: {} (their replicas are abandoned once down for node-down-timeout, and their directories discarded when they return)",
                down.join(", ")
            ));
        }
        self.add(
            UNINSTALL_STUCK,
            format!("uninstall/{}", u.name),
            message,
            caused_by,
        );
    }
}
