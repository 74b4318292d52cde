//! Live migration: the steps each of the two agents takes (the phase
//! machine is `model::migration`). Every step is one compare-and-swap on
//! the volume object, so a step and a rollback racing each other cannot
//! both win.
//!
//! Ownership: the source (still `attached_node`) owns the volume and takes
//! the source steps — fencing its engine, rolling back on a down target or
//! a step past `migration-timeout`, clearing a finished rollback. The
//! target takes the target steps — bringing up its forwarding export,
//! pausing it, starting its engine and committing the move — and may roll
//! back itself when a step of its own fails. When the source is down, the
//! target also clears the migration (the source cannot).
//!
//! One engine at a time: the target serves only through a forward to the
//! source's engine until the source's engine is fenced (flushed, then
//! refusing every request, `Engine::fence`); the target starts its engine
//! only in `Switching`, after that. The source serves again after a
//! rollback only once the target said its engine and export are gone
//! (`target_stopped`), or once the target is down — and from `Switching`
//! (when the target may already run an engine) only once the target has
//! been down for `node-down-timeout`.

use std::sync::Arc;
use std::time::Duration;

use vigil_engine::address::ReplicaAddress;
use vigil_engine::device::ExportDevice;
use vigil_engine::handover::HandoverDevice;
use vigil_engine::nbd::client::NbdClient;

use super::{Snapshot, volumes};
use crate::cluster::events::Severity;
use crate::cluster::{self, update_op};
use crate::local::Local;
use vigil_model::EventReason;
use vigil_model::migration::{Migration, MigrationPhase};
use vigil_model::replica::ReplicaMode;
use vigil_model::{InstanceState, Versioned, Volume, VolumeState};

/// Connecting the forward to the source's NBD server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A forwarded request with no answer in this time fails (EIO).
const FORWARD_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn reconcile(local: &Arc<Local>, snap: &Snapshot) {
    let me = local.me.name.as_str();
    for v in &snap.volumes {
        let name = &v.object.name;
        let result = match &v.object.status.migration {
            Some(m) if m.target == me => target_step(local, snap, v, m).await,
            Some(m) if m.source == me => source_step(local, snap, v, m).await,
            _ => Ok(()),
        };
        match result {
            Ok(()) => {}
            Err(e) if e.is_conflict() => {}
            Err(e) => tracing::warn!(volume = %name, error = %e, "migration step failed"),
        }
        forget_handover(local, &v.object).await;
    }
    // exports for volumes that no longer exist
    for name in local.handovers.names() {
        if !snap.volumes.iter().any(|v| v.object.name == name)
            && let Some(h) = local.handovers.remove(&name)
        {
            h.close("the volume was deleted").await;
        }
    }
}

/// A handover export outlives its migration only in the connections that
/// hold it: once the volume is attached here it serves the local engine
/// (forgotten, not closed); anywhere else it is closed.
async fn forget_handover(local: &Local, vol: &Volume) {
    let me = local.me.name.as_str();
    if vol
        .status
        .migration
        .as_ref()
        .is_some_and(|m| m.target == me)
    {
        return;
    }
    if let Some(h) = local.handovers.remove(&vol.name)
        && vol.status.attached_node.as_deref() != Some(me)
    {
        h.close("the migration to this node ended").await;
    }
}

/// Whether the source must not (re)start its engine now: it has been
/// fenced for the target, or is being fenced.
pub fn holds_source_engine(vol: &Volume) -> bool {
    vol.status.migration.as_ref().is_some_and(|m| {
        m.source_stopped
            || matches!(
                m.phase,
                MigrationPhase::SourceStopping | MigrationPhase::Switching
            )
    })
}

/// Whether this node may keep an engine for `vol` although the volume is
/// not attached here: the target of a migration that is switching.
pub fn target_engine_allowed(vol: &Volume, me: &str) -> bool {
    vol.status
        .migration
        .as_ref()
        .is_some_and(|m| m.target == me && m.phase == MigrationPhase::Switching)
}

fn migration_of(v: &Versioned<Volume>) -> Option<&Migration> {
    v.object.status.migration.as_ref()
}

