//! The engine: the per-volume replication controller. It serves a volume's
//! frontend (it is an [`crate::device::ExportDevice`]), fans writes out to
//! every RW and WO replica, reads from one RW replica (local first), marks a
//! failing replica ERR with a typed reason and drops it, and rebuilds new
//! replicas. One module per concern:
//!
//! * [`mode`]    — replica modes and fault reasons;
//! * [`backend`] — in-process or remote replica, one async surface;
//! * `io`        — the data path (alignment, fan-out, failover);
//! * [`metrics`] — data-path metrics: names, labels, handles;
//! * `monitor`   — pings remote replicas so a dead one is noticed while idle;
//! * `rebuild`   — adding a replica: WO, copy the chain, RW;
//! * `snapshot`  — snapshot, remove, revert across replicas.

pub mod backend;
mod generation;
mod insync;
mod io;
mod membership;
pub mod metrics;
mod min_rw;
pub mod mode;
mod monitor;
mod rebuild;
mod snapshot;
mod status;
mod suspend;
#[cfg(test)]
mod tests_fencing;
#[cfg(test)]
mod tests_generation;
#[cfg(test)]
mod tests_metrics;
#[cfg(test)]
mod tests_min_rw;
#[cfg(test)]
mod tests_rebuild;
#[cfg(test)]
mod tests_suspend;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::task::JoinHandle;

pub use backend::{Backend, BackendError};
pub use metrics::IoOp;
pub use mode::{Fault, FaultReason, Mode};
pub use status::{EngineStatus, FencedByNewer, RebuildProgress, ReplicaStatus, Robustness};
pub use suspend::{OnSuspend, Suspended};

use crate::name::{NameError, check_name};
use crate::size::{SizeError, check_volume_size};

/// Largest single request sent to a replica; larger frontend requests are
/// split (the replica protocol's frame limit is above this).
pub const MAX_REPLICA_IO: u64 = 4 << 20;

/// Engine tunables.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A data request not answered within this marks the replica ERR (timeout).
    pub io_timeout: Duration,
    /// How often remote replicas are pinged.
    pub ping_interval: Duration,
    /// A ping not answered within this marks the replica ERR (timeout).
    pub ping_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        // A frozen or dead replica must be ERR within 2 s under load and
        // 10 s idle. Pings find it either way: one every 500 ms with a 1 s
        // deadline marks it ERR at most ~1.5 s after it stopped answering.
        // A busy replica is not mistaken for a frozen one: its server
        // answers pings ahead of queued disk I/O (protocol/server.rs). The
        // I/O timeout stays long (8 s): it catches a replica that answers
        // pings but whose disk hangs, and a slow disk must not flap.
        EngineConfig {
            io_timeout: Duration::from_secs(8),
            ping_interval: Duration::from_millis(500),
            ping_timeout: Duration::from_secs(1),
        }
    }
}

/// Errors from engine control operations (the data path answers with
/// [`crate::device::DeviceError`]).
#[derive(Debug, Error)]
pub enum EngineError {
    /// The volume name is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The volume size is invalid.
    #[error(transparent)]
    Size(#[from] SizeError),
    /// No replica could be used to start the engine or run an operation.
    #[error("volume {volume}: no usable replica: {detail}")]
    NoUsableReplica {
        /// The volume.
        volume: String,
        /// Each replica and why it is unusable.
        detail: String,
    },
    /// A replica's size does not match the volume's.
    #[error("replica {address} has size {replica_size}, volume {volume} has size {volume_size}")]
    SizeMismatch {
        volume: String,
        address: String,
        replica_size: u64,
        volume_size: u64,
    },
    /// The replica is already part of this engine.
    #[error("replica {0} is already in the engine (remove it or wait until it is ERR)")]
    DuplicateReplica(String),
    /// A replica was claimed by a newer engine (a higher epoch): this one
    /// must not serve the volume.
    #[error("volume {volume}: engine epoch {epoch} is stale: {detail}")]
    StaleEpoch {
        volume: String,
        epoch: u64,
        detail: String,
    },
    /// A rebuild was asked onto a replica that persisted a newer in-sync
    /// generation than this engine knows: it joined a set recorded after
    /// the one this engine started from, so it may hold newer data than
    /// every source here. It is left untouched.
    #[error(
        "volume {volume}: not rebuilding over replica {address}: it joined in-sync generation {replica_generation}, newer than this engine's {engine_generation} (the cluster store may be older than the replica, e.g. restored from a backup); it may hold newer data than every replica serving"
    )]
    NewerGeneration {
        volume: String,
        address: String,
        replica_generation: u64,
        engine_generation: u64,
    },
    /// Another control operation (e.g. a rebuild) is running.
    #[error("volume {volume} is busy: {what}")]
    Busy { volume: String, what: String },
    /// A snapshot operation failed on every replica.
    #[error("volume {volume}: {op} failed: {detail}")]
    Operation {
        volume: String,
        op: &'static str,
        detail: String,
    },
}

