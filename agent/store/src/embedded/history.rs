//! The embedded store's watch history: the latest events in memory, and
//! the task that feeds one watch from it.

use std::collections::VecDeque;

use super::*;

/// The latest events, for watches.
pub(super) struct History {
    events: VecDeque<WatchEvent>,
    bytes: usize,
    /// Events up to this revision may be missing (before the store was
    /// opened, or evicted); a watch after it sees everything.
    compacted_through: Revision,
    max_events: usize,
}

pub(super) fn event_bytes(e: &WatchEvent) -> usize {
    let value = match e {
        WatchEvent::Put(kv) => kv.value.len(),
        WatchEvent::Delete { .. } => 0,
    };
    e.key().len() + value + 64
}

impl History {
    pub(super) fn new(compacted_through: Revision, max_events: usize) -> History {
        History {
            events: VecDeque::new(),
            bytes: 0,
            compacted_through,
            max_events,
        }
    }

    pub(super) fn push(&mut self, events: Vec<WatchEvent>) {
        for e in events {
            self.bytes += event_bytes(&e);
            self.events.push_back(e);
        }
        while self.events.len() > self.max_events || self.bytes > HISTORY_BYTES {
            let Some(e) = self.events.pop_front() else {
                break;
            };
            self.bytes -= event_bytes(&e);
            self.compacted_through = self.compacted_through.max(e.revision());
        }
    }

    pub(super) fn check(&self, after: Revision) -> Result<(), StoreError> {
        if after < self.compacted_through {
            return Err(StoreError::Compacted {
                requested: after + 1,
                oldest: self.compacted_through + 1,
            });
        }
        Ok(())
    }

    /// Events under `prefix` with revisions after `after`, whole revisions
    /// at a time, at most about [`WATCH_BATCH`] looked at; and the revision
    /// read up to.
    pub(super) fn since(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<(Vec<WatchEvent>, Revision), StoreError> {
        self.check(after)?;
        let start = self.events.partition_point(|e| e.revision() <= after);
        let mut read_to = after;
        let mut out = Vec::new();
        for (n, e) in self.events.range(start..).enumerate() {
            if n >= WATCH_BATCH && e.revision() != read_to {
                break;
            }
            read_to = e.revision();
            if e.key().starts_with(prefix) {
                out.push(e.clone());
            }
        }
        Ok((out, read_to))
    }
}

/// Feeds one watch from the history. It needs no hand-off between replay
/// and live events: it always reads the history after marking the latest
/// published revision as seen, so a commit it misses wakes it again.
pub(super) async fn forward_watch(
    history: Arc<Mutex<History>>,
    mut published: watch::Receiver<Revision>,
    prefix: String,
    mut after: Revision,
    tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
) {
    loop {
        published.borrow_and_update();
        let batch = lock(&history).since(&prefix, after);
        match batch {
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            Ok((events, read_to)) => {
                for e in events {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                if read_to != after {
                    after = read_to;
                    continue;
                }
            }
        }
        tokio::select! {
            changed = published.changed() => {
                // Closed: the store is gone and every commit was published.
                if changed.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}
