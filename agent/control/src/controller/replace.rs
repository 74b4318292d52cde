//! Keeping a volume at its desired replica count: failed replicas are
//! replaced by new ones and retired once the new ones are in sync; data
//! locality adds a replica on the attached node and retires a remote one.
//! Run by the volume's owner ([`super::owner_of`]) for detached volumes and
//! for volumes attached here (an engine is what rebuilds a new replica).
//!
//! What each replica of a volume is, as seen by one round ([`Standing`]):
//!
//! * **lost** — its own agent found its data gone for good (disk replaced,
//!   directory wiped), or its disk is no longer registered: it will never
//!   come back, so it is replaced at once (no wait) and retired — at once
//!   for a detached volume, once the replacement is RW for an attached one.
//! * **failed** — its node has been down for `node-down-timeout`, or the
//!   engine has had it ERR (and rejoining it has not worked) for
//!   `replica-replenishment-wait-interval` plus the liveness TTL. A failed replica is replaced
//!   once it has been failed for the replenishment wait (the node or disk
//!   may come back meanwhile and its replica is rebuilt in place instead),
//!   and retired once the engine has the desired count RW without it.
//! * **waiting** — down or ERR for less than that: counted as a member, so
//!   a short outage (an agent restart) builds nothing new.
//! * **moving** — its node is being evicted (`vigil node evict`): it still
//!   counts as a member and serves, but a replacement is placed elsewhere
//!   at once and, once the engine has the desired count RW without it, it
//!   is retired — the volume has desired + 1 replicas meanwhile, never
//!   fewer than desired. A detached volume has no engine: its owner runs a
//!   maintenance engine for it ([`super::maintenance`]).
//! * **healthy** — everything else (running, being rebuilt, new).
//!
//! Ownership exception: a replica object is normally written only by its
//! node's agent; a replica on a node that has been down for
//! `node-down-timeout` is marked failed (and later deleted) by the volume's
//! owner, since its own agent cannot. When that node returns, its agent
//! finds directories without objects and discards them ([`super::orphans`]).
//!
//! Never: a new replica for a volume with no healthy replica left (there is
//! nothing to rebuild it from, and an empty replica must not pass for the
//! data); retiring the last RW replica; retiring anything that is not lost
//! while the volume is detached (whether a replica is in sync is known
//! only to an engine).

use std::sync::Arc;

use vigil_engine::address::ReplicaAddress;
use vigil_engine::engine::{Engine, EngineStatus, Mode};

use super::{Snapshot, owner_of};
use crate::cluster::events::Severity;
use crate::cluster::{self, delete_op, placement, update_op};
use crate::local::Local;
use crate::scheduler::{self, Candidate};
use vigil_model::EventReason;
use vigil_model::volume::DataLocality;
use vigil_model::{InstanceState, Replica, Versioned, Volume, VolumeState};

/// What one replica is to its volume now (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Healthy,
    /// Down or ERR, not for long enough to act.
    Waiting,
    /// Failed since (Unix seconds), and why.
    Failed {
        since: u64,
        why: String,
    },
    /// Its data is gone for good, and why.
    Lost(String),
    /// Its node is being evicted: replaced elsewhere, then retired (why).
    Moving(String),
}

pub async fn reconcile(local: &Arc<Local>, snap: &Snapshot) {
    let me = local.me.name.as_str();
    for v in &snap.volumes {
        let vol = &v.object;
        // no replica comes or goes while a migration's target relies on them
        if acting_node(vol, snap).as_deref() != Some(me) || vol.status.migration.is_some() {
            continue;
        }
        let engine = match vol.status.state {
            // a detached volume's maintenance engine, if it runs here
            VolumeState::Detached => super::maintenance::engine(local, &vol.name),
            VolumeState::Attached => match local.engines.get(&vol.name) {
                Some(e) => Some(e),
                None => continue,
            },
            _ => continue,
        };
        if let Err(e) = volume(local, snap, v, engine.as_ref()).await
            && !e.is_conflict()
        {
            tracing::warn!(volume = %vol.name, error = %e, "replica replacement failed");
        }
    }
}

