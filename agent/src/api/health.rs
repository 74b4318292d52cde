//! Health: `GET /v1/health` (the evaluated report, always 200),
//! `GET|POST /v1/health/mutes`, `DELETE /v1/health/mutes/CODE`.

use hyper::StatusCode;

use super::error::ApiError;
use super::to_json;
use crate::daemon::Agent;
use vigil_control::cluster::events::Severity;
use vigil_control::cluster::put_op;
use vigil_control::health::{self, MAX_MUTE_SECONDS, MuteRequest, codes};
use vigil_model::EventReason;
use vigil_model::{Mute, Object};
use vigil_store::Expect;

type Reply = Result<(StatusCode, Vec<u8>), ApiError>;

/// `GET /v1/health`: the report; the status is inside.
pub async fn get(agent: &Agent) -> Reply {
    Ok((
        StatusCode::OK,
        to_json(&vigil_control::health::local::report(&agent.local).await),
    ))
}

fn known(code: &str) -> Result<&'static codes::CodeInfo, ApiError> {
    codes::info(code).ok_or_else(|| {
        ApiError::bad_request(
            "unknown_code",
            format!(
                "unknown health-check code {code:?}; known codes: {}",
                codes::all()
                    .iter()
                    .map(|c| c.code)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

/// `GET /v1/health/mutes`: the active mutes.
pub async fn mutes(agent: &Agent) -> Reply {
    let now = health::view::now_secs();
    let list: Vec<Mute> = agent
        .local
        .cluster
        .list::<Mute>()
        .await?
        .into_iter()
        .map(|v| v.object)
        .filter(|m| m.active(now))
        .collect();
    Ok((StatusCode::OK, to_json(&list)))
}

/// `POST /v1/health/mutes`: mutes a code (replacing its mute, if any) and
/// prunes expired mutes.
pub async fn mute(agent: &Agent, req: MuteRequest) -> Reply {
    let info = known(&req.code)?;
    if !(1..=MAX_MUTE_SECONDS).contains(&req.for_seconds) {
        return Err(ApiError::bad_request(
            "invalid_duration",
            format!(
                "a mute lasts from 1 second to 30 days ({MAX_MUTE_SECONDS} s); got {} s",
                req.for_seconds
            ),
        ));
    }
    let reason = req.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_reason",
            "a mute needs a reason (--reason TEXT): it is shown with the muted check",
        ));
    }
    let now = health::view::now_secs();
    let mute = Mute {
        code: info.code.to_string(),
        until_unix: now + req.for_seconds,
        reason: reason.to_string(),
        created_unix: now,
        created_by: agent.config.node_name.clone(),
    };
    let c = &agent.local.cluster;
    c.retry(|| async {
        let expect = match c.get::<Mute>(&mute.code).await? {
            Some(v) => Expect::Revision(v.revision),
            None => Expect::Absent,
        };
        c.txn(vec![put_op(&mute, expect)]).await
    })
    .await?;
    prune(agent, now).await;
    c.event(
        Severity::Normal,
        "health",
        &mute.code,
        EventReason::HealthCheckMuted,
        format!(
            "{} muted for {} s (until {}): {}",
            mute.code, req.for_seconds, mute.until_unix, mute.reason
        ),
    )
    .await;
    Ok((StatusCode::OK, to_json(&mute)))
}

/// `DELETE /v1/health/mutes/CODE`.
pub async fn unmute(agent: &Agent, code: &str) -> Reply {
    let info = known(code)?;
    let c = &agent.local.cluster;
    let removed = c
        .retry(|| async {
            match c.get::<Mute>(info.code).await? {
                Some(v) => {
                    c.delete(&v).await?;
                    Ok(Some(v.object))
                }
                None => Ok(None),
            }
        })
        .await?;
    let Some(mute) = removed else {
        return Err(ApiError::not_found("mute", info.code));
    };
    c.event(
        Severity::Normal,
        "health",
        info.code,
        EventReason::HealthCheckUnmuted,
        format!("{} unmuted (was muted: {})", info.code, mute.reason),
    )
    .await;
    Ok((StatusCode::OK, to_json(&mute)))
}

/// Deletes expired mutes (best effort: a failure leaves them, and
/// evaluation ignores them anyway).
async fn prune(agent: &Agent, now: u64) {
    let Ok(all) = agent.local.cluster.list::<Mute>().await else {
        return;
    };
    for v in all.into_iter().filter(|v| !v.object.active(now)) {
        if let Err(e) = agent.local.cluster.delete(&v).await {
            tracing::debug!(mute = %v.object.key(), error = %e, "pruning an expired mute failed");
        }
    }
}
