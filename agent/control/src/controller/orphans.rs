//! What is left behind on this node after the cluster moved on:
//!
//! * replica directories without a replica object — the replica was
//!   retired while this node was down (or between two rounds). Discarded
//!   only when (a) the name is one vigil generates (`<volume>-r-<8 hex>`;
//!   replicas made with the low-level `vigil replica create` have no object
//!   and are never touched), (b) no object was seen in two checks in a row,
//!   (c) a fresh linearizable read confirms it, and (d) no engine here uses
//!   it. A directory that failed to open is never held, so never discarded.
//! * disk objects of this node in state `replaced` that no replica refers to
//!   any more: every replica on the old disk was replaced, so the old disk
//!   is forgotten (and DISK_REPLACED clears).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use vigil_engine::address::ReplicaAddress;

use super::Snapshot;
use crate::cluster::delete_op;
use crate::cluster::events::Severity;
use crate::cluster::placement::is_managed_name;
use crate::local::Local;
use vigil_model::EventReason;
use vigil_model::Replica;
use vigil_model::disk::DiskState;

/// Rounds between two checks.
pub const EVERY_ROUNDS: u64 = 5;

/// Directories seen without an object at the previous check.
static SUSPECTS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

pub async fn sweep(local: &Arc<Local>, snap: &Snapshot) {
    directories(local, snap).await;
    disks(local, snap).await;
}

async fn directories(local: &Arc<Local>, snap: &Snapshot) {
    let orphans: BTreeSet<String> = local
        .replicas
        .all_held()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|n| is_managed_name(n) && !snap.replicas.iter().any(|r| &r.object.name == n))
        .collect();
    let confirmed: Vec<String> = {
        let mut suspects = match SUSPECTS.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let again = orphans.intersection(&suspects).cloned().collect();
        *suspects = orphans;
        again
    };
    for name in confirmed {
        match local.cluster.get::<Replica>(&name).await {
            Ok(None) => {}
            _ => continue,
        }
        let used = local.engines.all().iter().any(|e| {
            e.status()
                .replicas
                .iter()
                .any(|s| ReplicaAddress::name_of(&s.address) == name)
        });
        if used {
            continue;
        }
        let replicas = Arc::clone(&local.replicas);
        let n2 = name.clone();
        match tokio::task::spawn_blocking(move || replicas.delete(&n2)).await {
            Ok(Ok(true)) => {
                crate::controller::remediation("discard_orphan_replica");
                tracing::info!(replica = %name, "orphan replica directory discarded");
                local
                    .cluster
                    .event(
                        Severity::Normal,
                        "replica",
                        &name,
                        EventReason::ReplicaDiscarded,
                        format!(
                            "replica directory {name} on {} has no replica object (retired while the node was away); discarded",
                            local.me.name
                        ),
                    )
                    .await;
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(replica = %name, error = %e, "cannot discard orphan replica")
            }
            Err(e) => tracing::warn!(replica = %name, error = %e, "discard task failed"),
        }
    }
}

async fn disks(local: &Local, snap: &Snapshot) {
    let me = local.me.name.as_str();
    for d in snap.disks.values() {
        let disk = &d.object;
        if disk.spec.node != me
            || disk.status.state != DiskState::Replaced
            || snap
                .replicas
                .iter()
                .any(|r| r.object.spec.disk == disk.uuid)
        {
            continue;
        }
        match local.cluster.txn(vec![delete_op(d)]).await {
            Ok(_) => {
                local
                    .cluster
                    .event(
                        Severity::Normal,
                        "disk",
                        &disk.uuid,
                        EventReason::DiskForgotten,
                        format!(
                            "replaced disk {} (was at {}) forgotten: no replica refers to it any more",
                            disk.uuid, disk.spec.path
                        ),
                    )
                    .await;
            }
            Err(e) if e.is_conflict() => {}
            Err(e) => tracing::warn!(disk = %disk.uuid, error = %e, "cannot forget replaced disk"),
        }
    }
}
