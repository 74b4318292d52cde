//! MIGRATION_STUCK: a live migration whose automatic step outlived
//! `migration-timeout` (plus a grace for the agents' rounds). The agents
//! roll a slow step back by themselves, so one that lasts is stuck on an
//! agent that cannot act; the item names both nodes and, when one is down,
//! sits under its NODE_DOWN.

use super::codes::MIGRATION_STUCK;
use super::evaluate::Eval;

/// Rounds and CAS retries on top of the timeout before a step is stuck.
const GRACE_SECS: u64 = 30;
/// `migration-timeout`'s default, for views that lack the setting.
const DEFAULT_TIMEOUT_SECS: u64 = 60;

impl Eval<'_> {
    pub(super) fn migrations(&mut self) {
        let timeout = match self.view.migration_timeout_secs {
            0 => DEFAULT_TIMEOUT_SECS,
            t => t,
        };
        for v in &self.view.volumes {
            let Some(m) = &v.status.migration else {
                continue;
            };
            let age = self.view.now_unix.saturating_sub(m.phase_since);
            if !m.phase.is_automatic() || age <= timeout + GRACE_SECS {
                continue;
            }
            let mut caused_by = Vec::new();
            let mut down = Vec::new();
            for node in [&m.source, &m.target] {
                if let Some(r) = self.node_down(node) {
                    caused_by.push(r);
                    down.push(node.as_str());
                }
            }
            let nodes = if down.is_empty() {
                "both nodes are up".to_string()
            } else {
                format!("down: {}", down.join(", "))
            };
            let why = if m.message.is_empty() {
                String::new()
            } else {
                format!("; {}", m.message)
            };
            self.add(
                MIGRATION_STUCK,
                format!("volume/{}", v.name),
                format!(
                    "volume {}: migration {} → {} has been in step {} for {age} s (migration-timeout {timeout} s); {nodes}{why}",
                    v.name, m.source, m.target, m.phase
                ),
                caused_by,
            );
        }
    }
}