/// The node that keeps `vol` at its replica count: the holder of a
/// detached volume's maintenance engine while it is ready (its engine is
/// what rebuilds and retires), else the owner.
pub fn acting_node(vol: &Volume, snap: &Snapshot) -> Option<String> {
    if vol.status.state == VolumeState::Detached
        && let Some(m) = &vol.status.maintenance
        && snap.ready.contains(&m.node)
    {
        return Some(m.node.clone());
    }
    owner_of(vol, &snap.ready)
}

/// How `r` stands, given the engine's view (if attached here).
pub fn standing(snap: &Snapshot, r: &Replica, status: Option<&EngineStatus>) -> Standing {
    let st = &r.status;
    if st.lost {
        return Standing::Lost(st.message.clone());
    }
    if !snap.disks.contains_key(&r.spec.disk) {
        return Standing::Lost(format!("disk {} is no longer registered", r.spec.disk));
    }
    if snap
        .nodes
        .get(&r.spec.node)
        .is_some_and(|n| n.object.spec.eviction_requested)
    {
        return Standing::Moving(format!("node {} is being evicted", r.spec.node));
    }
    let wait = snap.settings.replenishment_wait().as_secs();
    if let Some(down) = snap.down_for(&r.spec.node) {
        let timeout = snap.settings.node_down_timeout();
        if down < timeout {
            return Standing::Waiting;
        }
        return Standing::Failed {
            since: snap.now.saturating_sub(down.as_secs()) + timeout.as_secs(),
            why: format!(
                "node {} down for {} s (node-down-timeout {} s)",
                r.spec.node,
                down.as_secs(),
                timeout.as_secs()
            ),
        };
    }
    if !snap.ready.contains(&r.spec.node) {
        // down, but no agent has recorded when yet
        return Standing::Waiting;
    }
    let slot = status.and_then(|s| slot_of(s, &r.name));
    if let Some(s) = slot
        && s.mode == Mode::Error
    {
        let Some(f) = &s.fault else {
            return Standing::Waiting;
        };
        // ERR for the replenishment wait: rejoining it has not worked
        // (retried every few seconds for network faults, every minute for
        // disk ones), so build a new one elsewhere. Plus the liveness TTL:
        // a node that died shows ready until its lease lapses, and then
        // the node-down rules above govern (and name the real cause).
        let grace = wait + super::registration::LEASE_TTL.as_secs();
        if snap.now.saturating_sub(f.at_unix) < grace {
            return Standing::Waiting;
        }
        return Standing::Failed {
            since: f.at_unix,
            why: format!("ERR since {} ({}: {})", f.at_unix, f.reason, f.last_error),
        };
    }
    if st.state == InstanceState::Error {
        return Standing::Waiting;
    }
    Standing::Healthy
}

