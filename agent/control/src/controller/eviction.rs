//! Node eviction: `vigil node evict N` moves every replica off N.
//!
//! Who does what:
//! * the move itself is replica replacement ([`super::replace`]): a
//!   replica on an evicted node is *moving* — a replacement is placed
//!   elsewhere at once (the volume has desired + 1 replicas meanwhile),
//!   rebuilt by the volume's engine (a maintenance engine for a detached
//!   volume, [`super::maintenance`]), and the evicted replica is retired
//!   once the engine has the desired count RW without it. The scheduler
//!   refuses N meanwhile, and rebuilds respect
//!   `concurrent-replica-rebuild-per-node-limit` ([`super::replenish`]).
//! * this controller only watches: one ready agent per evicted node (by
//!   rendezvous hashing of `eviction/<node>`) computes the progress from
//!   the round's snapshot ([`progress`], a pure function), writes it into
//!   `node.status.eviction` by compare-and-swap when it changed, and
//!   records the events (EvictionStarted, EvictionBlocked,
//!   EvictionCompleted, EvictionCancelled; ReplicaEvicted comes from the
//!   retire itself). The health check EVICTION_BLOCKED reads the status.
//!
//! Cancel (`vigil node evict N --cancel`): nothing new is placed and the
//! status is cleared. A replacement already placed is kept: it finishes
//! its rebuild and the volume then drops back to its desired count by the
//! usual excess rule (which may retire the replacement or the replica on
//! N) — never below the desired count, and no rebuild is cut short.

use std::sync::Arc;

use super::replace::{Standing, schedule, standing};
use super::{Snapshot, rendezvous};
use crate::cluster::events::Severity;
use crate::local::Local;
use vigil_model::EventReason;
use vigil_model::eviction::{Eviction, EvictionPhase, VolumeEviction, VolumeEvictionState};
use vigil_model::replica::ReplicaMode;
use vigil_model::{InstanceState, Node, Replica, Versioned, Volume, VolumeState};

/// The progress of evicting `node` as `snap` shows it; `prev` carries the
/// start time and the count of replicas moved so far.
pub fn progress(snap: &Snapshot, node: &str, prev: Option<&Eviction>) -> Eviction {
    let mut volumes = Vec::new();
    let mut left = 0;
    for v in &snap.volumes {
        let vol = &v.object;
        let on_node: Vec<String> = snap
            .replicas_of(&vol.name)
            .filter(|r| r.object.spec.node == node)
            .map(|r| r.object.name.clone())
            .collect();
        if on_node.is_empty() {
            continue;
        }
        left += on_node.len();
        volumes.push(volume_progress(snap, vol, on_node));
    }
    let phase = if left == 0 {
        EvictionPhase::Completed
    } else if volumes
        .iter()
        .any(|v| v.state == VolumeEvictionState::Blocked)
    {
        EvictionPhase::Blocked
    } else {
        EvictionPhase::Moving
    };
    let started_at = prev.map_or(snap.now, |p| p.started_at);
    let phase_since = match prev {
        Some(p) if p.phase == phase => p.phase_since,
        _ => snap.now,
    };
    let replicas_moved = prev.map_or(0, |p| {
        p.replicas_moved + p.replicas_left.saturating_sub(left)
    });
    Eviction {
        phase,
        started_at,
        phase_since,
        replicas_left: left,
        replicas_moved,
        volumes,
    }
}

