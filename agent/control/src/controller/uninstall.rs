//! Carrying out a claimed uninstall (see `cluster::uninstall` for the
//! claim and `model::uninstall` for the phases). Level-triggered like every
//! controller: whatever agent dies, the others carry on from the record.
//!
//! * **Deleting** — the *driver* (the claimer while it is ready, otherwise
//!   one ready node by rendezvous hashing of `uninstall`) moves every
//!   volume towards deletion through the volume's own state machine:
//!   attaching/attached → detaching (the attached node's agent flushes and
//!   stops its engine, or `recovery` finishes the detach when that node is
//!   down), creating/detached → deleting (each node deletes its replicas'
//!   directories and objects, the owner removes the volume and its engine
//!   object). Replica objects on a node down past `node-down-timeout` are
//!   abandoned by the driver (object deleted; the directory is discarded by
//!   that node's agent when it returns, see [`at_start`] and [`idle`]).
//!   The driver keeps the record's counts and message current.
//! * **Cleaning** — once no volume, replica or engine object is left, the
//!   driver deletes every other key of the cluster except the liveness
//!   keys and the record (events, mutes, settings — the confirmation flag
//!   with them —, disks, nodes and whatever else is stored), each chunk
//!   checked against the record's revision, then sets Done. Every other
//!   controller stands still from Cleaning on.
//! * **Done** — agents are idle ([`idle`]): no registration, no controller,
//!   only discarding leftover replica directories; they keep answering the
//!   API. An agent that starts and finds a Done record deletes it: that is
//!   a fresh install ([`at_start`]); agents still idle then register again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Snapshot, rendezvous};
use crate::cluster::events::Severity;
use crate::cluster::placement::is_managed_name;
use crate::cluster::uninstall::Cleaning;
use crate::cluster::{self, delete_op, update_op};
use crate::local::Local;
use vigil_model::EventReason;
use vigil_model::uninstall::{RECORD, Uninstall, UninstallPhase};
use vigil_model::{Object, Replica, Versioned, VolumeState, now_unix};

/// The node that drives the uninstall now.
pub fn driver(u: &Uninstall, ready: &BTreeSet<String>) -> Option<String> {
    if ready.contains(&u.by_node) {
        return Some(u.by_node.clone());
    }
    rendezvous("uninstall", ready)
}

/// Called before the agent registers. A Done record means the cluster was
/// uninstalled and this is a fresh start: leftover replica directories of
/// this node are discarded (no replica object can exist while the record
/// does) and the record is deleted. Returns whether the agent should
/// register its node and disks now (not while an uninstall is cleaning).
pub async fn at_start(local: &Local) -> cluster::Result<bool> {
    let Some(r) = local.cluster.uninstall_record().await? else {
        return Ok(true);
    };
    match r.object.phase {
        UninstallPhase::Deleting => Ok(true),
        UninstallPhase::Cleaning => {
            local.quiet.store(true, Ordering::SeqCst);
            Ok(false)
        }
        UninstallPhase::Done => {
            discard_leftovers(local).await;
            match local.cluster.delete(&r).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
            tracing::info!(
                uninstalled_by = %r.object.by_node,
                "the cluster was uninstalled; its record is removed and this agent starts a fresh install"
            );
            Ok(true)
        }
    }
}

/// The part of a controller round the uninstall decides. Returns true when
/// every other controller must stand still this round (Cleaning or Done).
pub async fn quiesce(local: &Arc<Local>, record: Option<&Versioned<Uninstall>>) -> bool {
    let Some(r) = record else {
        if local.quiet.swap(false, Ordering::SeqCst) {
            // Someone restarted an agent after the uninstall: a fresh
            // install. Join it.
            tracing::info!("uninstall record gone: registering this node again");
            if let Err(e) = super::registration::register_node(local).await {
                tracing::warn!(error = %e, "register node again");
                local.quiet.store(true, Ordering::SeqCst);
            } else if let Err(e) = super::registration::register_disks(local).await {
                tracing::warn!(error = %e, "register disks again");
            }
        }
        return false;
    };
    match r.object.phase {
        UninstallPhase::Deleting => false,
        UninstallPhase::Cleaning => {
            local.quiet.store(true, Ordering::SeqCst);
            idle(local).await;
            let ready = local.cluster.ready_nodes().await.unwrap_or_default();
            if driver(&r.object, &ready).as_deref() == Some(local.me.name.as_str())
                && let Err(e) = clean(local, r).await
                && !e.is_conflict()
            {
                tracing::warn!(error = %e, "uninstall cleaning failed; retrying");
            }
            true
        }
        UninstallPhase::Done => {
            local.quiet.store(true, Ordering::SeqCst);
            idle(local).await;
            true
        }
    }
}