async fn volume(
    local: &Local,
    snap: &Snapshot,
    v: &Versioned<Volume>,
    engine: Option<&Arc<Engine>>,
) -> cluster::Result<()> {
    let vol = &v.object;
    let status = engine.map(|e| e.status());
    let replicas: Vec<(&Versioned<Replica>, Standing)> = snap
        .replicas_of(&vol.name)
        .map(|r| (r, standing(snap, &r.object, status.as_ref())))
        .collect();
    mark_failed(local, snap, &replicas).await;
    let desired = vol.spec.replicas as usize;
    // A lost replica of a detached volume goes at once; while attached it
    // stays listed (failed, with why) until its replacement is RW, like a
    // failed one, so the volume shows what it is missing until repaired.
    let attached = vol.status.state == VolumeState::Attached;
    if !attached {
        for (r, s) in &replicas {
            if let Standing::Lost(why) = s {
                retire(local, vol, engine, r, why).await?;
            }
        }
    }
    let healthy = replicas
        .iter()
        .filter(|(_, s)| *s == Standing::Healthy)
        .count();
    let waiting = replicas
        .iter()
        .filter(|(_, s)| match s {
            Standing::Waiting => true,
            Standing::Failed { since, .. } => {
                snap.now < since + snap.settings.replenishment_wait().as_secs()
            }
            _ => false,
        })
        .count();
    let has_source = match &status {
        Some(s) => s.replicas.iter().any(|r| r.mode == Mode::ReadWrite),
        None => replicas.iter().any(|(r, s)| {
            matches!(s, Standing::Healthy | Standing::Moving(_))
                && r.object.status.state == InstanceState::Running
                && snap.ready.contains(&r.object.spec.node)
        }),
    };
    if healthy + waiting < desired && has_source {
        let why = replicas
            .iter()
            .find_map(|(_, s)| match s {
                Standing::Failed { why, .. } | Standing::Lost(why) => Some(why.clone()),
                _ => None,
            })
            .or_else(|| {
                replicas.iter().find_map(|(r, s)| match s {
                    Standing::Moving(why) => Some(format!("replica {}: {why}", r.object.name)),
                    _ => None,
                })
            })
            .unwrap_or_else(|| format!("{healthy} of {desired} replicas placed"));
        return add(local, snap, v, desired - healthy - waiting, None, &why).await;
    }
    let (Some(engine), Some(status)) = (engine, status.as_ref()) else {
        return Ok(());
    };
    let rw = |except: &str| {
        status
            .replicas
            .iter()
            .filter(|s| s.mode == Mode::ReadWrite && ReplicaAddress::name_of(&s.address) != except)
            .count()
    };
    // Failed, lost and moving replicas go once the engine has the desired
    // count RW without them.
    for (r, s) in &replicas {
        if let Standing::Failed { why, .. } | Standing::Lost(why) | Standing::Moving(why) = s
            && rw(&r.object.name) >= desired
        {
            let retired = retire(local, vol, Some(engine), r, why).await?;
            if retired && let Standing::Moving(_) = s {
                super::eviction::replica_moved(local, vol, r, &replicas).await;
            }
            return Ok(());
        }
    }
    locality(local, snap, v, engine, status, &replicas, attached).await
}

/// While attached here with every replica RW: under best-effort data
/// locality with none on this node, build one here; with more replicas RW
/// than desired (a locality replica finished, or a replica that was being
/// replaced came back), retire one — never the one on this node; a remote
/// one on the node holding the most replicas of the volume, then by name,
/// so every round picks the same.
async fn locality(
    local: &Local,
    snap: &Snapshot,
    v: &Versioned<Volume>,
    engine: &Arc<Engine>,
    status: &EngineStatus,
    replicas: &[(&Versioned<Replica>, Standing)],
    attached: bool,
) -> cluster::Result<()> {
    let vol = &v.object;
    if status.replicas.iter().any(|s| s.mode != Mode::ReadWrite)
        || replicas.iter().any(|(_, s)| *s != Standing::Healthy)
        || replicas.len() != status.replicas.len()
    {
        return Ok(());
    }
    let me = local.me.name.as_str();
    let desired = vol.spec.replicas as usize;
    // a maintenance engine (detached volume) only drops an extra replica
    let best_effort = attached && vol.spec.data_locality == DataLocality::BestEffort;
    if best_effort && replicas.iter().all(|(r, _)| r.object.spec.node != me) {
        return add(
            local,
            snap,
            v,
            1,
            Some(me),
            &format!("data locality best-effort: volume attached on {me} has no replica there"),
        )
        .await;
    }
    if status.replicas.len() <= desired {
        return Ok(());
    }
    let victim = replicas
        .iter()
        .filter(|(r, _)| in_engine(status, r, Mode::ReadWrite))
        .filter(|(r, _)| !best_effort || r.object.spec.node != me)
        .max_by_key(|(r, _)| {
            let on_node = replicas
                .iter()
                .filter(|(o, _)| o.object.spec.node == r.object.spec.node)
                .count();
            (r.object.spec.node != me, on_node, r.object.name.clone())
        });
    let Some((r, _)) = victim else {
        return Ok(());
    };
    let why = if best_effort {
        format!("data locality best-effort: the replica on {me} is RW; {desired} replica(s) wanted")
    } else {
        format!("{} replicas RW, {desired} wanted", status.replicas.len())
    };
    retire(local, vol, Some(engine), r, &why).await.map(|_| ())
}

fn in_engine(status: &EngineStatus, r: &Versioned<Replica>, mode: Mode) -> bool {
    slot_of(status, &r.object.name).is_some_and(|s| s.mode == mode)
}

