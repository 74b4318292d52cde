//! Route table and handlers of the low-level API: replicas, engines and
//! snapshots on this agent.

use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use vigil_engine::address::ReplicaAddress;
use vigil_engine::engine::{Engine, ReplicaSpec};
use vigil_engine::name::check_name;
use vigil_engine::size::parse_volume_size;

use super::error::ApiError;
use super::health;
use super::to_json;
use super::{migration, nodes, settings, support_bundle, uninstall, volumes};
use crate::daemon::Agent;
use vigil_model::wire::*;

type Reply = Result<(StatusCode, Vec<u8>), ApiError>;

fn ok<T: serde::Serialize>(v: &T) -> Reply {
    Ok((StatusCode::OK, to_json(v)))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("bad_body", format!("invalid JSON body: {e}")))
}

fn name(s: &str) -> Result<&str, ApiError> {
    check_name(s).map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))
}

/// Dispatches one request.
pub async fn route(
    agent: &Arc<Agent>,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Reply {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        (&Method::GET, ["healthz"]) | (&Method::GET, ["readyz"]) => {
            Ok((StatusCode::OK, b"{\"status\":\"ok\"}".to_vec()))
        }
        (&Method::GET, ["v1", "node"]) => ok(&node_view(agent)),
        (&Method::GET, ["v1", "volumes"]) => volumes::list(agent).await,
        (&Method::POST, ["v1", "volumes"]) => volumes::create(agent, parse(body)?).await,
        (&Method::GET, ["v1", "volumes", n]) => volumes::get(agent, n).await,
        (&Method::DELETE, ["v1", "volumes", n]) => volumes::delete(agent, n).await,
        (&Method::POST, ["v1", "volumes", n, "attach"]) => {
            let req = if body.is_empty() {
                AttachVolume::default()
            } else {
                parse(body)?
            };
            volumes::attach(agent, n, req).await
        }
        (&Method::POST, ["v1", "volumes", n, "detach"]) => volumes::detach(agent, n).await,
        (&Method::POST, ["v1", "volumes", n, "migrate"]) => {
            migration::start(agent, n, parse(body)?).await
        }
        (&Method::POST, ["v1", "volumes", n, "migrate", "confirm"]) => {
            migration::confirm(agent, n).await
        }
        (&Method::POST, ["v1", "volumes", n, "migrate", "rollback"]) => {
            migration::rollback(agent, n).await
        }
        (&Method::POST, ["v1", "volumes", n, "salvage"]) => {
            super::salvage::salvage(agent, n, parse(body)?).await
        }
        (&Method::POST, ["v1", "volumes", n, "expand"]) => {
            volumes::expand(agent, n, parse(body)?).await
        }
        (m, ["v1", "volumes", n, "snapshots", rest @ ..]) => {
            volumes::snapshot_call(agent, m, n, rest, body).await
        }
        (&Method::GET, ["v1", "nodes"]) => nodes::list(agent).await,
        (&Method::GET, ["v1", "nodes", n]) => nodes::get(agent, n).await,
        (&Method::POST, ["v1", "nodes", n]) => nodes::update(agent, n, parse(body)?).await,
        (&Method::GET, ["v1", "nodes", n, "drain-check"]) => nodes::drain_check(agent, n).await,
        (&Method::GET, ["v1", "disks"]) => nodes::disks(agent).await,
        (&Method::GET, ["v1", "settings"]) => settings::list(agent).await,
        (&Method::GET, ["v1", "settings", n]) => settings::get(agent, n).await,
        (&Method::PUT, ["v1", "settings", n]) => settings::set(agent, n, parse(body)?).await,
        (&Method::GET, ["v1", "events"]) => settings::events(agent, query).await,
        (&Method::GET, ["v1", "health"]) => health::get(agent).await,
        (&Method::GET, ["v1", "health", "mutes"]) => health::mutes(agent).await,
        (&Method::POST, ["v1", "health", "mutes"]) => health::mute(agent, parse(body)?).await,
        (&Method::DELETE, ["v1", "health", "mutes", c]) => health::unmute(agent, c).await,
        (&Method::POST, ["v1", "uninstall"]) => uninstall::start(agent).await,
        (&Method::GET, ["v1", "uninstall"]) => uninstall::status(agent).await,
        (&Method::GET, ["v1", "logs"]) => ok(&recent_logs(query)),
        (&Method::GET, ["v1", "support-bundle", "node"]) => {
            support_bundle::node(agent, query).await
        }
        (&Method::GET, ["v1", "replicas"]) => {
            let list: Vec<ReplicaView> = agent
                .local
                .replicas
                .all()
                .into_iter()
                .map(|(n, r)| replica_view(agent, &n, &r))
                .collect();
            ok(&list)
        }
        (&Method::POST, ["v1", "replicas"]) => create_replica(agent, parse(body)?).await,
        (&Method::GET, ["v1", "replicas", n]) => {
            let r = agent
                .local
                .replicas
                .get(name(n)?)
                .ok_or_else(|| ApiError::not_found("replica", n))?;
            ok(&replica_view(agent, n, &r))
        }
        (&Method::GET, ["v1", "replicas", n, "verify"]) => verify_replica(agent, name(n)?).await,
        (&Method::DELETE, ["v1", "replicas", n]) => delete_replica(agent, name(n)?).await,
        (&Method::GET, ["v1", "engines"]) => {
            let list: Vec<EngineView> = agent
                .local
                .engines
                .all()
                .iter()
                .map(|e| engine_view(agent, e))
                .collect();
            ok(&list)
        }
        (&Method::POST, ["v1", "engines"]) => create_engine(agent, parse(body)?).await,
        (&Method::GET, ["v1", "engines", n]) => ok(&engine_view(agent, engine(agent, n)?.as_ref())),
        (&Method::DELETE, ["v1", "engines", n]) => {
            let e = agent
                .local
                .engines
                .remove(name(n)?)
                .ok_or_else(|| ApiError::not_found("engine", n))?;
            let _ = vigil_engine::device::ExportDevice::flush(e.as_ref()).await;
            ok(&engine_view(agent, &e))
        }
        (&Method::POST, ["v1", "engines", n, "replicas"]) => {
            let e = engine(agent, n)?;
            let req: AddReplica = parse(body)?;
            let addr = address(&req.url)?;
            let backend = agent
                .local
                .backends
                .open(&addr, e.epoch())
                .await
                .map_err(|f| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "replica_unreachable",
                        format!(
                            "cannot open replica {}: {} ({})",
                            req.url, f.last_error, f.reason
                        ),
                    )
                })?;
            e.add_replica(addr.to_string(), backend).await?;
            ok(&engine_view(agent, &e))
        }
        (&Method::GET, ["v1", "engines", n, "snapshots"]) => {
            let chain = engine(agent, n)?.snapshots().await?;
            ok(&SnapshotList { chain })
        }
        (&Method::POST, ["v1", "engines", n, "snapshots"]) => {
            let e = engine(agent, n)?;
            let req: CreateSnapshot = parse(body)?;
            let snap = match req.name {
                Some(s) => s,
                None => format!("snap-{}", vigil_model::time::now_unix_millis()),
            };
            let generation = chain_generation(agent, &e, "snapshot").await?;
            let layer = e.snapshot(&snap, Default::default()).await?;
            chain_joined(&e, generation).await?;
            Ok((StatusCode::CREATED, to_json(&layer)))
        }
        (&Method::DELETE, ["v1", "engines", n, "snapshots", s]) => {
            let e = engine(agent, n)?;
            let generation = chain_generation(agent, &e, "snapshot removal").await?;
            e.remove_snapshot(name(s)?).await?;
            chain_joined(&e, generation).await?;
            ok(&SnapshotRemoved {
                removed: s.to_string(),
            })
        }
        (&Method::POST, ["v1", "engines", n, "snapshots", s, "revert"]) => {
            let e = engine(agent, n)?;
            let generation = chain_generation(agent, &e, "revert").await?;
            e.revert(name(s)?).await?;
            chain_joined(&e, generation).await?;
            ok(&SnapshotReverted {
                reverted_to: s.to_string(),
            })
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("no route for {method} {path}"),
        )),
    }
}

