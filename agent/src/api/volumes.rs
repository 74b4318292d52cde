//! Volume handlers: create (with scheduling), get, list, delete, attach,
//! detach, expand, and snapshots by volume name. Any agent answers; writes
//! are compare-and-swap on the volume, and a lost race is retried with a
//! fresh read. Attach and detach record the request and then wait for the
//! owning node to carry it out — except for a volume attached to a node
//! that is down, which `controller::recovery` rules govern.

use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use vigil_engine::size::{human, parse_volume_size};

use super::error::ApiError;
use super::to_json;
use crate::daemon::Agent;
use vigil_control::cluster::events::Severity;
use vigil_control::cluster::{ClusterError, placement, put_op, update_op};
use vigil_control::controller::recovery;
use vigil_control::scheduler::{self, Candidate};
use vigil_model::EventReason;
use vigil_model::disk::Disk;
use vigil_model::volume::{DataLocality, Robustness, VolumeSpec, VolumeStatus};
use vigil_model::wire::*;
use vigil_model::{Node, Replica, Versioned, Volume, VolumeState, now_unix};
use vigil_store::Expect;

pub type Reply = Result<(StatusCode, Vec<u8>), ApiError>;

/// Longest volume name: replica names add `-r-` and 8 hex digits and must
/// stay within the 63 characters of a name.
pub const MAX_VOLUME_NAME: usize = 52;

/// How long attach and detach wait for the owning node.
const WAIT: Duration = Duration::from_secs(60);

pub fn volume_name(s: &str) -> Result<&str, ApiError> {
    vigil_engine::name::check_name(s)
        .map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    if s.len() > MAX_VOLUME_NAME {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!(
                "volume name {s:?} is {} characters; the limit is {MAX_VOLUME_NAME}",
                s.len()
            ),
        ));
    }
    Ok(s)
}

/// The view of one volume with its replicas.
pub async fn view(agent: &Agent, v: &Volume) -> Result<VolumeView, ApiError> {
    let replicas = agent.local.cluster.list::<Replica>().await?;
    let disks = agent.local.cluster.list::<Disk>().await?;
    Ok(view_with(v, &replicas, &disks))
}

fn view_with(v: &Volume, replicas: &[Versioned<Replica>], disks: &[Versioned<Disk>]) -> VolumeView {
    let attached = v.status.state == VolumeState::Attached;
    VolumeView {
        name: v.name.clone(),
        size: v.spec.size,
        number_of_replicas: v.spec.replicas,
        data_locality: v.spec.data_locality.as_str().into(),
        state: v.status.state.to_string(),
        robustness: v.status.robustness.as_str().into(),
        attached_node: v.status.attached_node.clone(),
        desired_node: v.spec.node.clone(),
        endpoint: v.status.endpoint.clone(),
        message: v.status.message.clone(),
        scheduling: v.status.scheduling.clone(),
        node_tags: v.spec.node_tags.clone(),
        disk_tags: v.spec.disk_tags.clone(),
        created_at: v.spec.created_at,
        transitions: v.status.transitions,
        migration: v.status.migration.clone(),
        maintenance: v.status.maintenance.clone(),
        replicas: replicas
            .iter()
            .filter(|r| r.object.spec.volume == v.name)
            .map(|r| {
                let r = &r.object;
                VolumeReplicaView {
                    name: r.name.clone(),
                    node: r.spec.node.clone(),
                    disk: r.spec.disk.clone(),
                    disk_path: disks
                        .iter()
                        .find(|d| d.object.uuid == r.spec.disk)
                        .map(|d| d.object.spec.path.clone())
                        .unwrap_or_default(),
                    state: r.status.state.to_string(),
                    // an engine's view: the attached one's, or a
                    // maintenance engine's while one runs
                    mode: if attached || v.status.maintenance.is_some() {
                        r.status.mode
                    } else {
                        vigil_model::replica::ReplicaMode::Unreported
                    },
                    address: r.status.address.clone(),
                    message: r.status.message.clone(),
                    fault: r.status.fault.clone(),
                    rebuild: r.status.rebuild.clone(),
                    integrity: r.status.integrity.clone(),
                    actual_size_bytes: r.status.actual_size_bytes,
                }
            })
            .collect(),
    }
}

