//! The periodic integrity check: finds a layer whose bytes changed silently
//! on one replica (same size, files whole — invisible to the file check).
//!
//! Every `integrity-check-interval` (0 = off) each replica's agent
//! recomputes the checksum of every read-only layer from the data on disk
//! (the writable head is left out: it changes) and records them in the
//! replica object. One replica at a time per agent, in the background, so
//! the reads never pile up on a disk or hold up a round. The volume's owner
//! compares each layer across the replicas that reported it: a replica
//! that differs from a strict majority gets its `integrity` set (corrupt,
//! naming the layer file and both checksums) and is then failed, reset and
//! rebuilt like any damaged replica (see [`super::repair`]). With no
//! majority (two replicas that disagree) nothing is picked: the health
//! check says so and an operator decides.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{Snapshot, owner_of};
use crate::checksums::{Disagreement, MISMATCH, compare, participates};
use crate::cluster::events::Severity;
use crate::local::Local;
use vigil_model::EventReason;
use vigil_model::replica::{IntegrityKind, IntegrityProblem, LayerChecksums, LayerSum};
use vigil_model::{Replica, Volume};

/// At most one computation runs per agent.
static COMPUTING: AtomicBool = AtomicBool::new(false);

/// Disagreements without a majority already reported by an event.
static NO_MAJORITY_SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

pub async fn run(local: &Arc<Local>, snap: &Snapshot) {
    let interval = snap.settings.integrity_check_interval().as_secs();
    if interval == 0 {
        return;
    }
    start_next(local, snap, interval);
    judge(local, snap).await;
}

/// Starts computing the checksums of this node's most overdue replica, if
/// one is due and none is being computed.
fn start_next(local: &Arc<Local>, snap: &Snapshot, interval: u64) {
    let me = local.me.name.as_str();
    let due = snap
        .replicas
        .iter()
        .filter(|r| r.object.spec.node == me)
        .filter(|r| {
            let st = &r.object.status;
            let Some(vol) = snap
                .volumes
                .iter()
                .find(|v| v.object.name == r.object.spec.volume)
            else {
                return false;
            };
            // `participates` without the report itself.
            let mut probe = r.object.clone();
            probe.status.layer_checksums = Some(LayerChecksums {
                computed_unix: 0,
                layers: BTreeMap::new(),
            });
            participates(&probe, &vol.object)
                && st
                    .layer_checksums
                    .as_ref()
                    .is_none_or(|c| snap.now >= c.computed_unix.saturating_add(interval))
        })
        .min_by_key(|r| {
            r.object
                .status
                .layer_checksums
                .as_ref()
                .map_or(0, |c| c.computed_unix)
        });
    let Some(r) = due else {
        return;
    };
    let Some(held) = local.replicas.held(&r.object.name) else {
        return;
    };
    if COMPUTING.swap(true, Ordering::AcqRel) {
        return;
    }
    let local = Arc::clone(local);
    let name = r.object.name.clone();
    tokio::spawn(async move {
        let replica = Arc::clone(&held.replica);
        let computed = tokio::task::spawn_blocking(move || compute(&replica)).await;
        COMPUTING.store(false, Ordering::Release);
        let layers = match computed {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => return, // the chain changed meanwhile; next round
            Ok(Err(e)) => {
                tracing::warn!(replica = %name, error = %e, "cannot compute layer checksums");
                return;
            }
            Err(e) => {
                tracing::warn!(replica = %name, error = %e, "checksum task failed");
                return;
            }
        };
        let report = LayerChecksums {
            computed_unix: vigil_model::now_unix() as u64,
            layers,
        };
        tracing::debug!(replica = %name, layers = report.layers.len(), "layer checksums computed");
        let res = local
            .cluster
            .modify::<Replica, _>(&name, |r| {
                r.status.layer_checksums = Some(report.clone());
                Ok(true)
            })
            .await;
        if let Err(e) = res {
            tracing::warn!(replica = %name, error = %e, "cannot record layer checksums");
        }
    });
}