/// Writes `change` to the migration of `v` (CAS on the volume).
async fn update(
    local: &Local,
    v: &Versioned<Volume>,
    change: impl FnOnce(&mut Migration) -> Result<(), vigil_model::migration::PhaseError>,
) -> cluster::Result<()> {
    let mut next = v.clone();
    let Some(m) = next.object.status.migration.as_mut() else {
        return Ok(());
    };
    change(m)?;
    if next.object == v.object {
        return Ok(());
    }
    local.cluster.update(&next).await.map(|_| ())
}

/// Starts a rollback with `why` (from any phase but RollingBack).
async fn roll_back(
    local: &Local,
    snap: &Snapshot,
    v: &Versioned<Volume>,
    why: String,
) -> cluster::Result<()> {
    let Some(m) = migration_of(v) else {
        return Ok(());
    };
    if m.phase == MigrationPhase::RollingBack {
        return Ok(());
    }
    let from = m.phase;
    update(local, v, |m| {
        m.set_phase(MigrationPhase::RollingBack, snap.now)?;
        m.message = why.clone();
        Ok(())
    })
    .await?;
    crate::controller::remediation("roll_back_migration");
    local
        .cluster
        .event(
            Severity::Warning,
            "volume",
            &v.object.name,
            EventReason::MigrationRollingBack,
            format!(
                "migration of {} from {} to {} rolls back (was {from}): {why}",
                v.object.name, m.source, m.target
            ),
        )
        .await;
    Ok(())
}

/// Why the migration must end when the volume is no longer attached (a
/// detach that did not go through the API, e.g. an uninstall's).
fn not_attached(vol: &Volume, m: &Migration) -> Option<String> {
    (vol.status.state != VolumeState::Attached && m.phase != MigrationPhase::RollingBack).then(
        || {
            format!(
                "volume {} is {}: a migration needs it attached",
                vol.name, vol.status.state
            )
        },
    )
}

fn timed_out(snap: &Snapshot, m: &Migration) -> Option<String> {
    let limit = snap.settings.migration_timeout();
    let age = snap.now.saturating_sub(m.phase_since);
    (m.phase.is_automatic() && age > limit.as_secs()).then(|| {
        format!(
            "step {} took {age} s, longer than migration-timeout ({} s)",
            m.phase,
            limit.as_secs()
        )
    })
}

// ---------------------------------------------------------------- source

async fn source_step(
    local: &Local,
    snap: &Snapshot,
    v: &Versioned<Volume>,
    m: &Migration,
) -> cluster::Result<()> {
    let vol = &v.object;
    if vol.status.attached_node.as_deref() != Some(m.source.as_str()) {
        return Ok(());
    }
    let target_up = snap.ready.contains(&m.target);
    let target_down = || format!("target node {} is down (its lease expired)", m.target);
    // detached meanwhile (e.g. by an uninstall): undo, except mid-switch,
    // where only the target may (its engine may already run)
    if let Some(why) = not_attached(vol, m)
        && m.phase != MigrationPhase::Switching
    {
        return roll_back(local, snap, v, why).await;
    }
    match m.phase {
        MigrationPhase::Starting | MigrationPhase::Ready | MigrationPhase::Confirming => {
            if !target_up {
                return roll_back(local, snap, v, target_down()).await;
            }
            if let Some(why) = timed_out(snap, m) {
                return roll_back(local, snap, v, why).await;
            }
            Ok(())
        }
        MigrationPhase::SourceStopping => {
            if !target_up {
                return roll_back(local, snap, v, target_down()).await;
            }
            if let Some(why) = timed_out(snap, m) {
                return roll_back(local, snap, v, why).await;
            }
            fence_source(local, snap, v).await
        }
        MigrationPhase::Switching => {
            // The target may run an engine already: roll back only once it
            // has been down long enough to be dead, not merely slow.
            if snap.node_gone(&m.target) {
                return roll_back(
                    local,
                    snap,
                    v,
                    format!(
                        "target node {} went down while switching and stayed down for node-down-timeout",
                        m.target
                    ),
                )
                .await;
            }
            Ok(())
        }
        MigrationPhase::RollingBack => {
            if !m.target_stopped && target_up {
                return Ok(());
            }
            // Serve again before saying so: a caller told "rolled back"
            // finds the source's engine running. (The volumes controller
            // holds off while the migration is recorded, and would start
            // it only a round after the clear.) If it cannot start now,
            // the volumes controller retries and reports why.
            if m.source_stopped
                && local.engines.get(&vol.name).is_none()
                && let Err(why) = super::volumes::start_engine(local, snap, vol).await
            {
                tracing::warn!(volume = %vol.name, %why, "rollback: restart the source's engine");
            }
            clear_rolled_back(local, v, m).await
        }
    }
}