/// One round of the Deleting phase (every agent; only the driver acts).
pub async fn reconcile(local: &Arc<Local>, snap: &Snapshot, record: &Versioned<Uninstall>) {
    let me = local.me.name.as_str();
    if record.object.phase != UninstallPhase::Deleting
        || driver(&record.object, &snap.ready).as_deref() != Some(me)
    {
        return;
    }
    for v in &snap.volumes {
        if let Err(e) = advance_volume(local, v).await
            && !e.is_conflict()
        {
            tracing::warn!(volume = %v.object.name, error = %e, "uninstall: volume step failed");
        }
    }
    abandon_replicas_of_gone_nodes(local, snap).await;
    // Engine objects whose volume is gone (a crash between two writes).
    for (name, e) in &snap.engines {
        if !snap.volumes.iter().any(|v| &v.object.name == name)
            && let Err(err) = local.cluster.txn(vec![delete_op(e)]).await
            && !err.is_conflict()
        {
            tracing::warn!(engine = %name, error = %err, "uninstall: delete engine object");
        }
    }
    if let Err(e) = progress(local, snap, record).await
        && !e.is_conflict()
    {
        tracing::warn!(error = %e, "uninstall: progress write failed");
    }
}

/// The next step of one volume towards deletion, through its own state
/// machine (never a shortcut around it).
async fn advance_volume(local: &Local, v: &Versioned<vigil_model::Volume>) -> cluster::Result<()> {
    let vol = &v.object;
    let mut next = v.clone();
    let (reason, message) = match vol.status.state {
        VolumeState::Creating | VolumeState::Detached => {
            next.object.set_state(VolumeState::Deleting)?;
            (
                EventReason::Deleting,
                format!("volume {} is being deleted by the uninstall", vol.name),
            )
        }
        VolumeState::Attaching | VolumeState::Attached => {
            next.object.set_state(VolumeState::Detaching)?;
            next.object.spec.node = None;
            let node = vol.status.attached_node.as_deref().unwrap_or("?");
            (
                EventReason::Detaching,
                format!(
                    "volume {} is detached from {node} by the uninstall (its engine is flushed and stopped)",
                    vol.name
                ),
            )
        }
        VolumeState::Detaching | VolumeState::Deleting => return Ok(()),
    };
    // One transaction: a driver killed here leaves both or neither, and
    // the next driver, seeing the new state, has nothing left to say.
    local
        .cluster
        .txn_with_event(
            vec![update_op(&next)],
            Severity::Normal,
            "volume",
            &vol.name,
            reason,
            message,
        )
        .await?;
    Ok(())
}

/// Replica objects of deleting volumes on nodes down past
/// `node-down-timeout`: nobody can delete their directories now, so the
/// object goes and the directory is discarded when the node returns.
async fn abandon_replicas_of_gone_nodes(local: &Local, snap: &Snapshot) {
    for r in &snap.replicas {
        let deleting = snap
            .volumes
            .iter()
            .find(|v| v.object.name == r.object.spec.volume)
            .is_none_or(|v| v.object.status.state == VolumeState::Deleting);
        let node = &r.object.spec.node;
        if !deleting || !snap.node_gone(node) {
            continue;
        }
        match local.cluster.txn(vec![delete_op(r)]).await {
            Ok(_) => {
                local
                    .cluster
                    .event(
                        Severity::Warning,
                        "replica",
                        &r.object.name,
                        EventReason::ReplicaAbandoned,
                        format!(
                            "replica {} of volume {} deleted by the uninstall while its node {node} is down (past node-down-timeout); its directory is discarded when {node} returns",
                            r.object.name, r.object.spec.volume
                        ),
                    )
                    .await;
            }
            Err(e) if e.is_conflict() => {}
            Err(e) => {
                tracing::warn!(replica = %r.object.name, error = %e, "uninstall: abandon replica")
            }
        }
    }
}

