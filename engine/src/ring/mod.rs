//! io_uring on tokio's own worker threads: replica file I/O without a
//! thread hand-off.
//!
//! Each worker thread gets its own ring the first time it submits (no
//! second runtime, no blocking pool). The ring's fd is registered with the
//! runtime's reactor ([`AsyncFd`]): when completions arrive the reactor
//! wakes the ring's reaper task, which hands each result to its operation
//! ([`slot`]). Completions that are ready by the time a submission returns
//! (a buffered read served from the page cache) are reaped right there.
//!
//! Submissions are batched: an entry queued while others are in flight is
//! sent by the ring's flusher task, which runs once every task runnable on
//! the worker has had its turn (`yield_now` defers it until the worker
//! runs out of work or polls its driver). One `io_uring_enter` then carries
//! every entry of that burst, and the block layer's plug turns them into one
//! doorbell for the disk (in a VM, one exit instead of one per request). An
//! entry queued on an idle ring goes at once: at queue depth 1 there is
//! nothing to batch with, and waiting would only add latency.
//!
//! An operation owns its buffer and file until the kernel is done with
//! them, even when its future is dropped (`slot::InFlight`).
//!
//! Where io_uring is unavailable — an old kernel, a seccomp filter,
//! `kernel.io_uring_disabled`, or `--io-engine blocking` — [`current`]
//! says so and callers use the blocking path (positioned I/O on tokio's
//! blocking pool); the first failure is logged as a warning and
//! [`IO_URING_ACTIVE`] reads 0.

mod slot;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use io_uring::{IoUring, squeue};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use slot::Slot;
pub(crate) use slot::{InFlight, Op};

/// Gauge: 1 while replica file I/O goes through io_uring, 0 when it fell
/// back to the blocking pool (unavailable, or `--io-engine blocking`).
pub const IO_URING_ACTIVE: &str = "vigil_io_uring_active";

/// Submission queue entries per ring (completion queue: twice that). A
/// full queue is flushed to the kernel and the push retried.
const ENTRIES: u32 = 256;

/// How replica file I/O is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoEngine {
    /// io_uring where the kernel allows it, else the blocking pool.
    Auto,
    /// Always the blocking pool (`pread`/`pwrite` on tokio's blocking
    /// threads): the fallback, selectable for comparison and diagnosis.
    Blocking,
}

const ENGINE_AUTO: u8 = 0;
const ENGINE_BLOCKING: u8 = 1;
static ENGINE: AtomicU8 = AtomicU8::new(ENGINE_AUTO);

/// Why io_uring could not be used, once it failed (never retried).
static UNAVAILABLE: OnceLock<String> = OnceLock::new();

/// Chooses the I/O engine for the whole process (the agent, at start).
pub fn set_io_engine(engine: IoEngine) {
    let v = match engine {
        IoEngine::Auto => ENGINE_AUTO,
        IoEngine::Blocking => ENGINE_BLOCKING,
    };
    ENGINE.store(v, Ordering::Relaxed);
    if engine == IoEngine::Blocking {
        metrics::gauge!(IO_URING_ACTIVE).set(0.0);
    }
}

/// Whether replica I/O in this runtime goes through io_uring; when not,
/// why. Creates this thread's ring (call it inside the runtime): the agent
/// calls it at start so the log and the gauge say at once which path runs.
pub fn probe() -> Result<(), String> {
    match current() {
        Some(_) => Ok(()),
        None if ENGINE.load(Ordering::Relaxed) == ENGINE_BLOCKING => {
            Err("--io-engine blocking".to_string())
        }
        None => Err(UNAVAILABLE
            .get()
            .cloned()
            .unwrap_or_else(|| "no tokio runtime".to_string())),
    }
}

thread_local! {
    /// This thread's ring, with the runtime its fd is registered with.
    static RING: RefCell<Option<(tokio::runtime::Id, Arc<Ring>)>> = const { RefCell::new(None) };
}

/// This worker thread's ring, created on first use; `None` when io_uring
/// is off or unavailable, or outside a tokio runtime.
pub(crate) fn current() -> Option<Arc<Ring>> {
    if ENGINE.load(Ordering::Relaxed) == ENGINE_BLOCKING || UNAVAILABLE.get().is_some() {
        return None;
    }
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let id = handle.id();
    RING.with(|cell| {
        let mut cell = cell.borrow_mut();
        if let Some((rt, ring)) = cell.as_ref()
            && *rt == id
        {
            return Some(Arc::clone(ring));
        }
        // First use on this thread, or the thread now runs another runtime
        // (a test harness reusing threads): a ring of its own.
        match Ring::new() {
            Ok(ring) => {
                let ring = Arc::new(ring);
                handle.spawn(reap_when_ready(Arc::clone(&ring)));
                handle.spawn(flush_when_asked(Arc::clone(&ring)));
                *cell = Some((id, Arc::clone(&ring)));
                metrics::gauge!(IO_URING_ACTIVE).set(1.0);
                Some(ring)
            }
            Err(RingError::NoReactor) => {
                tracing::debug!("runtime without an I/O driver: replica I/O uses the blocking pool here");
                None
            }
            Err(RingError::Kernel(e)) => {
                let why = format!("io_uring unavailable: {e}");
                if UNAVAILABLE.set(why.clone()).is_ok() {
                    tracing::warn!(reason = %why, "replica I/O falls back to the blocking pool (slower: a thread hand-off per request)");
                    metrics::gauge!(IO_URING_ACTIVE).set(0.0);
                }
                None
            }
        }
    })
}

