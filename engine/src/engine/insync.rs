//! The in-sync set's hook on the data path: which replicas hold every
//! acknowledged write is recorded by the control plane, and that record
//! must never lag behind an acknowledgement.
//!
//! When a replica leaves RW (it failed, timed out, was taken out), the
//! replicas still RW are the only ones holding what is written from now on.
//! If the engine acknowledged a write before the control plane recorded
//! that smaller set, a crash could let the next engine start from the
//! replica that left, which lacks the write. So once a recorder is attached
//! ([`Engine::require_recorded_membership`]), no write, trim, write-zeroes
//! or flush is acknowledged while a shrink is unrecorded: the request
//! waits until [`Engine::membership_recorded`] covers it (or the engine is
//! fenced). Growth (a rebuilt replica turning RW) is recorded too, but
//! nothing waits for it: an unrecorded member is only rebuilt once more.
//!
//! Without a recorder (tests, `vigil engine create`) nothing waits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::watch;

use super::{Engine, Mode};
use crate::device::DeviceError;

/// Membership bookkeeping of one engine.
pub(super) struct Membership {
    /// Bumped on every change of the RW set (either way): wakes the recorder.
    changes: watch::Sender<u64>,
    /// RW → ERR transitions so far.
    shrinks: AtomicU64,
    /// Shrinks the recorder has written down.
    recorded: watch::Sender<u64>,
    /// Whether acknowledgements wait for the recorder.
    recorder: AtomicBool,
    /// Set when the engine is being fenced: waiting requests fail instead
    /// (the fence needs the I/O gate they hold).
    abandoned: AtomicBool,
}

impl Default for Membership {
    fn default() -> Self {
        Membership {
            changes: watch::channel(0).0,
            shrinks: AtomicU64::new(0),
            recorded: watch::channel(0).0,
            recorder: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
        }
    }
}

impl Membership {
    /// A replica left RW.
    pub(super) fn shrank(&self) {
        self.shrinks.fetch_add(1, Ordering::AcqRel);
        self.changes.send_modify(|n| *n += 1);
        // Waiting requests look again: the last RW replica may be gone.
        self.wake();
    }

    /// A replica turned RW.
    pub(super) fn grew(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Wakes requests waiting for the recorder (so they see a fence).
    pub(super) fn wake(&self) {
        self.recorded.send_modify(|_| {});
    }

    /// The engine is being fenced: requests waiting for the recorder fail
    /// (unacknowledged) rather than hold the gate the fence needs.
    pub(super) fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.wake();
    }
}

impl Engine {
    /// From now on no write or flush is acknowledged after a replica left
    /// RW until [`Engine::membership_recorded`] says the smaller set is
    /// recorded. Call before the engine serves.
    pub fn require_recorded_membership(&self) {
        self.membership.recorder.store(true, Ordering::Release);
    }

    /// Changes to watch: the value moves on every change of the RW set.
    pub fn membership_changes(&self) -> watch::Receiver<u64> {
        self.membership.changes.subscribe()
    }

    /// The shrinks so far and the replicas RW now (read in that order, so
    /// recording this set covers at least those shrinks).
    pub fn membership(&self) -> (u64, Vec<String>) {
        let shrinks = self.membership.shrinks.load(Ordering::Acquire);
        let rw = self
            .slots()
            .iter()
            .filter(|s| s.mode() == Mode::ReadWrite)
            .map(|s| s.address.clone())
            .collect();
        (shrinks, rw)
    }

    /// The control plane recorded the RW set read with `shrinks` shrinks:
    /// requests waiting for it are acknowledged.
    pub fn membership_recorded(&self, shrinks: u64) {
        self.membership.recorded.send_if_modified(|r| {
            if shrinks > *r {
                *r = shrinks;
                true
            } else {
                false
            }
        });
    }

    /// Waits until every shrink so far is recorded (at once without a
    /// recorder or a shrink); fails if the engine is fenced meanwhile.
    pub(super) async fn wait_membership_recorded(&self) -> Result<(), DeviceError> {
        if !self.membership.recorder.load(Ordering::Acquire) {
            return Ok(());
        }
        let needed = self.membership.shrinks.load(Ordering::Acquire);
        let mut rx = self.membership.recorded.subscribe();
        loop {
            self.check_fence()?;
            // Every replica the request reached may have failed since; with
            // none RW, no record can name a replica that holds it, so it is
            // never acknowledged — checked before the record, since a
            // record of an empty RW set writes nothing yet would release it.
            if !self.slots().iter().any(|s| s.mode() == Mode::ReadWrite) {
                return Err(DeviceError::Io(format!(
                    "volume {}: no replica is RW any more; not acknowledged",
                    self.name
                )));
            }
            if *rx.borrow_and_update() >= needed {
                return Ok(());
            }
            if self.membership.abandoned.load(Ordering::Acquire) {
                return Err(DeviceError::Io(format!(
                    "volume {}: the engine stopped before the smaller in-sync set was recorded; not acknowledged",
                    self.name
                )));
            }
            if rx.changed().await.is_err() {
                // the sender lives as long as the engine
                std::future::pending::<()>().await;
            }
        }
    }
}
