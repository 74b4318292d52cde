//! Self-fencing on lease loss (DRBD's `on-no-quorum`): an agent that cannot
//! renew its node's liveness lease stops its engines' replica I/O before
//! the lease can expire, so that by the time another node sees it down and
//! takes a volume over, the old engine writes nothing.
//!
//! The clock: [`LeaseClock`] keeps the monotonic instant at which the last
//! *successful* renewal (or grant) was sent. The store counts the TTL from
//! when it received that request, which is later, so the lease lives at
//! least until `sent + LEASE_TTL` on any clock that runs at the same rate.
//! At `sent + LEASE_TTL - SELF_FENCE_MARGIN` every engine here is
//! suspended (`engine-on-lease-loss`: held requests or EIO). No wall clock
//! of two nodes is compared anywhere.
//!
//! Resuming: once a renewal succeeds again, each suspended engine resumes
//! only if the store's epoch for its volume is still the engine's own (no
//! newer engine started meanwhile); one with a newer epoch is fenced for
//! good (its clients get EIO, and the replicas would refuse it anyway).
//! A frozen agent (SIGSTOP) cannot suspend anything while frozen; what it
//! sends on waking is refused by every replica a newer engine claimed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::registration::LEASE_TTL;
use crate::cluster::events::Severity;
use crate::local::Local;
use vigil_model::EventReason;
use vigil_model::epoch::EngineEpoch;

/// How long before the lease could expire the engines are suspended.
pub const SELF_FENCE_MARGIN: Duration = Duration::from_secs(3);
/// Counter of ended suspensions, labels `volume` and `outcome` (listed
/// in the metrics catalogue with its HELP).
pub const ENGINE_SUSPENSIONS: &str = "vigil_engine_suspensions_total";

/// Counts one ended suspension of `volume`'s engine: `resumed` or `fenced`.
fn suspension_ended(volume: &str, outcome: &'static str) {
    metrics::counter!(ENGINE_SUSPENSIONS, "volume" => volume.to_string(), "outcome" => outcome)
        .increment(1);
}

/// How often the lease's age is checked.
const TICK: Duration = Duration::from_millis(200);

/// Watches the lease's age until the task is aborted.
pub async fn run(local: Arc<Local>) {
    let limit = LEASE_TTL.saturating_sub(SELF_FENCE_MARGIN);
    // set while this task holds engines suspended: since when
    let mut suspended_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(TICK).await;
        let age = local.lease_clock.age();
        if age > limit {
            let on_loss = local.lease_clock.on_loss();
            let reason = format!(
                "node {} could not renew its liveness lease for {:.1} s (TTL {} s): another node may take its volumes over",
                local.me.name,
                age.as_secs_f64(),
                LEASE_TTL.as_secs()
            );
            for e in local.all_engines() {
                if e.suspended().is_none() && !e.is_fenced() {
                    e.suspend(on_loss, reason.clone()).await;
                }
            }
            if suspended_since.is_none() {
                tracing::error!(node = %local.me.name, age_s = age.as_secs_f64(), on_loss = on_loss.as_str(), "liveness lease not renewed: every engine here is suspended");
                suspended_since = Some(Instant::now());
            }
        } else if let Some(since) = suspended_since
            && resume_owned(&local, since.elapsed()).await
        {
            suspended_since = None;
        }
    }
}

/// Resumes each suspended engine whose volume has no newer epoch, fences
/// those that have one; false when the store could not say (try again).
async fn resume_owned(local: &Local, suspended_for: Duration) -> bool {
    let mut decided = true;
    for e in local.all_engines() {
        if e.suspended().is_none() {
            continue;
        }
        let name = e.name().to_string();
        let latest = match local.cluster.get::<EngineEpoch>(&name).await {
            Ok(latest) => latest.map(|v| v.object),
            Err(err) => {
                tracing::warn!(volume = %name, error = %err, "lease renewed, but the volume's epoch cannot be read; the engine stays suspended");
                decided = false;
                continue;
            }
        };
        let (severity, reason, message) = match latest {
            Some(l) if l.epoch == e.epoch() => {
                e.resume();
                suspension_ended(&name, "resumed");
                (
                    Severity::Normal,
                    EventReason::EngineResumed,
                    format!(
                        "the engine of {name} on {} (epoch {}) resumed after {:.1} s suspended: the node's liveness lease could not be renewed in time, and no newer engine started meanwhile",
                        local.me.name,
                        e.epoch(),
                        suspended_for.as_secs_f64()
                    ),
                )
            }
            Some(l) => {
                let _ = e.fence().await;
                suspension_ended(&name, "fenced");
                super::volumes::record_fenced(
                    &local.cluster,
                    &name,
                    e.epoch(),
                    &format!(
                        "an engine of epoch {} started on {} while this node could not renew its lease",
                        l.epoch, l.node
                    ),
                )
                .await;
                (
                    Severity::Warning,
                    EventReason::EngineFenced,
                    format!(
                        "the engine of {name} on {} (epoch {}) stays fenced: while the node's liveness lease could not be renewed, an engine of epoch {} started on {}; its clients get I/O errors",
                        local.me.name,
                        e.epoch(),
                        l.epoch,
                        l.node
                    ),
                )
            }
            // no epoch record: the volume is gone; the controllers stop it
            None => continue,
        };
        local
            .cluster
            .event(severity, "volume", &name, reason, message)
            .await;
    }
    decided
}
