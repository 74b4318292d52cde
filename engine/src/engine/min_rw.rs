//! Write availability against durability (Ceph's `min_size`): how many RW
//! replicas must hold a write before it is acknowledged.
//!
//! With fewer RW replicas than the minimum, new client requests are held
//! (until rebuilds bring enough replicas back, or the engine is fenced) or
//! fail with EIO at once — the same choice as for a lost lease
//! ([`OnSuspend`]). A request already under way that finds fewer RW
//! replicas than the minimum when its legs answer is not acknowledged (EIO):
//! its data reached too few copies. Reads are not affected. The default
//! minimum is 1: a write needs one RW replica, as always.

use super::{Engine, Mode, OnSuspend};
use crate::device::DeviceError;

/// The minimum and what clients see below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MinRw {
    pub(super) min: usize,
    pub(super) below: OnSuspend,
}

impl Default for MinRw {
    fn default() -> Self {
        MinRw {
            min: 1,
            below: OnSuspend::Suspend,
        }
    }
}

impl Engine {
    /// Sets how many RW replicas must hold a write before it is
    /// acknowledged (at least 1), and whether requests are held or fail
    /// while fewer are RW.
    pub fn set_min_rw(&self, min: usize, below: OnSuspend) {
        let next = MinRw {
            min: min.max(1),
            below,
        };
        let changed = self.min_rw.send_if_modified(|cur| {
            let differs = *cur != next;
            *cur = next;
            differs
        });
        if changed {
            tracing::info!(volume = %self.name, min = next.min, below = below.as_str(), "minimum RW replicas for a write set");
        }
    }

    /// Replicas RW now.
    pub(super) fn rw_count(&self) -> usize {
        self.slots()
            .iter()
            .filter(|s| s.mode() == Mode::ReadWrite)
            .count()
    }

    /// Why writes wait or fail now, if the RW replicas are below the minimum.
    pub fn below_min_rw(&self) -> Option<String> {
        let m = *self.min_rw.borrow();
        let rw = self.rw_count();
        (rw < m.min && rw > 0).then(|| {
            format!(
                "only {rw} RW replica(s), and min-replicas-to-write is {}: writes {} until a rebuild brings another back",
                m.min,
                match m.below {
                    OnSuspend::Suspend => "are held",
                    OnSuspend::IoError => "fail",
                }
            )
        })
    }

    /// Waits until enough replicas are RW for a new request (held), or
    /// fails at once (io-error); fails too if the engine is fenced.
    pub(super) async fn wait_min_rw(&self) -> Result<(), DeviceError> {
        if self.min_rw.borrow().min <= 1 {
            return Ok(());
        }
        let mut changes = self.membership_changes();
        let mut settings = self.min_rw.subscribe();
        // a fence wakes the suspension watch
        let mut fences = self.suspension.subscribe();
        loop {
            self.check_fence()?;
            let m = *settings.borrow_and_update();
            let rw = self.rw_count();
            // with none RW at all the request fails as it always did
            if rw >= m.min || rw == 0 {
                return Ok(());
            }
            if m.below == OnSuspend::IoError {
                return Err(DeviceError::Io(format!(
                    "volume {}: {}",
                    self.name,
                    self.below_min_rw().unwrap_or_default()
                )));
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { std::future::pending::<()>().await },
                r = settings.changed() => if r.is_err() { std::future::pending::<()>().await },
                r = fences.changed() => if r.is_err() { std::future::pending::<()>().await },
            }
        }
    }

    /// After a request's legs answered: enough RW replicas took it?
    pub(super) fn check_min_rw(&self, rw_ok: usize) -> Result<(), DeviceError> {
        let min = self.min_rw.borrow().min;
        if rw_ok < min {
            return Err(DeviceError::Io(format!(
                "volume {}: only {rw_ok} RW replica(s) took the request, min-replicas-to-write is {min}: not acknowledged",
                self.name
            )));
        }
        Ok(())
    }
}
