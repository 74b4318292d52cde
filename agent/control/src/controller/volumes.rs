//! Volume transitions this agent owns (see [`super::owner_of`]):
//! creating → detached when every replica runs; attaching → attached once
//! the engine serves here; detaching → detached once it is stopped;
//! deleting → gone once the replicas are. Also keeps an attached volume's
//! engine running (after an agent restart it is started again with no
//! command) and its robustness and replica modes current, and stops any
//! engine this node runs for a volume no longer attached here.

use std::sync::Arc;

use vigil_engine::address::ReplicaAddress;
use vigil_engine::engine::{FaultReason, Mode, ReplicaSpec};

use super::{Snapshot, engine_report, owner_of, replenish};
use crate::cluster::events::Severity;
use crate::cluster::{self, Cluster, delete_op, update_op};
use crate::local::Local;
use vigil_model::EventReason;
use vigil_model::volume::Robustness;
use vigil_model::{Engine, InstanceState, Versioned, Volume, VolumeState};
use vigil_store::Expect;

pub async fn reconcile(local: &Arc<Local>, snap: &Snapshot) {
    let me = local.me.name.as_str();
    for v in &snap.volumes {
        let vol = &v.object;
        // An engine here for a volume not attached here must stop first:
        // two engines must never serve one volume.
        if vol.status.attached_node.as_deref() != Some(me)
            && local.engines.get(&vol.name).is_some()
            && !super::migration::target_engine_allowed(vol, me)
        {
            stop_engine(local, &vol.name).await;
        }
        if owner_of(vol, &snap.ready).as_deref() != Some(me) {
            continue;
        }
        let result = match vol.status.state {
            VolumeState::Creating => finish_creating(local, snap, v).await,
            VolumeState::Deleting => finish_deleting(local, snap, v).await,
            VolumeState::Attaching | VolumeState::Attached => serve(local, snap, v).await,
            VolumeState::Detaching => finish_detaching(local, snap, v).await,
            VolumeState::Detached => Ok(()),
        };
        match result {
            Ok(()) => {}
            Err(e) if e.is_conflict() => {}
            Err(e) => tracing::warn!(volume = %vol.name, error = %e, "volume reconcile failed"),
        }
    }
    // Engines left from volumes that no longer exist.
    for e in local.engines.all() {
        if local.managed_engines.contains(e.name())
            && !snap.volumes.iter().any(|v| v.object.name == e.name())
        {
            stop_engine(local, e.name()).await;
        }
    }
}

async fn finish_creating(
    local: &Local,
    snap: &Snapshot,
    v: &Versioned<Volume>,
) -> cluster::Result<()> {
    let replicas: Vec<_> = snap.replicas_of(&v.object.name).collect();
    if replicas.is_empty()
        || replicas
            .iter()
            .any(|r| r.object.status.state != InstanceState::Running)
    {
        return Ok(());
    }
    let mut next = v.clone();
    next.object.set_state(VolumeState::Detached)?;
    local.cluster.update(&next).await?;
    local
        .cluster
        .event(
            Severity::Normal,
            "volume",
            &v.object.name,
            EventReason::Created,
            format!(
                "volume {} created with {} replica(s)",
                v.object.name,
                replicas.len()
            ),
        )
        .await;
    Ok(())
}

async fn finish_deleting(
    local: &Local,
    snap: &Snapshot,
    v: &Versioned<Volume>,
) -> cluster::Result<()> {
    if snap.replicas_of(&v.object.name).next().is_some() {
        return Ok(());
    }
    let mut ops = vec![delete_op(v)];
    if let Some(e) = snap.engines.get(&v.object.name) {
        ops.push(delete_op(e));
    }
    // Its in-sync set goes with it: a volume created again under the name
    // has new replicas. (Its epoch counter stays: epochs never go back.)
    ops.push(cluster::insync::delete_op(&v.object.name));
    local.cluster.txn(ops).await?;
    local
        .cluster
        .event(
            Severity::Normal,
            "volume",
            &v.object.name,
            EventReason::Deleted,
            format!("volume {} deleted", v.object.name),
        )
        .await;
    Ok(())
}

