//! `POST /v1/volumes/NAME/migrate` (`{"to": N2}`), `…/migrate/confirm` and
//! `…/migrate/rollback`: each records the request on the volume (CAS) and
//! waits for the agents (`controller::migration`) to reach the phase it
//! asked for, or for the rollback that happened instead.

use std::time::Duration;

use hyper::StatusCode;

use super::error::ApiError;
use super::to_json;
use super::volumes::{Reply, must_get, view, volume_name};
use crate::daemon::Agent;
use vigil_control::cluster::events::Severity;
use vigil_model::EventReason;
use vigil_model::migration::{Migration, MigrationPhase};
use vigil_model::volume::DataLocality;
use vigil_model::wire::MigrateVolume;
use vigil_model::{Event, Node, Replica, Volume, VolumeState, now_unix};

/// How long a call waits for the phase it asked for.
const WAIT: Duration = Duration::from_secs(90);

pub async fn start(agent: &Agent, name: &str, req: MigrateVolume) -> Reply {
    volume_name(name)?;
    let to = req.to;
    let c = &agent.local.cluster;
    let Some(node) = c.get::<Node>(&to).await? else {
        return Err(ApiError::not_found("node", &to));
    };
    if !c.ready_nodes().await?.contains(&to) {
        return Err(ApiError::conflict(
            "node_not_ready",
            format!("node {to:?} is not ready (its agent is down or cut off from the store)"),
        ));
    }
    if node.object.spec.eviction_requested {
        return Err(ApiError::conflict(
            "node_evicting",
            format!("node {to:?} is being evicted; migrate to another node"),
        ));
    }
    let rebuilding: Vec<String> = c
        .list::<Replica>()
        .await?
        .into_iter()
        .filter(|r| {
            r.object.spec.volume == name
                && r.object
                    .status
                    .rebuild
                    .as_ref()
                    .is_some_and(|b| b.finished_unix.is_none())
        })
        .map(|r| r.object.name)
        .collect();
    if !rebuilding.is_empty() {
        return Err(ApiError::conflict(
            "volume_rebuilding",
            format!(
                "volume {name:?} is rebuilding replica(s) {}; migrate once the rebuild finished",
                rebuilding.join(", ")
            ),
        ));
    }
    let now = now_unix() as u64;
    let mut refusal = None;
    let v = c
        .modify::<Volume, _>(name, |v| {
            refusal = None;
            if let Some(m) = &v.status.migration {
                if m.target == to {
                    return Ok(false); // asked twice: wait for the same one
                }
                refusal = Some(in_progress(name, m));
                return Ok(false);
            }
            let Some(source) = v.status.attached_node.clone() else {
                refusal = Some(ApiError::conflict(
                    "not_attached",
                    format!("volume {name:?} is {}; only an attached volume migrates (attach it to {to} instead)", v.status.state),
                ));
                return Ok(false);
            };
            if v.status.state != VolumeState::Attached || v.spec.node.as_deref() != Some(&source)
            {
                refusal = Some(ApiError::conflict(
                    "volume_busy",
                    format!("volume {name:?} is {}; migrate it once it is attached", v.status.state),
                ));
                return Ok(false);
            }
            if source == to {
                refusal = Some(ApiError::conflict(
                    "same_node",
                    format!("volume {name:?} is already attached to {to}"),
                ));
                return Ok(false);
            }
            if v.spec.data_locality == DataLocality::StrictLocal {
                refusal = Some(ApiError::conflict(
                    "not_local",
                    format!("volume {name:?} is strict-local: it is served only where its replica is ({source})"),
                ));
                return Ok(false);
            }
            v.status.migration = Some(Migration {
                target: to.clone(),
                source,
                phase: MigrationPhase::Starting,
                started_at: now,
                phase_since: now,
                target_endpoint: String::new(),
                message: String::new(),
                target_stopped: false,
                source_stopped: false,
            });
            Ok(true)
        })
        .await?;
    if let Some(e) = refusal {
        return Err(e);
    }
    if let Some(m) = v.status.migration.as_ref().filter(|m| m.started_at == now) {
        c.event(
            Severity::Normal,
            "volume",
            name,
            EventReason::MigrationStarted,
            format!(
                "migration of {name} from {} to {} requested; {} brings up a second export forwarding to the engine on {}",
                m.source, m.target, m.target, m.source
            ),
        )
        .await;
    }
    wait(agent, name, |v| match &v.status.migration {
        // a rollback is waited for: the caller learns why from its end
        Some(m)
            if matches!(
                m.phase,
                MigrationPhase::Starting | MigrationPhase::RollingBack
            ) =>
        {
            None
        }
        Some(_) => Some(Ok(())),
        None if v.status.attached_node.as_deref() == Some(to.as_str()) => Some(Ok(())),
        None => Some(Err(())),
    })
    .await
}

