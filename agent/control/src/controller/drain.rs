//! The drain check: can node N go down now without making a volume
//! unavailable or losing its last healthy replica? A pure function of one
//! read of the cluster ([`check`]), served by `GET /v1/nodes/N/drain-check`
//! and `vigil node drain-check N` (exit 0 when it can drain, 1 with
//! blockers), and polled by `vigil node drain N`.
//!
//! What blocks depends on `node-drain-policy` ([`DrainPolicy`]):
//!
//! | blocker                                   | block-if-contains-last-replica | allow-if-replica-is-stopped | always-allow |
//! |-------------------------------------------|:---:|:---:|:---:|
//! | a migration involves N                    | yes | yes | no |
//! | the last healthy replica is on N          | yes | only if the volume is attached (its replica runs for an engine) | no |
//!
//! A volume attached on N (its engine runs there) does not block: its
//! clients are normally on N too and go down with it, and nothing is lost
//! (its replicas elsewhere stay). It is listed as a *note* instead, so a
//! script can see it and migrate the volume first (`vigil volume migrate`).
//!
//! A *healthy* replica is running on a ready node, not lost, with no
//! integrity problem, and RW in its volume's last engine (or never in an
//! engine yet: `mode` empty). Replicas being rebuilt (WO) or ERR do not
//! count: they do not hold the whole data.

use serde::{Deserialize, Serialize};

use super::Snapshot;
use vigil_model::settings::DrainPolicy;
use vigil_model::{InstanceState, Replica, Volume, VolumeState};

/// One volume that keeps the node from draining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocker {
    pub volume: String,
    /// e.g. "only healthy replica is on n1".
    pub reason: String,
}

/// The answer for one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainCheck {
    pub node: String,
    pub policy: DrainPolicy,
    /// True when nothing blocks.
    pub can_drain: bool,
    pub blockers: Vec<Blocker>,
    /// Volumes attached on the node (not blockers: see the module docs).
    #[serde(default)]
    pub notes: Vec<Blocker>,
    /// Replicas still on the node (they go down with it if it drains now).
    pub replicas_on_node: usize,
}

/// Whether `node` can go down now, under `policy`, as `snap` shows.
pub fn check(snap: &Snapshot, node: &str, policy: DrainPolicy) -> DrainCheck {
    let mut blockers = Vec::new();
    let notes = snap
        .volumes
        .iter()
        .filter(|v| {
            v.object.status.attached_node.as_deref() == Some(node)
                && v.object.status.migration.is_none()
        })
        .map(|v| Blocker {
            volume: v.object.name.clone(),
            reason: format!(
                "volume {}: attached on {node}; its clients lose it while {node} is down unless it is migrated first (`vigil volume migrate {} --to NODE`)",
                v.object.name, v.object.name
            ),
        })
        .collect();
    if policy != DrainPolicy::AlwaysAllow {
        for v in &snap.volumes {
            if let Some(reason) = blocks(snap, &v.object, node, policy) {
                blockers.push(Blocker {
                    volume: v.object.name.clone(),
                    reason: format!("volume {}: {reason}", v.object.name),
                });
            }
        }
    }
    DrainCheck {
        node: node.to_string(),
        policy,
        can_drain: blockers.is_empty(),
        blockers,
        notes,
        replicas_on_node: snap
            .replicas
            .iter()
            .filter(|r| r.object.spec.node == node)
            .count(),
    }
}

/// Why `vol` keeps `node` from draining, if it does (policy not
/// always-allow).
fn blocks(snap: &Snapshot, vol: &Volume, node: &str, policy: DrainPolicy) -> Option<String> {
    if let Some(m) = &vol.status.migration
        && m.involves(node)
    {
        return Some(format!(
            "migration in progress, engines on {} and {}",
            m.source, m.target
        ));
    }
    let attached = matches!(
        vol.status.state,
        VolumeState::Attaching | VolumeState::Attached | VolumeState::Detaching
    );
    if policy == DrainPolicy::AllowIfReplicaIsStopped && !attached {
        return None;
    }
    let healthy: Vec<&Replica> = snap
        .replicas_of(&vol.name)
        .map(|r| &r.object)
        .filter(|r| healthy(snap, r))
        .collect();
    if !healthy.is_empty() && healthy.iter().all(|r| r.spec.node == node) {
        return Some(if healthy.len() == 1 {
            format!("only healthy replica is on {node}")
        } else {
            format!("all {} healthy replicas are on {node}", healthy.len())
        });
    }
    None
}

