//! Repairing a replica whose files are damaged (a layer file missing,
//! truncated or corrupt), in three steps by two agents:
//!
//! 1. the engine's agent takes it out of service ([`fail_damaged`]): ERR
//!    `checksum_mismatch`, the message naming the file;
//! 2. once the engine no longer uses it (ERR, or the volume detached), its
//!    own agent resets it ([`reset_damaged`]): deletes its directory and
//!    creates it again empty with the same name, size and disk, clears the
//!    problem and records `reset_unix`. A rebuild into the damaged
//!    directory would skip layers whose checksums match (computed through
//!    files still open), leaving a deleted file deleted: an empty replica
//!    is rebuilt in full. The engine's agent then adds it back at once
//!    (`replenish::rejoin`) and rebuilds it from a healthy replica;
//! 3. once it is RW again, its own agent verifies the whole chain — every
//!    read-only layer's data against its checksum ([`verify_rebuilt`]).
//!
//! Never reset a replica the engine still reads or writes, and never the
//! last replica holding the volume's data: a damaged copy beats none. A
//! problem must also be [`RESET_AFTER`] old and, if the file check found
//! it, still be there when looked at again: a file check that raced a
//! chain operation (a layer renamed meanwhile) must not cost a replica
//! its data. The wait also keeps the problem visible (health checks,
//! `vigil doctor`) before the repair clears it.

use std::sync::Arc;

use tracing::Instrument;
use vigil_engine::engine::{FaultReason, Mode};

use super::Snapshot;
use crate::cluster::events::Severity;
use crate::local::Local;
use crate::local::replicas::problem_kind;
use vigil_model::EventReason;
use vigil_model::replica::IntegrityProblem;
use vigil_model::replica::ReplicaMode;
use vigil_model::{InstanceState, Replica, Versioned, Volume, VolumeState};

/// Takes out of service a replica whose files were found damaged (a
/// missing or truncated layer, or a checksum that differs from the other
/// replicas'): reads from it could return wrong data, and it would not
/// open again after a restart. Never the last sound RW replica, though:
/// its open files still serve, and an I/O error for every request ("no
/// backend available") would be worse than the risk — the health check
/// says so loudly instead.
pub async fn fail_damaged(
    local: &Local,
    snap: &Snapshot,
    vol: &Volume,
    engine: &vigil_engine::engine::Engine,
) {
    let status = engine.status();
    let sound_rw = |except: &str| {
        status.replicas.iter().any(|s| {
            s.mode == Mode::ReadWrite
                && s.address != except
                && snap.replicas_of(&vol.name).any(|r| {
                    r.object.status.address == s.address && r.object.status.integrity.is_none()
                })
        })
    };
    for r in snap.replicas_of(&vol.name) {
        let Some(problem) = &r.object.status.integrity else {
            continue;
        };
        if !sound_rw(&r.object.status.address) {
            continue;
        }
        let message = format!(
            "layer file {} is {}: {}",
            problem.file,
            problem.kind.as_str(),
            problem.message
        );
        if engine.fail_replica(
            &r.object.status.address,
            FaultReason::ChecksumMismatch,
            &message,
        ) {
            crate::controller::remediation("fail_replica");
            tracing::warn!(volume = %vol.name, replica = %r.object.name, %message, "damaged replica taken out of service");
            local
                .cluster
                .event(
                    Severity::Warning,
                    "replica",
                    &r.object.name,
                    EventReason::DamagedReplicaFailed,
                    format!(
                        "replica {} of {} taken out of service: {message}",
                        r.object.name, vol.name
                    ),
                )
                .await;
        }
    }
}

/// Age a problem must reach before its replica is reset.
pub const RESET_AFTER: u64 = 10;

/// True while the engine reads or writes `r` (RW or WO): its files must
/// not be touched then.
fn in_service(r: &Replica) -> bool {
    r.status.mode == ReplicaMode::ReadWrite || r.status.mode == ReplicaMode::WriteOnly
}

/// True when `r` holds the volume's data as far as the control plane
/// knows: running with no known damage and, attached, RW in the engine;
/// detached, not left ERR or WO by the last engine (it missed writes) and
/// not an empty reset copy still waiting for its rebuild.
fn holds_data(r: &Replica, vol: &Volume) -> bool {
    let st = &r.status;
    let sound = st.state == InstanceState::Running && st.integrity.is_none();
    match vol.status.state {
        VolumeState::Attached => sound && st.mode == ReplicaMode::ReadWrite,
        _ => {
            sound
                && st.mode.is_rw_or_unreported()
                && (st.reset_unix == 0 || st.verified_unix >= st.reset_unix)
        }
    }
}

/// Step 2: resets this node's damaged replicas the engine no longer uses.
pub async fn reset_damaged(local: &Arc<Local>, snap: &Snapshot) {
    let me = local.me.name.as_str();
    for r in snap.replicas.iter().filter(|r| r.object.spec.node == me) {
        let Some(problem) = r.object.status.integrity.clone() else {
            continue;
        };
        let Some(vol) = snap
            .volumes
            .iter()
            .find(|v| v.object.name == r.object.spec.volume)
        else {
            continue;
        };
        let vol = &vol.object;
        let out_of_service = match vol.status.state {
            VolumeState::Detached => true,
            VolumeState::Attached => !in_service(&r.object),
            _ => false,
        };
        let others_hold = snap
            .replicas_of(&vol.name)
            .any(|o| o.object.name != r.object.name && holds_data(&o.object, vol));
        let old_enough = snap.now >= problem.found_unix.saturating_add(RESET_AFTER);
        if !out_of_service
            || !others_hold
            || !old_enough
            || !still_damaged(local, r, &problem).await
        {
            continue;
        }
        let span =
            tracing::info_span!("reset_replica", volume = %vol.name, replica = %r.object.name);
        reset(local, r, &problem).instrument(span).await;
    }
}

