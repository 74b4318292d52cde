//! Maintenance engines: rebuilding a detached volume's replicas without
//! attaching it. A detached volume has no engine, and only an engine can
//! rebuild a replica and say when it is in sync; attaching the volume for
//! that (as other systems do for eviction) leaves it looking attached to
//! whoever asked nothing. Instead the volume's owner runs an engine on its
//! own node that is *not* in the NBD catalog (no client can reach it), for
//! as long as the work lasts.
//!
//! The sequence, each step by one agent, each record a compare-and-swap on
//! the volume object:
//!
//! 1. The owner of a detached volume that needs one ([`needed`]: a replica
//!    on an evicted node with a replacement to rebuild or to retire for,
//!    or more replicas than desired)
//!    writes `status.maintenance = {node: me, reason, since}` — only while
//!    the volume is still `detached` at the version it read.
//! 2. Then it starts the engine (`volumes::open_engine`, the same start
//!    rules as an attach) and keeps it here; `replace.rs` treats it as the
//!    volume's engine (placement, rebuild via `replenish`, retiring the
//!    evicted replica once the new one is RW), and the holder reports the
//!    replica modes like an attached engine's agent does.
//! 3. When nothing is left to do, or the volume is no longer detached (an
//!    attach was asked: it wins), the holder fails any rebuild in flight,
//!    flushes and stops the engine, and only then clears the field.
//! 4. An attaching node starts its engine only once the field is clear, or
//!    held by itself (it stops its own maintenance engine first), or held
//!    by a node whose lease is gone (a dead agent runs no engine; its
//!    field is cleared by the volume's owner).
//!
//! So the volume's state stays `detached` and `spec.node` stays `None`
//! throughout, and at most one engine — maintenance or not — writes the
//! replicas at any time (the same partition risk as attachment recovery
//! applies to a holder cut off from the store; see ARCHITECTURE.md).

use std::sync::Arc;
use std::time::Duration;

use vigil_engine::engine::{Engine, FaultReason, Mode};

use super::replace::{Standing, standing};
use super::{Snapshot, engine_report, owner_of, replenish};
use crate::cluster::events::Severity;
use crate::cluster::{self, update_op};
use crate::local::Local;
use vigil_model::EventReason;
use vigil_model::maintenance::Maintenance;
use vigil_model::replica::ReplicaMode;
use vigil_model::{Versioned, Volume, VolumeState};

/// This agent's maintenance engine for `volume`, if one runs.
pub fn engine(local: &Local, volume: &str) -> Option<Arc<Engine>> {
    local.maintenance.get(volume)
}

/// Why a detached volume needs a maintenance engine now, if it does: a
/// replica on an evicted node while another replica, not on such a node,
/// is a replacement not yet in sync (`mode` not RW) or the in-sync ones
/// reach the desired count (the evicted one can be retired); or more
/// replicas than desired, all on ready nodes (an eviction cancelled after
/// its replacement was placed: the engine finishes the rebuild, then the
/// excess rule drops one).
pub fn needed(snap: &Snapshot, vol: &Volume) -> Option<String> {
    if vol.status.state != VolumeState::Detached {
        return None;
    }
    let standings: Vec<_> = snap
        .replicas_of(&vol.name)
        .map(|r| (r, standing(snap, &r.object, None)))
        .collect();
    let moving = standings
        .iter()
        .find(|(_, s)| matches!(s, Standing::Moving(_)));
    let others: Vec<_> = standings
        .iter()
        .filter(|(_, s)| matches!(s, Standing::Healthy))
        .collect();
    let in_sync = others
        .iter()
        .filter(|(r, _)| r.object.status.mode == ReplicaMode::ReadWrite)
        .count();
    if let Some((r, _)) = moving
        && (others
            .iter()
            .any(|(r, _)| r.object.status.mode != ReplicaMode::ReadWrite)
            || in_sync >= vol.spec.replicas as usize)
    {
        return Some(format!(
            "moving replica {} off node {} (eviction)",
            r.object.name, r.object.spec.node
        ));
    }
    let live = standings
        .iter()
        .filter(|(_, s)| !matches!(s, Standing::Lost(_)))
        .count();
    let reachable = standings
        .iter()
        .all(|(r, _)| snap.ready.contains(&r.object.spec.node));
    (reachable && live > vol.spec.replicas as usize).then(|| {
        format!(
            "{live} replicas, {} wanted: one goes once all are in sync",
            vol.spec.replicas
        )
    })
}

/// Called by the attaching node before it starts the volume's engine:
/// stops this node's maintenance engine, and refuses (with the message the
/// volume shows) while another ready node holds one.
pub async fn before_attach(local: &Local, snap: &Snapshot, vol: &Volume) -> Result<(), String> {
    let me = local.me.name.as_str();
    stop(local, &vol.name, "the volume is being attached").await;
    match &vol.status.maintenance {
        Some(m) if m.node != me && snap.ready.contains(&m.node) => Err(format!(
            "waiting for the maintenance engine on {} ({}) to stop before attaching",
            m.node, m.reason
        )),
        _ => Ok(()),
    }
}

pub async fn reconcile(local: &Arc<Local>, snap: &Snapshot) {
    let me = local.me.name.as_str();
    for v in &snap.volumes {
        let vol = &v.object;
        let result = match &vol.status.maintenance {
            Some(m) if m.node == me => hold(local, snap, v).await,
            held => {
                // an engine here without the record (cleared, or another
                // node claimed it): stop it at once
                stop(local, &vol.name, "this node does not hold the record").await;
                if owner_of(vol, &snap.ready).as_deref() != Some(me) {
                    Ok(())
                } else if let Some(m) = held {
                    clear_dead(local, snap, v, m).await
                } else {
                    claim(local, snap, v).await
                }
            }
        };
        match result {
            Ok(()) => {}
            Err(e) if e.is_conflict() => {}
            Err(e) => {
                tracing::warn!(volume = %vol.name, error = %e, "maintenance engine step failed")
            }
        }
    }
    for name in local.maintenance.names() {
        if !snap.volumes.iter().any(|v| v.object.name == name) {
            stop(local, &name, "the volume is gone").await;
        }
    }
}

