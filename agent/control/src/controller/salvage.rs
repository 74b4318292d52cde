//! Salvage: bringing a volume back after every replica failed.
//!
//! An engine marks a replica ERR for good (it returns only through a
//! rebuild, which needs an RW source). When every replica failed while
//! the engine's node stayed up — their agents killed and restarted — the
//! engine is left with no RW or WO replica and nothing to rebuild from:
//! the volume would stay faulted forever. With `auto-salvage` true, once
//! every replica answers again, [`restart_if_all_failed`] stops the engine
//! (flush, stop) and the next round starts it again on the same node and
//! endpoint. An engine start reads every replica's persisted revision and
//! serves from the newest; the others are left out as ERR `stale` and
//! rebuilt from it by [`super::replenish`].
//!
//! Whenever an engine starts with replicas left out as stale, or starts
//! again after a salvage restart, [`report_start`] records which replica
//! was chosen as the source and why (event `Salvaged`).
//!
//! With `auto-salvage` false nothing is restarted: the volume stays
//! faulted and VOLUME_FAULTED says how to proceed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use vigil_engine::address::ReplicaAddress;
use vigil_engine::engine::{Engine, Mode};

use super::Snapshot;
use crate::cluster::events::Severity;
use crate::local::Local;
use vigil_model::EventReason;
use vigil_model::{InstanceState, Volume};

/// Volumes whose engine this agent stopped for salvage and has not started
/// again yet. In memory: the same agent stops and restarts the engine (it
/// owns the attached volume); after an agent restart the start is fresh
/// and reported by its stale replicas alone.
static RESTARTED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn restarted() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    RESTARTED.lock().unwrap_or_else(|e| e.into_inner())
}

/// When `engine` has no RW or WO replica left, auto-salvage is on and every
/// replica of the volume runs and answers again, stops the engine so that
/// the next round starts it over the replicas (choosing the newest).
/// Returns whether it stopped the engine.
pub async fn restart_if_all_failed(
    local: &Local,
    snap: &Snapshot,
    vol: &Volume,
    engine: &Arc<Engine>,
) -> bool {
    let status = engine.status();
    if status.replicas.is_empty() || status.replicas.iter().any(|r| r.mode != Mode::Error) {
        return false;
    }
    if !snap.settings.auto_salvage() {
        return false;
    }
    // Every replica must be back: the newest one may be any of them, and
    // starting over a subset could pick an older one as the source.
    let replicas: Vec<_> = snap.replicas_of(&vol.name).collect();
    if replicas.is_empty()
        || replicas.iter().any(|r| {
            r.object.status.state != InstanceState::Running
                || r.object.status.address.is_empty()
                || !snap.ready.contains(&r.object.spec.node)
        })
    {
        return false;
    }
    // "Running" in the store may predate a crash: ask each replica server.
    for r in &replicas {
        let Ok(address) = r.object.status.address.parse::<ReplicaAddress>() else {
            return false;
        };
        if let Err(fault) = local.backends.reach(&address).await {
            tracing::debug!(volume = %vol.name, replica = %r.object.name, reason = %fault.reason, "salvage waits: replica not reachable yet");
            return false;
        }
    }
    tracing::warn!(volume = %vol.name, "every replica failed and all answer again; restarting the engine to salvage the newest");
    restarted().insert(vol.name.clone());
    super::volumes::stop_engine(local, &vol.name).await;
    crate::controller::remediation("salvage");
    true
}

/// After an engine start: if replicas were left out as stale, or this start
/// follows a salvage restart, says which replica was chosen and why.
pub async fn report_start(local: &Local, snap: &Snapshot, vol: &Volume, engine: &Engine) {
    let after_restart = restarted().remove(&vol.name);
    let seen = engine.start_revisions();
    let status = engine.status();
    let left_out = |address: &str| {
        status.replicas.iter().any(|r| {
            r.address == address
                && r.fault
                    .as_ref()
                    .is_some_and(|f| f.reason == vigil_engine::engine::FaultReason::Stale)
        })
    };
    // Stale by revision, or not opened at all because it is outside the
    // in-sync set: either way the start chose its sources.
    if !seen.iter().any(|s| left_out(&s.address)) && !after_restart {
        return;
    }
    let Some(newest) = seen.iter().filter_map(|s| s.revision).max() else {
        return;
    };
    let name_of = |address: &str| {
        snap.replicas_of(&vol.name)
            .find(|r| r.object.status.address == address)
            .map(|r| r.object.name.clone())
            .unwrap_or_else(|| address.to_string())
    };
    let chosen: Vec<String> = seen
        .iter()
        .filter(|s| s.revision == Some(newest) && !left_out(&s.address))
        .map(|s| name_of(&s.address))
        .collect();
    let others: Vec<String> = seen
        .iter()
        .filter(|s| s.revision != Some(newest) || left_out(&s.address))
        .map(|s| match s.revision {
            Some(r) => format!("{} at {r}", name_of(&s.address)),
            None if left_out(&s.address) => {
                format!("{} not in the in-sync set", name_of(&s.address))
            }
            None => format!("{} unreachable", name_of(&s.address)),
        })
        .collect();
    let message = describe(&vol.name, &chosen, newest, seen.len(), &others);
    tracing::warn!(volume = %vol.name, %message, "salvaged");
    local
        .cluster
        .event(
            Severity::Warning,
            "volume",
            &vol.name,
            EventReason::Salvaged,
            message,
        )
        .await;
}

/// The event text: which replica(s) serve, at which revision, among how
/// many, and what the others had.
fn describe(
    volume: &str,
    chosen: &[String],
    revision: u64,
    total: usize,
    others: &[String],
) -> String {
    let who = match chosen {
        [one] => format!("replica {one} chosen as source"),
        many => format!("replicas {} chosen as sources (in sync)", many.join(", ")),
    };
    let rest = if others.is_empty() {
        String::new()
    } else {
        format!(" (others {}; rebuilt from it)", others.join(", "))
    };
    format!("volume {volume} salvaged: {who}: revision {revision}, newest of {total}{rest}")
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn the_event_names_the_source_its_revision_and_the_others() {
        assert_eq!(
            describe(
                "v",
                &["v-r-1".into()],
                812,
                3,
                &["v-r-2 at 790".into(), "v-r-3 at 790".into()]
            ),
            "volume v salvaged: replica v-r-1 chosen as source: revision 812, newest of 3 (others v-r-2 at 790, v-r-3 at 790; rebuilt from it)"
        );
        assert_eq!(
            describe("v", &["a".into(), "b".into()], 7, 2, &[]),
            "volume v salvaged: replicas a, b chosen as sources (in sync): revision 7, newest of 2"
        );
    }
}