/// One replica's place in an engine.
pub struct Slot {
    /// Where it lives, as given by the user (`tcp://host:port/name`).
    pub address: String,
    /// How to reach it; `None` if it could not even be opened.
    backend: Option<Backend>,
    mode: AtomicU8,
    fault: Mutex<Option<Fault>>,
    rebuild: Mutex<Option<RebuildProgress>>,
    rebuild_done: AtomicU64,
    /// This replica's write-latency histogram, made on its first write (a
    /// replica that never took a write adds no 22 idle series to every
    /// scrape); a `OnceLock` so the data path pays one load after that.
    write_latency: OnceLock<::metrics::Histogram>,
    /// Turns true when the slot goes ERR, so requests in flight to it stop
    /// waiting at once (a frozen replica found by the monitor's ping must
    /// not hold a client's write until the I/O timeout).
    err_signal: tokio::sync::watch::Sender<bool>,
}

impl Slot {
    fn new(address: String, backend: Option<Backend>, mode: Mode) -> Slot {
        Slot {
            address,
            backend,
            mode: AtomicU8::new(mode.to_u8()),
            fault: Mutex::new(None),
            rebuild: Mutex::new(None),
            rebuild_done: AtomicU64::new(0),
            write_latency: OnceLock::new(),
            err_signal: tokio::sync::watch::channel(mode == Mode::Error).0,
        }
    }

    /// Resolves once the slot is ERR (at once if it is already).
    async fn gone(&self) {
        let mut rx = self.err_signal.subscribe();
        if rx.wait_for(|err| *err).await.is_err() {
            // the sender lives as long as the slot: never happens
            std::future::pending::<()>().await;
        }
    }

    /// Records how long one write leg to this replica of `volume` took.
    fn record_write_latency(&self, volume: &str, seconds: f64) {
        self.write_latency
            .get_or_init(|| metrics::replica_write_latency(volume, &self.address))
            .record(seconds);
    }

    /// Current mode.
    pub fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(Ordering::Acquire))
    }

    fn is_local(&self) -> bool {
        self.backend.as_ref().is_some_and(Backend::is_local)
    }
}

/// A replica given to [`Engine::start`]: its address and either an open
/// backend or the fault that kept it from opening.
pub struct ReplicaSpec {
    /// `tcp://host:port/name`.
    pub address: String,
    /// The open backend, or why it could not be opened.
    pub backend: Result<Backend, Fault>,
}

/// A running engine for one volume.
pub struct Engine {
    name: String,
    size: u64,
    /// The epoch this engine claimed its replicas with (from the cluster
    /// store, one per engine start).
    epoch: u64,
    config: EngineConfig,
    /// The replica set. Replaced wholesale (copy-on-write) on membership
    /// changes so the data path clones one `Arc` per request.
    slots: RwLock<Arc<Vec<Arc<Slot>>>>,
    /// Aligned I/O holds this shared; control operations (snapshot, rebuild
    /// switch-over) and unaligned read-modify-write hold it exclusively.
    gate: tokio::sync::RwLock<()>,
    rebuilding: AtomicBool,
    /// Set once by [`Engine::fence`]: from then on every request fails and
    /// nothing more reaches the replicas (another engine may own them).
    fenced: AtomicBool,
    /// Why the engine fenced itself, when a replica refused it because a
    /// newer engine claimed it (an [`Engine::fence`] leaves it `None`).
    fenced_by_newer: Mutex<Option<FencedByNewer>>,
    /// Set while replica I/O is suspended (see `suspend.rs`); requests held
    /// by a suspension wait on it.
    suspension: tokio::sync::watch::Sender<Option<Suspended>>,
    /// RW-set changes the control plane must record (see `insync.rs`).
    membership: insync::Membership,
    /// The newest in-sync generation known (see `generation.rs`).
    generation: AtomicU64,
    /// How many RW replicas a write needs (see `min_rw.rs`).
    min_rw: tokio::sync::watch::Sender<min_rw::MinRw>,
    monitor: Mutex<Option<JoinHandle<()>>>,
    /// Frontend metric handles, registered at start.
    metrics: metrics::VolumeMetrics,
    /// Each replica's persisted revision as read at start.
    start_revisions: Vec<StartRevision>,
}