/// The engine's slot for replica `name`, found by name rather than by the
/// object's current address: a replica that failed has its address cleared
/// in its object while the engine still holds the old one.
fn slot_of<'a>(
    status: &'a EngineStatus,
    name: &str,
) -> Option<&'a vigil_engine::engine::ReplicaStatus> {
    status
        .replicas
        .iter()
        .find(|s| ReplicaAddress::name_of(&s.address) == name)
}

/// Marks replicas on nodes down past `node-down-timeout` failed in their
/// objects (their own agent cannot): never left "running" or "stopped".
async fn mark_failed(local: &Local, snap: &Snapshot, replicas: &[(&Versioned<Replica>, Standing)]) {
    for (r, s) in replicas {
        let Standing::Failed { why, .. } = s else {
            continue;
        };
        if snap.ready.contains(&r.object.spec.node) || r.object.status.state == InstanceState::Error
        {
            continue;
        }
        let mut next = (*r).clone();
        next.object.status.state = InstanceState::Error;
        next.object.status.address.clear();
        next.object.status.message = why.clone();
        match local.cluster.update(&next).await {
            Ok(_) => {
                local
                    .cluster
                    .event(
                        Severity::Warning,
                        "replica",
                        &r.object.name,
                        EventReason::ReplicaFailed,
                        format!(
                            "replica {} of {} failed: {why}; it is replaced after replica-replenishment-wait-interval ({} s)",
                            r.object.name,
                            r.object.spec.volume,
                            snap.settings.replenishment_wait().as_secs()
                        ),
                    )
                    .await;
            }
            Err(e) if e.is_conflict() => {}
            Err(e) => {
                tracing::warn!(replica = %r.object.name, error = %e, "cannot mark replica failed")
            }
        }
    }
}

/// Where `count` new replicas of `vol` would go now (on `local` first,
/// when given): the scheduler over the snapshot. Also the eviction
/// controller's dry run, to say why a volume cannot move.
pub fn schedule(
    snap: &Snapshot,
    vol: &Volume,
    count: usize,
    local: Option<&str>,
    status: Option<&EngineStatus>,
) -> scheduler::Outcome {
    let nodes: Vec<Candidate> = snap
        .nodes
        .values()
        .map(|n| Candidate {
            ready: snap.ready.contains(&n.object.name),
            node: n.object.clone(),
        })
        .collect();
    let disk_objects: Vec<_> = snap.disks.values().map(|d| d.object.clone()).collect();
    // This volume's lost replicas, and its failed ones on down nodes, do
    // not hold their node or disk for anti-affinity: the replacement may go
    // where they were (a reformatted disk, a node back later). A replica
    // failing on a live node still does: that node is suspect.
    let placed_view: Vec<Replica> = snap
        .replicas
        .iter()
        .map(|r| &r.object)
        .filter(|r| {
            r.spec.volume != vol.name
                || match standing(snap, r, status) {
                    Standing::Lost(_) => false,
                    Standing::Failed { .. } => snap.ready.contains(&r.spec.node),
                    _ => true,
                }
        })
        .cloned()
        .collect();
    let view = scheduler::View {
        nodes: &nodes,
        disks: &disk_objects,
        replicas: &placed_view,
        settings: &snap.settings,
    };
    scheduler::place(
        &scheduler::Request {
            volume: vol,
            count,
            local_node: local.or(vol.status.attached_node.as_deref()),
        },
        &view,
    )
}