async fn finish_detaching(
    local: &Local,
    snap: &Snapshot,
    v: &Versioned<Volume>,
) -> cluster::Result<()> {
    let name = &v.object.name;
    // a migration rolls back first (`controller::migration`): the target
    // must have closed its export before the volume counts as detached
    if v.object.status.migration.is_some() {
        return Ok(());
    }
    stop_engine(local, name).await;
    let mut next = v.clone();
    next.object.set_state(VolumeState::Detached)?;
    next.object.status.attached_node = None;
    next.object.status.endpoint.clear();
    next.object.status.robustness = Robustness::Unknown;
    next.object.status.message.clear();
    let mut ops = vec![update_op(&next)];
    if let Some(e) = snap.engines.get(name) {
        ops.push(delete_op(e));
    }
    local.cluster.txn(ops).await?;
    local
        .cluster
        .event(
            Severity::Normal,
            "volume",
            name,
            EventReason::Detached,
            format!("volume {name} detached from {}", local.me.name),
        )
        .await;
    Ok(())
}

/// Flushes, fences and stops this node's engine for `name`, if any. The
/// fence matters: NBD connections still open to it get errors from now
/// on instead of writing to replicas another engine may own next.
pub async fn stop_engine(local: &Local, name: &str) {
    if let Some(e) = local.engines.remove(name) {
        if let Some(f) = e.fenced_by_newer() {
            // A replica refused it for a newer engine's epoch: say which
            // engine lost the volume, to which, and what its clients saw
            // (an event, and ENGINE_FENCED for a while).
            record_fenced(&local.cluster, name, e.epoch(), &f.message).await;
            local
                .cluster
                .event(
                    Severity::Warning,
                    "volume",
                    name,
                    EventReason::EngineFenced,
                    format!(
                        "the engine of {name} on {} (epoch {}) was fenced: replica {} refused it ({}); a newer engine owns the volume, and the fenced engine's clients got I/O errors from then on",
                        local.me.name,
                        e.epoch(),
                        f.replica,
                        f.message
                    ),
                )
                .await;
        }
        if let Err(err) = e.fence().await {
            tracing::warn!(volume = %name, error = %err, "flush before stopping the engine failed");
        }
        local.managed_engines.remove(name);
        tracing::info!(volume = %name, "engine stopped");
    }
}

/// Records in the volume that this node's engine of `epoch` was fenced by
/// a newer one (ENGINE_FENCED reads it). Best effort: the event says it too.
pub(super) async fn record_fenced(cluster: &Cluster, name: &str, epoch: u64, message: &str) {
    let fenced = vigil_model::volume::FencedEngine {
        node: cluster.node().to_string(),
        epoch,
        message: message.to_string(),
        at_unix: vigil_model::now_unix() as u64,
    };
    let recorded = cluster
        .modify::<Volume, _>(name, |v| {
            v.status.fenced = Some(fenced.clone());
            Ok(true)
        })
        .await;
    if let Err(e) = recorded {
        tracing::warn!(volume = %name, error = %e, "cannot record the fenced engine in the volume");
    }
}

