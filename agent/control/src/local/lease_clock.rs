//! When this node last renewed its liveness lease: the lease fence
//! (`controller::lease_fence`) suspends the engines when it is too old.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use vigil_engine::engine::OnSuspend;

/// When this node last renewed its lease, and what its engines do when it
/// cannot (a copy of the setting, read while the store still answered).
pub struct LeaseClock {
    inner: Mutex<Inner>,
}

struct Inner {
    renewed_sent: Instant,
    on_loss: OnSuspend,
}

impl Default for LeaseClock {
    fn default() -> Self {
        LeaseClock {
            inner: Mutex::new(Inner {
                renewed_sent: Instant::now(),
                on_loss: OnSuspend::Suspend,
            }),
        }
    }
}

impl LeaseClock {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A renewal (or grant) sent at `sent` succeeded.
    pub fn renewed(&self, sent: Instant) {
        let mut g = self.lock();
        if sent > g.renewed_sent {
            g.renewed_sent = sent;
        }
    }

    /// Keeps the `engine-on-lease-loss` setting at hand for when the store
    /// does not answer.
    pub fn set_on_loss(&self, on_loss: OnSuspend) {
        self.lock().on_loss = on_loss;
    }

    /// Time since the last successful renewal was sent.
    pub fn age(&self) -> Duration {
        self.lock().renewed_sent.elapsed()
    }

    pub fn on_loss(&self) -> OnSuspend {
        self.lock().on_loss
    }
}