/// Step 1 (owner): claim the record for a detached volume that needs an
/// engine, then start it (step 2).
async fn claim(local: &Local, snap: &Snapshot, v: &Versioned<Volume>) -> cluster::Result<()> {
    let Some(reason) = needed(snap, &v.object) else {
        return Ok(());
    };
    let mut next = v.clone();
    next.object.status.maintenance = Some(Maintenance {
        node: local.me.name.clone(),
        reason: reason.clone(),
        since: snap.now,
    });
    // CAS on the volume as read: an attach since then makes this fail
    local.cluster.txn(vec![update_op(&next)]).await?;
    local
        .cluster
        .event(
            Severity::Normal,
            "volume",
            &v.object.name,
            EventReason::MaintenanceStarted,
            format!(
                "maintenance engine for detached volume {} on {}: {reason}; the volume stays detached",
                v.object.name, local.me.name
            ),
        )
        .await;
    Ok(())
}

/// Steps 2 and 3 (holder): run the engine while needed, else stop it and
/// clear the record.
async fn hold(local: &Local, snap: &Snapshot, v: &Versioned<Volume>) -> cluster::Result<()> {
    let vol = &v.object;
    let why_stop = if vol.status.state != VolumeState::Detached {
        Some(format!(
            "volume is {} (an attach wins)",
            vol.status.state.as_str()
        ))
    } else if needed(snap, vol).is_none() {
        Some("nothing left to rebuild or retire".to_string())
    } else {
        None
    };
    if let Some(why) = why_stop {
        // the modes this engine ends with are what the next engine's start
        // goes by (which replicas were RW), so they are written first
        if let Some(e) = engine(local, &vol.name) {
            report(local, snap, vol, &e).await?;
        }
        stop(local, &vol.name, &why).await;
        let mut next = v.clone();
        next.object.status.maintenance = None;
        local.cluster.txn(vec![update_op(&next)]).await?;
        local
            .cluster
            .event(
                Severity::Normal,
                "volume",
                &vol.name,
                EventReason::MaintenanceStopped,
                format!(
                    "maintenance engine for {} on {} stopped: {why}",
                    vol.name, local.me.name
                ),
            )
            .await;
        return Ok(());
    }
    let engine = match engine(local, &vol.name) {
        Some(e) => e,
        None => match super::volumes::open_engine(local, snap, vol).await {
            Ok(e) => {
                tracing::info!(volume = %vol.name, "maintenance engine started");
                local.maintenance.insert(Arc::clone(&e));
                e
            }
            Err(message) => {
                tracing::info!(volume = %vol.name, %message, "maintenance engine not started yet");
                return Ok(());
            }
        },
    };
    // what an attached engine's agent does every round: report the modes
    // and bring back replicas not in the engine (the replacement)
    let status = report(local, snap, vol, &engine).await?;
    let now = vigil_model::now_unix() as u64;
    replenish::rejoin(local, snap, vol, &engine, &status, now).await;
    Ok(())
}

/// Writes the replica modes, faults and rebuild progress as `engine` sees
/// them into the replica objects (one transaction); returns the status.
async fn report(
    local: &Local,
    snap: &Snapshot,
    vol: &Volume,
    engine: &Arc<Engine>,
) -> cluster::Result<vigil_engine::engine::EngineStatus> {
    let status = engine.status();
    let now = vigil_model::now_unix() as u64;
    let changes = engine_report::changes(snap.replicas_of(&vol.name), &status, now);
    if !changes.is_empty() {
        let ops = changes.iter().map(|c| update_op(&c.replica)).collect();
        local.cluster.txn(ops).await?;
    }
    Ok(status)
}

/// The owner clears a record whose holder's lease is gone.
async fn clear_dead(
    local: &Local,
    snap: &Snapshot,
    v: &Versioned<Volume>,
    m: &Maintenance,
) -> cluster::Result<()> {
    if snap.ready.contains(&m.node) {
        return Ok(());
    }
    let mut next = v.clone();
    next.object.status.maintenance = None;
    local.cluster.txn(vec![update_op(&next)]).await?;
    local
        .cluster
        .event(
            Severity::Warning,
            "volume",
            &v.object.name,
            EventReason::MaintenanceAbandoned,
            format!(
                "maintenance engine record of {} on {} cleared: node {} is down (a dead agent runs no engine)",
                v.object.name, m.node, m.node
            ),
        )
        .await;
    Ok(())
}

/// Stops this node's maintenance engine for `volume`, if any: a rebuild in
/// flight is failed first (its copy task stops at its next chunk and must
/// not write into a replica another engine may rebuild next), then the
/// engine is flushed and its tasks stopped.
pub async fn stop(local: &Local, volume: &str, why: &str) {
    let Some(e) = local.maintenance.remove(volume) else {
        return;
    };
    for s in e.status().replicas {
        if s.mode == Mode::WriteOnly {
            e.fail_replica(
                &s.address,
                FaultReason::RebuildFailed,
                format!("maintenance engine stopped: {why}"),
            );
        }
    }
    if let Err(err) = vigil_engine::device::ExportDevice::flush(e.as_ref()).await {
        tracing::warn!(volume = %volume, error = %err, "flush before stopping the maintenance engine failed");
    }
    e.shutdown();
    // the rebuild's copy task holds the engine until it has stopped
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&e) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(volume = %volume, %why, "maintenance engine stopped");
}