/// `GET /v1/logs?limit=N`: this agent's newest log lines (JSON each),
/// oldest first; 200 by default, at most the ring's size.
fn recent_logs(query: &str) -> LogLines {
    let limit = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("limit="))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(200);
    LogLines {
        lines: crate::telemetry::logs::recent(limit),
    }
}

fn node_view(agent: &Agent) -> NodeView {
    NodeView {
        name: agent.config.node_name.clone(),
        replica_address: agent.local.me.replica_address.clone(),
        nbd_address: agent.local.me.nbd_address.clone(),
        nbd_socket: agent.local.me.nbd_socket.display().to_string(),
        data_dir: agent.config.data_dir.display().to_string(),
    }
}

fn replica_view(agent: &Agent, name: &str, r: &vigil_engine::replica::Replica) -> ReplicaView {
    ReplicaView {
        name: name.to_string(),
        url: format!("tcp://{}/{name}", agent.local.me.replica_address),
        dir: r.dir().display().to_string(),
        info: r.info(),
    }
}

fn engine(agent: &Agent, n: &str) -> Result<Arc<Engine>, ApiError> {
    agent
        .local
        .engines
        .get(name(n)?)
        .ok_or_else(|| ApiError::not_found("engine", n))
}

fn address(url: &str) -> Result<ReplicaAddress, ApiError> {
    url.parse()
        .map_err(|e: vigil_engine::address::AddressError| {
            ApiError::bad_request("invalid_address", e.to_string())
        })
}

fn engine_view(agent: &Agent, e: &Engine) -> EngineView {
    EngineView {
        nbd_uri: format!("nbd://{}/{}", agent.local.me.nbd_address, e.name()),
        nbd_unix_uri: format!(
            "nbd+unix:///{}?socket={}",
            e.name(),
            agent.local.me.nbd_socket.display()
        ),
        status: e.status(),
    }
}