/// Keeps the engine of an attaching or attached volume running here and
/// its status current.
async fn serve(local: &Local, snap: &Snapshot, v: &Versioned<Volume>) -> cluster::Result<()> {
    let vol = &v.object;
    let me = &local.me.name;
    if vol.spec.node.as_deref() != Some(me.as_str()) {
        // attached here but the user now wants it elsewhere or detached:
        // the API moves it to detaching; nothing to serve meanwhile.
        return Ok(());
    }
    let engine = match local.engines.get(&vol.name) {
        Some(e) => e,
        // fenced (or being fenced) for a migration's target: serving again
        // waits for the migration to finish or roll back
        None if super::migration::holds_source_engine(vol) => return Ok(()),
        None => match start_engine(local, snap, vol).await {
            Ok(e) => e,
            Err(message) => {
                // Not served: faulted, whatever the last engine reported.
                if vol.status.message != message || vol.status.robustness != Robustness::Faulted {
                    let mut next = v.clone();
                    next.object.status.message = message.clone();
                    next.object.status.robustness = Robustness::Faulted;
                    local.cluster.update(&next).await?;
                    local
                        .cluster
                        .event(
                            Severity::Warning,
                            "volume",
                            &vol.name,
                            EventReason::AttachFailed,
                            message,
                        )
                        .await;
                }
                return Ok(());
            }
        },
    };
    if engine.fenced_by_newer().is_some() {
        // A newer engine claimed the replicas although the volume is still
        // attached here (a start that raced this one, or a low-level engine
        // of the same name): this one can serve nothing more. Stop it; the
        // next round starts a new engine, with a newer epoch, if the volume
        // is still attached here then.
        stop_engine(local, &vol.name).await;
        return Ok(());
    }
    engine.set_min_rw(
        snap.settings
            .min_replicas_to_write()
            .min(vol.spec.replicas as usize),
        snap.settings.engine_on_lease_loss(),
    );
    let migrating = vol.status.migration.is_some();
    if !migrating && super::salvage::restart_if_all_failed(local, snap, vol, &engine).await {
        return Ok(());
    }
    let status = engine.status();
    let rw = status
        .replicas
        .iter()
        .filter(|r| r.mode == Mode::ReadWrite)
        .count();
    let robustness = if rw == 0 {
        Robustness::Faulted
    } else if rw >= vol.spec.replicas as usize {
        Robustness::Healthy
    } else {
        Robustness::Degraded
    };
    let endpoint = format!("nbd://{}/{}", local.me.nbd_address, vol.name);
    let message = status.unavailable_reason.clone().unwrap_or_default();
    let mut next = v.clone();
    next.object.set_state(VolumeState::Attached)?;
    // this node's maintenance engine was stopped before the engine started;
    // one held by a node that is down was ignored (a dead agent runs none)
    if next
        .object
        .status
        .maintenance
        .as_ref()
        .is_some_and(|m| m.node == *me || !snap.ready.contains(&m.node))
    {
        next.object.status.maintenance = None;
    }
    next.object.status.endpoint = endpoint.clone();
    next.object.status.robustness = robustness;
    next.object.status.message = message;
    next.object.status.writes_blocked = engine.below_min_rw().unwrap_or_default();
    let mut ops = Vec::new();
    if next.object != *vol {
        ops.push(update_op(&next));
    }
    // the engine object reports the instance
    let unix = format!(
        "nbd+unix:///{}?socket={}",
        vol.name,
        local.me.nbd_socket.display()
    );
    let want = |e: &mut Engine| {
        e.spec.node = me.clone();
        e.status.state = InstanceState::Running;
        e.status.endpoint = endpoint.clone();
        e.status.unix_endpoint = unix.clone();
        e.status.message.clear();
    };
    match snap.engines.get(&vol.name) {
        Some(e) => {
            let mut ne = e.clone();
            want(&mut ne.object);
            if ne.object != e.object {
                if !e.object.status.state.allows(InstanceState::Running) {
                    ne.object.status.state = InstanceState::Starting;
                }
                ops.push(update_op(&ne));
            }
        }
        None => {
            let mut ne = Engine::new(&vol.name, me);
            want(&mut ne);
            ops.push(cluster::put_op(&ne, Expect::Absent));
        }
    }
    // replica modes, faults and rebuilds as this engine sees them
    let now = vigil_model::now_unix() as u64;
    let changes = engine_report::changes(snap.replicas_of(&vol.name), &status, now);
    ops.extend(changes.iter().map(|c| update_op(&c.replica)));
    // Membership stays as it is while a migration runs: the target checked
    // these replicas and will start its engine over them.
    if !migrating {
        super::repair::fail_damaged(local, snap, vol, &engine).await;
        replenish::rejoin(local, snap, vol, &engine, &status, now).await;
    }
    if ops.is_empty() {
        return Ok(());
    }
    local.cluster.txn(ops).await?;
    for c in changes {
        if let Some((warning, reason, message)) = c.event {
            let sev = if warning {
                Severity::Warning
            } else {
                Severity::Normal
            };
            local
                .cluster
                .event(sev, "replica", &c.replica.object.name, reason, message)
                .await;
        }
    }
    if vol.status.state == VolumeState::Attaching {
        local
            .cluster
            .event(
                Severity::Normal,
                "volume",
                &vol.name,
                EventReason::Attached,
                format!("volume {} attached on {me}: {endpoint}", vol.name),
            )
            .await;
    } else if vol.status.robustness != robustness {
        let sev = if robustness == Robustness::Healthy {
            Severity::Normal
        } else {
            Severity::Warning
        };
        local
            .cluster
            .event(
                sev,
                "volume",
                &vol.name,
                EventReason::RobustnessChanged,
                format!(
                    "volume {} is {} ({rw} of {} replicas RW)",
                    vol.name,
                    robustness.as_str(),
                    vol.spec.replicas
                ),
            )
            .await;
    }
    Ok(())
}