fn healthy(snap: &Snapshot, r: &Replica) -> bool {
    let st = &r.status;
    st.state == InstanceState::Running
        && !st.lost
        && st.integrity.is_none()
        && snap.ready.contains(&r.spec.node)
        && st.mode.is_rw_or_unreported()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::scheduler::testkit;
    use vigil_model::migration::{Migration, MigrationPhase};
    use vigil_model::replica::ReplicaMode;
    use vigil_model::replica::ReplicaSpec;
    use vigil_model::{Versioned, VolumeState};

    fn running(volume: &str, name: &str, node: &str, mode: ReplicaMode) -> Versioned<Replica> {
        let mut r = Replica::new(
            name.to_string(),
            ReplicaSpec {
                volume: volume.into(),
                node: node.into(),
                disk: format!("d-{node}"),
                size: 1 << 20,
            },
        );
        r.status.state = InstanceState::Running;
        r.status.address = format!("tcp://127.0.0.1:1/{name}");
        r.status.mode = mode;
        Versioned {
            object: r,
            revision: 1,
        }
    }

    fn volume(name: &str, attached_on: Option<&str>) -> Versioned<Volume> {
        let mut v = testkit::volume(name, 1 << 20, 2);
        match attached_on {
            Some(n) => {
                v.status.state = VolumeState::Attached;
                v.status.attached_node = Some(n.into());
                v.spec.node = Some(n.into());
            }
            None => v.status.state = VolumeState::Detached,
        }
        Versioned {
            object: v,
            revision: 1,
        }
    }

    fn snap(volumes: Vec<Versioned<Volume>>, replicas: Vec<Versioned<Replica>>) -> Snapshot {
        Snapshot {
            volumes,
            replicas,
            engines: BTreeMap::new(),
            ready: ["n1", "n2", "n3"]
                .iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<_>>(),
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            settings: vigil_model::settings::Settings::default(),
            now: 1_000,
        }
    }

    /// v-last: detached, its only healthy replica on n1 (the n2 one is ERR).
    /// v-att: attached on n2, its only healthy replica on n1.
    /// v-eng: attached on n1, replicas healthy on n1 and n3.
    /// v-ok: detached, healthy on n1 and n2.
    /// v-mig: migrating from n3 to n1.
    fn cluster() -> Snapshot {
        let mut mig = volume("v-mig", Some("n3"));
        mig.object.status.migration = Some(Migration {
            target: "n1".into(),
            source: "n3".into(),
            phase: MigrationPhase::Ready,
            started_at: 900,
            phase_since: 900,
            target_endpoint: String::new(),
            message: String::new(),
            target_stopped: false,
            source_stopped: false,
        });
        snap(
            vec![
                volume("v-last", None),
                volume("v-att", Some("n2")),
                volume("v-eng", Some("n1")),
                volume("v-ok", None),
                mig,
            ],
            vec![
                running("v-last", "v-last-a", "n1", ReplicaMode::ReadWrite),
                running("v-last", "v-last-b", "n2", ReplicaMode::Error),
                running("v-att", "v-att-a", "n1", ReplicaMode::ReadWrite),
                running("v-att", "v-att-b", "n2", ReplicaMode::WriteOnly),
                running("v-eng", "v-eng-a", "n1", ReplicaMode::ReadWrite),
                running("v-eng", "v-eng-b", "n3", ReplicaMode::ReadWrite),
                running("v-ok", "v-ok-a", "n1", ReplicaMode::ReadWrite),
                running("v-ok", "v-ok-b", "n2", ReplicaMode::Unreported),
                running("v-mig", "v-mig-a", "n2", ReplicaMode::ReadWrite),
                running("v-mig", "v-mig-b", "n3", ReplicaMode::ReadWrite),
            ],
        )
    }

    fn reasons(c: &DrainCheck) -> Vec<String> {
        c.blockers.iter().map(|b| b.reason.clone()).collect()
    }

    #[test]
    fn block_if_contains_last_replica_blocks_attached_and_detached() {
        let c = check(&cluster(), "n1", DrainPolicy::BlockIfContainsLastReplica);
        assert!(!c.can_drain);
        assert_eq!(
            reasons(&c),
            vec![
                "volume v-last: only healthy replica is on n1",
                "volume v-att: only healthy replica is on n1",
                "volume v-mig: migration in progress, engines on n3 and n1",
            ]
        );
        assert_eq!(c.replicas_on_node, 4);
    }

    #[test]
    fn allow_if_replica_is_stopped_lets_detached_volumes_go() {
        let c = check(&cluster(), "n1", DrainPolicy::AllowIfReplicaIsStopped);
        assert_eq!(
            reasons(&c),
            vec![
                "volume v-att: only healthy replica is on n1",
                "volume v-mig: migration in progress, engines on n3 and n1",
            ]
        );
    }

    #[test]
    fn always_allow_never_blocks() {
        let c = check(&cluster(), "n1", DrainPolicy::AlwaysAllow);
        assert!(c.can_drain);
        assert!(c.blockers.is_empty());
    }

    #[test]
    fn a_node_holding_no_last_replica_drains_and_notes_its_engines() {
        // n2 holds v-ok's second replica (v-ok also healthy on n1) and
        // v-att's engine; v-mig's healthy replicas are on n2 and n3.
        let c = check(&cluster(), "n2", DrainPolicy::BlockIfContainsLastReplica);
        assert!(c.can_drain, "{c:?}");
        assert_eq!(c.notes.len(), 1, "{c:?}");
        assert!(
            c.notes[0]
                .reason
                .starts_with("volume v-att: attached on n2"),
            "{c:?}"
        );
        let c = check(&cluster(), "n1", DrainPolicy::BlockIfContainsLastReplica);
        assert!(c.notes.iter().any(|n| n.volume == "v-eng"), "{c:?}");
        assert!(!c.blockers.iter().any(|b| b.volume == "v-eng"), "{c:?}");
    }

    #[test]
    fn a_replica_on_a_down_node_is_not_healthy() {
        let mut s = cluster();
        s.ready.remove("n2");
        // v-ok's n2 replica no longer counts: n1 holds its last one
        let c = check(&s, "n1", DrainPolicy::BlockIfContainsLastReplica);
        assert!(reasons(&c).contains(&"volume v-ok: only healthy replica is on n1".to_string()));
    }
}