async fn create_replica(agent: &Arc<Agent>, req: CreateReplica) -> Reply {
    let n = name(&req.name)?.to_string();
    let size = parse_volume_size(&req.size)
        .map_err(|e| ApiError::bad_request("invalid_size", e.to_string()))?;
    let first_disk = agent.local.replicas.disks().first();
    if let Some(disk) = first_disk
        && let Ok(usage) = disk.usage()
        && size > usage.capacity
    {
        return Err(ApiError::bad_request(
            "too_large",
            format!(
                "size {} is larger than the disk {} ({})",
                vigil_engine::size::human(size),
                disk.path.display(),
                vigil_engine::size::human(usage.capacity)
            ),
        ));
    }
    let replicas = Arc::clone(&agent.local.replicas);
    let n2 = n.clone();
    let r = tokio::task::spawn_blocking(move || replicas.create(&n2, size, None))
        .await
        .map_err(|e| ApiError::internal(format!("create task failed: {e}")))?
        .map_err(ApiError::from)?;
    tracing::info!(replica = %n, size, "replica created");
    Ok((StatusCode::CREATED, to_json(&replica_view(agent, &n, &r))))
}

async fn verify_replica(agent: &Arc<Agent>, n: &str) -> Reply {
    let r = agent
        .local
        .replicas
        .get(n)
        .ok_or_else(|| ApiError::not_found("replica", n))?;
    let report = tokio::task::spawn_blocking(move || r.verify())
        .await
        .map_err(|e| ApiError::internal(format!("verify task failed: {e}")))??;
    ok(&VerifyView {
        name: n.to_string(),
        ok: report.problems.is_empty(),
        report,
    })
}

async fn delete_replica(agent: &Arc<Agent>, n: &str) -> Reply {
    let url = format!("tcp://{}/{n}", agent.local.me.replica_address);
    if let Some(e) = agent.local.engines.all().into_iter().find(|e| {
        e.status()
            .replicas
            .iter()
            .any(|r| r.address == url && r.local)
    }) {
        return Err(ApiError::conflict(
            "in_use",
            format!(
                "replica {n:?} is used by engine {:?}; delete the engine first",
                e.name()
            ),
        ));
    }
    let replicas = Arc::clone(&agent.local.replicas);
    let n2 = n.to_string();
    let deleted = tokio::task::spawn_blocking(move || replicas.delete(&n2))
        .await
        .map_err(|e| ApiError::internal(format!("delete task failed: {e}")))?
        .map_err(|e| ApiError::internal(format!("delete replica {n}: {e}")))?;
    if !deleted {
        return Err(ApiError::not_found("replica", n));
    }
    tracing::info!(replica = %n, "replica deleted");
    ok(&ReplicaDeleted {
        deleted: n.to_string(),
    })
}

async fn create_engine(agent: &Arc<Agent>, req: CreateEngine) -> Reply {
    let n = name(&req.name)?.to_string();
    let size = parse_volume_size(&req.size)
        .map_err(|e| ApiError::bad_request("invalid_size", e.to_string()))?;
    if req.replicas.is_empty() {
        return Err(ApiError::bad_request(
            "no_replicas",
            "an engine needs at least one --replica",
        ));
    }
    if agent.local.engines.get(&n).is_some() {
        return Err(ApiError::conflict(
            "already_exists",
            format!("engine {n:?} already exists"),
        ));
    }
    let mut addrs = Vec::new();
    for url in &req.replicas {
        addrs.push(address(url)?);
    }
    // A low-level engine takes its epoch like a volume's (same key space:
    // an engine is named after its volume), so it fences any older engine.
    let epoch = agent.local.cluster.next_epoch(&n).await?;
    let mut specs = Vec::new();
    for a in addrs {
        specs.push(ReplicaSpec {
            address: a.to_string(),
            backend: agent.local.backends.open(&a, epoch).await,
        });
    }
    let engine = Engine::start(&n, size, epoch, specs, agent.config.engine.clone()).await?;
    if !agent.local.engines.insert(Arc::clone(&engine)) {
        engine.shutdown();
        return Err(ApiError::conflict(
            "already_exists",
            format!("engine {n:?} already exists"),
        ));
    }
    Ok((StatusCode::CREATED, to_json(&engine_view(agent, &engine))))
}

/// Bumps the volume's in-sync generation before a chain operation on its
/// engine (store first; `controller::in_sync`). Engines that serve no
/// volume of the cluster (`vigil engine create`) have no set: `None`.
async fn chain_generation(
    agent: &Agent,
    e: &vigil_engine::engine::Engine,
    what: &str,
) -> Result<Option<u64>, ApiError> {
    if !agent.local.managed_engines.contains(e.name()) {
        return Ok(None);
    }
    vigil_control::controller::in_sync::before_chain_operation(
        &agent.local.cluster,
        e.name(),
        e,
        what,
    )
    .await
    .map_err(|m| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "in_sync_generation", m))
}

/// The replicas that took the chain operation persist its generation.
async fn chain_joined(
    e: &vigil_engine::engine::Engine,
    generation: Option<u64>,
) -> Result<(), ApiError> {
    vigil_control::controller::in_sync::after_chain_operation(e, generation)
        .await
        .map_err(|m| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "in_sync_generation", m))
}