/// What still has to go, in one line.
fn remaining(snap: &Snapshot) -> String {
    let mut parts = Vec::new();
    for v in snap.volumes.iter().take(5) {
        let vol = &v.object;
        let what = match vol.status.state {
            VolumeState::Detaching => format!(
                "volume {} detaching from {}",
                vol.name,
                vol.status.attached_node.as_deref().unwrap_or("?")
            ),
            VolumeState::Deleting => {
                let left: Vec<String> = snap
                    .replicas_of(&vol.name)
                    .map(|r| waiting_replica(snap, &r.object))
                    .collect();
                if left.is_empty() {
                    format!("volume {} being removed", vol.name)
                } else {
                    format!("volume {} deleting: {}", vol.name, left.join(", "))
                }
            }
            s => format!("volume {} {s}", vol.name),
        };
        parts.push(what);
    }
    if snap.volumes.len() > 5 {
        parts.push(format!("and {} more volume(s)", snap.volumes.len() - 5));
    }
    parts.join("; ")
}

fn waiting_replica(snap: &Snapshot, r: &Replica) -> String {
    let node = &r.spec.node;
    match snap.down_for(node) {
        Some(d) => format!(
            "replica {} on {node}, which is down ({} s of node-down-timeout {} s; then it is abandoned)",
            r.name,
            d.as_secs(),
            snap.settings.node_down_timeout().as_secs()
        ),
        None if !snap.ready.contains(node) => {
            format!("replica {} on {node}, which is not ready", r.name)
        }
        None => format!("replica {} on {node}", r.name),
    }
}

/// Writes the counts and message into the record, and moves to Cleaning
/// once nothing is left.
async fn progress(
    local: &Local,
    snap: &Snapshot,
    record: &Versioned<Uninstall>,
) -> cluster::Result<()> {
    let now = now_unix();
    let me = local.me.name.clone();
    let (volumes, replicas, engines) = (
        snap.volumes.len() as u64,
        snap.replicas.len() as u64,
        snap.engines.len() as u64,
    );
    let u = &record.object;
    let mut next = record.clone();
    let n = &mut next.object;
    if volumes + replicas + engines < u.volumes_left + u.replicas_left + u.engines_left {
        n.progressed_at = now;
    }
    n.volumes_left = volumes;
    n.replicas_left = replicas;
    n.engines_left = engines;
    if u.driven_by != me {
        n.note(
            now,
            format!("driven by {me} ({} is not ready)", u.driven_by),
        );
        n.driven_by = me.clone();
    }
    if volumes + replicas + engines == 0 {
        // Re-read the data kinds linearizably before the phase change:
        // the snapshot was taken at the start of the round.
        if local.cluster.any_data_objects().await? {
            return Ok(());
        }
        n.set_phase(UninstallPhase::Cleaning, now)
            .map_err(|e| cluster::ClusterError::Decode {
                key: record.object.key(),
                message: e.to_string(),
            })?;
        n.message =
            "every volume, replica and engine is deleted; cleaning the cluster state".into();
        n.note(now, "every volume, replica and engine deleted; cleaning");
    } else {
        n.message = format!(
            "{volumes} volume(s), {replicas} replica(s), {engines} engine(s) left: {}",
            remaining(snap)
        );
    }
    if next.object != *u {
        local.cluster.update(&next).await?;
    }
    Ok(())
}