/// Where one volume with replicas `on_node` stands.
fn volume_progress(snap: &Snapshot, vol: &Volume, on_node: Vec<String>) -> VolumeEviction {
    let standings: Vec<(&Versioned<Replica>, Standing)> = snap
        .replicas_of(&vol.name)
        .map(|r| (r, standing(snap, &r.object, None)))
        .collect();
    let healthy: Vec<&Versioned<Replica>> = standings
        .iter()
        .filter(|(_, s)| *s == Standing::Healthy)
        .map(|(r, _)| *r)
        .collect();
    let waiting = standings
        .iter()
        .filter(|(_, s)| *s == Standing::Waiting)
        .count();
    let replacements: Vec<String> = healthy
        .iter()
        .filter(|r| r.object.status.mode != ReplicaMode::ReadWrite)
        .map(|r| r.object.name.clone())
        .collect();
    let desired = vol.spec.replicas as usize;
    let entry = |state, reason: String| VolumeEviction {
        volume: vol.name.clone(),
        replicas: on_node.clone(),
        state,
        replacements: replacements.clone(),
        reason,
    };
    if !matches!(
        vol.status.state,
        VolumeState::Attached | VolumeState::Detached
    ) {
        return entry(
            VolumeEvictionState::Waiting,
            format!("volume is {}", vol.status.state.as_str()),
        );
    }
    if healthy.len() >= desired {
        let reason = if replacements.is_empty() {
            "replacement in sync; the evicted replica is retired next".to_string()
        } else {
            format!("rebuilding {}", replacements.join(", "))
        };
        return entry(VolumeEvictionState::Moving, reason);
    }
    let source = standings.iter().any(|(r, s)| {
        matches!(s, Standing::Healthy | Standing::Moving(_))
            && r.object.status.state == InstanceState::Running
            && snap.ready.contains(&r.object.spec.node)
            && r.object.status.mode != ReplicaMode::Error
    });
    if !source {
        return entry(
            VolumeEvictionState::Blocked,
            format!(
                "no healthy replica to copy from (replicas on {}: none running on a ready node)",
                standings
                    .iter()
                    .map(|(r, _)| r.object.spec.node.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    let count = desired.saturating_sub(healthy.len() + waiting).max(1);
    let out = schedule(snap, vol, count, None, None);
    if out.placed.is_empty() {
        return entry(
            VolumeEvictionState::Blocked,
            format!("no node can take a replacement: {}", out.reasons.join("; ")),
        );
    }
    entry(
        VolumeEvictionState::Waiting,
        format!(
            "a replacement fits on {}; waiting for the volume's owner to place it",
            out.placed
                .iter()
                .map(|p| p.node.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

pub async fn reconcile(local: &Arc<Local>, snap: &Snapshot) {
    let me = local.me.name.as_str();
    for n in snap.nodes.values() {
        let name = &n.object.name;
        if n.object.status.eviction.is_none() && !n.object.spec.eviction_requested {
            continue;
        }
        if rendezvous(&format!("eviction/{name}"), &snap.ready).as_deref() != Some(me) {
            continue;
        }
        if let Err(e) = node(local, snap, n).await
            && !e.is_conflict()
        {
            tracing::warn!(node = %name, error = %e, "eviction status update failed");
        }
    }
}

async fn node(local: &Local, snap: &Snapshot, n: &Versioned<Node>) -> crate::cluster::Result<()> {
    let name = &n.object.name;
    let prev = n.object.status.eviction.as_ref();
    let mut next = n.clone();
    if !n.object.spec.eviction_requested {
        // cancelled
        next.object.status.eviction = None;
        local.cluster.update(&next).await?;
        let left = prev.map_or(0, |p| p.replicas_left);
        let msg = if prev.is_some_and(|p| p.phase == EvictionPhase::Completed) {
            format!("eviction of node {name} cancelled after it completed")
        } else {
            format!(
                "eviction of node {name} cancelled: {left} replica(s) stay on it; replacements already placed finish their rebuild and the extra replica is then dropped"
            )
        };
        local
            .cluster
            .event(
                Severity::Normal,
                "node",
                name,
                EventReason::EvictionCancelled,
                msg,
            )
            .await;
        return Ok(());
    }
    let now = progress(snap, name, prev);
    if prev == Some(&now) {
        return Ok(());
    }
    next.object.status.eviction = Some(now.clone());
    local.cluster.update(&next).await?;
    if prev.is_none() {
        local
            .cluster
            .event(
                Severity::Normal,
                "node",
                name,
                EventReason::EvictionStarted,
                format!(
                    "eviction of node {name} started: {} replica(s) of {} volume(s) to move; each is rebuilt elsewhere before it is retired",
                    now.replicas_left,
                    now.volumes.len()
                ),
            )
            .await;
    }
    for b in now.blocked() {
        let was = prev.and_then(|p| p.volumes.iter().find(|v| v.volume == b.volume));
        if was.is_some_and(|w| w.state == VolumeEvictionState::Blocked && w.reason == b.reason) {
            continue;
        }
        local
            .cluster
            .event(
                Severity::Warning,
                "node",
                name,
                EventReason::EvictionBlocked,
                format!(
                    "eviction of node {name} is blocked for volume {}: {}",
                    b.volume, b.reason
                ),
            )
            .await;
    }
    if now.phase == EvictionPhase::Completed
        && prev.is_none_or(|p| p.phase != EvictionPhase::Completed)
    {
        local
            .cluster
            .event(
                Severity::Normal,
                "node",
                name,
                EventReason::EvictionCompleted,
                format!(
                    "eviction of node {name} completed: {} replica(s) moved; no replica is left on it",
                    now.replicas_moved
                ),
            )
            .await;
    }
    Ok(())
}

/// Records that the moving replica `r` of `vol` was retired: the event
/// names what replaced it (the volume's other in-sync replicas that were
/// rebuilt, or all of them when none records a rebuild).
pub async fn replica_moved(
    local: &Local,
    vol: &Volume,
    r: &Versioned<Replica>,
    replicas: &[(&Versioned<Replica>, Standing)],
) {
    let others: Vec<&Versioned<Replica>> = replicas
        .iter()
        .filter(|(o, s)| *s == Standing::Healthy && o.object.name != r.object.name)
        .map(|(o, _)| *o)
        .collect();
    let rebuilt: Vec<_> = others
        .iter()
        .filter(|o| o.object.status.rebuild.is_some())
        .collect();
    let named: Vec<String> = if rebuilt.is_empty() {
        others
            .iter()
            .map(|o| format!("{} on {}", o.object.name, o.object.spec.node))
            .collect()
    } else {
        rebuilt
            .iter()
            .map(|o| format!("{} on {}", o.object.name, o.object.spec.node))
            .collect()
    };
    local
        .cluster
        .event(
            Severity::Normal,
            "node",
            &r.object.spec.node,
            EventReason::ReplicaEvicted,
            format!(
                "replica {} of {} moved off node {}: replaced by {}",
                r.object.name,
                vol.name,
                r.object.spec.node,
                named.join(", ")
            ),
        )
        .await;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::scheduler::testkit;

    fn v<T>(object: T) -> Versioned<T> {
        Versioned {
            object,
            revision: 1,
        }
    }

    /// Nodes `names` (all ready, one 10 GiB disk each, `d-<node>`), n1
    /// evicted; a detached volume `vol` wanting `want` replicas with one
    /// running RW replica on each node of `on`.
    fn cluster(names: &[&str], want: u32, on: &[&str]) -> Snapshot {
        let mut nodes = BTreeMap::new();
        let mut disks = BTreeMap::new();
        for n in names {
            let mut c = testkit::node(n, None);
            c.node.spec.eviction_requested = *n == "n1";
            nodes.insert(n.to_string(), v(c.node));
            let d = testkit::disk(&format!("d-{n}"), n, 10);
            disks.insert(d.uuid.clone(), v(d));
        }
        let mut vol = testkit::volume("vol", 1 << 30, want);
        vol.status.state = VolumeState::Detached;
        let replicas = on
            .iter()
            .map(|n| {
                let mut r = testkit::replica("vol", n, &format!("d-{n}"), 1 << 30);
                r.status.state = InstanceState::Running;
                r.status.address = format!("tcp://127.0.0.1:1/{}", r.name);
                r.status.mode = ReplicaMode::ReadWrite;
                v(r)
            })
            .collect();
        Snapshot {
            volumes: vec![v(vol)],
            replicas,
            engines: BTreeMap::new(),
            ready: names.iter().map(|s| s.to_string()).collect(),
            nodes,
            disks,
            settings: testkit::settings(&[]),
            now: 1_000,
        }
    }

    #[test]
    fn a_volume_with_room_elsewhere_waits_for_its_replacement_then_moves() {
        let mut snap = cluster(&["n1", "n2", "n3"], 2, &["n1", "n2"]);
        let e = progress(&snap, "n1", None);
        assert_eq!(e.phase, EvictionPhase::Moving);
        assert_eq!(e.replicas_left, 1);
        assert_eq!(e.volumes[0].state, VolumeEvictionState::Waiting);
        assert!(e.volumes[0].reason.contains("fits on n3"), "{e:?}");
        // the owner placed it on n3; not in sync yet
        let mut r = testkit::replica("vol", "n3", "d-n3", 1 << 30);
        r.status.state = InstanceState::Running;
        snap.replicas.push(v(r.clone()));
        let e2 = progress(&snap, "n1", Some(&e));
        assert_eq!(e2.volumes[0].state, VolumeEvictionState::Moving);
        assert_eq!(e2.volumes[0].replacements, vec![r.name.clone()]);
        assert_eq!(e2.started_at, e.started_at);
        // retired from n1: completed, one moved
        snap.replicas.retain(|x| x.object.spec.node != "n1");
        snap.now += 5;
        let e3 = progress(&snap, "n1", Some(&e2));
        assert_eq!(e3.phase, EvictionPhase::Completed);
        assert_eq!((e3.replicas_left, e3.replicas_moved), (0, 1));
        assert!(e3.volumes.is_empty());
        assert_eq!(e3.phase_since, 1_005);
    }

    #[test]
    fn no_other_node_free_of_the_volume_blocks_with_the_schedulers_reasons() {
        let snap = cluster(&["n1", "n2", "n3"], 3, &["n1", "n2", "n3"]);
        let e = progress(&snap, "n1", None);
        assert_eq!(e.phase, EvictionPhase::Blocked);
        let b: Vec<_> = e.blocked().collect();
        assert_eq!(b.len(), 1);
        assert!(
            b[0].reason.starts_with("no node can take a replacement: ")
                && b[0].reason.contains("n1: eviction requested"),
            "{b:?}"
        );
    }

    #[test]
    fn the_only_copy_on_a_down_evicted_node_blocks_with_nothing_to_copy() {
        let mut snap = cluster(&["n1", "n2"], 1, &["n1"]);
        snap.ready.remove("n1");
        let e = progress(&snap, "n1", None);
        assert_eq!(e.phase, EvictionPhase::Blocked);
        assert!(
            e.volumes[0]
                .reason
                .starts_with("no healthy replica to copy from"),
            "{e:?}"
        );
    }
}
