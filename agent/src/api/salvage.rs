//! `POST /v1/volumes/V/salvage`: the operator's accept-loss command. When
//! no member of a volume's in-sync set can come back, the volume does not
//! start from the other replicas by itself — they may lack acknowledged
//! writes. This makes one of them the only member (a new generation), so
//! the volume starts from it and the others are rebuilt from it; the loss
//! is recorded as a `DataLossAccepted` event naming what was given up.

use hyper::StatusCode;

use super::error::ApiError;
use super::to_json;
use super::types::SalvageVolume;
use super::volumes::{Reply, must_get, view, volume_name};
use crate::cluster::events::Severity;
use crate::daemon::Agent;
use crate::model::Replica;
use crate::model::volume::Robustness;

pub async fn salvage(agent: &Agent, name: &str, req: SalvageVolume) -> Reply {
    volume_name(name)?;
    let c = &agent.cluster;
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
    if set
        .as_ref()
        .is_some_and(|s| s.members.contains(&req.replica))
    {
        return Ok((StatusCode::OK, to_json(&view(agent, &v.object).await?)));
    }
    if !req.accept_data_loss {
        return Err(ApiError::bad_request(
            "accept_data_loss_required",
            format!(
                "replica {} is not in the in-sync set of {name}{}: starting from it gives up every write only the members hold; repeat with --accept-data-loss to do that",
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
        .record_in_sync(name, std::slice::from_ref(&req.replica), &reason)
        .await
        .map_err(ApiError::from)?;
    let generation = recorded.map(|s| s.generation).unwrap_or_default();
    c.event(
        Severity::Warning,
        "volume",
        name,
        "DataLossAccepted",
        format!(
            "volume {name} salvaged from replica {} on {} (in-sync generation {generation}) by the operator's --accept-data-loss: writes only the former members ({given_up}) held are given up; the other replicas are rebuilt from it",
            req.replica, replica.object.spec.node
        ),
    )
    .await;
    Ok((StatusCode::OK, to_json(&view(agent, &v.object).await?)))
}
