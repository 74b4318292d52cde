//! What a replica's own agent finds in its files, written into the replica
//! object for health checks and the engine's agent to act on:
//!
//! * integrity — every layer and metadata file present, readable and sized
//!   as its metadata says (a cheap check, no data read, run in the first
//!   round after start and every [`EVERY_ROUNDS`] rounds); the first
//!   problem is recorded, naming the file, and cleared when a later check
//!   finds the chain whole (except a checksum disagreement found by
//!   [`super::checksums`], which only a reset clears). A replica found
//!   damaged when the agent opened it is reported in every round;
//! * actual size — bytes the layer files allocate (rewritten when it moved
//!   by [`SIZE_STEP`] or more, so steady writes do not churn the store).

use std::sync::Arc;

use vigil_engine::replica::{ChainProblem, VerifyReport};

use super::Snapshot;
use crate::cluster::events::Severity;
use crate::local::Local;
use vigil_model::EventReason;
use vigil_model::replica::{IntegrityKind, IntegrityProblem};
use vigil_model::{Replica, Versioned};

/// Rounds between two checks (a round is at most `RESYNC`, 2 s).
pub const EVERY_ROUNDS: u64 = 5;

/// Smallest change of actual size worth a store write.
const SIZE_STEP: u64 = 1 << 20;

/// Everything about replica files, once per round: the checks above,
/// then the repair steps and the checksum comparison.
pub async fn run(local: &Arc<Local>, snap: &Snapshot, round: u64) {
    report_damaged_at_open(local, snap).await;
    check(
        local,
        snap,
        round == 1 || round.is_multiple_of(EVERY_ROUNDS),
    )
    .await;
    super::repair::reset_damaged(local, snap).await;
    super::repair::verify_rebuilt(local, snap).await;
    super::checksums::run(local, snap).await;
}

/// Records at once the problem of each replica that failed to open or
/// opened damaged (it is not served; see `daemon::replicas`).
async fn report_damaged_at_open(local: &Arc<Local>, snap: &Snapshot) {
    for (name, d) in local.replicas.all_damaged() {
        let Some(r) = snap.replicas.iter().find(|r| r.object.name == name) else {
            continue;
        };
        if r.object.spec.node != local.me.name {
            continue;
        }
        let problem = IntegrityProblem {
            kind: d.kind,
            file: d.file.display().to_string(),
            message: d.message.clone(),
            found_unix: vigil_model::now_unix() as u64,
        };
        let size = r.object.status.actual_size_bytes;
        if let Err(e) = record(local, r, Some(problem), size).await
            && !e.is_conflict()
        {
            tracing::warn!(replica = %name, error = %e, "cannot record the damage found at open");
        }
    }
}

/// Checks this node's replicas: all of them when `all`, otherwise only
/// those the engine just failed for damage it found itself (a snapshot
/// operation refused on a missing layer), so the problem is named at once.
async fn check(local: &Arc<Local>, snap: &Snapshot, all: bool) {
    let me = local.me.name.as_str();
    let engine_found = |r: &Replica| {
        r.status.integrity.is_none()
            && r.status
                .fault
                .as_ref()
                .is_some_and(|f| f.reason == "checksum_mismatch")
    };
    for r in snap
        .replicas
        .iter()
        .filter(|r| r.object.spec.node == me && (all || engine_found(&r.object)))
    {
        let Some(held) = local.replicas.held(&r.object.name) else {
            continue;
        };
        let replica = Arc::clone(&held.replica);
        let checked = tokio::task::spawn_blocking(move || {
            let report = replica.check_files();
            let allocated = replica.info().allocated_bytes();
            (report, allocated)
        })
        .await;
        let (report, allocated) = match checked {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(replica = %r.object.name, error = %e, "file check task failed");
                continue;
            }
        };
        let now = vigil_model::now_unix() as u64;
        let problem = match report {
            // Whole files do not clear what only the data showed.
            Ok(rep) if rep.problems.is_empty() => r
                .object
                .status
                .integrity
                .clone()
                .filter(crate::checksums::found_by_checksums),
            Ok(rep) => first_problem(&rep, now),
            Err(e) => Some(IntegrityProblem {
                kind: IntegrityKind::Unreadable,
                file: held.dir.display().to_string(),
                message: e.to_string(),
                found_unix: now,
            }),
        };
        if let Err(e) = record(local, r, problem, allocated).await
            && !e.is_conflict()
        {
            tracing::warn!(replica = %r.object.name, error = %e, "cannot record the file check");
        }
    }
}

fn first_problem(report: &VerifyReport, now: u64) -> Option<IntegrityProblem> {
    let p: &ChainProblem = report.problems.first()?;
    Some(IntegrityProblem {
        kind: crate::local::replicas::problem_kind(&p.kind),
        file: p.file.display().to_string(),
        message: format!("layer {}: {}", p.layer, p.detail),
        found_unix: now,
    })
}

async fn record(
    local: &Local,
    r: &Versioned<Replica>,
    problem: Option<IntegrityProblem>,
    allocated: u64,
) -> crate::cluster::Result<()> {
    let st = &r.object.status;
    // The same problem found again keeps its first sighting time.
    let same = match (&st.integrity, &problem) {
        (Some(a), Some(b)) => a.kind == b.kind && a.file == b.file,
        (None, None) => true,
        _ => false,
    };
    let size_moved = allocated.abs_diff(st.actual_size_bytes) >= SIZE_STEP
        || ((allocated == 0) != (st.actual_size_bytes == 0));
    if same && !size_moved {
        return Ok(());
    }
    let mut next = r.clone();
    next.object.status.actual_size_bytes = allocated;
    if !same {
        next.object.status.integrity = problem.clone();
    }
    local.cluster.update(&next).await?;
    if same {
        return Ok(());
    }
    let name = &r.object.name;
    match problem {
        Some(p) => {
            tracing::warn!(replica = %name, file = %p.file, kind = p.kind.as_str(), "replica files damaged");
            local
                .cluster
                .event(
                    Severity::Warning,
                    "replica",
                    name,
                    EventReason::ReplicaFilesDamaged,
                    format!(
                        "replica {name}: {} is {} ({})",
                        p.file,
                        p.kind.as_str(),
                        p.message
                    ),
                )
                .await;
        }
        None => {
            local
                .cluster
                .event(
                    Severity::Normal,
                    "replica",
                    name,
                    EventReason::ReplicaFilesWhole,
                    format!("replica {name}: every layer file is present and sized again"),
                )
                .await;
        }
    }
    Ok(())
}
