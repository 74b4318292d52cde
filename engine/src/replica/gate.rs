//! The gate between a replica's asynchronous I/O and what must not overlap
//! it: chain operations (snapshot, remove, revert, install, expand) and a
//! newer engine's claim.
//!
//! io_uring reads and writes cannot hold the chain's lock while the kernel
//! works (a std lock across an await would block a runtime thread). They
//! hold a [`Pass`] instead: any number at once, taken without blocking a
//! thread. [`Gate::exclusive`] (blocking, for the blocking pool) closes the
//! gate to new passes and waits until every pass out is returned, so the
//! chain operation after it sees no write in flight — and a claim sees no
//! older engine's request in flight. A pass lives as long as its operation
//! is in the kernel, even when the future that took it was dropped.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// See the module documentation.
#[derive(Default)]
pub(super) struct Gate {
    state: Mutex<State>,
    /// Wakes an exclusive holder waiting for passes to come back, and the
    /// next one waiting to close the gate.
    returned: Condvar,
    /// Wakes tasks waiting for the gate to reopen.
    reopened: Notify,
}

#[derive(Default)]
struct State {
    passes: usize,
    closed: bool,
}

/// Leave to run one asynchronous operation; returned on drop.
pub(super) struct Pass {
    gate: Arc<Gate>,
}

/// The gate held closed, no pass out; reopened on drop.
pub(super) struct Exclusive<'a> {
    gate: &'a Gate,
}

impl Gate {
    fn state(&self) -> MutexGuard<'_, State> {
        // Two plain fields, consistent at every unlock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a pass, waiting (without blocking the thread) while the gate
    /// is closed.
    pub(super) async fn enter(self: &Arc<Self>) -> Pass {
        loop {
            let reopened = self.reopened.notified();
            tokio::pin!(reopened);
            // Registered before the check: a reopening between the check
            // and the await still wakes this task.
            reopened.as_mut().enable();
            {
                let mut st = self.state();
                if !st.closed {
                    st.passes += 1;
                    return Pass {
                        gate: Arc::clone(self),
                    };
                }
            }
            reopened.await;
        }
    }

    /// Closes the gate and waits until every pass is returned (blocking:
    /// call it from the blocking pool or outside a runtime).
    pub(super) fn exclusive(&self) -> Exclusive<'_> {
        let mut st = self.state();
        while st.closed {
            st = self
                .returned
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
        st.closed = true;
        while st.passes > 0 {
            st = self
                .returned
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
        Exclusive { gate: self }
    }

    /// Waits until every pass taken before the call is returned (a claim:
    /// passes taken after it see the new epoch).
    pub(super) fn drain(&self) {
        drop(self.exclusive());
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut st = self.gate.state();
        st.passes -= 1;
        if st.passes == 0 && st.closed {
            drop(st);
            self.gate.returned.notify_all();
        }
    }
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        self.gate.state().closed = false;
        // A second exclusive waiter and every task waiting to enter.
        self.gate.returned.notify_all();
        self.gate.reopened.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exclusive_waits_for_passes_and_holds_new_ones_back() {
        let gate = Arc::new(Gate::default());
        let pass = gate.enter().await;
        let g = Arc::clone(&gate);
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = Arc::clone(&done);
        let closer = tokio::task::spawn_blocking(move || {
            let x = g.exclusive();
            std::thread::sleep(Duration::from_millis(100));
            d.store(true, std::sync::atomic::Ordering::SeqCst);
            drop(x);
        });
        // The closer cannot get in while the pass is out.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!closer.is_finished());
        assert!(gate.state().closed, "the gate closes to new passes at once");
        drop(pass);
        // A new pass waits for the closer to finish.
        let entered = tokio::time::timeout(Duration::from_secs(5), gate.enter())
            .await
            .expect("the gate reopens");
        assert!(
            done.load(std::sync::atomic::Ordering::SeqCst),
            "a pass was handed out while closed"
        );
        assert_eq!(gate.state().passes, 1);
        drop(entered);
        assert_eq!(gate.state().passes, 0);
    }

    #[test]
    fn exclusive_on_an_idle_gate_returns_at_once_and_reopens() {
        let gate = Gate::default();
        gate.drain();
        let x = gate.exclusive();
        drop(x);
        assert!(!gate.state().closed);
    }
}