/// Flushes and fences the source's engine, then lets the target switch.
async fn fence_source(
    local: &Local,
    snap: &Snapshot,
    v: &Versioned<Volume>,
) -> cluster::Result<()> {
    let name = &v.object.name;
    if let Err(why) = crate::failpoints::hit("migration.source.fence", name).await {
        return roll_back(local, snap, v, format!("fencing the source failed: {why}")).await;
    }
    let mut flush_error = None;
    if let Some(engine) = local.engines.get(name) {
        if let Err(e) = engine.fence().await {
            flush_error = Some(e.to_string());
        }
        // fenced either way: it must not serve again; a rollback starts a
        // new engine over the replicas
        local.engines.remove(name);
        local.managed_engines.remove(name);
    }
    if let Some(e) = flush_error {
        update(local, v, |m| {
            m.source_stopped = true;
            Ok(())
        })
        .await?;
        let v = local.cluster.get::<Volume>(name).await?;
        if let Some(v) = v {
            return roll_back(
                local,
                snap,
                &v,
                format!("the source's final flush failed: {e}"),
            )
            .await;
        }
        return Ok(());
    }
    update(local, v, |m| {
        m.source_stopped = true;
        m.message.clear();
        m.set_phase(MigrationPhase::Switching, snap.now)
    })
    .await?;
    local
        .cluster
        .event(
            Severity::Normal,
            "volume",
            name,
            EventReason::MigrationSourceFenced,
            format!(
                "engine of {name} on {} flushed and fenced; the target takes over",
                local.me.name
            ),
        )
        .await;
    Ok(())
}

/// Ends a rollback: the migration is cleared and the source serves (its
/// engine is started again by the volumes controller if it was fenced).
async fn clear_rolled_back(
    local: &Local,
    v: &Versioned<Volume>,
    m: &Migration,
) -> cluster::Result<()> {
    let mut next = v.clone();
    next.object.status.migration = None;
    // With its event in one transaction: a caller waiting on the volume
    // (api::migration) finds why it rolled back as soon as it sees it did.
    local
        .cluster
        .txn_with_event(
            vec![update_op(&next)],
            Severity::Warning,
            "volume",
            &v.object.name,
            EventReason::MigrationRolledBack,
            format!(
                "migration of {} to {} rolled back; {} stays its only engine: {}",
                v.object.name, m.target, m.source, m.message
            ),
        )
        .await?;
    Ok(())
}

// ---------------------------------------------------------------- target