/// The Cleaning phase, by the driver: deletes every key but the kept ones,
/// then sets Done.
async fn clean(local: &Local, record: &Versioned<Uninstall>) -> cluster::Result<()> {
    let record_key = record.object.key();
    let deleted = match local.cluster.clean_for_uninstall(record).await? {
        Cleaning::DataObjectFound(key) => {
            // Cannot happen while volume creation checks the record; never
            // delete data objects here, and say so.
            tracing::warn!(%key, "uninstall cleaning found a data object; waiting");
            return Ok(());
        }
        // Something was written meanwhile (an event of a round in
        // flight): only an empty listing ends the cleaning.
        Cleaning::Deleted {
            complete: false, ..
        } => return Ok(()),
        Cleaning::Deleted {
            keys,
            complete: true,
        } => keys,
    };
    let now = now_unix();
    let mut next = record.clone();
    let u = &mut next.object;
    u.set_phase(UninstallPhase::Done, now)
        .map_err(|e| cluster::ClusterError::Decode {
            key: record_key.clone(),
            message: e.to_string(),
        })?;
    u.driven_by = local.me.name.clone();
    u.volumes_left = 0;
    u.replicas_left = 0;
    u.engines_left = 0;
    u.message = format!(
        "uninstalled: every volume, replica, engine and the cluster state are deleted (took {:.0} s); restart the agents to install again",
        now - u.started_at
    );
    u.note(
        now,
        format!(
            "UninstallCompleted by {} ({deleted} key(s) of cluster state deleted)",
            local.me.name
        ),
    );
    local.cluster.update(&next).await?;
    tracing::info!(by = %next.object.by_node, "uninstall completed");
    Ok(())
}

/// What an agent does while it stands still: stop engines it started and
/// discard replica directories of this node that have no object.
async fn idle(local: &Local) {
    for e in local.engines.all() {
        if local.managed_engines.contains(e.name()) {
            super::volumes::stop_engine(local, e.name()).await;
        }
    }
    discard_leftovers(local).await;
}

/// Discards this node's replica directories with vigil-generated names that
/// have no replica object (checked by a linearizable read each) and that no
/// engine here uses. Directories made by `vigil replica create` (other
/// names) are never touched.
async fn discard_leftovers(local: &Local) {
    let mut names = BTreeSet::new();
    for d in local.replicas.disks() {
        let Ok(entries) = std::fs::read_dir(d.replica_dir()) else {
            continue;
        };
        for e in entries.flatten() {
            if let Some(n) = e.file_name().to_str()
                && is_managed_name(n)
            {
                names.insert((n.to_string(), e.path()));
            }
        }
    }
    for (name, dir) in names {
        match local.cluster.get::<Replica>(&name).await {
            Ok(None) => {}
            _ => continue,
        }
        let used = local.engines.all().iter().any(|e| {
            e.status().replicas.iter().any(|s| {
                vigil_engine::address::ReplicaAddress::name_of(&s.address) == name.as_str()
            })
        });
        if used {
            continue;
        }
        let replicas = Arc::clone(&local.replicas);
        let n2 = name.clone();
        let result = tokio::task::spawn_blocking(move || match replicas.delete(&n2) {
            Ok(true) => Ok(()),
            Ok(false) => std::fs::remove_dir_all(&dir),
            Err(e) => Err(e),
        })
        .await;
        match result {
            Ok(Ok(())) => {
                tracing::info!(replica = %name, "replica directory of the uninstalled cluster discarded")
            }
            Ok(Err(e)) => {
                tracing::warn!(replica = %name, error = %e, "cannot discard replica directory")
            }
            Err(e) => tracing::warn!(replica = %name, error = %e, "discard task failed"),
        }
    }
}

/// Appends a line to the record's history (best effort; a lost race is
/// retried by `modify`).
pub async fn note(local: &Local, line: String) {
    let now = now_unix();
    let res = local
        .cluster
        .modify::<Uninstall, _>(RECORD, |u| {
            if u.is_done() {
                return Ok(false);
            }
            u.note(now, &line);
            Ok(true)
        })
        .await;
    if let Err(e) = res {
        tracing::debug!(error = %e, "uninstall history note not written");
    }
}