/// Every read-only layer's checksum from the data on disk; `None` when the
/// chain changed while they were computed.
fn compute(
    replica: &vigil_engine::replica::Replica,
) -> Result<Option<BTreeMap<String, LayerSum>>, vigil_engine::replica::ReplicaError> {
    let chain = |r: &vigil_engine::replica::Replica| -> Vec<String> {
        r.info()
            .chain
            .into_iter()
            .filter(|l| l.read_only)
            .map(|l| l.name)
            .collect()
    };
    let before = chain(replica);
    let mut out = BTreeMap::new();
    for layer in &before {
        let (sum, file) = match replica.fresh_layer_checksum(layer) {
            Ok(x) => x,
            Err(e) if e.kind() == vigil_engine::replica::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        out.insert(
            layer.clone(),
            LayerSum {
                checksum: format!("{}:{}", sum.method, sum.value),
                file: file.display().to_string(),
            },
        );
    }
    Ok((chain(replica) == before).then_some(out))
}

/// On the volumes this agent owns: marks each replica whose layer differs
/// from the majority as corrupt; reports (once) a disagreement with none.
async fn judge(local: &Arc<Local>, snap: &Snapshot) {
    let me = local.me.name.as_str();
    for v in &snap.volumes {
        let vol = &v.object;
        if owner_of(vol, &snap.ready).as_deref() != Some(me) {
            continue;
        }
        let replicas = snap.replicas_of(&vol.name).map(|r| &r.object);
        let mut marked = BTreeSet::new();
        for d in compare(replicas, vol) {
            let Some(majority) = &d.majority else {
                no_majority(local, vol, &d).await;
                continue;
            };
            for (r, sum) in d.sums.iter().filter(|(_, s)| &s.checksum != majority) {
                if !marked.insert(r.name.clone()) {
                    continue;
                }
                mark(local, vol, r, &d, sum, majority).await;
            }
        }
    }
}

async fn mark(
    local: &Local,
    vol: &Volume,
    r: &Replica,
    d: &Disagreement<'_>,
    sum: &LayerSum,
    majority: &str,
) {
    let message = format!(
        "{MISMATCH}: layer {} gives {}, {} of {} replicas give {majority}",
        d.layer,
        sum.checksum,
        d.agreeing,
        d.sums.len()
    );
    let problem = IntegrityProblem {
        kind: IntegrityKind::Corrupt,
        file: sum.file.clone(),
        message: message.clone(),
        found_unix: vigil_model::now_unix() as u64,
    };
    let seen = r.status.layer_checksums.clone();
    let res = local
        .cluster
        .modify::<Replica, _>(&r.name, |cur| {
            // Only on the report judged, and never over a known problem.
            if cur.status.integrity.is_some() || cur.status.layer_checksums != seen {
                return Ok(false);
            }
            cur.status.integrity = Some(problem.clone());
            Ok(true)
        })
        .await;
    match res {
        Ok(cur) if cur.status.integrity.as_ref() == Some(&problem) => {}
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(replica = %r.name, error = %e, "cannot record a checksum mismatch");
            return;
        }
    }
    tracing::warn!(volume = %vol.name, replica = %r.name, file = %sum.file, %message, "layer checksum differs from the majority");
    local
        .cluster
        .event(
            Severity::Warning,
            "replica",
            &r.name,
            EventReason::LayerChecksumMismatch,
            format!(
                "replica {} of {} on {}: {} is corrupt: {message}",
                r.name, vol.name, r.spec.node, sum.file
            ),
        )
        .await;
}

async fn no_majority(local: &Local, vol: &Volume, d: &Disagreement<'_>) {
    let key = format!(
        "{}/{}/{}",
        vol.name,
        d.layer,
        d.sums
            .iter()
            .map(|(r, s)| format!("{}={}", r.name, s.checksum))
            .collect::<Vec<_>>()
            .join(",")
    );
    let new = {
        let mut seen = match NO_MAJORITY_SEEN.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // Bounded: forgetting only means one more event.
        if seen.len() >= 1024 {
            seen.clear();
        }
        seen.insert(key)
    };
    if !new {
        return;
    }
    let who = d
        .sums
        .iter()
        .map(|(r, s)| format!("{} ({}) gives {}", r.name, s.file, s.checksum))
        .collect::<Vec<_>>()
        .join("; ");
    tracing::warn!(volume = %vol.name, layer = %d.layer, %who, "layer checksums disagree with no majority");
    local
        .cluster
        .event(
            Severity::Warning,
            "volume",
            &vol.name,
            EventReason::LayerChecksumMismatch,
            format!(
                "volume {}: layer {} differs between replicas with no majority, none picked: {who}",
                vol.name, d.layer
            ),
        )
        .await;
}