pub async fn list(agent: &Agent) -> Reply {
    let volumes = agent.local.cluster.list::<Volume>().await?;
    let replicas = agent.local.cluster.list::<Replica>().await?;
    let disks = agent.local.cluster.list::<Disk>().await?;
    let views: Vec<VolumeView> = volumes
        .iter()
        .map(|v| view_with(&v.object, &replicas, &disks))
        .collect();
    Ok((StatusCode::OK, to_json(&views)))
}

pub async fn get(agent: &Agent, name: &str) -> Reply {
    let v = must_get(agent, name).await?;
    Ok((StatusCode::OK, to_json(&view(agent, &v.object).await?)))
}

pub async fn must_get(agent: &Agent, name: &str) -> Result<Versioned<Volume>, ApiError> {
    agent
        .local
        .cluster
        .get::<Volume>(volume_name(name)?)
        .await?
        .ok_or_else(|| ApiError::not_found("volume", name))
}

/// Everything the scheduler looks at, read linearizably.
async fn candidates(
    agent: &Agent,
) -> Result<
    (
        Vec<Candidate>,
        Vec<Versioned<Disk>>,
        Vec<Versioned<Replica>>,
    ),
    ClusterError,
> {
    let c = &agent.local.cluster;
    let ready = c.ready_nodes().await?;
    let nodes = c
        .list::<Node>()
        .await?
        .into_iter()
        .map(|n| Candidate {
            ready: ready.contains(&n.object.name),
            node: n.object,
        })
        .collect();
    Ok((nodes, c.list::<Disk>().await?, c.list::<Replica>().await?))
}

