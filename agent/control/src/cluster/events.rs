//! Recording events: best effort (a failed event write is logged, never
//! fails the operation it describes), and pruned to the newest
//! [`KEEP_EVENTS`].

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Cluster, put_op};
use vigil_model::{Event, EventReason, Object, now_unix};
use vigil_store::{Expect, Op, Revision};

/// Counter of events written, label `severity` (listed in the metrics
/// catalogue with its HELP).
pub const EVENTS_RECORDED: &str = "vigil_events_recorded_total";

/// How many events the cluster keeps.
pub const KEEP_EVENTS: usize = 2000;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

impl Cluster {
    /// Records that `reason` happened to `kind`/`object`.
    pub async fn event(
        &self,
        severity: Severity,
        kind: &str,
        object: &str,
        reason: EventReason,
        message: impl Into<String>,
    ) {
        let event = self.new_event(severity, kind, object, reason, message.into());
        said(&event);
        if let Err(e) = self.create(&event).await {
            tracing::warn!(error = %e, reason = reason.as_str(), "could not record event");
        }
    }

    /// Applies `ops` (compare-and-swaps of a state change) and records the
    /// event that says why in the same transaction: a crash between the
    /// two cannot leave the change without its event, and whoever sees the
    /// change can read its event. `Conflict` when an expectation fails
    /// (then no event is written either).
    pub async fn txn_with_event(
        &self,
        mut ops: Vec<Op>,
        severity: Severity,
        kind: &str,
        object: &str,
        reason: EventReason,
        message: impl Into<String>,
    ) -> super::Result<Revision> {
        let event = self.new_event(severity, kind, object, reason, message.into());
        ops.push(put_op(&event, Expect::Absent));
        let rev = self.txn(ops).await?;
        said(&event);
        Ok(rev)
    }

    /// An event of this node, stamped now.
    fn new_event(
        &self,
        severity: Severity,
        kind: &str,
        object: &str,
        reason: EventReason,
        message: String,
    ) -> Event {
        let time = now_unix();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let sev = match severity {
            Severity::Normal => "normal",
            Severity::Warning => "warning",
        };
        Event {
            id: format!("{:020}-{}-{seq}", (time * 1e6) as u64, self.node()),
            time,
            severity: sev.into(),
            kind: kind.into(),
            object: object.into(),
            reason: reason.as_str().to_string(),
            message,
            node: self.node().to_string(),
        }
    }

    /// Deletes the oldest events beyond [`KEEP_EVENTS`].
    pub async fn prune_events(&self) {
        let listing = match self.store.list(Event::PREFIX).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "event pruning skipped");
                return;
            }
        };
        let excess = listing.kvs.len().saturating_sub(KEEP_EVENTS);
        // keys sort by time, so the first `excess` are the oldest
        for chunk in listing.kvs[..excess].chunks(64) {
            let ops = chunk
                .iter()
                .map(|kv| Op::delete(kv.key.clone(), Expect::Any))
                .collect();
            if let Err(e) = self.txn(ops).await {
                tracing::debug!(error = %e, "event pruning failed");
                return;
            }
        }
    }
}

/// Logs and counts an event as it is recorded.
fn said(e: &Event) {
    let (kind, object, reason, message) = (
        e.kind.as_str(),
        e.object.as_str(),
        e.reason.as_str(),
        e.message.as_str(),
    );
    metrics::counter!(EVENTS_RECORDED, "severity" => e.severity.clone()).increment(1);
    if e.severity == "warning" {
        tracing::warn!(kind, object, reason, %message, "event");
    } else {
        tracing::info!(kind, object, reason, %message, "event");
    }
}
