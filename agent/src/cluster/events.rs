//! Recording events: best effort (a failed event write is logged, never
//! fails the operation it describes), and pruned to the newest
//! [`KEEP_EVENTS`].

use std::sync::atomic::{AtomicU64, Ordering};

use super::Cluster;
use crate::model::{Event, Object, now_unix};
use crate::store::{Expect, Op};

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
        reason: &str,
        message: impl Into<String>,
    ) {
        let time = now_unix();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let event = Event {
            id: format!("{:020}-{}-{seq}", (time * 1e6) as u64, self.node()),
            time,
            severity: match severity {
                Severity::Normal => "normal".into(),
                Severity::Warning => "warning".into(),
            },
            kind: kind.into(),
            object: object.into(),
            reason: reason.into(),
            message: message.into(),
            node: self.node().to_string(),
        };
        let sev = match severity {
            Severity::Normal => "normal",
            Severity::Warning => "warning",
        };
        metrics::counter!(crate::metrics::names::EVENTS_RECORDED, "severity" => sev).increment(1);
        match severity {
            Severity::Normal => {
                tracing::info!(kind, object, reason, message = %event.message, "event")
            }
            Severity::Warning => {
                tracing::warn!(kind, object, reason, message = %event.message, "event")
            }
        }
        if let Err(e) = self.create(&event).await {
            tracing::warn!(error = %e, reason, "could not record event");
        }
    }

    /// Deletes the oldest events beyond [`KEEP_EVENTS`].
    pub async fn prune_events(&self) {
        let listing = match self.store().list(Event::PREFIX).await {
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