pub async fn create(agent: &Agent, req: CreateVolume) -> Reply {
    let name = volume_name(&req.name)?.to_string();
    let size = parse_volume_size(&req.size)
        .map_err(|e| ApiError::bad_request("invalid_size", e.to_string()))?;
    let settings = agent.local.cluster.settings().await?;
    let count = req
        .replicas
        .unwrap_or_else(|| settings.default_replica_count());
    if !(1..=20).contains(&count) {
        return Err(ApiError::bad_request(
            "invalid_replicas",
            format!("replica count {count} is out of range; allowed: 1 to 20"),
        ));
    }
    let locality = match &req.data_locality {
        Some(s) => s
            .parse::<DataLocality>()
            .map_err(|e| ApiError::bad_request("invalid_data_locality", e))?,
        None => settings.default_data_locality(),
    };
    if locality == DataLocality::StrictLocal && count != 1 {
        return Err(ApiError::bad_request(
            "invalid_replicas",
            format!("a strict-local volume has exactly 1 replica (asked for {count})"),
        ));
    }
    let me = agent.config.node_name.clone();
    let c = &agent.local.cluster;
    let outcome = c
        .retry(|| async {
            if let Some(u) = c.uninstall_record().await? {
                return Ok(Err(super::uninstall::create_refusal(&u.object)));
            }
            if c.get::<Volume>(&name).await?.is_some() {
                return Ok(Err(ApiError::conflict(
                    "already_exists",
                    format!("volume {name:?} already exists"),
                )));
            }
            let (nodes, disks, replicas) = candidates(agent).await?;
            let mut volume = Volume {
                name: name.clone(),
                spec: VolumeSpec {
                    size,
                    replicas: count,
                    data_locality: locality,
                    node: None,
                    node_tags: req.node_tags.clone(),
                    disk_tags: req.disk_tags.clone(),
                    created_at: now_unix(),
                },
                status: VolumeStatus {
                    state: VolumeState::Creating,
                    robustness: Robustness::Unknown,
                    attached_node: None,
                    endpoint: String::new(),
                    message: String::new(),
                    scheduling: Vec::new(),
                    transitions: 0,
                    migration: None,
                    maintenance: None,
                    fenced: None,
                    writes_blocked: String::new(),
                },
            };
            let disk_objects: Vec<Disk> = disks.iter().map(|d| d.object.clone()).collect();
            let replica_objects: Vec<Replica> =
                replicas.iter().map(|r| r.object.clone()).collect();
            let view = scheduler::View {
                nodes: &nodes,
                disks: &disk_objects,
                replicas: &replica_objects,
                settings: &settings,
            };
            let local = (locality != DataLocality::Disabled).then_some(me.as_str());
            let out = scheduler::place(
                &scheduler::Request {
                    volume: &volume,
                    count: count as usize,
                    local_node: local,
                },
                &view,
            );
            let short = out.placed.len() < count as usize;
            if out.placed.is_empty() || (short && !settings.allow_degraded_creation()) {
                let why = if out.placed.is_empty() {
                    format!("cannot place any replica of {name} ({})", human(size))
                } else {
                    format!(
                        "only {} of {count} replicas of {name} can be placed and allow-volume-creation-with-degraded-availability is false",
                        out.placed.len()
                    )
                };
                return Ok(Err(ApiError::conflict("unschedulable", why).with_details(out.reasons)));
            }
            volume.status.scheduling = out.notes.clone();
            if short {
                volume.status.scheduling.extend(out.reasons.iter().cloned());
                volume.status.message = format!(
                    "created degraded: {} of {count} replicas placed",
                    out.placed.len()
                );
            }
            let (placing, new_replicas) =
                placement::ops(&volume, &out.placed, &disks, &replica_objects);
            let mut ops = vec![put_op(&volume, Expect::Absent)];
            ops.extend(placing);
            // No volume once an uninstall is claimed (its record exists).
            ops.push(vigil_control::cluster::uninstall::absent_check());
            c.txn(ops).await?;
            Ok(Ok((volume, new_replicas, out)))
        })
        .await??;
    let (volume, new_replicas, out) = outcome;
    let placed: Vec<String> = new_replicas
        .iter()
        .map(|r| format!("{} on {}", r.name, r.spec.node))
        .collect();
    let mut msg = format!("placed {}", placed.join(", "));
    if !out.notes.is_empty() {
        msg.push_str(&format!("; {}", out.notes.join("; ")));
    }
    c.event(
        Severity::Normal,
        "volume",
        &name,
        EventReason::Scheduled,
        msg,
    )
    .await;
    if new_replicas.len() < count as usize {
        c.event(
            Severity::Warning,
            "volume",
            &name,
            EventReason::SchedulingFailed,
            format!(
                "{} of {count} replicas placed: {}",
                new_replicas.len(),
                out.reasons.join("; ")
            ),
        )
        .await;
    }
    Ok((StatusCode::CREATED, to_json(&view(agent, &volume).await?)))
}

pub async fn delete(agent: &Agent, name: &str) -> Reply {
    volume_name(name)?;
    let v = agent
        .local
        .cluster
        .modify::<Volume, _>(name, |v| match v.status.state {
            VolumeState::Deleting => Ok(false),
            VolumeState::Creating | VolumeState::Detached => {
                v.set_state(VolumeState::Deleting)?;
                Ok(true)
            }
            _ => Err(ClusterError::Transition(
                vigil_model::state::TransitionError {
                    what: "volume",
                    from: v.status.state.to_string(),
                    to: VolumeState::Deleting.to_string(),
                },
            )),
        })
        .await
        .map_err(|e| match e {
            ClusterError::Transition(t) => ApiError::conflict(
                "volume_attached",
                format!("volume {name:?} is {}; detach it before deleting", t.from),
            ),
            other => other.into(),
        })?;
    agent
        .local
        .cluster
        .event(
            Severity::Normal,
            "volume",
            name,
            EventReason::Deleting,
            format!("volume {name} is being deleted"),
        )
        .await;
    Ok((StatusCode::ACCEPTED, to_json(&view(agent, &v).await?)))
}

