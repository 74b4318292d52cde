//! Bringing a returning replica back: when a replica the engine had to drop
//! (ERR) runs again on a live node — its agent restarted, the network came
//! back — or runs at an address the engine does not know, the engine's
//! agent adds it again. It is rebuilt from a healthy replica (it missed
//! writes, so it is never trusted as it is) and becomes RW when done.
//!
//! One rebuild at a time per engine (the engine refuses a second). A
//! replica whose files its own agent found damaged is left alone here:
//! repairing a broken chain is the integrity controller's business.

use std::sync::Arc;

use tracing::Instrument;
use vigil_engine::address::ReplicaAddress;
use vigil_engine::engine::{Engine, EngineError, EngineStatus, FaultReason, Mode};

use super::Snapshot;
use crate::cluster::events::Severity;
use crate::local::Local;
use vigil_model::EventReason;
use vigil_model::replica::ReplicaMode;
use vigil_model::replica::ReplicaStatus;
use vigil_model::{InstanceState, Volume};

/// How long a replica stays ERR (since `at_unix`) before it is tried
/// again: short for faults that a restart or a reconnect fixes, long for
/// the rest (so a failing disk is not hammered with rebuilds every round)
/// — and not at all once its own agent reset it after the fault (emptied
/// to be rebuilt in full: waiting gains nothing).
fn retry_after(reason: FaultReason, at_unix: u64, st: &ReplicaStatus) -> u64 {
    if st.reset_unix >= at_unix {
        return 0;
    }
    match reason {
        FaultReason::ConnectionLost
        | FaultReason::Unreachable
        | FaultReason::Timeout
        | FaultReason::Refused
        | FaultReason::Stale => 3,
        _ => 60,
    }
}

/// Starts at most one rebuild for `vol` if a replica is due.
pub async fn rejoin(
    local: &Local,
    snap: &Snapshot,
    vol: &Volume,
    engine: &Arc<Engine>,
    status: &EngineStatus,
    now: u64,
) {
    if status.replicas.iter().any(|s| s.mode == Mode::WriteOnly) {
        return;
    }
    for r in snap.replicas_of(&vol.name) {
        let st = &r.object.status;
        if st.state != InstanceState::Running
            || st.address.is_empty()
            || st.integrity.is_some()
            || !snap.ready.contains(&r.object.spec.node)
        {
            continue;
        }
        let due = match status.replicas.iter().find(|s| s.address == st.address) {
            None => true,
            Some(s) if s.mode != Mode::Error => false,
            Some(s) => s.fault.as_ref().is_none_or(|f| {
                now.saturating_sub(f.at_unix) >= retry_after(f.reason, f.at_unix, st)
            }),
        };
        if !due {
            continue;
        }
        // A disk that fails writes or is full would fail the rebuild too:
        // wait until its agent finds it working again.
        if snap.disks.get(&r.object.spec.disk).is_some_and(|d| {
            d.object.status.failing.is_some() || d.object.status.no_space.is_some()
        }) {
            continue;
        }
        let limit = snap.settings.rebuild_limit_per_node() as usize;
        let running = rebuilds_into(local, snap, &r.object.spec.node);
        if running >= limit {
            tracing::debug!(replica = %r.object.name, node = %r.object.spec.node, running, limit, "rebuild deferred: per-node limit reached");
            continue;
        }
        let span = tracing::info_span!("rejoin_replica", volume = %vol.name, replica = %r.object.name, node = %r.object.spec.node);
        add(local, engine, &vol.name, &r.object.name, &st.address)
            .instrument(span)
            .await;
        return;
    }
}

/// Rebuilds running into replicas on `node`: those other agents' engines
/// reported (WO, rebuild not finished) and those this agent's engines run
/// now (reported or not yet), counted once each.
fn rebuilds_into(local: &Local, snap: &Snapshot, node: &str) -> usize {
    let mut names: std::collections::BTreeSet<&str> = snap
        .replicas
        .iter()
        .filter(|r| {
            r.object.spec.node == node
                && r.object.status.mode == ReplicaMode::WriteOnly
                && r.object
                    .status
                    .rebuild
                    .as_ref()
                    .is_some_and(|b| b.finished_unix.is_none())
        })
        .map(|r| r.object.name.as_str())
        .collect();
    for e in local.engines.all() {
        for s in e
            .status()
            .replicas
            .iter()
            .filter(|s| s.mode == Mode::WriteOnly)
        {
            if let Some(r) = snap
                .replicas
                .iter()
                .find(|r| r.object.status.address == s.address && r.object.spec.node == node)
            {
                names.insert(r.object.name.as_str());
            }
        }
    }
    names.len()
}

async fn add(local: &Local, engine: &Arc<Engine>, volume: &str, replica: &str, addr: &str) {
    let address: ReplicaAddress = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "bad replica address");
            return;
        }
    };
    let backend = match local.backends.open(&address, engine.epoch()).await {
        Ok(b) => b,
        Err(fault) => {
            tracing::debug!(reason = %fault.reason, error = %fault.last_error, "replica not reachable yet");
            return;
        }
    };
    match engine.add_replica(addr.to_string(), backend).await {
        Ok(()) => {
            crate::controller::remediation("rebuild_replica");
            tracing::info!("replica rejoined; rebuilding");
            local
                .cluster
                .event(
                    Severity::Normal,
                    "replica",
                    replica,
                    EventReason::RebuildStarted,
                    format!("replica {replica} of {volume} is back; rebuilding it from a healthy replica"),
                )
                .await;
        }
        Err(e @ EngineError::NewerGeneration { .. }) => {
            // The replica is left untouched; say so once per replica and
            // generation (this runs on every reconcile).
            tracing::warn!(error = %e, "not rebuilding over a replica of a newer in-sync generation");
            if first_refusal(replica, engine.generation()) {
                local
                    .cluster
                    .event(
                        Severity::Warning,
                        "replica",
                        replica,
                        EventReason::RebuildRefused,
                        e.to_string(),
                    )
                    .await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot add the replica back"),
    }
}

/// Whether a refused rebuild of `replica` under engine generation
/// `generation` is reported for the first time by this agent.
fn first_refusal(replica: &str, generation: u64) -> bool {
    static REPORTED: std::sync::Mutex<Vec<(String, u64)>> = std::sync::Mutex::new(Vec::new());
    let mut reported = REPORTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let key = (replica.to_string(), generation);
    if reported.contains(&key) {
        return false;
    }
    // bounded: a handful of refusals is the most a cluster ever has
    if reported.len() >= 256 {
        reported.clear();
    }
    reported.push(key);
    true
}
