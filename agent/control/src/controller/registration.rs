//! Registering this node and its disks, and keeping the node's liveness
//! lease alive.
//!
//! The node object keeps what the operator set (scheduling, eviction,
//! tags) across restarts; addresses, labels and status come from the agent.
//! A disk registered for this node that is not among the disks found now is
//! marked `missing`, or `replaced` when another disk now sits at its path.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::disk_condition::{self, Evidence, Fault, Probe};
use crate::cluster;
use crate::cluster::events::Severity;
use crate::local::Local;
use vigil_model::EventReason;
use vigil_model::disk::{DiskSpec, DiskState, DiskStatus, DiskTrouble};
use vigil_model::node::{NodeSpec, NodeStatus};
use vigil_model::{Disk, Node, now_unix};
use vigil_store::{LeaseId, StoreError};

/// How long the node stays ready without a keep-alive.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// Writes the node object, creating it on first start.
pub async fn register_node(local: &Local) -> cluster::Result<()> {
    let c = &local.cluster;
    let me = &local.me;
    let spec = NodeSpec {
        api_address: local.me.api_address.clone(),
        replica_address: local.me.replica_address.clone(),
        nbd_address: local.me.nbd_address.clone(),
        labels: me.labels.clone(),
        tags: Vec::new(),
        allow_scheduling: true,
        eviction_requested: false,
    };
    let status = NodeStatus {
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: now_unix(),
        store: c.store_kind().to_string(),
        down_since: None,
        eviction: None,
        kernel_io: None,
    };
    c.retry(|| async {
        match c.get::<Node>(&me.name).await? {
            Some(mut v) => {
                let keep = &v.object.spec;
                v.object.spec = NodeSpec {
                    tags: keep.tags.clone(),
                    allow_scheduling: keep.allow_scheduling,
                    eviction_requested: keep.eviction_requested,
                    ..spec.clone()
                };
                v.object.status = NodeStatus {
                    eviction: v.object.status.eviction.take(),
                    kernel_io: v.object.status.kernel_io.take(),
                    ..status.clone()
                };
                c.update(&v).await.map(|_| ())
            }
            None => c
                .create(&Node {
                    name: me.name.clone(),
                    spec: spec.clone(),
                    status: status.clone(),
                })
                .await
                .map(|_| ()),
        }
    })
    .await
}