/// Why an attach or detach cannot be recorded now.
fn busy(name: &str, v: &Volume, want: &str) -> ApiError {
    let (code, msg) = match v.status.state {
        VolumeState::Creating => (
            "volume_busy",
            format!("volume {name:?} is still being created; {want} it when it is detached"),
        ),
        VolumeState::Deleting => (
            "volume_deleting",
            format!("volume {name:?} is being deleted"),
        ),
        VolumeState::Detaching => (
            "volume_busy",
            format!(
                "volume {name:?} is still detaching from {}; retry when it is detached",
                v.status.attached_node.as_deref().unwrap_or("?")
            ),
        ),
        s => ("volume_busy", format!("volume {name:?} is {s}")),
    };
    ApiError::conflict(code, msg)
}

pub async fn attach(agent: &Agent, name: &str, req: AttachVolume) -> Reply {
    volume_name(name)?;
    let node = req.node.unwrap_or_else(|| agent.config.node_name.clone());
    let c = &agent.local.cluster;
    if c.get::<Node>(&node).await?.is_none() {
        return Err(ApiError::not_found("node", &node));
    }
    let ready = c.ready_nodes().await?;
    if !ready.contains(&node) {
        return Err(ApiError::conflict(
            "node_not_ready",
            format!("node {node:?} is not ready (its agent is down or cut off from the store)"),
        ));
    }
    let replicas = c.list::<Replica>().await?;
    let settings = c.settings().await?;
    let nodes = c.list::<Node>().await?;
    let now = now_unix() as u64;
    let not_local = |v: &Volume| {
        (v.spec.data_locality == DataLocality::StrictLocal
            && !replicas
                .iter()
                .any(|r| r.object.spec.volume == name && r.object.spec.node == node))
        .then(|| {
            ApiError::conflict(
                "not_local",
                format!(
                    "volume {name:?} is strict-local: its only replica lives on {} and a strict-local volume is served only where its replica is; attach it there, or recreate it with --data-locality best-effort",
                    replicas
                        .iter()
                        .find(|r| r.object.spec.volume == name)
                        .map_or("no node", |r| r.object.spec.node.as_str())
                ),
            )
        })
    };
    let mut refusal = None;
    let mut moved_from = None;
    let v = c
        .modify::<Volume, _>(name, |v| {
            refusal = None;
            moved_from = None;
            match v.status.state {
                VolumeState::Attached | VolumeState::Attaching
                    if v.spec.node.as_deref() == Some(node.as_str()) =>
                {
                    Ok(false)
                }
                VolumeState::Attached | VolumeState::Attaching => {
                    if let Some(e) = super::migration::refuse_while_migrating(name, v) {
                        refusal = Some(e);
                        return Ok(false);
                    }
                    let Some(down_node) = recovery::stranded_on(v, &ready).map(str::to_string)
                    else {
                        refusal = Some(ApiError::conflict(
                            "attached_elsewhere",
                            format!(
                                "volume {name:?} is attached to {}; detach it first",
                                v.spec.node.as_deref().unwrap_or("?")
                            ),
                        ));
                        return Ok(false);
                    };
                    // Its node is down: volume-attachment-recovery-policy
                    // says whether another node may take it now.
                    let down = nodes
                        .iter()
                        .find(|n| n.object.name == down_node)
                        .and_then(|n| n.object.status.down_since)
                        .map(|since| Duration::from_secs(now.saturating_sub(since)));
                    if let Err(why) = recovery::may_move(name, &down_node, down, &settings) {
                        refusal = Some(ApiError::conflict("attached_to_down_node", why));
                        return Ok(false);
                    }
                    if let Some(e) = not_local(v) {
                        refusal = Some(e);
                        return Ok(false);
                    }
                    v.set_state(VolumeState::Attaching)?;
                    v.spec.node = Some(node.clone());
                    v.status.attached_node = Some(node.clone());
                    v.status.endpoint.clear();
                    v.status.robustness = Robustness::Unknown;
                    v.status.message.clear();
                    moved_from = Some((down_node, down));
                    Ok(true)
                }
                VolumeState::Detached => {
                    if let Some(e) = not_local(v) {
                        refusal = Some(e);
                        return Ok(false);
                    }
                    v.set_state(VolumeState::Attaching)?;
                    v.spec.node = Some(node.clone());
                    v.status.attached_node = Some(node.clone());
                    v.status.message.clear();
                    Ok(true)
                }
                _ => {
                    refusal = Some(busy(name, v, "attach"));
                    Ok(false)
                }
            }
        })
        .await?;
    if let Some(e) = refusal {
        return Err(e);
    }
    if let Some((from, down)) = &moved_from {
        c.event(
            Severity::Warning,
            "volume",
            name,
            EventReason::MovedFromDownNode,
            format!(
                "volume {name} moved from {from}, down for {}, to {node} by volume-attachment-recovery-policy {}; {from} stops any engine for it when it returns",
                down.map(|d| format!("{} s", d.as_secs()))
                    .unwrap_or_else(|| "less than a round".into()),
                recovery::Policy::of(&settings).as_str()
            ),
        )
        .await;
    } else if v.status.state == VolumeState::Attaching {
        c.event(
            Severity::Normal,
            "volume",
            name,
            EventReason::Attaching,
            format!("attach of {name} to {node} requested"),
        )
        .await;
    }
    let done = wait_for(agent, name, |v| {
        if v.status.state == VolumeState::Attached
            && v.status.attached_node.as_deref() == Some(node.as_str())
        {
            Some(Ok(()))
        } else if v.spec.node.as_deref() != Some(node.as_str()) {
            Some(Err(ApiError::conflict(
                "attach_interrupted",
                format!(
                    "volume {name:?} was detached or moved while attaching ({})",
                    v.status.state
                ),
            )))
        } else {
            None
        }
    })
    .await?;
    match done {
        Some(v) => Ok((StatusCode::OK, to_json(&view(agent, &v).await?))),
        None => {
            let v = must_get(agent, name).await?;
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "attach_timeout",
                format!(
                    "volume {name:?} is still attaching to {node} after {}s: {}",
                    WAIT.as_secs(),
                    if v.object.status.message.is_empty() {
                        "waiting for its agent"
                    } else {
                        &v.object.status.message
                    }
                ),
            ))
        }
    }
}

