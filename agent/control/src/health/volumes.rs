//! Volume-level checks: VOLUME_DEGRADED and VOLUME_FAULTED, caused by what
//! explains each replica that does not count.

use super::codes::*;
use super::evaluate::{Eval, engine_current, robustness, usable_replica};
use vigil_model::replica::ReplicaMode;
use vigil_model::volume::Robustness;
use vigil_model::{Replica, VolumeState};

impl Eval<'_> {
    /// A volume served by an engine on a down node is FAULTED (caused by
    /// NODE_DOWN). Otherwise its robustness (see [`robustness`]) decides:
    /// degraded or faulted, caused by the items explaining each replica
    /// that is not RW (or not usable when no engine is current) and by
    /// REPLICA_UNSCHEDULABLE when replicas are missing.
    pub(super) fn volumes(&mut self) {
        for v in &self.view.volumes {
            if matches!(
                v.status.state,
                VolumeState::Creating | VolumeState::Deleting
            ) {
                continue;
            }
            let object = format!("volume/{}", v.name);
            if let Some(n) = v.status.attached_node.as_deref()
                && matches!(
                    v.status.state,
                    VolumeState::Attached | VolumeState::Attaching
                )
                && !self.is_live(n)
            {
                let cause = self.node_down(n).into_iter().collect();
                // What volume-attachment-recovery-policy will do, as the
                // controller acting for the volume wrote it.
                let next = if v.status.message.is_empty() {
                    format!(
                        "`vigil volume detach {}` detaches it at once while {n} is down",
                        v.name
                    )
                } else {
                    v.status.message.clone()
                };
                self.add(
                    VOLUME_FAULTED,
                    object,
                    format!(
                        "volume {} is not served: the node of its engine, {n}, is down; {next}",
                        v.name
                    ),
                    cause,
                );
                continue;
            }
            let code = match robustness(self, v) {
                Robustness::Degraded => VOLUME_DEGRADED,
                Robustness::Faulted => VOLUME_FAULTED,
                Robustness::Healthy | Robustness::Unknown => continue,
            };
            let current = engine_current(self, v);
            let replicas: Vec<&Replica> = self.replicas_of(&v.name).collect();
            let bad: Vec<&Replica> = replicas
                .iter()
                .copied()
                .filter(|r| {
                    if current {
                        r.status.mode != ReplicaMode::ReadWrite || r.status.integrity.is_some()
                    } else {
                        !usable_replica(self, r)
                    }
                })
                .collect();
            let mut cause: Vec<_> = bad
                .iter()
                .filter_map(|r| self.replica_explained(r))
                .collect();
            if replicas.len() < v.spec.replicas as usize {
                cause.extend(self.present(REPLICA_UNSCHEDULABLE, &object));
            }
            let place = match (&v.status.attached_node, current) {
                (Some(n), true) => format!("attached on {n}"),
                _ => v.status.state.to_string(),
            };
            let counted = if current { "RW" } else { "usable" };
            let missing = (v.spec.replicas as usize).saturating_sub(replicas.len());
            let mut not_counted = if bad.is_empty() {
                String::new()
            } else {
                let list: Vec<String> = bad
                    .iter()
                    .map(|r| format!("{} ({})", r.name, self.why_not_counted(r, current)))
                    .collect();
                format!("; not {counted}: {}", list.join(", "))
            };
            if missing > 0 {
                not_counted.push_str(&format!("; {missing} not placed"));
            }
            self.add(
                code,
                object,
                format!(
                    "volume {} ({place}) is {}: {} of {} desired replicas {counted}{not_counted}",
                    v.name,
                    robustness(self, v).as_str(),
                    replicas.len() - bad.len(),
                    v.spec.replicas,
                ),
                cause,
            );
        }
    }

    /// A few words on a replica that does not count.
    fn why_not_counted(&self, r: &Replica, current: bool) -> String {
        let mut words = Vec::new();
        if current {
            words.push(if r.status.mode == ReplicaMode::Unreported {
                "not in the engine".to_string()
            } else {
                r.status.mode.to_string()
            });
            if r.status.integrity.is_some() {
                words.push("files damaged".into());
            }
            if let Some(b) = r
                .status
                .rebuild
                .as_ref()
                .filter(|b| b.finished_unix.is_none())
            {
                let pct = (b.bytes_done.saturating_mul(100))
                    .checked_div(b.bytes_total)
                    .unwrap_or(0);
                words.push(format!("rebuilding {pct}%"));
            }
        } else {
            words.push(r.status.state.to_string());
            if !self.is_live(&r.spec.node) {
                words.push(format!("node {} down", r.spec.node));
            }
            if self.disk_gone(&r.spec.disk).is_some() {
                words.push("disk gone".into());
            }
            if r.status.integrity.is_some() {
                words.push("files damaged".into());
            }
        }
        words.join(", ")
    }
}