pub async fn confirm(agent: &Agent, name: &str) -> Reply {
    volume_name(name)?;
    let now = now_unix() as u64;
    let mut refusal = None;
    let mut target = String::new();
    let v = agent
        .local
        .cluster
        .modify::<Volume, _>(name, |v| {
            refusal = None;
            let Some(m) = v.status.migration.as_mut() else {
                refusal = Some(not_migrating(name, v));
                return Ok(false);
            };
            target = m.target.clone();
            match m.phase {
                MigrationPhase::Ready => {
                    m.set_phase(MigrationPhase::Confirming, now)?;
                    Ok(true)
                }
                MigrationPhase::Starting => {
                    refusal = Some(ApiError::conflict(
                        "migration_not_ready",
                        format!("the target {} does not serve {name} yet; confirm once `vigil volume migrate {name} --to {}` returned", m.target, m.target),
                    ));
                    Ok(false)
                }
                MigrationPhase::RollingBack => {
                    refusal = Some(ApiError::conflict(
                        "migration_rolling_back",
                        format!("the migration of {name} is rolling back: {}", m.message),
                    ));
                    Ok(false)
                }
                // already confirmed: wait for it
                _ => Ok(false),
            }
        })
        .await?;
    if let Some(e) = refusal {
        return Err(e);
    }
    if v.status
        .migration
        .as_ref()
        .is_some_and(|m| m.phase == MigrationPhase::Confirming && m.phase_since == now)
    {
        agent
            .local
            .cluster
            .event(
                Severity::Normal,
                "volume",
                name,
                EventReason::MigrationConfirming,
                format!("migration of {name} to {target} confirmed; the target pauses, the source flushes and is fenced, the target takes over"),
            )
            .await;
    }
    wait(agent, name, |v| match &v.status.migration {
        Some(_) => None,
        None if v.status.attached_node.as_deref() == Some(target.as_str()) => Some(Ok(())),
        None => Some(Err(())),
    })
    .await
}

pub async fn rollback(agent: &Agent, name: &str) -> Reply {
    volume_name(name)?;
    let now = now_unix() as u64;
    let mut refusal = None;
    let mut started = false;
    let v = agent
        .local
        .cluster
        .modify::<Volume, _>(name, |v| {
            refusal = None;
            started = false;
            let Some(m) = v.status.migration.as_mut() else {
                refusal = Some(not_migrating(name, v));
                return Ok(false);
            };
            match m.phase {
                MigrationPhase::RollingBack => Ok(false),
                MigrationPhase::Switching => {
                    refusal = Some(ApiError::conflict(
                        "migration_switching",
                        format!("the source of {name} is already fenced and {} is starting its engine; the migration completes, or rolls back by itself if the target fails", m.target),
                    ));
                    Ok(false)
                }
                _ => {
                    m.set_phase(MigrationPhase::RollingBack, now)?;
                    m.message = "rolled back by the operator".into();
                    started = true;
                    Ok(true)
                }
            }
        })
        .await?;
    if let Some(e) = refusal {
        return Err(e);
    }
    if started && let Some(m) = &v.status.migration {
        agent
            .local
            .cluster
            .event(
                Severity::Normal,
                "volume",
                name,
                EventReason::MigrationRollingBack,
                format!(
                    "migration of {name} to {} rolls back: asked by the operator",
                    m.target
                ),
            )
            .await;
    }
    let source = v
        .status
        .migration
        .as_ref()
        .map(|m| m.source.clone())
        .unwrap_or_default();
    wait(agent, name, |v| match &v.status.migration {
        Some(_) => None,
        None if v.status.attached_node.as_deref() == Some(source.as_str()) => Some(Ok(())),
        None => Some(Err(())),
    })
    .await
}

