//! Replica-level checks: files, network, stopped, error, rebuilds.

use super::codes::*;
use super::evaluate::{Eval, engine_current};
use super::report::ItemRef;
use vigil_model::replica::IntegrityKind;
use vigil_model::replica::ReplicaMode;
use vigil_model::{InstanceState, Replica, Volume, VolumeState};

/// Fault reasons that mean "the engine could not talk to the replica".
pub const NETWORK_REASONS: &[&str] = &["unreachable", "connection_lost", "timeout", "refused"];

/// How a replica is described in every item.
fn describe(r: &Replica) -> String {
    format!(
        "replica {} of volume {} on node {}",
        r.name, r.spec.volume, r.spec.node
    )
}

fn object(r: &Replica) -> String {
    format!("replica/{}", r.name)
}

impl<'a> Eval<'a> {
    /// Replicas worth looking at, with their volume: not of a volume being
    /// deleted (or already gone).
    fn live_replicas(&self) -> Vec<(&'a Replica, &'a Volume)> {
        self.view
            .replicas
            .iter()
            .filter_map(|r| Some((r, self.volume(&r.spec.volume)?)))
            .filter(|(_, v)| v.status.state != VolumeState::Deleting)
            .collect()
    }

    /// Whether the engine marked `r` ERR, as far as the current engine says.
    fn is_err(&self, r: &Replica, v: &Volume) -> bool {
        engine_current(self, v) && r.status.mode == ReplicaMode::Error
    }

    /// SNAPSHOT_FILE_MISSING / SNAPSHOT_FILE_CORRUPT: the replica's agent
    /// found a problem in its files. Explained only by its disk being gone.
    pub(super) fn replica_files(&mut self) {
        self.layer_checksums_without_majority();
        for (r, _) in self.live_replicas() {
            let Some(p) = &r.status.integrity else {
                continue;
            };
            let code = match p.kind {
                IntegrityKind::Missing => SNAPSHOT_FILE_MISSING,
                _ => SNAPSHOT_FILE_CORRUPT,
            };
            let mut cause: Vec<ItemRef> = self.disk_gone(&r.spec.disk).into_iter().collect();
            if p.kind != IntegrityKind::Missing {
                // An unreadable or short file on a disk that returns I/O
                // errors is the disk's doing.
                cause.extend(self.present(DISK_FAILING, &format!("disk/{}", r.spec.disk)));
            }
            self.add(
                code,
                object(r),
                format!(
                    "{}: layer file {} is {} ({})",
                    describe(r),
                    p.file,
                    p.kind.as_str(),
                    p.message
                ),
                cause,
            );
        }
    }

    /// SNAPSHOT_FILE_CORRUPT also when the replicas' checksums of one layer
    /// disagree with no majority (two replicas): the controller picks
    /// neither, so each is named here for an operator to decide.
    pub(super) fn layer_checksums_without_majority(&mut self) {
        for v in &self.view.volumes {
            if v.status.state == VolumeState::Deleting {
                continue;
            }
            let replicas = self
                .view
                .replicas
                .iter()
                .filter(|r| r.spec.volume == v.name);
            for d in crate::checksums::compare(replicas, v) {
                if d.majority.is_some() {
                    continue;
                }
                let all = d
                    .sums
                    .iter()
                    .map(|(r, s)| format!("{} gives {}", r.name, s.checksum))
                    .collect::<Vec<_>>()
                    .join(", ");
                for (r, s) in &d.sums {
                    self.add(
                        SNAPSHOT_FILE_CORRUPT,
                        object(r),
                        format!(
                            "{}: layer file {} differs from the other replicas' with no majority, none picked ({all})",
                            describe(r),
                            s.file
                        ),
                        Vec::new(),
                    );
                }
            }
        }
    }

    /// BACKEND_UNREACHABLE: the current engine has the replica ERR for a
    /// network reason while the replica's node is live (a down node is
    /// NODE_DOWN instead) and its disk is there.
    pub(super) fn backends(&mut self) {
        for (r, v) in self.live_replicas() {
            let Some(f) = &r.status.fault else { continue };
            if !self.is_err(r, v)
                || !NETWORK_REASONS.contains(&f.reason.as_str())
                || !self.is_live(&r.spec.node)
                || self.disk_gone(&r.spec.disk).is_some()
            {
                continue;
            }
            self.add(
                BACKEND_UNREACHABLE,
                object(r),
                format!(
                    "the engine of volume {} on node {} lost {} at {} while the node is up ({}: {})",
                    v.name,
                    v.status.attached_node.as_deref().unwrap_or("-"),
                    describe(r),
                    f.at_unix,
                    f.reason,
                    f.message
                ),
                Vec::new(),
            );
        }
    }

    /// REPLICA_STOPPED: stopped (or stopping) on a live node, not ERR.
    pub(super) fn replicas_stopped(&mut self) {
        for (r, v) in self.live_replicas() {
            if !matches!(
                r.status.state,
                InstanceState::Stopped | InstanceState::Stopping
            ) || !self.is_live(&r.spec.node)
                || self.is_err(r, v)
            {
                continue;
            }
            let cause = self.disk_gone(&r.spec.disk).into_iter().collect();
            self.add(
                REPLICA_STOPPED,
                object(r),
                format!("{} is {}", describe(r), r.status.state),
                cause,
            );
        }
    }