pub async fn detach(agent: &Agent, name: &str) -> Reply {
    volume_name(name)?;
    let c = &agent.local.cluster;
    // Attached to a node that is down: nothing to wait for, as no engine
    // serves there (see `controller::recovery` on fencing); done at once.
    if recovery::detach_from_down_node(&agent.local.cluster, name, recovery::DetachCause::Operator)
        .await?
        .is_some()
    {
        let v = must_get(agent, name).await?;
        return Ok((StatusCode::OK, to_json(&view(agent, &v.object).await?)));
    }
    let mut refusal = None;
    let v = c
        .modify::<Volume, _>(name, |v| {
            refusal = None;
            if let Some(e) = super::migration::refuse_while_migrating(name, v) {
                refusal = Some(e);
                return Ok(false);
            }
            match v.status.state {
                VolumeState::Detached | VolumeState::Detaching => Ok(false),
                VolumeState::Attached | VolumeState::Attaching => {
                    v.set_state(VolumeState::Detaching)?;
                    v.spec.node = None;
                    Ok(true)
                }
                _ => {
                    refusal = Some(busy(name, v, "detach"));
                    Ok(false)
                }
            }
        })
        .await?;
    if let Some(e) = refusal {
        return Err(e);
    }
    if v.status.state == VolumeState::Detaching {
        c.event(
            Severity::Normal,
            "volume",
            name,
            EventReason::Detaching,
            format!("detach of {name} requested"),
        )
        .await;
    }
    let done = wait_for(agent, name, |v| {
        if v.status.state == VolumeState::Detached {
            Some(Ok(()))
        } else if v.spec.node.is_some() {
            Some(Err(ApiError::conflict(
                "detach_interrupted",
                format!("volume {name:?} was attached again while detaching"),
            )))
        } else {
            None
        }
    })
    .await?;
    match done {
        Some(v) => Ok((StatusCode::OK, to_json(&view(agent, &v).await?))),
        None => {
            let v = must_get(agent, name).await?;
            let node = v.object.status.attached_node.clone().unwrap_or_default();
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "detach_timeout",
                format!(
                    "volume {name:?} is still detaching from {node} after {}s; it finishes when that node's agent acts on it",
                    WAIT.as_secs()
                ),
            ))
        }
    }
}