/// A replica's persisted revision as the engine read it at start: how the
/// engine chose which replicas to serve from (the newest) and which to
/// leave out as stale. For the control plane to say so (salvage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRevision {
    /// `tcp://host:port/name`.
    pub address: String,
    /// `None` when the replica could not be opened at start.
    pub revision: Option<u64>,
    /// The in-sync generation the replica had joined (`None`: not opened).
    #[serde(default)]
    pub in_sync_generation: Option<u64>,
}

impl Engine {
    /// Starts an engine of `epoch` over `replicas`. Each backend must serve
    /// that epoch; the engine **claims** every replica it reaches before it
    /// serves (persisted on the replica; older engines are refused from
    /// then on). Every claimed replica whose size matches starts RW and gets
    /// its generation bumped; one that cannot be opened starts ERR with its
    /// fault. Fails when no replica is usable, and when any replica was
    /// claimed by a newer epoch already (a newer engine owns the volume).
    pub async fn start(
        name: &str,
        size: u64,
        epoch: u64,
        replicas: Vec<ReplicaSpec>,
        config: EngineConfig,
    ) -> Result<Arc<Engine>, EngineError> {
        check_name(name)?;
        check_volume_size(size)?;
        let mut slots = Vec::with_capacity(replicas.len());
        let mut revisions = Vec::with_capacity(replicas.len());
        for spec in replicas {
            if slots.iter().any(|s: &Arc<Slot>| s.address == spec.address) {
                return Err(EngineError::DuplicateReplica(spec.address));
            }
            let (slot, revision) = match spec.backend {
                Ok(backend) if backend.epoch() != epoch => (
                    errored(
                        spec.address,
                        Fault::now(
                            FaultReason::Invalid,
                            format!(
                                "opened for epoch {}, the engine's is {epoch}",
                                backend.epoch()
                            ),
                        ),
                    ),
                    None,
                ),
                Ok(backend) => {
                    let opened = tokio::time::timeout(config.io_timeout, async {
                        backend.claim().await?;
                        let info = backend.info().await?;
                        if info.size == size {
                            backend.bump_generation().await?;
                        }
                        Ok::<_, BackendError>(info)
                    })
                    .await;
                    match opened {
                        Ok(Ok(info)) if info.size != size => {
                            return Err(EngineError::SizeMismatch {
                                volume: name.to_string(),
                                address: spec.address,
                                replica_size: info.size,
                                volume_size: size,
                            });
                        }
                        Ok(Ok(info)) => (
                            Slot::new(spec.address, Some(backend), Mode::ReadWrite),
                            Some((info.revision, info.in_sync_generation)),
                        ),
                        Ok(Err(e)) if e.reason == FaultReason::Fenced => {
                            return Err(EngineError::StaleEpoch {
                                volume: name.to_string(),
                                epoch,
                                detail: format!("replica {}: {}", spec.address, e.message),
                            });
                        }
                        Ok(Err(e)) => {
                            (errored(spec.address, Fault::now(e.reason, e.message)), None)
                        }
                        Err(_) => (
                            errored(
                                spec.address,
                                Fault::now(FaultReason::Timeout, "no answer while opening replica"),
                            ),
                            None,
                        ),
                    }
                }
                Err(fault) if fault.reason == FaultReason::Fenced => {
                    // refused in the handshake: a newer engine claimed it
                    return Err(EngineError::StaleEpoch {
                        volume: name.to_string(),
                        epoch,
                        detail: format!("replica {}: {}", spec.address, fault.last_error),
                    });
                }
                Err(fault) => (errored(spec.address, fault), None),
            };
            slots.push(Arc::new(slot));
            revisions.push(revision);
        }
        // Replicas in sync carry equal revisions (every write counts once on
        // each; a rebuilt replica adopts its source's). One behind the newest
        // missed writes: serving reads from it would return old data.
        let newest = revisions.iter().flatten().map(|r| r.0).max().unwrap_or(0);
        for (slot, revision) in slots.iter().zip(&revisions) {
            if let Some(r) = revision.map(|r| r.0).filter(|r| *r < newest) {
                slot.mode.store(Mode::Error.to_u8(), Ordering::Release);
                if let Ok(mut f) = slot.fault.lock() {
                    *f = Some(Fault::now(
                        FaultReason::Stale,
                        format!(
                            "revision {r} is behind the newest replica's {newest}; add it again to rebuild"
                        ),
                    ));
                }
                tracing::warn!(volume = name, replica = %slot.address, revision = r, newest, "stale replica left out");
            }
        }
        let start_revisions = slots
            .iter()
            .zip(&revisions)
            .map(|(slot, revision)| StartRevision {
                address: slot.address.clone(),
                revision: revision.map(|r| r.0),
                in_sync_generation: revision.map(|r| r.1),
            })
            .collect();
        // The engine starts knowing the newest generation its replicas
        // joined; the control plane tells it the store's right after.
        let generation = revisions.iter().flatten().map(|r| r.1).max().unwrap_or(0);
        let engine = Arc::new(Engine {
            name: name.to_string(),
            size,
            epoch,
            config,
            slots: RwLock::new(Arc::new(slots)),
            gate: tokio::sync::RwLock::new(()),
            rebuilding: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            fenced_by_newer: Mutex::new(None),
            suspension: tokio::sync::watch::channel(None).0,
            membership: insync::Membership::default(),
            generation: AtomicU64::new(generation),
            min_rw: tokio::sync::watch::channel(min_rw::MinRw::default()).0,
            monitor: Mutex::new(None),
            metrics: metrics::VolumeMetrics::register(name),
            start_revisions,
        });
        if !engine.slots().iter().any(|s| s.mode() == Mode::ReadWrite) {
            return Err(EngineError::NoUsableReplica {
                volume: name.to_string(),
                detail: engine.why_unavailable(),
            });
        }
        // Replicas left out at start (unopenable, stale) count as faults,
        // but only once the engine runs: a start that fails and is retried
        // must not count the same replicas again and again.
        for slot in engine.slots().iter() {
            if let Some(f) = slot.fault.lock().ok().and_then(|f| f.clone()) {
                metrics::record_fault(name, &slot.address, f.reason);
            }
        }
        let handle = monitor::spawn(&engine);
        if let Ok(mut m) = engine.monitor.lock() {
            *m = Some(handle);
        }
        tracing::info!(volume = name, size, epoch, "engine started");
        Ok(engine)
    }