/// Why a ring could not be made.
enum RingError {
    /// The kernel refused (setup, probe, or registration with epoll).
    Kernel(io::Error),
    /// The runtime has no I/O driver to register the ring with.
    NoReactor,
}

impl From<io::Error> for RingError {
    fn from(e: io::Error) -> RingError {
        RingError::Kernel(e)
    }
}

/// The ring's fd as the reactor sees it; the `IoUring` owns and closes it.
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// One io_uring instance and its registration with the reactor.
pub(crate) struct Ring {
    // Declared (so dropped) before `uring`: deregistered before closed.
    fd: AsyncFd<RingFd>,
    uring: Mutex<IoUring>,
    /// Queued or submitted operations whose completion was not reaped yet.
    in_flight: AtomicUsize,
    /// Entries are queued for the flusher (it was asked and has not run).
    flush_asked: AtomicBool,
    /// Wakes the flusher task.
    flush: Notify,
}

impl Ring {
    fn new() -> Result<Ring, RingError> {
        let uring = IoUring::builder()
            .setup_cqsize(ENTRIES * 2)
            .build(ENTRIES)?;
        let mut probe = io_uring::Probe::new();
        uring.submitter().register_probe(&mut probe)?;
        for (code, name) in [
            (io_uring::opcode::Read::CODE, "READ"),
            (io_uring::opcode::Write::CODE, "WRITE"),
            (io_uring::opcode::Fsync::CODE, "FSYNC"),
        ] {
            if !probe.is_supported(code) {
                return Err(RingError::Kernel(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("the kernel's io_uring lacks IORING_OP_{name}"),
                )));
            }
        }
        let raw = RingFd(uring.as_raw_fd());
        // A runtime built without its I/O driver panics here rather than
        // failing: treat that as "not here" (it says nothing of the kernel).
        let registered = std::panic::catch_unwind(|| {
            // SAFETY: the fd belongs to `uring`, which the returned `Ring`
            // owns beside the `AsyncFd` and drops after it (field order),
            // so it stays open for the `AsyncFd`'s whole life.
            unsafe { AsyncFd::register_with_interest(raw, tokio::io::Interest::READABLE) }
        });
        let fd = match registered {
            Ok(Ok(fd)) => fd,
            Ok(Err(e)) => return Err(RingError::Kernel(e.into())),
            Err(_) => return Err(RingError::NoReactor),
        };
        Ok(Ring {
            fd,
            uring: Mutex::new(uring),
            in_flight: AtomicUsize::new(0),
            flush_asked: AtomicBool::new(false),
            flush: Notify::new(),
        })
    }

    fn uring(&self) -> MutexGuard<'_, IoUring> {
        // Every critical section leaves the queues consistent.
        self.uring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Submits `entry` and returns the future of its completion, which owns
    /// `owner` until then.
    ///
    /// # Safety
    /// Every pointer and fd in `entry` must belong to `owner` (a heap
    /// buffer it owns, a file it keeps open) and stay valid while `owner`
    /// lives, wherever `owner` is moved.
    pub(crate) unsafe fn submit<T: InFlight>(&self, entry: squeue::Entry, owner: T) -> Op<T> {
        let slot = Arc::new(Slot::default());
        let op = Op::new(Arc::clone(&slot), owner);
        let user_data = Arc::into_raw(Arc::clone(&slot)) as u64;
        let entry = entry.user_data(user_data);
        let mut done = Vec::new();
        let pushed = {
            let mut uring = self.uring();
            let pushed = push(&mut uring, &entry);
            if pushed.is_ok() {
                let busy = self.in_flight.fetch_add(1, Ordering::Relaxed) > 0;
                if !busy {
                    if let Err(e) = submit_all(&uring) {
                        // The entry stays queued; the next flush sends it.
                        tracing::warn!(error = %e, "io_uring submit failed; retried on the next submission");
                        self.ask_flush();
                    }
                    reap(&mut uring, &mut done);
                } else {
                    self.ask_flush();
                }
            }
            pushed
        };
        if let Err(e) = pushed {
            // Never reached the kernel: take back the reference the entry held.
            // SAFETY: `user_data` came from `Arc::into_raw` above and the
            // entry holding it was not queued, so this is its only owner.
            drop(unsafe { Arc::from_raw(user_data as *const Slot) });
            slot.complete(-e.raw_os_error().unwrap_or(libc::EIO));
        }
        self.finish(done);
        op
    }

    /// Has the flusher send what is queued, once the worker's runnable tasks
    /// had their turn.
    fn ask_flush(&self) {
        if !self.flush_asked.swap(true, Ordering::AcqRel) {
            self.flush.notify_one();
        }
    }

    /// Submits what is queued and reaps every completion that is ready.
    fn reap_now(&self) {
        let mut done = Vec::new();
        {
            let mut uring = self.uring();
            // Entries queued for this flush (or left by a failed submit) go now.
            if !uring.submission().is_empty() {
                let _ = submit_all(&uring);
            }
            reap(&mut uring, &mut done);
            // A submit refused while the completion queue was full (EBUSY)
            // goes again now that it was emptied; if the kernel still
            // refuses, the flusher retries after the worker's next turn.
            // Left alone, entries would wait for a completion that may
            // never come (nothing else of ours in flight).
            if !uring.submission().is_empty() && submit_all(&uring).is_err() {
                self.ask_flush();
            }
        }
        self.finish(done);
    }

    /// Hands reaped completions to their operations, outside the ring's
    /// lock (an abandoned write updates its replica's index there).
    fn finish(&self, done: Vec<(u64, i32)>) {
        for (user_data, result) in done {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            // SAFETY: every queued entry's user_data is a reference made by
            // `Arc::into_raw` in `submit`, reaped exactly once.
            let slot = unsafe { Arc::from_raw(user_data as *const Slot) };
            slot.complete(result);
        }
    }
}

