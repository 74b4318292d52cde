//! `POST /v1/volumes/V/salvage`: the operator's accept-loss command. When
//! no member of a volume's in-sync set can come back, the volume does not
//! start from the other replicas by itself — they may lack acknowledged
//! writes. This makes one of them the only member (a new generation), so
//! the volume starts from it and the others are rebuilt from it; the loss
//! is recorded as a `DataLossAccepted` event naming what was given up.

use std::time::Duration;

use hyper::StatusCode;
use vigil_engine::address::ReplicaAddress;

use super::error::ApiError;
use super::to_json;
use super::volumes::{Reply, must_get, view, volume_name};
use crate::daemon::Agent;
use vigil_control::cluster::events::Severity;
use vigil_control::controller::in_sync::probe_generation;
use vigil_model::EventReason;
use vigil_model::Replica;
use vigil_model::volume::Robustness;
use vigil_model::wire::SalvageVolume;

pub async fn salvage(agent: &Agent, name: &str, req: SalvageVolume) -> Reply {
    volume_name(name)?;
    let c = &agent.local.cluster;
    let v = must_get(agent, name).await?;
    let replica = c
        .get::<Replica>(&req.replica)
        .await
        .map_err(ApiError::from)?
        .filter(|r| r.object.spec.volume == name)
        .ok_or_else(|| {
            ApiError::not_found("replica", &format!("{} (of volume {name})", req.replica))
        })?;
    let set = c.in_sync(name).await.map_err(ApiError::from)?;
    // Which generations the replicas joined: a set numbered below one of
    // them (a store restored from a backup) keeps the volume from starting
    // even with a member, and the new set must be numbered above them all.
    // Asking takes an epoch, as an engine start does (it claims what it
    // reaches; the engine that starts next takes a newer one).
    let epoch = c.next_epoch(name).await.map_err(ApiError::from)?;
    let mut highest = 0;
    for r in c.list::<Replica>().await.map_err(ApiError::from)? {
        if r.object.spec.volume == name && !r.object.status.address.is_empty() {
            let g = probe_generation(&agent.local, &r.object.status.address, epoch).await;
            highest = highest.max(g.unwrap_or(0));
        }
    }
    if set
        .as_ref()
        .is_some_and(|s| s.members.contains(&req.replica) && s.generation >= highest)
    {
        return Ok((StatusCode::OK, to_json(&view(agent, &v.object).await?)));
    }
    if !req.accept_data_loss {
        return Err(ApiError::bad_request(
            "accept_data_loss_required",
            format!(
                "replica {} is not in the in-sync set of {name}{} (or the set is older than a generation a replica joined, {highest}): starting from it gives up every write only the members (or those newer replicas) hold; repeat with --accept-data-loss to do that",
                req.replica,
                set.as_ref()
                    .map(|s| format!(" ({})", s.members.join(", ")))
                    .unwrap_or_default()
            ),
        ));
    }
    if matches!(
        v.object.status.robustness,
        Robustness::Healthy | Robustness::Degraded
    ) {
        return Err(ApiError::conflict(
            "volume_serving",
            format!(
                "volume {name} is served from its in-sync replicas; salvage is for a volume that cannot start"
            ),
        ));
    }
    if replica.object.status.address.is_empty() {
        return Err(ApiError::conflict(
            "replica_not_running",
            format!(
                "replica {} is not running (node {}); start its node first",
                req.replica, replica.object.spec.node
            ),
        ));
    }
    let given_up = set
        .as_ref()
        .map(|s| s.members.join(", "))
        .unwrap_or_else(|| "none recorded".into());
    let reason = format!(
        "operator accepted data loss: salvaged from {}, giving up {given_up}",
        req.replica
    );
    let recorded = c
        .record_in_sync_above(
            name,
            std::slice::from_ref(&req.replica),
            highest + 1,
            &reason,
        )
        .await
        .map_err(ApiError::from)?;
    let generation = recorded.generation;
    // Store first, then the salvaged replica persists it (its engine's
    // start does so again before serving, should this not get through).
    if let Err(e) = join(agent, &replica.object.status.address, epoch, generation).await {
        tracing::warn!(volume = name, replica = %req.replica, error = %e, "the salvaged replica did not persist the new in-sync generation yet; the engine's start does");
    }
    c.event(
        Severity::Warning,
        "volume",
        name,
        EventReason::DataLossAccepted,
        format!(
            "volume {name} salvaged from replica {} on {} (in-sync generation {generation}) by the operator's --accept-data-loss: writes only the former members ({given_up}) held are given up; the other replicas are rebuilt from it",
            req.replica, replica.object.spec.node
        ),
    )
    .await;
    Ok((StatusCode::OK, to_json(&view(agent, &v.object).await?)))
}

/// Has the replica at `address` persist `generation` over a backend of
/// `epoch`.
async fn join(agent: &Agent, address: &str, epoch: u64, generation: u64) -> Result<(), String> {
    let address: ReplicaAddress = address.parse().map_err(|e| format!("{e}"))?;
    let backend = agent
        .local
        .backends
        .open(&address, epoch)
        .await
        .map_err(|f| f.last_error)?;
    tokio::time::timeout(Duration::from_secs(5), backend.join_generation(generation))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| e.to_string())
}
