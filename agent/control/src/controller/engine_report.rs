//! What the engine's agent writes into its volume's replica objects: each
//! replica's mode, why it is ERR, and its rebuild's progress, as the
//! engine sees them now. Health checks and `volume get` read these, on any
//! agent, so the engine's view outlives a scrape of its node.

use vigil_engine::engine::{EngineStatus, Mode, ReplicaStatus as SlotStatus};

use vigil_model::EventReason;
use vigil_model::replica::{ReplicaFault, ReplicaMode, ReplicaRebuild};
use vigil_model::{Replica, Versioned};

/// A replica whose status changed, and what to tell the operator about it.
pub struct Change {
    pub replica: Versioned<Replica>,
    /// `(warning, reason, message)` for an event, when the mode changed.
    pub event: Option<(bool, EventReason, String)>,
}

/// The replica objects of the volume whose engine status is `status`, with
/// the fields the engine's agent owns brought up to date (only those that
/// changed are returned).
pub fn changes<'a>(
    replicas: impl Iterator<Item = &'a Versioned<Replica>>,
    status: &EngineStatus,
    now: u64,
) -> Vec<Change> {
    let mut out = Vec::new();
    for r in replicas {
        let slot = slot_of(&r.object, status);
        let mut next = r.clone();
        let st = &mut next.object.status;
        st.mode = slot.map(|s| s.mode.into()).unwrap_or_default();
        st.fault = slot
            .filter(|s| s.mode == Mode::Error)
            .and_then(|s| s.fault.as_ref())
            .map(|f| ReplicaFault {
                reason: f.reason.as_str().to_string(),
                message: f.last_error.clone(),
                at_unix: f.at_unix,
            });
        st.rebuild = match slot.and_then(|s| s.rebuild.as_ref()) {
            Some(rb) => {
                let prev = r.object.status.rebuild.as_ref();
                let same_run = prev.is_some_and(|p| p.started_unix == rb.started_unix);
                let moved = !same_run || prev.is_some_and(|p| p.bytes_done != rb.bytes_done);
                Some(ReplicaRebuild {
                    source: rb.source.clone(),
                    bytes_done: rb.bytes_done,
                    bytes_total: rb.bytes_total,
                    started_unix: rb.started_unix,
                    finished_unix: rb.finished_unix,
                    progressed_unix: match prev {
                        Some(p) if !moved => p.progressed_unix,
                        _ => now,
                    },
                })
            }
            // A rebuild is history once the slot is gone: keep the last one.
            None => r.object.status.rebuild.clone(),
        };
        if next.object.status == r.object.status {
            continue;
        }
        let event = mode_event(&r.object, &next.object);
        out.push(Change {
            replica: next,
            event,
        });
    }
    out
}

fn slot_of<'s>(r: &Replica, status: &'s EngineStatus) -> Option<&'s SlotStatus> {
    if r.status.address.is_empty() {
        return None;
    }
    status
        .replicas
        .iter()
        .find(|s| s.address == r.status.address)
}

fn mode_event(before: &Replica, after: &Replica) -> Option<(bool, EventReason, String)> {
    let (old, new) = (before.status.mode, after.status.mode);
    if old == new {
        return None;
    }
    let who = format!("replica {} on node {}", after.name, after.spec.node);
    match new {
        ReplicaMode::Error => {
            let why = after.status.fault.as_ref().map_or_else(
                || "no reason recorded".to_string(),
                |f| format!("{}: {}", f.reason, f.message),
            );
            Some((
                true,
                EventReason::ReplicaFaulted,
                format!("{who} marked ERR ({why})"),
            ))
        }
        // ERR → RW happens when a rebuild finished between two rounds; a
        // new replica may even go straight from no mode to RW.
        ReplicaMode::ReadWrite
            if old == ReplicaMode::WriteOnly
                || old == ReplicaMode::Error
                || (old == ReplicaMode::Unreported && after.status.rebuild.is_some()) =>
        {
            Some((
                false,
                EventReason::ReplicaRebuilt,
                format!("{who} rebuilt, now RW"),
            ))
        }
        _ => None,
    }
}
