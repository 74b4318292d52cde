//! ENGINE_FENCED: an engine of the volume lost it to a newer one (a
//! replica refused it for a newer epoch) in the last
//! [`FENCED_RECENT_SECS`]; its agent recorded it in `volume.status.fenced`.
//! VOLUME_WRITES_BLOCKED: the engine reports fewer RW replicas than
//! `min-replicas-to-write` (`volume.status.writes_blocked`).

use super::codes::{ENGINE_FENCED, VOLUME_WRITES_BLOCKED};
use super::evaluate::Eval;

/// How long a fenced engine is reported.
pub(super) const FENCED_RECENT_SECS: u64 = 15 * 60;

impl Eval<'_> {
    pub(super) fn fencing(&mut self) {
        for v in &self.view.volumes {
            if let Some(f) = &v.status.fenced {
                let age = self.view.now_unix.saturating_sub(f.at_unix);
                if age <= FENCED_RECENT_SECS {
                    let now_on = v
                        .status
                        .attached_node
                        .as_deref()
                        .map(|n| format!("; the volume is attached on {n} now"))
                        .unwrap_or_default();
                    self.add(
                        ENGINE_FENCED,
                        format!("volume/{}", v.name),
                        format!(
                            "volume {}: the engine on {} (epoch {}) was fenced {age} s ago: {}; its clients got I/O errors{now_on}",
                            v.name, f.node, f.epoch, f.message
                        ),
                        Vec::new(),
                    );
                }
            }
            if !v.status.writes_blocked.is_empty() {
                self.add(
                    VOLUME_WRITES_BLOCKED,
                    format!("volume/{}", v.name),
                    format!("volume {}: {}", v.name, v.status.writes_blocked),
                    Vec::new(),
                );
            }
        }
    }
}