/// Looks again at a problem the file check found (one found by checksum
/// comparison or at open cannot be seen this way and stands).
async fn still_damaged(local: &Local, r: &Versioned<Replica>, problem: &IntegrityProblem) -> bool {
    if crate::checksums::found_by_checksums(problem) {
        return true;
    }
    let Some(held) = local.replicas.held(&r.object.name) else {
        return true;
    };
    let replica = Arc::clone(&held.replica);
    match tokio::task::spawn_blocking(move || replica.check_files()).await {
        Ok(Ok(report)) => !report.problems.is_empty(),
        // Cannot even look: the files are not fine.
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

async fn reset(local: &Arc<Local>, r: &Versioned<Replica>, problem: &IntegrityProblem) {
    let name = r.object.name.clone();
    let replicas = Arc::clone(&local.replicas);
    let (n, size, disk) = (name.clone(), r.object.spec.size, r.object.spec.disk.clone());
    match tokio::task::spawn_blocking(move || replicas.reset(&n, size, &disk)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(replica = %name, error = %e, "cannot reset the damaged replica");
            return;
        }
        Err(e) => {
            tracing::warn!(replica = %name, error = %e, "reset task failed");
            return;
        }
    }
    let now = vigil_model::now_unix() as u64;
    // The directory is new whatever happens to this write: a conflict
    // leaves the problem recorded and the next round resets the (empty)
    // replica again, which is harmless.
    let mut next = r.clone();
    let st = &mut next.object.status;
    st.integrity = None;
    st.reset_unix = now;
    st.layer_checksums = None;
    if let Err(e) = local.cluster.update(&next).await {
        tracing::warn!(replica = %name, error = %e, "cannot record the reset");
        return;
    }
    crate::controller::remediation("reset_replica");
    tracing::warn!(replica = %name, file = %problem.file, kind = problem.kind.as_str(), "damaged replica reset; it will be rebuilt in full");
    local
        .cluster
        .event(
            Severity::Warning,
            "replica",
            &name,
            EventReason::ReplicaReset,
            format!(
                "replica {name} of {} on {} reset (emptied) to be rebuilt in full from a healthy replica: {} was {} ({})",
                r.object.spec.volume,
                r.object.spec.node,
                problem.file,
                problem.kind.as_str(),
                problem.message
            ),
        )
        .await;
}

/// Step 3: verifies the chain of this node's replicas that were reset and
/// are RW again (rebuilt), and records the result.
pub async fn verify_rebuilt(local: &Arc<Local>, snap: &Snapshot) {
    let me = local.me.name.as_str();
    for r in snap.replicas.iter().filter(|r| r.object.spec.node == me) {
        let st = &r.object.status;
        let rebuilt = st
            .rebuild
            .as_ref()
            .and_then(|rb| rb.finished_unix)
            .is_some_and(|t| t >= st.reset_unix);
        if st.reset_unix == 0
            || st.verified_unix >= st.reset_unix
            || st.mode != ReplicaMode::ReadWrite
            || !rebuilt
            || st.integrity.is_some()
        {
            continue;
        }
        let Some(held) = local.replicas.held(&r.object.name) else {
            continue;
        };
        let replica = Arc::clone(&held.replica);
        let report = match tokio::task::spawn_blocking(move || replica.verify()).await {
            Ok(Ok(rep)) => rep,
            Ok(Err(e)) => {
                tracing::warn!(replica = %r.object.name, error = %e, "cannot verify the rebuilt chain");
                continue;
            }
            Err(e) => {
                tracing::warn!(replica = %r.object.name, error = %e, "verify task failed");
                continue;
            }
        };
        let now = vigil_model::now_unix() as u64;
        let mut next = r.clone();
        next.object.status.verified_unix = now.max(st.reset_unix);
        let problem = report.problems.first().map(|p| IntegrityProblem {
            kind: problem_kind(&p.kind),
            file: p.file.display().to_string(),
            message: format!("layer {} after rebuild: {}", p.layer, p.detail),
            found_unix: now,
        });
        next.object.status.integrity = problem.clone();
        if let Err(e) = local.cluster.update(&next).await {
            if !e.is_conflict() {
                tracing::warn!(replica = %r.object.name, error = %e, "cannot record the verification");
            }
            continue;
        }
        let name = &r.object.name;
        match problem {
            None => {
                tracing::info!(replica = %name, layers = report.layers_checked, "rebuilt chain verified");
                local
                    .cluster
                    .event(
                        Severity::Normal,
                        "replica",
                        name,
                        EventReason::ReplicaVerified,
                        format!(
                            "replica {name} rebuilt and verified: {} layers, every read-only layer's data matches its checksum",
                            report.layers_checked
                        ),
                    )
                    .await;
            }
            Some(p) => {
                tracing::warn!(replica = %name, file = %p.file, "rebuilt chain fails verification");
                local
                    .cluster
                    .event(
                        Severity::Warning,
                        "replica",
                        name,
                        EventReason::ReplicaVerifyFailed,
                        format!(
                            "replica {name} rebuilt but its chain fails verification: {} is {} ({})",
                            p.file,
                            p.kind.as_str(),
                            p.message
                        ),
                    )
                    .await;
            }
        }
    }
}
