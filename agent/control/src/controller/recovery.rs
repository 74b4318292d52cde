//! Volumes attached to a node that is down. Their owner (the attached
//! node, see [`super::owner_of`]) cannot act, so one ready agent — chosen by
//! rendezvous hashing of the volume's name over the ready nodes — acts for
//! them, following `volume-attachment-recovery-policy`:
//!
//! - `never`: the volume stays attached to the dead node until an operator
//!   detaches it (`vigil volume detach V`, which completes at once while the
//!   node is down) or the node returns;
//! - `wait`: detached here once the node has been down for
//!   `node-down-timeout` ([`Snapshot::node_gone`]);
//! - `immediate`: `vigil volume attach V --node N` moves it to N at once
//!   (done by the API, see [`may_move`]).
//!
//! A detach already asked for (detaching) is finished here whatever the
//! policy. Until something happens, the volume's status message says what
//! the policy will do, and the health check shows it under NODE_DOWN.
//!
//! Fencing: a node is only treated as dead once its liveness lease is gone,
//! i.e. its agent stopped renewing it. A crashed agent runs no engine; when
//! it comes back, its first round stops any engine for a volume no longer
//! attached to it before serving (`volumes::reconcile`). An agent that is
//! alive but cut off from the store keeps serving its clients until it can
//! read the store again — ARCHITECTURE.md ("How a volume moves") names that
//! risk.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{Snapshot, rendezvous};
use crate::cluster::events::Severity;
use crate::cluster::{self, Cluster, delete_op, update_op};
use vigil_model::EventReason;
use vigil_model::settings::Settings;
use vigil_model::volume::Robustness;
use vigil_model::{Engine, Node, Versioned, Volume, VolumeState};

/// `volume-attachment-recovery-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Leave the volume to the operator.
    Never,
    /// Detach it after `node-down-timeout`.
    Wait,
    /// Let another node take it as soon as one asks.
    Immediate,
}

impl Policy {
    /// The stored policy (the registry only accepts the three values; the
    /// default, `wait`, covers anything else).
    pub fn of(settings: &Settings) -> Policy {
        match settings.attachment_recovery_policy() {
            "never" => Policy::Never,
            "immediate" => Policy::Immediate,
            _ => Policy::Wait,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Never => "never",
            Policy::Wait => "wait",
            Policy::Immediate => "immediate",
        }
    }
}

/// Who asked for a detach from a down node (for the event and the count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetachCause {
    /// `vigil volume detach` (now, or before the node went down).
    Operator,
    /// Policy `wait`, after `node-down-timeout`.
    PolicyWait,
}

/// The node `vol` is attached to when that node is not ready.
pub fn stranded_on<'a>(vol: &'a Volume, ready: &BTreeSet<String>) -> Option<&'a str> {
    let node = vol.status.attached_node.as_deref()?;
    let attached = matches!(
        vol.status.state,
        VolumeState::Attaching | VolumeState::Attached | VolumeState::Detaching
    );
    (attached && !ready.contains(node)).then_some(node)
}

/// How long `node` has been down, from its object's `down_since` (`None`
/// until the first agent that noticed wrote it).
fn down_for(node: Option<&Node>, now: u64) -> Option<Duration> {
    let since = node?.status.down_since?;
    Some(Duration::from_secs(now.saturating_sub(since)))
}

fn secs(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{} s", d.as_secs()),
        None => "less than a round".into(),
    }
}

/// Whether an attach to another node may take `volume` from `node`, which
/// is down (for `down`): `Ok` under `immediate` (and under `wait` once
/// `node-down-timeout` has passed: the detach is due anyway), otherwise
/// the refusal naming the policy and the time left.
pub fn may_move(
    volume: &str,
    node: &str,
    down: Option<Duration>,
    settings: &Settings,
) -> Result<(), String> {
    let timeout = settings.node_down_timeout();
    let policy = Policy::of(settings);
    match policy {
        Policy::Immediate => Ok(()),
        Policy::Wait if down.is_some_and(|d| d >= timeout) => Ok(()),
        Policy::Wait => {
            let left = timeout.saturating_sub(down.unwrap_or_default());
            Err(format!(
                "volume {volume:?} is attached to {node}, which has been down for {}; volume-attachment-recovery-policy is wait: it is detached from {node} once {node} has been down for node-down-timeout ({} s), in {} s; attach it then, or detach it now with `vigil volume detach {volume}`",
                secs(down),
                timeout.as_secs(),
                left.as_secs()
            ))
        }
        Policy::Never => Err(format!(
            "volume {volume:?} is attached to {node}, which has been down for {}; volume-attachment-recovery-policy is never: it stays attached to {node} until an operator detaches it with `vigil volume detach {volume}` (done at once while {node} is down)",
            secs(down)
        )),
    }
}

/// What the policy will do, as the volume's status message (no countdown
/// in it, so it is written once).
fn explanation(volume: &str, node: &str, settings: &Settings) -> String {
    match Policy::of(settings) {
        Policy::Never => format!(
            "volume-attachment-recovery-policy is never: {volume} stays attached to {node} until {node} returns or an operator runs `vigil volume detach {volume}` (done at once while {node} is down)"
        ),
        Policy::Wait => format!(
            "volume-attachment-recovery-policy is wait: {volume} is detached from {node} once {node} has been down for node-down-timeout ({} s); `vigil volume detach {volume}` does it now",
            settings.node_down_timeout().as_secs()
        ),
        Policy::Immediate => format!(
            "volume-attachment-recovery-policy is immediate: as {node} is down, `vigil volume attach {volume} --node NODE` moves it to a ready node at once; `vigil volume detach {volume}` detaches it"
        ),
    }
}