/// Places `count` new replicas of `v` (on `only_on` only, when given) in one
/// transaction with the disks they use.
async fn add(
    local: &Local,
    snap: &Snapshot,
    v: &Versioned<Volume>,
    count: usize,
    only_on: Option<&str>,
    why: &str,
) -> cluster::Result<()> {
    let vol = &v.object;
    let status = local.engines.get(&vol.name).map(|e| e.status());
    let out = schedule(snap, vol, count, only_on, status.as_ref());
    let disks: Vec<_> = snap.disks.values().cloned().collect();
    let all: Vec<Replica> = snap.replicas.iter().map(|r| r.object.clone()).collect();
    let placed: Vec<_> = match only_on {
        Some(node) => out
            .placed
            .into_iter()
            .filter(|p| p.node == node)
            .take(1)
            .collect(),
        None => out.placed,
    };
    if placed.is_empty() {
        let message = format!(
            "cannot place a replacement replica ({why}): {}",
            out.reasons.join("; ")
        );
        // A create that placed fewer than asked already said so (and why,
        // per node); repeating it every round would add nothing.
        let said = vol.status.message.starts_with("created degraded");
        if only_on.is_none() && !said && vol.status.message != message {
            let mut next = v.clone();
            next.object.status.message = message.clone();
            next.object.status.scheduling = out.reasons.clone();
            local.cluster.update(&next).await?;
            local
                .cluster
                .event(
                    Severity::Warning,
                    "volume",
                    &vol.name,
                    EventReason::ReplenishFailed,
                    message,
                )
                .await;
        }
        return Ok(());
    }
    let (mut ops, new) = placement::ops(vol, &placed, &disks, &all);
    if vol.status.message.starts_with("cannot place")
        || vol.status.message.starts_with("created degraded")
    {
        let mut next = v.clone();
        next.object.status.message.clear();
        next.object.status.scheduling = out.notes.clone();
        ops.push(update_op(&next));
    } else {
        // the volume must not have changed since the round's read
        ops.push(update_op(v));
    }
    local.cluster.txn(ops).await?;
    crate::controller::remediation("replace_replica");
    for r in new {
        tracing::info!(volume = %vol.name, replica = %r.name, node = %r.spec.node, %why, "new replica scheduled");
        local
            .cluster
            .event(
                Severity::Normal,
                "replica",
                &r.name,
                EventReason::ReplicaScheduled,
                format!(
                    "new replica {} of {} on {} (disk {}): {why}",
                    r.name, vol.name, r.spec.node, r.spec.disk
                ),
            )
            .await;
    }
    Ok(())
}

/// Removes `r` from the engine (if there) and deletes its object; false
/// when the engine refused (not retired yet). Its
/// directory goes with it on its node: now if the node is up (the replica
/// reconcile deletes what has no object — see [`super::orphans`]), or when
/// the node returns.
async fn retire(
    local: &Local,
    vol: &Volume,
    engine: Option<&Arc<Engine>>,
    r: &Versioned<Replica>,
    why: &str,
) -> cluster::Result<bool> {
    let address =
        engine.and_then(|e| slot_of(&e.status(), &r.object.name).map(|s| s.address.clone()));
    let removed = match (engine, address) {
        (Some(e), Some(address)) => match e.remove_replica(&address) {
            Ok(removed) => removed,
            Err(err) => {
                tracing::debug!(replica = %r.object.name, error = %err, "not retired yet");
                return Ok(false);
            }
        },
        _ => false,
    };
    if removed {
        // The engine has let go of it: the delete must follow even if the
        // object changed since this round's read (the engine's own report
        // of its mode often has). A compare-and-swap on the stale version
        // would fail, and the next round would add the replica back and
        // rebuild it, only to retire it again, forever.
        delete_current(local, r).await?;
    } else {
        local.cluster.txn(vec![delete_op(r)]).await?;
    }
    crate::controller::remediation("retire_replica");
    tracing::info!(volume = %vol.name, replica = %r.object.name, %why, "replica retired");
    local
        .cluster
        .event(
            Severity::Normal,
            "replica",
            &r.object.name,
            EventReason::ReplicaRetired,
            format!(
                "replica {} of {} on {} removed from the volume: {why}",
                r.object.name, vol.name, r.object.spec.node
            ),
        )
        .await;
    Ok(true)
}

/// Deletes the replica object as it is stored now (not as this round read
/// it), retrying when another writer got there in between.
async fn delete_current(local: &Local, r: &Versioned<Replica>) -> cluster::Result<()> {
    let mut attempt = 0;
    loop {
        let Some(current) = local.cluster.get::<Replica>(&r.object.name).await? else {
            return Ok(());
        };
        match local.cluster.txn(vec![delete_op(&current)]).await {
            Err(e) if e.is_conflict() && attempt < 5 => attempt += 1,
            other => return other.map(|_| ()),
        }
    }
}