fn in_progress(name: &str, m: &Migration) -> ApiError {
    ApiError::conflict(
        "migration_in_progress",
        format!(
            "volume {name:?} is migrating from {} to {} ({}); confirm or roll it back first (`vigil volume migrate {name} --confirm` / `--rollback`)",
            m.source, m.target, m.phase
        ),
    )
}

/// Refusal for detach, attach elsewhere, delete or expand while a
/// migration runs.
pub fn refuse_while_migrating(name: &str, v: &Volume) -> Option<ApiError> {
    v.status.migration.as_ref().map(|m| in_progress(name, m))
}

fn not_migrating(name: &str, v: &Volume) -> ApiError {
    ApiError::conflict(
        "not_migrating",
        format!(
            "volume {name:?} has no migration in progress (it is {} on {})",
            v.status.state,
            v.status.attached_node.as_deref().unwrap_or("no node")
        ),
    )
}

/// Waits until `done` says the call's goal was reached (`Ok`) or the
/// migration ended the other way (`Err`: rolled back, or completed when a
/// rollback was asked), then answers with the volume — or with the
/// rollback's reason as an error.
async fn wait(
    agent: &Agent,
    name: &str,
    mut done: impl FnMut(&Volume) -> Option<Result<(), ()>>,
) -> Reply {
    let deadline = tokio::time::Instant::now() + WAIT;
    // The migration as last seen: its start bounds which events are its
    // own, and its message says why it rolled back if no event does.
    let mut last: Option<Migration> = None;
    loop {
        let v = must_get(agent, name).await?;
        match done(&v.object) {
            Some(Ok(())) => return Ok((StatusCode::OK, to_json(&view(agent, &v.object).await?))),
            Some(Err(())) => {
                let why = ending_reason(agent, name, last.as_ref()).await;
                return Err(ApiError::conflict("migration_rolled_back", why));
            }
            None => {}
        }
        if let Some(m) = &v.object.status.migration {
            last = Some(m.clone());
        }
        if tokio::time::Instant::now() >= deadline {
            let phase = v
                .object
                .status
                .migration
                .as_ref()
                .map(|m| format!("{} ({})", m.phase, m.message))
                .unwrap_or_default();
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "migration_timeout",
                format!(
                    "volume {name:?} is still migrating after {}s: {phase}",
                    WAIT.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Why a migration ended the other way: its MigrationRolledBack or
/// MigrationCompleted event, written in the same transaction as the volume
/// change the caller saw; the migration's own last message if it has none
/// (events are pruned).
async fn ending_reason(agent: &Agent, name: &str, last: Option<&Migration>) -> String {
    let since = last.map_or(0.0, |m| m.started_at as f64);
    let found = agent
        .local
        .cluster
        .list::<Event>()
        .await
        .unwrap_or_default()
        .into_iter()
        .rev()
        .find(|e| {
            e.object.kind == "volume"
                && e.object.object == name
                && e.object.time >= since
                && matches!(
                    e.object.reason.as_str(),
                    "MigrationRolledBack" | "MigrationCompleted"
                )
        });
    if let Some(e) = found {
        return e.object.message;
    }
    match last {
        Some(m) if !m.message.is_empty() => format!(
            "the migration of {name} to {} ended the other way ({}): {}",
            m.target, m.phase, m.message
        ),
        Some(m) => format!(
            "the migration of {name} from {} to {} ended the other way",
            m.source, m.target
        ),
        None => "the migration ended the other way".into(),
    }
}
