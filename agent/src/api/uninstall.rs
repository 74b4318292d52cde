//! `POST /v1/uninstall` (claim, see `cluster::uninstall`) and `GET
//! /v1/uninstall` (the record). Any agent answers; the work itself is done
//! by every agent's controllers (`controller::uninstall`).
//!
//! Statuses: 202 when this call claimed the uninstall; 200 when another
//! call had (in progress or done); 412 `uninstall_not_confirmed` when the
//! confirmation flag is not true (nothing is done).

use hyper::StatusCode;

use super::error::ApiError;
use super::to_json;
use crate::daemon::Agent;
use vigil_control::cluster::events::Severity;
use vigil_control::cluster::uninstall::{Claim, FLAG};
use vigil_control::controller::uninstall::note;
use vigil_model::EventReason;
use vigil_model::uninstall::Uninstall;
use vigil_model::wire::UninstallReply;

type Reply = Result<(StatusCode, Vec<u8>), ApiError>;

/// Unix seconds as RFC 3339 for messages.
pub fn when(secs: f64) -> String {
    vigil_model::time::rfc3339(secs as u64, 0)
}

fn running(u: &Uninstall) -> String {
    format!(
        "uninstall already in progress (claimed by {} at {}, phase {}): {}",
        u.by_node,
        when(u.started_at),
        u.phase,
        u.message
    )
}

fn done(u: &Uninstall) -> String {
    format!(
        "uninstall already done at {} (claimed by {} at {}); restart the agents to install again",
        when(u.finished_at.unwrap_or(u.progressed_at)),
        u.by_node,
        when(u.started_at)
    )
}

pub async fn start(agent: &Agent) -> Reply {
    let me = agent.config.node_name.clone();
    let c = &agent.local.cluster;
    let (status, reply) = match c.claim_uninstall().await? {
        Claim::Started(r) => {
            c.event(
                Severity::Warning,
                "uninstall",
                &r.object.name,
                EventReason::UninstallStarted,
                format!(
                    "uninstall claimed by {me} ({FLAG} true at revision {}): every volume, replica, engine and the cluster state will be deleted",
                    r.object.flag_revision
                ),
            )
            .await;
            (
                StatusCode::ACCEPTED,
                UninstallReply {
                    outcome: "started".into(),
                    message: format!(
                        "uninstall started by {me}: deleting every volume, replica and engine, then the cluster state"
                    ),
                    uninstall: Some(r.object),
                },
            )
        }
        Claim::AlreadyRunning(u) => {
            let message = running(&u);
            c.event(
                Severity::Normal,
                "uninstall",
                &u.name,
                EventReason::UninstallAlreadyRunning,
                format!("uninstall asked of {me}: {message}"),
            )
            .await;
            note(
                &agent.local,
                format!("UninstallAlreadyRunning: asked again of {me}"),
            )
            .await;
            (
                StatusCode::OK,
                UninstallReply {
                    outcome: "in_progress".into(),
                    message,
                    uninstall: Some(u),
                },
            )
        }
        // No event: events are gone with the cluster, and an idle cluster
        // records nothing.
        Claim::AlreadyDone(u) => (
            StatusCode::OK,
            UninstallReply {
                outcome: "done".into(),
                message: done(&u),
                uninstall: Some(u),
            },
        ),
        Claim::Refused { stored } => {
            let value = match &stored {
                Some(v) => format!("is {v}"),
                None => "is not set (default false)".into(),
            };
            let message = format!(
                "uninstall refused: the setting {FLAG} {value}; nothing was deleted. To confirm that every volume and all cluster state may be deleted, run `vigil settings set {FLAG} true`, then `vigil uninstall` again"
            );
            c.event(
                Severity::Warning,
                "uninstall",
                vigil_model::uninstall::RECORD,
                EventReason::UninstallRefused,
                format!("uninstall asked of {me} refused: {FLAG} {value}"),
            )
            .await;
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "uninstall_not_confirmed",
                message,
            ));
        }
    };
    Ok((status, to_json(&reply)))
}

pub async fn status(agent: &Agent) -> Reply {
    let reply = match agent.local.cluster.uninstall_record().await? {
        None => UninstallReply {
            outcome: "none".into(),
            message: "no uninstall has been asked for".into(),
            uninstall: None,
        },
        Some(r) if r.object.is_done() => UninstallReply {
            outcome: "done".into(),
            message: r.object.message.clone(),
            uninstall: Some(r.object),
        },
        Some(r) => UninstallReply {
            outcome: "in_progress".into(),
            message: format!(
                "uninstall claimed by {} at {}, phase {}, driven by {}: {}",
                r.object.by_node,
                when(r.object.started_at),
                r.object.phase,
                r.object.driven_by,
                r.object.message
            ),
            uninstall: Some(r.object),
        },
    };
    Ok((StatusCode::OK, to_json(&reply)))
}

/// Why a volume cannot be created now, if an uninstall record exists.
pub fn create_refusal(u: &Uninstall) -> ApiError {
    if u.is_done() {
        ApiError::conflict(
            "cluster_uninstalled",
            format!(
                "the cluster was uninstalled at {} (claimed by {}); restart the agents to install again",
                when(u.finished_at.unwrap_or(u.progressed_at)),
                u.by_node
            ),
        )
    } else {
        ApiError::conflict(
            "uninstall_in_progress",
            format!(
                "the cluster is being uninstalled (claimed by {} at {}, phase {}); no volume can be created",
                u.by_node,
                when(u.started_at),
                u.phase
            ),
        )
    }
}