    /// Volume name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Volume size in bytes.
    pub fn volume_size(&self) -> u64 {
        self.size
    }

    /// The epoch this engine claimed its replicas with.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Why the engine fenced itself, if a newer engine's claim refused it.
    pub fn fenced_by_newer(&self) -> Option<FencedByNewer> {
        self.fenced_by_newer.lock().ok().and_then(|f| f.clone())
    }

    /// Each replica's persisted revision as read at start, in the order
    /// the replicas were given: those behind the newest were left out as
    /// ERR `stale`.
    pub fn start_revisions(&self) -> &[StartRevision] {
        &self.start_revisions
    }

    /// Flushes every replica, then refuses every later request, so that
    /// another engine can take the replicas over: waits for the requests
    /// in flight (the gate, exclusively), flushes, and sets the fence
    /// before the gate opens again. Clients still connected to this engine
    /// get EIO from then on; nothing they send reaches a replica. Returns
    /// the flush's error (the fence is set either way).
    pub async fn fence(&self) -> Result<(), crate::device::DeviceError> {
        // Requests in flight finish first. One that waits for the control
        // plane to record a smaller in-sync set gets the I/O timeout for
        // it (its data is on the replicas: acknowledged once recorded);
        // after that it fails unacknowledged, so a stuck store cannot keep
        // the fence from happening.
        let _gate = match tokio::time::timeout(self.config.io_timeout, self.gate.write()).await {
            Ok(gate) => gate,
            Err(_) => {
                self.membership.abandon();
                self.gate.write().await
            }
        };
        let flushed = self.flush_all().await;
        self.fenced
            .store(true, std::sync::atomic::Ordering::Release);
        self.wake_held();
        self.membership.wake();
        tracing::info!(volume = %self.name, "engine fenced: no more I/O reaches its replicas");
        flushed
    }

    /// Whether [`Engine::fence`] ran.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stops background tasks. The engine serves no more monitoring; drop
    /// the last `Arc` to release replica connections.
    pub fn shutdown(&self) {
        if let Ok(mut m) = self.monitor.lock()
            && let Some(h) = m.take()
        {
            h.abort();
        }
    }

