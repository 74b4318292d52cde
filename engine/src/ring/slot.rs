//! One operation in flight on a ring: the slot its completion lands in and
//! the future that waits for it.
//!
//! The kernel reads or writes the operation's buffer and uses its file
//! until the completion arrives, whatever happens to the future. So the
//! future owns them ([`Op::owner`]); if it is dropped first, it hands them
//! to the slot, which keeps them until the completion and then gives them
//! to [`InFlight::abandoned`] (a write finishes its bookkeeping there).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// What an operation keeps alive while the kernel works on it.
pub(crate) trait InFlight: Send + 'static {
    /// Runs when the completion arrives after the future was dropped, with
    /// the completion's result (bytes done, or a negated errno).
    fn abandoned(self, result: i32);
}

type Orphan = Box<dyn FnOnce(i32) + Send>;

/// Where a completion lands. Shared by the future and, through the
/// submission's `user_data`, by the ring until the completion is reaped.
#[derive(Default)]
pub(super) struct Slot {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    result: Option<i32>,
    waker: Option<Waker>,
    orphan: Option<Orphan>,
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is three plain fields, consistent at every unlock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the completion: wakes the future, or finishes an abandoned
    /// operation.
    pub(super) fn complete(&self, result: i32) {
        let (waker, orphan) = {
            let mut st = self.state();
            st.result = Some(result);
            (st.waker.take(), st.orphan.take())
        };
        if let Some(finish) = orphan {
            finish(result);
        }
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Waits for one submitted operation; yields its owner back with the
/// result.
pub(crate) struct Op<T: InFlight> {
    slot: Arc<Slot>,
    owner: Option<T>,
}

impl<T: InFlight> Op<T> {
    pub(super) fn new(slot: Arc<Slot>, owner: T) -> Op<T> {
        Op {
            slot,
            owner: Some(owner),
        }
    }
}

// `Op` holds no self-references: moving it is fine.
impl<T: InFlight> Unpin for Op<T> {}

impl<T: InFlight> Future for Op<T> {
    /// The owner, and the completion's result (bytes done, or -errno).
    type Output = (T, i32);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(T, i32)> {
        let this = &mut *self;
        let mut st = this.slot.state();
        match st.result {
            Some(result) => {
                drop(st);
                match this.owner.take() {
                    Some(owner) => Poll::Ready((owner, result)),
                    // Polled again after it returned Ready: a caller bug,
                    // but never a reason to touch freed memory.
                    None => Poll::Pending,
                }
            }
            None => {
                if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    st.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl<T: InFlight> Drop for Op<T> {
    fn drop(&mut self) {
        let Some(owner) = self.owner.take() else {
            return;
        };
        let mut st = self.slot.state();
        match st.result {
            // Completed but never collected: the kernel is done with it.
            Some(result) => {
                drop(st);
                owner.abandoned(result);
            }
            // Still in flight: the slot keeps the buffer and file alive
            // until the completion, then finishes the operation.
            None => {
                st.waker = None;
                st.orphan = Some(Box::new(move |result| owner.abandoned(result)));
            }
        }
    }
}