async fn target_step(
    local: &Arc<Local>,
    snap: &Snapshot,
    v: &Versioned<Volume>,
    m: &Migration,
) -> cluster::Result<()> {
    let name = &v.object.name;
    let source_up = snap.ready.contains(&m.source);
    let handover = local.handovers.get(name);
    if let Some(why) = not_attached(&v.object, m) {
        if m.phase == MigrationPhase::Switching {
            volumes::stop_engine(local, name).await;
        }
        return roll_back(local, snap, v, why).await;
    }
    match m.phase {
        MigrationPhase::Starting => {
            if !source_up {
                return roll_back(local, snap, v, source_down(m)).await;
            }
            if handover.is_none()
                && let Err(why) = open_forward(local, snap, v).await
            {
                return roll_back(local, snap, v, why).await;
            }
            let endpoint = format!("nbd://{}/{name}", local.me.nbd_address);
            update(local, v, |m| {
                m.target_endpoint = endpoint.clone();
                m.set_phase(MigrationPhase::Ready, snap.now)
            })
            .await?;
            local
                .cluster
                .event(
                    Severity::Normal,
                    "volume",
                    name,
                    EventReason::MigrationTargetReady,
                    format!(
                        "{} serves {name} at {endpoint}, forwarding to the engine on {}; confirm with `vigil volume migrate {name} --confirm` or undo with --rollback",
                        m.target, m.source
                    ),
                )
                .await;
            Ok(())
        }
        MigrationPhase::Ready => match live_forward(source_up, handover.as_ref(), m) {
            Ok(_) => Ok(()),
            Err(why) => roll_back(local, snap, v, why).await,
        },
        MigrationPhase::Confirming => {
            let paused = match live_forward(source_up, handover.as_ref(), m) {
                Ok(h) => pause(name, h, snap.settings.migration_timeout()).await,
                Err(why) => Err(why),
            };
            match paused {
                Ok(()) => {
                    update(local, v, |m| {
                        m.set_phase(MigrationPhase::SourceStopping, snap.now)
                    })
                    .await
                }
                Err(why) => roll_back(local, snap, v, why).await,
            }
        }
        MigrationPhase::SourceStopping => Ok(()),
        MigrationPhase::Switching => switch(local, snap, v, m, handover).await,
        MigrationPhase::RollingBack => {
            if let Some(h) = local.handovers.remove(name) {
                h.close(&format!("migration rolled back: {}", m.message))
                    .await;
            }
            if !target_engine_allowed(&v.object, &local.me.name) {
                volumes::stop_engine(local, name).await;
            }
            if !m.target_stopped {
                update(local, v, |m| {
                    m.target_stopped = true;
                    Ok(())
                })
                .await?;
            }
            if !source_up {
                // nobody else can finish it
                if let Some(v) = local.cluster.get::<Volume>(name).await?
                    && let Some(m) = migration_of(&v).cloned()
                {
                    clear_rolled_back(local, &v, &m).await?;
                }
            }
            Ok(())
        }
    }
}

fn source_down(m: &Migration) -> String {
    format!("source node {} is down (its lease expired)", m.source)
}

/// The target's forwarding export while it may still serve: the source is
/// up, the export exists (an agent restart loses it) and its connection to
/// the source holds. `Err` says why the migration must roll back.
fn live_forward<'a>(
    source_up: bool,
    handover: Option<&'a Arc<HandoverDevice>>,
    m: &Migration,
) -> Result<&'a Arc<HandoverDevice>, String> {
    if !source_up {
        return Err(source_down(m));
    }
    let h = handover
        .ok_or_else(|| "the target's agent restarted: its forwarding export is gone".to_string())?;
    match h.forward_broken() {
        Some(why) => Err(format!("the forward to the source broke: {why}")),
        None => Ok(h),
    }
}

/// Pauses the target's export (in-flight requests answered, flushed
/// through the source, new ones held), within `limit`.
async fn pause(name: &str, h: &HandoverDevice, limit: Duration) -> Result<(), String> {
    crate::failpoints::hit("migration.target.pause", name)
        .await
        .map_err(|why| format!("pausing the target failed: {why}"))?;
    match tokio::time::timeout(limit, h.pause()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("pausing the target failed: {e}")),
        Err(_) => Err(format!(
            "requests in flight through the target did not finish within {} s",
            limit.as_secs()
        )),
    }
}

