//! The replica instances of this node: bring each replica object whose
//! `spec.node` is this node to life on its disk, report it running (with
//! its address) or in error (with why), and delete it when its volume is
//! being deleted or gone.

use std::sync::Arc;

use super::Snapshot;
use crate::cluster::events::Severity;
use crate::local::Local;
use crate::local::replicas::CreateError;
use vigil_model::EventReason;
use vigil_model::disk::DiskState;
use vigil_model::replica::ReplicaSpec;
use vigil_model::{InstanceState, Replica, Versioned, Volume, VolumeState};

pub async fn reconcile(local: &Arc<Local>, snap: &Snapshot) {
    let me = local.me.name.as_str();
    for r in snap.replicas.iter().filter(|r| r.object.spec.node == me) {
        let volume = snap
            .volumes
            .iter()
            .find(|v| v.object.name == r.object.spec.volume);
        let mut doomed = volume.is_none_or(|v| v.object.status.state == VolumeState::Deleting);
        if doomed && volume.is_none() {
            // Deleting data on the strength of an absence: confirm it with a
            // fresh linearizable read first.
            match local.cluster.get::<Volume>(&r.object.spec.volume).await {
                Ok(None) => {}
                Ok(Some(v)) => doomed = v.object.status.state == VolumeState::Deleting,
                Err(_) => doomed = false,
            }
        }
        let result = if doomed {
            remove(local, r).await
        } else {
            ensure(local, snap, r).await
        };
        if let Err(e) = result
            && !e.is_conflict()
        {
            tracing::warn!(replica = %r.object.name, error = %e, "replica reconcile failed");
        }
    }
}

/// Deletes the replica's directory, then its object.
async fn remove(local: &Arc<Local>, r: &Versioned<Replica>) -> crate::cluster::Result<()> {
    let name = r.object.name.clone();
    let replicas = Arc::clone(&local.replicas);
    let n2 = name.clone();
    match tokio::task::spawn_blocking(move || replicas.delete(&n2)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(replica = %name, error = %e, "cannot delete replica directory");
            return Ok(());
        }
        Err(e) => {
            tracing::warn!(replica = %name, error = %e, "delete task failed");
            return Ok(());
        }
    }
    local.cluster.delete(r).await?;
    local
        .cluster
        .event(
            Severity::Normal,
            "replica",
            &name,
            EventReason::ReplicaDeleted,
            format!("replica {name} of volume {} deleted", r.object.spec.volume),
        )
        .await;
    Ok(())
}

/// Creates the replica if it is not on this node yet and reports its state.
async fn ensure(
    local: &Arc<Local>,
    snap: &Snapshot,
    r: &Versioned<Replica>,
) -> crate::cluster::Result<()> {
    let spec = &r.object.spec;
    let mut lost = false;
    let (state, message) = match local.replicas.held(&r.object.name) {
        Some(h) if h.disk == spec.disk && h.replica.size() < spec.size => {
            grow(&r.object, h.replica).await
        }
        Some(h) if h.disk == spec.disk => (InstanceState::Running, String::new()),
        Some(h) => (
            InstanceState::Error,
            format!("found on disk {} instead of {}", h.disk, spec.disk),
        ),
        None if let Some(d) = local.replicas.damaged(&r.object.name) => (
            InstanceState::Error,
            format!(
                "not served: {} is {} ({})",
                d.file.display(),
                d.kind.as_str(),
                d.message
            ),
        ),
        None if r.object.status.state == InstanceState::Starting => create(local, &r.object).await,
        None => {
            let (message, gone) = why_absent(local, snap, &r.object.name, spec);
            lost = gone;
            (InstanceState::Error, message)
        }
    };
    // Error → Running passes through Starting (the table has no shortcut).
    let state = if r.object.status.state.allows(state) {
        state
    } else {
        InstanceState::Starting
    };
    let address = if state == InstanceState::Running {
        format!("tcp://{}/{}", local.me.replica_address, r.object.name)
    } else {
        String::new()
    };
    let st = &r.object.status;
    if st.state == state && st.address == address && st.message == message && st.lost == lost {
        return Ok(());
    }
    let mut next = r.clone();
    next.object.status.lost = lost;
    next.object.status.state = state;
    next.object.status.address = address;
    next.object.status.message = message.clone();
    local.cluster.update(&next).await?;
    if state == InstanceState::Error && st.state != InstanceState::Error {
        local
            .cluster
            .event(
                Severity::Warning,
                "replica",
                &r.object.name,
                EventReason::ReplicaFailed,
                message,
            )
            .await;
    }
    Ok(())
}

/// Why a replica that ran here is not on this node any more, and whether
/// its data is gone for good: its disk was replaced (another UUID at the
/// path) or its directory is missing from a disk that is still ours (wiped).
/// A disk that is merely missing may come back, so that is not "lost".
fn why_absent(local: &Local, snap: &Snapshot, name: &str, spec: &ReplicaSpec) -> (String, bool) {
    if let Some(d) = local.replicas.disks().iter().find(|d| d.uuid == spec.disk) {
        let dir = d.replica_dir().join(name);
        if dir.exists() {
            // There but not opened: damaged, not gone. Never "lost" — its
            // data may be the last copy.
            return (
                format!(
                    "replica directory {} could not be opened (see the agent's log)",
                    dir.display()
                ),
                false,
            );
        }
        return (
            format!(
                "replica directory is missing from disk {} (wiped?); its data is gone and it is replaced",
                spec.disk
            ),
            true,
        );
    }
    match snap.disks.get(&spec.disk).map(|d| &d.object) {
        Some(d) if d.status.state == DiskState::Replaced => (
            format!(
                "disk replaced: {}; the replica's data is gone and it is replaced",
                d.status.message
            ),
            true,
        ),
        Some(d) => (
            format!(
                "disk {} at {} is {}: {}",
                d.uuid,
                d.spec.path,
                d.status.state.as_str(),
                d.status.message
            ),
            false,
        ),
        None => (
            format!(
                "disk {} is no longer registered; the replica's data is gone",
                spec.disk
            ),
            true,
        ),
    }
}

async fn create(local: &Arc<Local>, r: &Replica) -> (InstanceState, String) {
    let replicas = Arc::clone(&local.replicas);
    let (name, size, disk) = (r.name.clone(), r.spec.size, r.spec.disk.clone());
    let res = tokio::task::spawn_blocking(move || replicas.create(&name, size, Some(&disk))).await;
    match res {
        Ok(Ok(_)) | Ok(Err(CreateError::Exists(_))) => {
            tracing::info!(replica = %r.name, volume = %r.spec.volume, disk = %r.spec.disk, "replica created");
            (InstanceState::Running, String::new())
        }
        Ok(Err(e)) => (InstanceState::Error, format!("create replica: {e}")),
        Err(e) => (InstanceState::Error, format!("create task failed: {e}")),
    }
}

/// Grows a replica whose volume was expanded (offline: the volume is
/// detached, so no engine has it open).
async fn grow(
    r: &Replica,
    replica: Arc<vigil_engine::replica::Replica>,
) -> (InstanceState, String) {
    let size = r.spec.size;
    match tokio::task::spawn_blocking(move || replica.expand(size)).await {
        Ok(Ok(())) => {
            tracing::info!(replica = %r.name, size, "replica expanded");
            (InstanceState::Running, String::new())
        }
        Ok(Err(e)) => (InstanceState::Error, format!("expand to {size} bytes: {e}")),
        Err(e) => (InstanceState::Error, format!("expand task failed: {e}")),
    }
}