/// One round: acts for the volumes attached to down nodes that this agent
/// is chosen for.
pub async fn reconcile(cluster: &Cluster, me: &str, snap: &Snapshot) {
    let policy = Policy::of(&snap.settings);
    for v in &snap.volumes {
        let vol = &v.object;
        // a migration's target rolls it back first when the source is down
        if vol.status.migration.is_some() {
            continue;
        }
        let Some(node) = stranded_on(vol, &snap.ready) else {
            continue;
        };
        if rendezvous(&vol.name, &snap.ready).as_deref() != Some(me) {
            continue;
        }
        let result = if vol.status.state == VolumeState::Detaching {
            detach_from_down_node(cluster, &vol.name, DetachCause::Operator)
                .await
                .map(drop)
        } else if policy == Policy::Wait && snap.node_gone(node) {
            detach_from_down_node(cluster, &vol.name, DetachCause::PolicyWait)
                .await
                .map(drop)
        } else {
            explain(cluster, v, node, &snap.settings).await
        };
        match result {
            Ok(()) => {}
            Err(e) if e.is_conflict() => {}
            Err(e) => {
                tracing::warn!(volume = %vol.name, node, error = %e, "attachment recovery failed")
            }
        }
    }
}

/// Writes what the policy will do into the volume's status message.
async fn explain(
    cluster: &Cluster,
    v: &Versioned<Volume>,
    node: &str,
    settings: &Settings,
) -> cluster::Result<()> {
    let message = explanation(&v.object.name, node, settings);
    if v.object.status.message == message {
        return Ok(());
    }
    let mut next = v.clone();
    next.object.status.message = message;
    cluster.update(&next).await?;
    Ok(())
}

/// Detaches `name` from the node it is attached to, if that node is down:
/// one transaction moves the volume to detached (no attached or desired
/// node, no endpoint) and deletes its engine object. Nothing is stopped:
/// no engine can serve on a node that is not renewing its lease (see the
/// module docs on fencing). Returns the node and how long it was down, or
/// `None` when the volume is not (or no longer) attached to a down node.
pub async fn detach_from_down_node(
    c: &Cluster,
    name: &str,
    cause: DetachCause,
) -> cluster::Result<Option<(String, Option<Duration>)>> {
    let done = c
        .retry(|| async {
            let Some(v) = c.get::<Volume>(name).await? else {
                return Ok(None);
            };
            let ready = c.ready_nodes().await?;
            let Some(node) = stranded_on(&v.object, &ready).map(str::to_string) else {
                return Ok(None);
            };
            let down = down_for(
                c.get::<Node>(&node).await?.map(|n| n.object).as_ref(),
                vigil_model::now_unix() as u64,
            );
            let mut next = v.clone();
            next.object.set_state(VolumeState::Detached)?;
            next.object.spec.node = None;
            next.object.status.attached_node = None;
            next.object.status.endpoint.clear();
            next.object.status.robustness = Robustness::Unknown;
            next.object.status.message.clear();
            let mut ops = vec![update_op(&next)];
            if let Some(e) = c.get::<Engine>(name).await? {
                ops.push(delete_op(&e));
            }
            c.txn(ops).await?;
            Ok(Some((node, down)))
        })
        .await?;
    let Some((node, down)) = &done else {
        return Ok(None);
    };
    let why = match cause {
        DetachCause::Operator => "as requested".to_string(),
        DetachCause::PolicyWait => {
            super::remediation("detach_from_dead_node");
            format!(
                "by volume-attachment-recovery-policy wait (node-down-timeout {} s)",
                c.settings()
                    .await
                    .map(|s| s.node_down_timeout().as_secs().to_string())
                    .unwrap_or_else(|_| "?".into())
            )
        }
    };
    tracing::warn!(volume = %name, node = %node, ?cause, "volume detached from a down node");
    c.event(
        Severity::Warning,
        "volume",
        name,
        EventReason::DetachedFromDownNode,
        format!(
            "volume {name} detached from {node}, down for {}, {why}; {node} stops any engine for it when it returns",
            secs(*down)
        ),
    )
    .await;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_model::settings::StoredSetting;

    fn settings(policy: &str, timeout: &str) -> Settings {
        Settings::from_stored([
            StoredSetting {
                name: "volume-attachment-recovery-policy".into(),
                value: policy.into(),
            },
            StoredSetting {
                name: "node-down-timeout".into(),
                value: timeout.into(),
            },
        ])
    }

    #[test]
    fn a_move_off_a_down_node_follows_the_policy() {
        let s = Some(Duration::from_secs(3));
        assert_eq!(may_move("v", "n1", s, &settings("immediate", "30")), Ok(()));
        assert_eq!(
            may_move("v", "n1", None, &settings("immediate", "30")),
            Ok(())
        );
        let wait = may_move("v", "n1", s, &settings("wait", "30")).unwrap_err();
        assert!(
            wait.contains("policy is wait") && wait.contains("in 27 s"),
            "{wait}"
        );
        assert_eq!(
            may_move(
                "v",
                "n1",
                Some(Duration::from_secs(30)),
                &settings("wait", "30")
            ),
            Ok(())
        );
        let never = may_move(
            "v",
            "n1",
            Some(Duration::from_secs(999)),
            &settings("never", "30"),
        )
        .unwrap_err();
        assert!(never.contains("policy is never") && never.contains("vigil volume detach v"));
    }
}