impl Drop for Ring {
    /// Waits for every operation still in the kernel: their buffers must
    /// not be freed under it (closing the ring cancels them asynchronously).
    fn drop(&mut self) {
        while self.in_flight.load(Ordering::Relaxed) > 0 {
            let waited = self.uring().submit_and_wait(1);
            if let Err(e) = waited
                && e.raw_os_error() != Some(libc::EINTR)
            {
                tracing::error!(error = %e, in_flight = self.in_flight.load(Ordering::Relaxed), "io_uring: cannot wait for operations in flight; leaking their buffers");
                let mut done = Vec::new();
                reap(&mut self.uring(), &mut done);
                for (user_data, _) in done {
                    // Freed only when the kernel is done: reaped ones are.
                    // SAFETY: as in `finish`.
                    drop(unsafe { Arc::from_raw(user_data as *const Slot) });
                }
                return;
            }
            self.reap_now();
        }
    }
}

/// Queues `entry`, flushing a full queue to the kernel first.
fn push(uring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    for _ in 0..2 {
        // SAFETY: the caller of `Ring::submit` keeps what the entry points
        // at alive until its completion.
        if unsafe { uring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        submit_all(uring)?;
    }
    Err(io::Error::from_raw_os_error(libc::EBUSY))
}

/// `io_uring_enter` for everything queued, retrying interruptions.
fn submit_all(uring: &IoUring) -> io::Result<usize> {
    loop {
        match uring.submit() {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            r => return r,
        }
    }
}

/// Moves every ready completion into `done`.
fn reap(uring: &mut IoUring, done: &mut Vec<(u64, i32)>) {
    loop {
        for cqe in uring.completion() {
            done.push((cqe.user_data(), cqe.result()));
        }
        // More completions than the completion queue holds wait in the
        // kernel's overflow list, which no new completion event announces:
        // only an `io_uring_enter` moves them over (a submit that sees the
        // overflow flag asks for events). Left there, their operations
        // would wait forever.
        if !uring.submission().cq_overflow() || submit_all(uring).is_err() {
            return;
        }
    }
}

/// The ring's flusher: when asked, lets every task runnable on this worker
/// queue its entries first, then submits them in one call.
async fn flush_when_asked(ring: Arc<Ring>) {
    loop {
        ring.flush.notified().await;
        tokio::task::yield_now().await;
        // Cleared before submitting: an entry queued from here on asks again
        // (at worst an empty flush), never waits for a flush that passed.
        ring.flush_asked.store(false, Ordering::Release);
        ring.reap_now();
    }
}

/// The ring's reaper: whenever the reactor says completions are ready,
/// hands them out. Readiness is cleared before reaping, so a completion
/// arriving meanwhile wakes it again.
async fn reap_when_ready(ring: Arc<Ring>) {
    loop {
        let mut ready = match ring.fd.readable().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "io_uring reaper: the reactor refused the ring's fd");
                return;
            }
        };
        ready.clear_ready();
        ring.reap_now();
    }
}