/// Registers the disks found now and marks the node's other disks missing
/// or replaced.
pub async fn register_disks(local: &Local) -> cluster::Result<()> {
    let c = &local.cluster;
    let me = &local.me.name;
    for d in local.replicas.disks() {
        let usage = d.usage().unwrap_or_default();
        let path = d.path.display().to_string();
        // created now (not on a later registration of the same process)
        let created = c
            .retry(|| async {
                match c.get::<Disk>(&d.uuid).await? {
                    Some(mut v) => {
                        v.object.spec.node = me.clone();
                        v.object.spec.path = path.clone();
                        v.object.status.state = DiskState::Ready;
                        v.object.status.capacity_bytes = usage.capacity;
                        v.object.status.available_bytes = usage.available;
                        v.object.status.updated_at = now_unix();
                        v.object.status.message.clear();
                        c.update(&v).await.map(|_| false)
                    }
                    None => c
                        .create(&Disk {
                            uuid: d.uuid.clone(),
                            spec: DiskSpec {
                                node: me.clone(),
                                path: path.clone(),
                                tags: Vec::new(),
                                allow_scheduling: true,
                                reserved_bytes: 0,
                            },
                            status: DiskStatus {
                                state: DiskState::Ready,
                                capacity_bytes: usage.capacity,
                                available_bytes: usage.available,
                                scheduled_bytes: 0,
                                updated_at: now_unix(),
                                message: String::new(),
                                ..DiskStatus::default()
                            },
                        })
                        .await
                        .map(|_| true),
                }
            })
            .await?;
        if created {
            c.event(
                Severity::Normal,
                "disk",
                &d.uuid,
                EventReason::DiskRegistered,
                format!("new disk {} at {} on {me}", d.uuid, d.path.display()),
            )
            .await;
        }
    }
    for v in c.list::<Disk>().await? {
        let disk = &v.object;
        if disk.spec.node != *me || local.replicas.disks().iter().any(|d| d.uuid == disk.uuid) {
            continue;
        }
        let now_there = local
            .replicas
            .disks()
            .iter()
            .find(|d| d.path.display().to_string() == disk.spec.path);
        let (state, message, reason) = match now_there {
            Some(new) => (
                DiskState::Replaced,
                format!(
                    "disk at {} now has UUID {} (was {}): wiped, reformatted or swapped",
                    disk.spec.path, new.uuid, disk.uuid
                ),
                EventReason::DiskReplaced,
            ),
            None => (
                DiskState::Missing,
                format!("disk {} is no longer given to this node", disk.spec.path),
                EventReason::DiskMissing,
            ),
        };
        if disk.status.state == state {
            continue;
        }
        let mut next = v.clone();
        next.object.status.state = state;
        next.object.status.message = message.clone();
        next.object.status.updated_at = now_unix();
        match c.update(&next).await {
            Ok(_) => {
                c.event(Severity::Warning, "disk", &disk.uuid, reason, message)
                    .await
            }
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How long a probe write may take before the disk counts as failing (a
/// hung disk is as bad as one that errs).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Refreshes capacity, free space and scheduled bytes of this node's
/// disks, and whether each is failing or out of space (see
/// [`super::disk_condition`]); raises an event when either starts or ends.
pub async fn refresh_disks(local: &Local) {
    let c = &local.cluster;
    let (Ok(replicas), Ok(known)) = (
        c.list::<vigil_model::Replica>().await,
        c.list::<Disk>().await,
    ) else {
        return;
    };
    let min_free_pct = c
        .settings()
        .await
        .map(|s| s.minimal_available_percentage())
        .unwrap_or(0);
    let held = local.replicas.all_held();
    for d in local.replicas.disks() {
        let present = d.still_present();
        let usage = d.usage().unwrap_or_default();
        let now = now_unix() as u64;
        let on_disk = || replicas.iter().filter(|r| r.object.spec.disk == d.uuid);
        let scheduled: u64 = on_disk().map(|r| r.object.spec.size).sum();
        let io_errors: BTreeMap<String, u64> = held
            .iter()
            .filter(|(_, h)| h.disk == d.uuid)
            .map(|(name, h)| (name.clone(), h.replica.io_errors()))
            .collect();
        let faults: Vec<Fault> = on_disk()
            .filter_map(|r| {
                let f = r.object.status.fault.as_ref()?;
                let no_space = match f.reason.as_str() {
                    "io_error" => false,
                    "no_space" => true,
                    _ => return None,
                };
                Some(Fault {
                    no_space,
                    at_unix: f.at_unix,
                    replica: r.object.name.clone(),
                    message: f.message.clone(),
                })
            })
            .collect();
        let prev = known
            .iter()
            .find(|k| k.object.uuid == d.uuid)
            .map(|k| k.object.status.clone())
            .unwrap_or_default();
        let probe = if present && disk_condition::wants_probe(&prev, &io_errors) {
            probe(&d.path).await
        } else {
            Probe::Skipped
        };
        let must_keep = usage.capacity.saturating_mul(min_free_pct) / 100;
        let evidence = Evidence {
            now,
            io_errors,
            faults,
            probe,
            low_space: usage.capacity > 0 && usage.available <= must_keep,
        };
        let mut before = (None, None);
        let res = c
            .modify::<Disk, _>(&d.uuid, |disk| {
                before = (disk.status.failing.clone(), disk.status.no_space.clone());
                let state = if present {
                    DiskState::Ready
                } else {
                    DiskState::Missing
                };
                let message = if present {
                    String::new()
                } else {
                    format!(
                        "identity file {} is gone from {}",
                        crate::local::disks::IDENTITY_FILE,
                        d.path.display()
                    )
                };
                let judged = disk_condition::assess(&disk.status, &evidence);
                let changed = disk.status.state != state
                    || disk.status.capacity_bytes != usage.capacity
                    || disk.status.available_bytes.abs_diff(usage.available) > (1 << 20)
                    || disk.status.scheduled_bytes != scheduled
                    || disk.status.message != message
                    || disk.status.failing != judged.failing
                    || disk.status.no_space != judged.no_space
                    || disk.status.io_errors_seen != judged.io_errors_seen;
                disk.status.state = state;
                disk.status.message = message;
                disk.status.capacity_bytes = usage.capacity;
                disk.status.available_bytes = usage.available;
                disk.status.scheduled_bytes = scheduled;
                disk.status.failing = judged.failing;
                disk.status.no_space = judged.no_space;
                disk.status.io_errors_seen = judged.io_errors_seen;
                disk.status.updated_at = now_unix();
                Ok(changed)
            })
            .await;
        match res {
            Ok(after) => condition_events(local, &after, before).await,
            Err(e) => tracing::debug!(disk = %d.uuid, error = %e, "disk refresh failed"),
        }
    }
}

/// Events (and log lines) for a disk condition that started or ended.
async fn condition_events(
    local: &Local,
    disk: &Disk,
    (was_failing, was_full): (Option<DiskTrouble>, Option<DiskTrouble>),
) {
    let at = format!(
        "disk {} at {}:{}",
        disk.uuid, disk.spec.node, disk.spec.path
    );
    let mut events = Vec::new();
    match (&was_failing, &disk.status.failing) {
        (None, Some(t)) => events.push((
            Severity::Warning,
            EventReason::DiskFailing,
            format!(
                "{at} returns I/O errors ({}); no new replicas are placed on it until it works again",
                t.message
            ),
        )),
        (Some(_), None) => events.push((
            Severity::Normal,
            EventReason::DiskRecovered,
            format!(
                "{at} works again (no I/O error for {} s); it takes new replicas",
                disk_condition::RECOVERY_SECS
            ),
        )),
        _ => {}
    }
    match (&was_full, &disk.status.no_space) {
        (None, Some(t)) => events.push((
            Severity::Warning,
            EventReason::DiskNoSpace,
            format!(
                "writes to {at} fail with no space left ({}); no new replicas are placed on it until space is freed",
                t.message
            ),
        )),
        (Some(_), None) => events.push((
            Severity::Normal,
            EventReason::DiskSpaceRecovered,
            format!("{at} accepts writes again; it takes new replicas"),
        )),
        _ => {}
    }
    for (severity, reason, message) in events {
        if severity == Severity::Warning {
            tracing::warn!(disk = %disk.uuid, reason = reason.as_str(), "{message}");
        } else {
            tracing::info!(disk = %disk.uuid, reason = reason.as_str(), "{message}");
        }
        local
            .cluster
            .event(severity, "disk", &disk.uuid, reason, message)
            .await;
    }
}

/// Writes, syncs and removes a small file at the disk's root: proof that
/// the disk takes writes, or the error it gives.
async fn probe(root: &Path) -> Probe {
    let path = root.join(".vigil-probe.tmp");
    let file = path.clone();
    let work = tokio::task::spawn_blocking(move || probe_write(&file));
    match tokio::time::timeout(PROBE_TIMEOUT, work).await {
        Ok(Ok(Ok(()))) => Probe::Ok,
        Ok(Ok(Err(e))) => {
            let message = format!("probe write {}: {e}", path.display());
            if e.kind() == std::io::ErrorKind::StorageFull {
                Probe::NoSpace(message)
            } else {
                Probe::Io(message)
            }
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "disk probe task failed");
            Probe::Skipped
        }
        Err(_) => Probe::Io(format!(
            "probe write {} did not finish in {} s",
            path.display(),
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

fn probe_write(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let written = f.write_all_at(&[0u8; 4096], 0).and_then(|()| f.sync_data());
    drop(f);
    let removed = std::fs::remove_file(path);
    written.and(removed)
}

/// Holds the node's liveness lease until the task is aborted; re-acquires
/// it when it expired (e.g. the store was unreachable for longer than the
/// TTL).
pub async fn keep_live(local: Arc<Local>, first: LeaseId) {
    let c = &local.cluster;
    let mut lease = Some(first);
    loop {
        // The store counts the TTL from when it gets the request: later
        // than this, so `sent + LEASE_TTL` never outlives the lease.
        let sent = std::time::Instant::now();
        let step = match lease {
            None => match c.grant_liveness_lease(LEASE_TTL).await {
                Ok(id) => match c.set_live(id).await {
                    Ok(()) => {
                        local.lease_clock.renewed(sent);
                        lease = Some(id);
                        tracing::info!(lease = format!("{id:x}"), "node is live");
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            Some(id) => match c.renew_liveness_lease(id).await {
                Ok(()) => {
                    local.lease_clock.renewed(sent);
                    Ok(())
                }
                Err(StoreError::LeaseExpired(_)) => {
                    tracing::warn!("liveness lease expired; re-registering");
                    lease = None;
                    // An uninstalled cluster keeps no node object.
                    if !local.quiet.load(std::sync::atomic::Ordering::SeqCst) {
                        let _ = register_node(&local).await;
                    }
                    continue;
                }
                Err(e) => Err(e.into()),
            },
        };
        if let Err(e) = step {
            tracing::warn!(error = %e, "cannot renew node liveness");
        }
        tokio::time::sleep(LEASE_TTL / 4).await;
    }
}

/// Takes the liveness lease and writes the liveness record.
pub async fn go_live(local: &Local) -> cluster::Result<LeaseId> {
    let sent = std::time::Instant::now();
    let id = local.cluster.grant_liveness_lease(LEASE_TTL).await?;
    local.cluster.set_live(id).await?;
    local.lease_clock.renewed(sent);
    tracing::info!(lease = format!("{id:x}"), "node is live");
    Ok(id)
}

/// Revokes the lease on shutdown so the node shows down at once.
pub async fn go_offline(local: &Local) {
    local.cluster.go_offline().await;
}
