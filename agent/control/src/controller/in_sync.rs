//! Keeps a volume's in-sync set (`model/insync.rs`) equal to its engine's
//! RW replicas. The engine acknowledges nothing after a replica left RW
//! until the smaller set is recorded here (`vigil_engine::engine`'s
//! `require_recorded_membership`), so after any crash the recorded set
//! holds every acknowledged write, and the next engine starts only from it
//! (`volumes::open_engine`).

use std::sync::Arc;
use std::time::Duration;

use vigil_engine::address::ReplicaAddress;
use vigil_engine::engine::Engine;

use crate::cluster::events::Severity;
use crate::cluster::{Cluster, ClusterError};
use crate::local::Local;
use vigil_model::EventReason;
use vigil_model::insync::InSync;

/// Replica names of the engine's RW replicas (the name is the address's).
fn rw_names(addresses: &[String]) -> Vec<String> {
    addresses
        .iter()
        .filter_map(|a| a.parse::<ReplicaAddress>().ok().map(|a| a.name))
        .collect()
}

/// Records the engine's RW set now (at start, before it serves), then has
/// every member persist the recorded generation — store first, replicas
/// second, so a replica never holds a generation the store lacks (see
/// ARCHITECTURE.md, "The in-sync generation").
pub async fn record_now(cluster: &Cluster, volume: &str, engine: &Engine) -> Result<(), String> {
    let (shrinks, rw) = engine.membership();
    let reason = format!("engine of epoch {} on {}", engine.epoch(), cluster.node());
    let set = match cluster
        .record_in_sync(volume, &rw_names(&rw), &reason, engine.epoch())
        .await
    {
        Ok(set) => set,
        Err(e @ ClusterError::Superseded { .. }) => {
            // A newer engine owns the volume: this one must not serve on.
            // Requests waiting for this record fail once the fence gives
            // up on them (it can never be written). Recorded in the volume
            // like a replica's refusal, so ENGINE_FENCED reports it: this
            // engine sends its replicas nothing more, so no refusal will.
            let _ = engine.fence().await;
            super::volumes::record_fenced(cluster, volume, engine.epoch(), &e.to_string()).await;
            cluster
                .event(
                    Severity::Warning,
                    "volume",
                    volume,
                    EventReason::EngineFenced,
                    format!(
                        "the engine of {volume} on {} (epoch {}) was fenced: {e}",
                        cluster.node(),
                        engine.epoch()
                    ),
                )
                .await;
            return Err(format!("record the in-sync set: {e}"));
        }
        Err(e) => return Err(format!("record the in-sync set: {e}")),
    };
    // With no RW replica left nothing was recorded; the engine fails any
    // write still waiting (`wait_membership_recorded`), whatever this says.
    engine.membership_recorded(shrinks);
    if let Some(set) = set {
        let members: Vec<String> = rw
            .into_iter()
            .filter(|a| {
                rw_names(std::slice::from_ref(a))
                    .iter()
                    .any(|n| set.members.contains(n))
            })
            .collect();
        engine
            .join_generation(set.generation, &members)
            .await
            .map_err(|e| {
                format!(
                    "persist in-sync generation {} on the members: {e}",
                    set.generation
                )
            })?;
    }
    Ok(())
}

/// Step 1 of a chain operation (snapshot, snapshot removal, revert) on a
/// volume's engine: bump the store's in-sync generation. Returns it for
/// [`after_chain_operation`]; `None` for an engine without a recorded set
/// (a low-level `vigil engine create`).
pub async fn before_chain_operation(
    cluster: &Cluster,
    volume: &str,
    engine: &Engine,
    what: &str,
) -> Result<Option<u64>, String> {
    let reason = format!(
        "{what} by the engine of epoch {} on {}",
        engine.epoch(),
        cluster.node()
    );
    cluster
        .bump_in_sync_generation(volume, &reason)
        .await
        .map(|set| set.map(|s| s.generation))
        .map_err(|e| format!("bump the in-sync generation before {what}: {e}"))
}

/// Step 2, once the operation succeeded on the replicas: each RW replica
/// (every one that took it) persists the generation. A replica that missed
/// the operation is ERR and out of the set; one that crashed in between
/// keeps the previous, lower generation, which no check reads as newer.
pub async fn after_chain_operation(engine: &Engine, generation: Option<u64>) -> Result<(), String> {
    let Some(generation) = generation else {
        return Ok(());
    };
    let (_, rw) = engine.membership();
    engine
        .join_generation(generation, &rw)
        .await
        .map_err(|e| format!("persist in-sync generation {generation}: {e}"))
}

/// Makes the engine wait for recorded membership and records every change
/// of its RW set until the engine is dropped.
pub fn keep_recorded(cluster: Cluster, volume: String, engine: &Arc<Engine>) {
    engine.require_recorded_membership();
    let weak = Arc::downgrade(engine);
    let mut changes = engine.membership_changes();
    tokio::spawn(async move {
        loop {
            // the receiver does not keep the engine alive: it ends with it
            if changes.changed().await.is_err() {
                return;
            }
            loop {
                let Some(engine) = weak.upgrade() else {
                    return;
                };
                if engine.is_fenced() {
                    return;
                }
                match record_now(&cluster, &volume, &engine).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(volume = %volume, error = %e, "in-sync set not recorded yet; acknowledgements wait for it");
                        drop(engine);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    });
}

/// The in-sync generation the replica at `address` last joined, asked over
/// a backend of the starting engine's `epoch` (a remote one is claimed by
/// that, as the engine would; nothing else changes). `None` when it does
/// not answer in time or the address is bad.
pub async fn probe_generation(local: &Local, address: &str, epoch: u64) -> Option<u64> {
    let address: ReplicaAddress = address.parse().ok()?;
    let probe = async {
        let backend = local.backends.open(&address, epoch).await.ok()?;
        backend.info().await.ok().map(|i| i.in_sync_generation)
    };
    tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .ok()
        .flatten()
}

/// Refuses an engine start when a replica (`name`, node, generation)
/// joined a generation newer than the store's set: the store is older than
/// that replica — restored from a backup, or it lost a change — and
/// starting would serve (and rebuild over) older data than the replica
/// holds. The message names them and the way out.
pub fn refuse_newer(
    volume: &str,
    set: &InSync,
    newer: &[(String, String, u64)],
) -> Result<(), String> {
    let Some((first, _, _)) = newer.first() else {
        return Ok(());
    };
    let named: Vec<String> = newer
        .iter()
        .map(|(r, node, g)| format!("{r} on node {node} joined generation {g}"))
        .collect();
    Err(format!(
        "not starting: the volume's in-sync set in the cluster store (generation {}: {}) is older than its replicas ({}); the store may have been restored from a backup or lost a change, and starting would serve older data than those replicas hold; if the store is right and those replicas are to be given up: `vigil volume salvage {volume} --replica {first} --accept-data-loss` makes {first} the only member above that generation",
        set.generation,
        set.members.join(", "),
        named.join("; "),
    ))
}