/// Polls the volume until `settled` says done (`Some(Ok)`), refuses
/// (`Some(Err)`), or [`WAIT`] passes (`Ok(None)`).
async fn wait_for<F>(agent: &Agent, name: &str, mut settled: F) -> Result<Option<Volume>, ApiError>
where
    F: FnMut(&Volume) -> Option<Result<(), ApiError>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = match agent.local.cluster.get::<Volume>(name).await? {
            Some(v) => v.object,
            None => return Err(ApiError::not_found("volume", name)),
        };
        match settled(&v) {
            Some(Ok(())) => return Ok(Some(v)),
            Some(Err(e)) => return Err(e),
            None => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn expand(agent: &Agent, name: &str, req: ExpandVolume) -> Reply {
    volume_name(name)?;
    let size = parse_volume_size(&req.size)
        .map_err(|e| ApiError::bad_request("invalid_size", e.to_string()))?;
    let c = &agent.local.cluster;
    let v = c
        .retry(|| async {
            let v = c.must_get::<Volume>(name).await?;
            if v.object.status.state != VolumeState::Detached {
                return Ok(Err(ApiError::conflict(
                    "volume_not_detached",
                    format!(
                        "volume {name:?} is {}; expansion is offline: detach it first",
                        v.object.status.state
                    ),
                )));
            }
            if size < v.object.spec.size {
                return Ok(Err(ApiError::bad_request(
                    "invalid_size",
                    format!(
                        "{} is smaller than the volume ({}); volumes only grow",
                        human(size),
                        human(v.object.spec.size)
                    ),
                )));
            }
            if size == v.object.spec.size {
                return Ok(Ok(v.object));
            }
            let mut nv = v.clone();
            nv.object.spec.size = size;
            let mut ops = vec![update_op(&nv)];
            for r in c.list::<Replica>().await? {
                if r.object.spec.volume == name {
                    let mut nr = r.clone();
                    nr.object.spec.size = size;
                    ops.push(update_op(&nr));
                }
            }
            c.txn(ops).await?;
            Ok(Ok(nv.object))
        })
        .await??;
    // A chain operation: the in-sync generation moves on (store first; the
    // members persist it when the next engine records its set, before it
    // serves — the volume is detached, no engine runs now).
    if let Err(e) = c
        .bump_in_sync_generation(name, &format!("expanded to {}", human(size)))
        .await
    {
        tracing::warn!(volume = name, error = %e, "in-sync generation not bumped for the expansion");
    }
    c.event(
        Severity::Normal,
        "volume",
        name,
        EventReason::Expanded,
        format!("volume {name} expanded to {}", human(size)),
    )
    .await;
    Ok((StatusCode::OK, to_json(&view(agent, &v).await?)))
}

/// Snapshot calls go to the engine, on whichever node the volume is
/// attached to.
pub async fn snapshot_call(
    agent: &Arc<Agent>,
    method: &Method,
    name: &str,
    rest: &[&str],
    body: &[u8],
) -> Reply {
    let v = must_get(agent, name).await?;
    let node = match (&v.object.status.state, &v.object.status.attached_node) {
        (VolumeState::Attached, Some(n)) => n.clone(),
        _ => {
            return Err(ApiError::conflict(
                "volume_not_attached",
                format!(
                    "volume {name:?} is {}; snapshots are taken by its engine, so attach it first",
                    v.object.status.state
                ),
            ));
        }
    };
    let path = format!(
        "/v1/engines/{name}/snapshots{}",
        rest.iter().map(|s| format!("/{s}")).collect::<String>()
    );
    super::forward(agent, &node, method, &path, body).await
}