    fn slots(&self) -> Arc<Vec<Arc<Slot>>> {
        match self.slots.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn replace_slots(&self, f: impl FnOnce(&mut Vec<Arc<Slot>>)) {
        let mut guard = match self.slots.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next: Vec<Arc<Slot>> = guard.as_ref().clone();
        f(&mut next);
        *guard = Arc::new(next);
    }

    /// Marks a replica ERR with `reason` (once: the first fault is kept) —
    /// except when the replica refused this engine because a newer engine
    /// claimed it: that is not the replica's fault, and the whole engine is
    /// fenced instead ([`Engine::fence_for_newer`]).
    fn fail(&self, slot: &Slot, reason: FaultReason, error: impl Into<String>) {
        if reason == FaultReason::Fenced {
            self.fence_for_newer(&slot.address, error.into());
            return;
        }
        self.mark_err(slot, reason, error);
    }

    /// A replica refused this engine: a newer engine claimed it, so this
    /// one no longer owns the volume. From now on every request fails
    /// (EIO) and nothing more is sent to any replica; the first refusal is
    /// recorded for the status, the control plane and the logs.
    fn fence_for_newer(&self, replica: &str, message: String) {
        let first = !self.fenced.swap(true, Ordering::AcqRel);
        self.wake_held();
        self.membership.wake();
        if let Ok(mut f) = self.fenced_by_newer.lock()
            && f.is_none()
        {
            *f = Some(FencedByNewer {
                replica: replica.to_string(),
                message: message.clone(),
                at_unix: Fault::now(FaultReason::Fenced, "").at_unix,
            });
        }
        if first {
            metrics::record_fault(&self.name, replica, FaultReason::Fenced);
            tracing::error!(
                volume = %self.name,
                epoch = self.epoch,
                replica = %replica,
                error = %message,
                "engine fenced: a newer engine claimed the volume's replicas; failing every request"
            );
        }
    }

    /// Marks the replica at `address` ERR with `reason`, as if its I/O had
    /// failed: the fault is recorded, logged and counted, and the replica
    /// gets no more requests. For the control plane, e.g. when a replica's
    /// own agent finds its chain damaged. Returns whether anything changed
    /// (false for an unknown address or a replica already ERR).
    pub fn fail_replica(
        &self,
        address: &str,
        reason: FaultReason,
        message: impl Into<String>,
    ) -> bool {
        let slots = self.slots();
        match slots.iter().find(|s| s.address == address) {
            Some(slot) => self.mark_err(slot, reason, message),
            None => false,
        }
    }

    /// The RW/WO → ERR transition; returns false if the slot was ERR already.
    fn mark_err(&self, slot: &Slot, reason: FaultReason, error: impl Into<String>) -> bool {
        let prev = slot.mode.swap(Mode::Error.to_u8(), Ordering::AcqRel);
        if Mode::from_u8(prev) == Mode::Error {
            return false;
        }
        if Mode::from_u8(prev) == Mode::ReadWrite {
            self.membership.shrank();
        }
        slot.err_signal.send_replace(true);
        metrics::record_fault(&self.name, &slot.address, reason);
        let fault = Fault::now(reason, error);
        tracing::warn!(
            volume = %self.name,
            replica = %slot.address,
            from = %Mode::from_u8(prev),
            reason = %fault.reason,
            error = %fault.last_error,
            "replica marked ERR"
        );
        if let Ok(mut f) = slot.fault.lock() {
            *f = Some(fault);
        }
        true
    }

    /// Why the volume cannot serve I/O, naming every replica and its reason.
    pub fn why_unavailable(&self) -> String {
        let slots = self.slots();
        if slots.is_empty() {
            return format!("volume {} has no replicas", self.name);
        }
        let parts: Vec<String> = slots
            .iter()
            .map(|s| {
                let fault = s.fault.lock().ok().and_then(|f| f.clone());
                match (s.mode(), fault) {
                    (Mode::Error, Some(f)) => format!(
                        "{} ERR ({}, at {}): {}",
                        s.address, f.reason, f.at_unix, f.last_error
                    ),
                    (mode, _) => format!("{} {mode}", s.address),
                }
            })
            .collect();
        format!(
            "volume {} has no RW replica left: {}",
            self.name,
            parts.join("; ")
        )
    }
}

fn errored(address: String, fault: Fault) -> Slot {
    let slot = Slot::new(address, None, Mode::Error);
    if let Ok(mut f) = slot.fault.lock() {
        *f = Some(fault);
    }
    slot
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
