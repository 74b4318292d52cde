//! The export a live migration's target serves: first a forward to the
//! source's engine, then (after the switch) the target's own engine. A
//! client connected during the migration keeps its connection across the
//! switch; it only sees a pause.
//!
//! ```text
//!  Forwarding(client) ──pause()──► Paused ──switch_to(engine)──► Local(engine)
//!          │                         │
//!          └────────close(why)───────┴──► Closed(why)      (requests fail: EIO)
//! ```
//!
//! Every request holds a read lock on the mode for its whole duration;
//! `pause` takes the write lock, so it returns only once every forwarded
//! request has been answered, and it then flushes through the source. The
//! write guard is kept until `switch_to` or `close`, so requests that arrive
//! meanwhile wait (the lock is fair: nothing overtakes a waiting pause).
//! Hence no write from the target's clients can reach the replicas through
//! the source after the source was told to stop, and none through the
//! target's engine before it runs.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

use crate::device::{DeviceError, ExportDevice};
use crate::engine::Engine;
use crate::nbd::client::NbdClient;

enum Mode {
    Forwarding(Arc<NbdClient>),
    Local(Arc<Engine>),
    Closed(String),
}

/// The switchable export (see the module docs).
pub struct HandoverDevice {
    size: u64,
    mode: Arc<RwLock<Mode>>,
    /// The write guard held from `pause` until `switch_to` / `close`.
    paused: Mutex<Option<OwnedRwLockWriteGuard<Mode>>>,
}

/// Where a handover is, for status and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoverState {
    Forwarding(String),
    Paused,
    Local,
    Closed(String),
}

impl HandoverDevice {
    /// An export forwarding everything to `client`.
    pub fn forwarding(client: Arc<NbdClient>) -> HandoverDevice {
        HandoverDevice {
            size: client.size(),
            mode: Arc::new(RwLock::new(Mode::Forwarding(client))),
            paused: Mutex::new(None),
        }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, Option<OwnedRwLockWriteGuard<Mode>>> {
        match self.paused.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The forward's broken-connection cause, if forwarding and broken.
    pub fn forward_broken(&self) -> Option<String> {
        match self.mode.try_read().ok().as_deref() {
            Some(Mode::Forwarding(c)) => c.broken(),
            _ => None,
        }
    }

    /// Current state (best effort while a request holds the lock).
    pub fn state(&self) -> HandoverState {
        if self.guard().is_some() {
            return HandoverState::Paused;
        }
        match self.mode.try_read().ok().as_deref() {
            Some(Mode::Forwarding(c)) => HandoverState::Forwarding(c.target()),
            Some(Mode::Local(_)) => HandoverState::Local,
            Some(Mode::Closed(why)) => HandoverState::Closed(why.clone()),
            None => HandoverState::Paused,
        }
    }

    /// Holds new requests, waits for the ones in flight, then flushes
    /// through the source so every write a client of this export saw
    /// acknowledged is durable on the replicas. Idempotent.
    pub async fn pause(&self) -> Result<(), DeviceError> {
        if self.guard().is_some() {
            return Ok(());
        }
        let g = Arc::clone(&self.mode).write_owned().await;
        let flushed = match &*g {
            Mode::Forwarding(c) => c.flush().await,
            Mode::Local(_) => Err(DeviceError::InvalidArgument(
                "already switched to the local engine".into(),
            )),
            Mode::Closed(why) => Err(DeviceError::Io(format!("export closed: {why}"))),
        };
        *self.guard() = Some(g);
        flushed
    }

    /// Serves from `engine` from now on and lets held requests go.
    pub fn switch_to(&self, engine: Arc<Engine>) {
        let held = self.guard().take();
        match held {
            Some(mut g) => *g = Mode::Local(engine),
            None => {
                // not paused: only reachable by a caller skipping pause();
                // take the lock anyway so no request sees a half state
                if let Ok(mut g) = self.mode.try_write() {
                    *g = Mode::Local(engine);
                }
            }
        }
    }

    /// Fails every held and later request with `why` and closes the
    /// forward.
    pub async fn close(&self, why: &str) {
        let held = self.guard().take();
        let mut g = match held {
            Some(g) => g,
            None => Arc::clone(&self.mode).write_owned().await,
        };
        if let Mode::Forwarding(c) = &*g {
            c.close().await;
        }
        *g = Mode::Closed(why.to_string());
    }
}

fn closed(why: &str) -> DeviceError {
    DeviceError::Io(format!("migration export closed: {why}"))
}

impl ExportDevice for HandoverDevice {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read(&self, offset: u64, len: u32) -> Result<Bytes, DeviceError> {
        match &*self.mode.read().await {
            Mode::Forwarding(c) => c.read(offset, len).await,
            Mode::Local(e) => e.read(offset, len).await,
            Mode::Closed(why) => Err(closed(why)),
        }
    }

    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<(), DeviceError> {
        match &*self.mode.read().await {
            Mode::Forwarding(c) => c.write(offset, data, fua).await,
            Mode::Local(e) => e.write(offset, data, fua).await,
            Mode::Closed(why) => Err(closed(why)),
        }
    }

    async fn flush(&self) -> Result<(), DeviceError> {
        match &*self.mode.read().await {
            Mode::Forwarding(c) => c.flush().await,
            Mode::Local(e) => e.flush().await,
            Mode::Closed(why) => Err(closed(why)),
        }
    }

    async fn trim(&self, offset: u64, len: u32) -> Result<(), DeviceError> {
        match &*self.mode.read().await {
            Mode::Forwarding(c) => c.trim(offset, len).await,
            Mode::Local(e) => e.trim(offset, len).await,
            Mode::Closed(why) => Err(closed(why)),
        }
    }

    async fn write_zeroes(&self, offset: u64, len: u32, fua: bool) -> Result<(), DeviceError> {
        match &*self.mode.read().await {
            Mode::Forwarding(c) => c.write_zeroes(offset, len, fua).await,
            Mode::Local(e) => e.write_zeroes(offset, len, fua).await,
            Mode::Closed(why) => Err(closed(why)),
        }
    }
}
