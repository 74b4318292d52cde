//! Node and disk handlers: list, get, and the operator's switches on a node
//! (scheduling, eviction request, tags).

use hyper::StatusCode;

use super::error::ApiError;
use super::to_json;
use crate::daemon::Agent;
use vigil_control::cluster::events::Severity;
use vigil_model::EventReason;
use vigil_model::disk::DiskState;
use vigil_model::wire::{ClusterNodeView, DiskView, UpdateNode};
use vigil_model::{Disk, Node, Versioned};

type Reply = Result<(StatusCode, Vec<u8>), ApiError>;

fn disk_view(d: &Disk) -> DiskView {
    DiskView {
        uuid: d.uuid.clone(),
        node: d.spec.node.clone(),
        path: d.spec.path.clone(),
        state: match d.status.state {
            DiskState::Ready => "ready",
            DiskState::Missing => "missing",
            DiskState::Replaced => "replaced",
        }
        .into(),
        capacity_bytes: d.status.capacity_bytes,
        available_bytes: d.status.available_bytes,
        scheduled_bytes: d.status.scheduled_bytes,
        reserved_bytes: d.spec.reserved_bytes,
        allow_scheduling: d.spec.allow_scheduling,
        tags: d.spec.tags.clone(),
        message: d.status.message.clone(),
    }
}

async fn views(agent: &Agent) -> Result<Vec<ClusterNodeView>, ApiError> {
    let c = &agent.local.cluster;
    let ready = c.ready_nodes().await?;
    let disks = c.list::<Disk>().await?;
    Ok(c.list::<Node>()
        .await?
        .into_iter()
        .map(|Versioned { object: n, .. }| ClusterNodeView {
            ready: ready.contains(&n.name),
            api_address: n.spec.api_address.clone(),
            replica_address: n.spec.replica_address.clone(),
            nbd_address: n.spec.nbd_address.clone(),
            labels: n.spec.labels.clone(),
            tags: n.spec.tags.clone(),
            allow_scheduling: n.spec.allow_scheduling,
            eviction_requested: n.spec.eviction_requested,
            eviction: n.status.eviction.clone(),
            kernel_io: n.status.kernel_io.clone(),
            version: n.status.version.clone(),
            store: n.status.store.clone(),
            disks: disks
                .iter()
                .filter(|d| d.object.spec.node == n.name)
                .map(|d| disk_view(&d.object))
                .collect(),
            name: n.name,
        })
        .collect())
}

pub async fn list(agent: &Agent) -> Reply {
    Ok((StatusCode::OK, to_json(&views(agent).await?)))
}

pub async fn get(agent: &Agent, name: &str) -> Reply {
    let v = views(agent)
        .await?
        .into_iter()
        .find(|n| n.name == name)
        .ok_or_else(|| ApiError::not_found("node", name))?;
    Ok((StatusCode::OK, to_json(&v)))
}

pub async fn update(agent: &Agent, name: &str, req: UpdateNode) -> Reply {
    if let Some(tags) = &req.tags {
        for t in tags {
            vigil_engine::name::check_name(t)
                .map_err(|e| ApiError::bad_request("invalid_tag", e.to_string()))?;
        }
    }
    let before = agent.local.cluster.must_get::<Node>(name).await?;
    agent
        .local
        .cluster
        .modify::<Node, _>(name, |n| {
            let old = n.spec.clone();
            if let Some(a) = req.allow_scheduling {
                n.spec.allow_scheduling = a;
            }
            if let Some(e) = req.eviction_requested {
                n.spec.eviction_requested = e;
            }
            if let Some(t) = &req.tags {
                n.spec.tags = t.clone();
            }
            Ok(n.spec != old)
        })
        .await?;
    if let Some(e) = req.eviction_requested
        && e != before.object.spec.eviction_requested
    {
        let (reason, msg) = if e {
            (
                EventReason::EvictionRequested,
                format!(
                    "eviction of node {name} requested: nothing new is scheduled there and its replicas are moved elsewhere"
                ),
            )
        } else {
            (
                EventReason::EvictionCancelRequested,
                format!("eviction of node {name} cancelled by request: nothing more is moved"),
            )
        };
        agent
            .local
            .cluster
            .event(Severity::Normal, "node", name, reason, msg)
            .await;
    }
    get(agent, name).await
}

pub async fn disks(agent: &Agent) -> Reply {
    let list: Vec<DiskView> = agent
        .local
        .cluster
        .list::<Disk>()
        .await?
        .iter()
        .map(|d| disk_view(&d.object))
        .collect();
    Ok((StatusCode::OK, to_json(&list)))
}

/// `GET /v1/nodes/NAME/drain-check`: whether the node can go down now
/// under `node-drain-policy` (see `controller::drain`), from one
/// linearizable read of the cluster.
pub async fn drain_check(agent: &Agent, name: &str) -> Reply {
    agent.local.cluster.must_get::<Node>(name).await?;
    let snap = vigil_control::controller::Snapshot::read(&agent.local.cluster).await?;
    let policy = snap.settings.drain_policy();
    let check = vigil_control::controller::drain::check(&snap, name, policy);
    Ok((StatusCode::OK, to_json(&check)))
}