/// Starts the volume's engine here and puts it in the NBD catalog — not
/// while another ready node holds a maintenance engine for the volume
/// (it stops it as soon as it sees the volume attaching; two engines must
/// never write the replicas at once). This node's own maintenance engine
/// is stopped first.
pub(super) async fn start_engine(
    local: &Local,
    snap: &Snapshot,
    vol: &Volume,
) -> Result<Arc<vigil_engine::engine::Engine>, String> {
    super::maintenance::before_attach(local, snap, vol).await?;
    let engine = open_engine(local, snap, vol).await?;
    if !local.engines.insert(Arc::clone(&engine)) {
        engine.shutdown();
        return Err(format!(
            "an engine named {} already runs on this node (created with `vigil engine create`)",
            vol.name
        ));
    }
    local.managed_engines.insert(&vol.name);
    super::salvage::report_start(local, snap, vol, &engine).await;
    tracing::info!(volume = %vol.name, "engine started");
    Ok(engine)
}

/// Starts an engine for the volume over every replica that has an address
/// (not put in the NBD catalog: the caller decides what serves it).
///
/// Not while the only replicas that may hold the newest data are away: if
/// no replica that was RW in the last engine (as its agent recorded the
/// modes) answers now, and one that was RW cannot be reached on a node not
/// yet down for `node-down-timeout`, wait for it — an engine picks the
/// newest among the replicas that answer at its start, and after a
/// cluster-wide crash the first node back may hold one that had already
/// dropped out. Replicas that were RW together are equally new, so one of
/// them answering is enough. Once the node has been down that long, start
/// from what is there. (A node whose lease has not lapsed yet counts as
/// not down: readiness says nothing about reachability for 10 s.)
pub(super) async fn open_engine(
    local: &Local,
    snap: &Snapshot,
    vol: &Volume,
) -> Result<Arc<vigil_engine::engine::Engine>, String> {
    let was_rw = |r: &vigil_model::Replica| !r.status.lost && r.status.mode.is_rw_or_unreported();
    let mut specs = Vec::new();
    let mut rw_answered = false;
    let mut awaited = None;
    // A replica whose own agent found its files damaged is left out while
    // a sound one can serve: the engine must not pick it as a source.
    let sound = |r: &Versioned<vigil_model::Replica>| {
        r.object.status.integrity.is_none() && !r.object.status.address.is_empty()
    };
    let any_sound = snap.replicas_of(&vol.name).any(sound);
    // The epoch first: every replica this engine opens is claimed for it,
    // and from then on refuses any older engine of the volume (one that
    // was frozen or cut off and still thinks it serves).
    let epoch = local
        .cluster
        .next_epoch(&vol.name)
        .await
        .map_err(|e| format!("take the volume's next engine epoch: {e}"))?;
    // The in-sync set, when one was recorded, is the only source: its
    // members hold every acknowledged write, the others may not.
    let in_sync = local
        .cluster
        .in_sync(&vol.name)
        .await
        .map_err(|e| format!("read the volume's in-sync set: {e}"))?
        .filter(|set| {
            // Every member retired (their replica objects deleted, e.g. lost
            // with a replaced disk while the volume was detached): the set
            // names nothing that exists, so it cannot say anything.
            let known = snap
                .replicas_of(&vol.name)
                .any(|r| set.members.contains(&r.object.name));
            if !known {
                tracing::warn!(volume = %vol.name, members = ?set.members, "no member of the in-sync set exists any more; starting as for a volume without one");
            }
            known
        });
    let mut member_answered = false;
    let mut members_away = Vec::new();
    let mut others_up = Vec::new();
    // Replicas that joined a generation newer than the store's set.
    let mut newer: Vec<(String, String, u64)> = Vec::new();
    for r in snap.replicas_of(&vol.name) {
        let addr_text = &r.object.status.address;
        if let Some(set) = &in_sync
            && !set.members.contains(&r.object.name)
        {
            // Not served from: it starts ERR and is rebuilt from a member.
            // But asked first which generation it joined: one newer than
            // the set's means the store is older than that replica.
            if !addr_text.is_empty() {
                if let Some(g) = super::in_sync::probe_generation(local, addr_text, epoch).await
                    && g > set.generation
                {
                    newer.push((r.object.name.clone(), r.object.spec.node.clone(), g));
                }
                others_up.push(r.object.name.clone());
                specs.push(ReplicaSpec {
                    address: addr_text.clone(),
                    backend: Err(vigil_engine::engine::Fault::now(
                        FaultReason::Stale,
                        format!(
                            "not in the volume's in-sync set (generation {}: {}): it may lack acknowledged writes; rebuilt from a member",
                            set.generation,
                            set.members.join(", ")
                        ),
                    )),
                });
            }
            continue;
        }
        if addr_text.is_empty() || (any_sound && !sound(r)) {
            if in_sync.is_some() {
                members_away.push(r);
            }
            continue;
        }
        let address: ReplicaAddress = match addr_text.parse() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(replica = %r.object.name, error = %e, "bad replica address");
                continue;
            }
        };
        let backend = local.backends.open(&address, epoch).await;
        if in_sync.is_some() {
            match &backend {
                Ok(_) => member_answered = true,
                Err(_) => members_away.push(r),
            }
        }
        if was_rw(&r.object) {
            match &backend {
                Ok(_) => rw_answered = true,
                Err(f)
                    if matches!(
                        f.reason,
                        FaultReason::Unreachable
                            | FaultReason::ConnectionLost
                            | FaultReason::Timeout
                    ) && !snap.node_gone(&r.object.spec.node) =>
                {
                    awaited.get_or_insert(r);
                }
                Err(_) => {}
            }
        }
        specs.push(ReplicaSpec {
            address: addr_text.clone(),
            backend,
        });
    }
    if let Some(set) = &in_sync {
        super::in_sync::refuse_newer(&vol.name, set, &newer)?;
    }
    if let Some(set) = &in_sync
        && !member_answered
    {
        let away: Vec<String> = members_away
            .iter()
            .map(|r| format!("{} on node {}", r.object.name, r.object.spec.node))
            .collect();
        let first = members_away
            .first()
            .map(|r| format!("replica {} on node {}", r.object.name, r.object.spec.node))
            .unwrap_or_else(|| format!("replica {}", set.members.join(", ")));
        let fix = match others_up.first() {
            Some(other) => format!(
                "if it is gone for good, accept losing what only it holds: `vigil volume salvage {} --replica {other} --accept-data-loss`",
                vol.name
            ),
            None => "no other replica of the volume is running either".to_string(),
        };
        return Err(format!(
            "waiting for {first}: the volume's in-sync set (generation {}) is {}, and no member answers ({}); the other replicas may lack acknowledged writes, so the volume does not start from them; {fix}",
            set.generation,
            set.members.join(", "),
            away.join("; "),
        ));
    }
    if in_sync.is_none()
        && !rw_answered
        && let Some(r) = awaited
    {
        let node = &r.object.spec.node;
        return Err(format!(
            "waiting for replica {} on node {node} (down {} s of node-down-timeout {} s): it was RW in the last engine and no replica answering now was, so it may hold newer data",
            r.object.name,
            snap.down_for(node).unwrap_or_default().as_secs(),
            snap.settings.node_down_timeout().as_secs()
        ));
    }
    if specs.is_empty() {
        return Err(format!(
            "no replica of {} is running; waiting for one",
            vol.name
        ));
    }
    let engine = vigil_engine::engine::Engine::start(
        &vol.name,
        vol.spec.size,
        epoch,
        specs,
        local.engine.clone(),
    )
    .await
    .map_err(|e| format!("start engine: {e}"))?;
    if let Some(set) = &in_sync {
        // Members report their generation at start: above the set's, the
        // store lost a change too.
        let newer: Vec<(String, String, u64)> = engine
            .start_revisions()
            .iter()
            .filter_map(|s| {
                let g = s.in_sync_generation.filter(|g| *g > set.generation)?;
                let r = snap
                    .replicas_of(&vol.name)
                    .find(|r| r.object.status.address == s.address)?;
                Some((r.object.name.clone(), r.object.spec.node.clone(), g))
            })
            .collect();
        if let Err(e) = super::in_sync::refuse_newer(&vol.name, set, &newer) {
            engine.shutdown();
            return Err(e);
        }
    }
    // The members that did not come up RW are out from now on: recorded
    // before the engine serves, and every later change before the engine
    // acknowledges anything more.
    if let Err(e) = super::in_sync::record_now(&local.cluster, &vol.name, &engine).await {
        engine.shutdown();
        return Err(e);
    }
    super::in_sync::keep_recorded(local.cluster.clone(), vol.name.clone(), &engine);
    Ok(engine)
}