    /// REPLICA_ERROR: on a down node, on a gone disk, ERR in the current
    /// engine, or failed on its node. Caused by, in this order: NODE_DOWN
    /// (alone: nothing else about a down node is current); else its gone
    /// disk, its file problem, DISK_FAILING / DISK_FULL of its disk for
    /// `io_error` / `no_space`, BACKEND_UNREACHABLE for a network reason.
    pub(super) fn replica_errors(&mut self) {
        for (r, v) in self.live_replicas() {
            let node_up = self.is_live(&r.spec.node);
            let disk = self.disk_gone(&r.spec.disk);
            let err = self.is_err(r, v);
            let failed = node_up && r.status.state == InstanceState::Error;
            if node_up && disk.is_none() && !err && !failed {
                continue;
            }
            let mut why = Vec::new();
            let mut cause = Vec::new();
            if !node_up {
                why.push(format!("its node {} is down", r.spec.node));
                cause.extend(self.node_down(&r.spec.node));
            }
            if err {
                why.push(match &r.status.fault {
                    Some(f) => format!(
                        "ERR in the engine on {} since {}: {}: {}",
                        v.status.attached_node.as_deref().unwrap_or("-"),
                        f.at_unix,
                        f.reason,
                        f.message
                    ),
                    None => "ERR in the engine (reason not reported)".into(),
                });
            }
            if failed {
                why.push(format!("failed on its node: {}", r.status.message));
            }
            if disk.is_some() {
                why.push(format!("its disk {} is gone", r.spec.disk));
            }
            if node_up {
                cause.extend(disk);
                cause.extend(self.present(SNAPSHOT_FILE_MISSING, &object(r)));
                cause.extend(self.present(SNAPSHOT_FILE_CORRUPT, &object(r)));
                cause.extend(self.present(BACKEND_UNREACHABLE, &object(r)));
                cause.extend(self.disk_trouble(r, err, failed));
            }
            self.add(
                REPLICA_ERROR,
                object(r),
                format!("{}: {}", describe(r), why.join("; ")),
                cause,
            );
        }
    }

    /// DISK_FAILING / DISK_FULL of `r`'s disk when they explain its error:
    /// ERR for `io_error` / `no_space` (or a rebuild into it that failed
    /// there), or failed on its node while the disk is in trouble.
    fn disk_trouble(&self, r: &Replica, err: bool, failed: bool) -> Vec<ItemRef> {
        let disk = format!("disk/{}", r.spec.disk);
        let reason = r
            .status
            .fault
            .as_ref()
            .filter(|_| err)
            .map(|f| f.reason.as_str());
        let mut cause = Vec::new();
        if failed || matches!(reason, Some("io_error" | "rebuild_failed")) {
            cause.extend(self.present(DISK_FAILING, &disk));
        }
        if failed || matches!(reason, Some("no_space" | "rebuild_failed")) {
            cause.extend(self.present(DISK_FULL, &disk));
        }
        cause
    }

    /// REBUILD_STUCK: an unfinished rebuild of a volume being served whose
    /// progress is older than `rebuild-stuck-timeout`. Caused by the down
    /// nodes of the target, the engine or the source, and by the problems of
    /// the target or the source replica.
    pub(super) fn rebuilds(&mut self) {
        for (r, v) in self.live_replicas() {
            let Some(b) = &r.status.rebuild else { continue };
            let idle = self.view.now_unix.saturating_sub(b.progressed_unix);
            if b.finished_unix.is_some()
                || !matches!(
                    v.status.state,
                    VolumeState::Attached | VolumeState::Attaching
                )
                || idle <= self.view.rebuild_stuck_secs
            {
                continue;
            }
            let source = self
                .view
                .replicas
                .iter()
                .find(|s| !b.source.is_empty() && s.status.address == b.source);
            let mut cause = Vec::new();
            cause.extend(self.node_down(&r.spec.node));
            if let Some(n) = &v.status.attached_node {
                cause.extend(self.node_down(n));
            }
            for x in std::iter::once(r).chain(source) {
                let o = object(x);
                cause.extend(self.node_down(&x.spec.node));
                for code in [REPLICA_ERROR, BACKEND_UNREACHABLE] {
                    cause.extend(self.present(code, &o));
                }
            }
            let pct = (b.bytes_done.saturating_mul(100))
                .checked_div(b.bytes_total)
                .unwrap_or(0);
            let from = source.map_or(b.source.clone(), |s| {
                format!("replica {} on node {}", s.name, s.spec.node)
            });
            self.add(
                REBUILD_STUCK,
                object(r),
                format!(
                    "rebuild of {} from {from}: {} of {} bytes ({pct}%), no progress for {idle} s",
                    describe(r),
                    b.bytes_done,
                    b.bytes_total
                ),
                cause,
            );
        }
    }

    /// The item that best explains why replica `r` does not count towards
    /// its volume's robustness, if any.
    pub(super) fn replica_explained(&self, r: &Replica) -> Option<ItemRef> {
        let o = object(r);
        [
            REPLICA_ERROR,
            SNAPSHOT_FILE_MISSING,
            SNAPSHOT_FILE_CORRUPT,
            BACKEND_UNREACHABLE,
            REPLICA_STOPPED,
            REBUILD_STUCK,
        ]
        .into_iter()
        .find_map(|code| self.present(code, &o))
    }
}