/// Connects the forward to the source's engine and checks every replica
/// answers from here, then publishes the handover export.
async fn open_forward(local: &Local, snap: &Snapshot, v: &Versioned<Volume>) -> Result<(), String> {
    let vol = &v.object;
    crate::failpoints::hit("migration.target.forward", &vol.name)
        .await
        .map_err(|e| format!("opening the forward failed: {e}"))?;
    // The engine here will need every replica: find out now, while the
    // source still serves, rather than after it is fenced.
    for r in snap.replicas_of(&vol.name) {
        let text = &r.object.status.address;
        if text.is_empty() {
            continue;
        }
        let address: ReplicaAddress = text
            .parse()
            .map_err(|e| format!("replica {} has a bad address: {e}", r.object.name))?;
        let was_rw = r.object.status.mode == ReplicaMode::Unreported
            || r.object.status.mode == ReplicaMode::ReadWrite;
        if let Err(f) = local.backends.reach(&address).await
            && was_rw
        {
            return Err(format!(
                "replica {} ({text}) does not answer from {}: {}",
                r.object.name, local.me.name, f.last_error
            ));
        }
    }
    let hostport = vol
        .status
        .endpoint
        .strip_prefix("nbd://")
        .and_then(|rest| rest.rsplit_once('/'))
        .map(|(hp, _)| hp.to_string())
        .ok_or_else(|| {
            format!(
                "the source has no NBD endpoint yet ({:?})",
                vol.status.endpoint
            )
        })?;
    let client = NbdClient::connect(
        &hostport,
        &vol.name,
        CONNECT_TIMEOUT,
        FORWARD_REQUEST_TIMEOUT,
    )
    .await
    .map_err(|e| format!("cannot forward to the source's engine: {e}"))?;
    if client.size() != vol.spec.size {
        client.close().await;
        return Err(format!(
            "the source serves {} bytes, the volume has {}",
            client.size(),
            vol.spec.size
        ));
    }
    local
        .handovers
        .insert(&vol.name, Arc::new(HandoverDevice::forwarding(client)));
    Ok(())
}

/// The source is fenced: start the engine here, hand the paused export
/// over to it, and commit the move in one transaction.
async fn switch(
    local: &Arc<Local>,
    snap: &Snapshot,
    v: &Versioned<Volume>,
    m: &Migration,
    handover: Option<Arc<HandoverDevice>>,
) -> cluster::Result<()> {
    let name = &v.object.name;
    let me = local.me.name.clone();
    if let Some(why) = timed_out(snap, m) {
        return roll_back(local, snap, v, why).await;
    }
    let engine = match local.engines.get(name) {
        Some(e) => e,
        None => {
            if let Err(why) = crate::failpoints::hit("migration.target.switch", name).await {
                return roll_back(
                    local,
                    snap,
                    v,
                    format!("starting the target's engine failed: {why}"),
                )
                .await;
            }
            match volumes::start_engine(local, snap, &v.object).await {
                Ok(e) => e,
                Err(why) => {
                    return roll_back(
                        local,
                        snap,
                        v,
                        format!("starting the target's engine failed: {why}"),
                    )
                    .await;
                }
            }
        }
    };
    if let Some(h) = &handover {
        h.switch_to(Arc::clone(&engine));
    }
    if let Err(why) = crate::failpoints::hit("migration.target.commit", name).await {
        volumes::stop_engine(local, name).await;
        return roll_back(local, snap, v, format!("committing the move failed: {why}")).await;
    }
    let endpoint = format!("nbd://{}/{name}", local.me.nbd_address);
    let mut next = v.clone();
    next.object.status.migration = None;
    next.object.spec.node = Some(me.clone());
    next.object.status.attached_node = Some(me.clone());
    next.object.status.endpoint = endpoint.clone();
    next.object.status.message.clear();
    next.object.set_state(VolumeState::Attached)?;
    let mut ops = vec![update_op(&next)];
    if let Some(e) = snap.engines.get(name) {
        let mut ne = e.clone();
        ne.object.spec.node = me.clone();
        ne.object.status.state = InstanceState::Running;
        ne.object.status.endpoint = endpoint.clone();
        ne.object.status.unix_endpoint = format!(
            "nbd+unix:///{name}?socket={}",
            local.me.nbd_socket.display()
        );
        ops.push(update_op(&ne));
    }
    // The move and its event in one transaction (a waiting caller reads
    // the event as soon as it sees the move).
    local
        .cluster
        .txn_with_event(
            ops,
            Severity::Normal,
            "volume",
            name,
            EventReason::MigrationCompleted,
            format!(
                "volume {name} moved from {} to {me} (took {} s); {me} runs its only engine at {endpoint}",
                m.source,
                snap.now.saturating_sub(m.started_at)
            ),
        )
        .await?;
    local.handovers.remove(name);
    Ok(())
}
