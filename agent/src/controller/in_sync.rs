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

use crate::cluster::Cluster;

/// Replica names of the engine's RW replicas (the name is the address's).
fn rw_names(addresses: &[String]) -> Vec<String> {
    addresses
        .iter()
        .filter_map(|a| a.parse::<ReplicaAddress>().ok().map(|a| a.name))
        .collect()
}

/// Records the engine's RW set now (at start, before it serves).
pub async fn record_now(cluster: &Cluster, volume: &str, engine: &Engine) -> Result<(), String> {
    let (shrinks, rw) = engine.membership();
    let reason = format!("engine of epoch {} on {}", engine.epoch(), cluster.node());
    cluster
        .record_in_sync(volume, &rw_names(&rw), &reason)
        .await
        .map_err(|e| format!("record the in-sync set: {e}"))?;
    engine.membership_recorded(shrinks);
    Ok(())
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
