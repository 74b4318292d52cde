//! Suspension: replica I/O stopped while the engine cannot prove it still
//! owns the volume.
//!
//! The agent suspends its engines when its node's liveness lease could not
//! be renewed for nearly a TTL: another node may soon take the volume over,
//! and the engine must stop writing before that can happen (DRBD's
//! `on-no-quorum`). What clients see meanwhile is the [`OnSuspend`] choice:
//! their requests are held until the engine resumes (a VM sees a pause),
//! or fail with EIO at once.
//!
//! Transitions (`suspended` is a `watch`, so held requests wake on each):
//! * running → suspended — [`Engine::suspend`], after the requests in
//!   flight finished (it takes the I/O gate exclusively);
//! * suspended → running — [`Engine::resume`] (the agent renewed the lease
//!   and no newer epoch exists);
//! * either → fenced — [`Engine::fence`] or a newer engine's claim: held
//!   requests fail at once.

use serde::{Deserialize, Serialize};
use tokio::sync::{RwLockReadGuard, RwLockWriteGuard};

use super::Engine;
use crate::device::DeviceError;

/// What a suspended engine does with client requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnSuspend {
    /// Hold them until the engine resumes (or is fenced, then EIO).
    Suspend,
    /// Fail them with EIO at once.
    IoError,
}

impl OnSuspend {
    /// `suspend` or `io-error`, as the setting spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            OnSuspend::Suspend => "suspend",
            OnSuspend::IoError => "io-error",
        }
    }
}

/// Why and since when an engine is suspended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspended {
    /// What clients see meanwhile.
    pub on_suspend: OnSuspend,
    /// Why, in words for the status and the logs.
    pub reason: String,
    /// Since, seconds since the Unix epoch.
    pub since_unix: u64,
}

impl Engine {
    /// Stops replica I/O: waits for the requests in flight (the gate,
    /// exclusively), then holds or fails every new one as `on_suspend`
    /// says, until [`Engine::resume`]. Suspending again only updates the
    /// reason. Pings go on (they carry no data, and a newer engine's
    /// refusal still fences this one).
    pub async fn suspend(&self, on_suspend: OnSuspend, reason: impl Into<String>) {
        let reason = reason.into();
        let _gate = self.gate.write().await;
        let since_unix = self
            .suspended()
            .map(|s| s.since_unix)
            .unwrap_or_else(|| super::Fault::now(super::FaultReason::Timeout, "").at_unix);
        tracing::warn!(volume = %self.name, epoch = self.epoch, on_suspend = on_suspend.as_str(), %reason, "engine suspended: no replica I/O until it resumes");
        self.suspension.send_replace(Some(Suspended {
            on_suspend,
            reason,
            since_unix,
        }));
    }

    /// Lets I/O proceed again (held requests go on). The caller checked
    /// that this engine still owns the volume.
    pub fn resume(&self) {
        if self.suspension.send_replace(None).is_some() {
            tracing::info!(volume = %self.name, epoch = self.epoch, "engine resumed");
        }
    }

    /// Whether, why and since when the engine is suspended.
    pub fn suspended(&self) -> Option<Suspended> {
        self.suspension.borrow().clone()
    }

    /// Refuses a control operation (snapshot, rebuild step) while the
    /// engine is suspended; call it with the gate held exclusively, so no
    /// suspension can start meanwhile.
    pub(super) fn refuse_if_suspended(&self) -> Result<(), super::EngineError> {
        match self.suspended() {
            Some(s) => Err(super::EngineError::Busy {
                volume: self.name.clone(),
                what: format!("the engine is suspended: {}", s.reason),
            }),
            None => Ok(()),
        }
    }

    /// Wakes requests held by a suspension so they see a fence.
    pub(super) fn wake_held(&self) {
        self.suspension.send_modify(|_| {});
    }

    /// Waits until the engine is neither suspended in `suspend` mode nor
    /// fenced: `Err` for a fence or an `io-error` suspension.
    async fn wait_resumed(&self) -> Result<(), DeviceError> {
        let mut rx = self.suspension.subscribe();
        loop {
            self.check_fence()?;
            let current = rx.borrow_and_update().clone();
            match current {
                None => return Ok(()),
                Some(s) if s.on_suspend == OnSuspend::IoError => {
                    return Err(DeviceError::Io(format!(
                        "volume {} is suspended: {}",
                        self.name, s.reason
                    )));
                }
                Some(_) => {
                    if rx.changed().await.is_err() {
                        // the sender lives as long as the engine
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// The I/O gate, shared, for a read: once the engine is not suspended.
    pub(super) async fn read_gate(&self) -> Result<RwLockReadGuard<'_, ()>, DeviceError> {
        self.shared_gate(false).await
    }

    /// The I/O gate, shared, for a write, trim, zeroes or flush: once the
    /// engine is not suspended and enough replicas are RW
    /// (`min_rw.rs`).
    pub(super) async fn io_gate(&self) -> Result<RwLockReadGuard<'_, ()>, DeviceError> {
        self.shared_gate(true).await
    }

    async fn shared_gate(&self, write: bool) -> Result<RwLockReadGuard<'_, ()>, DeviceError> {
        loop {
            self.wait_resumed().await?;
            if write {
                self.wait_min_rw().await?;
            }
            let gate = self.gate.read().await;
            // a suspension that came in between: wait again without the gate
            if self.suspension.borrow().is_none() {
                return Ok(gate);
            }
        }
    }

    /// The I/O gate, exclusively, once the engine is not suspended (an
    /// unaligned read-modify-write).
    pub(super) async fn io_gate_exclusive(&self) -> Result<RwLockWriteGuard<'_, ()>, DeviceError> {
        loop {
            self.wait_resumed().await?;
            self.wait_min_rw().await?;
            let gate = self.gate.write().await;
            if self.suspension.borrow().is_none() {
                return Ok(gate);
            }
        }
    }
}
