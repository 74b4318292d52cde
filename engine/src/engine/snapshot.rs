//! Snapshot, remove snapshot and revert, across every RW replica at once.
//! Each runs with the I/O gate held exclusively, so every replica freezes
//! the same set of writes. Refused while a rebuild runs: the rebuild target
//! must end with exactly the source's chain.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::future::join_all;

use super::{Backend, BackendError, Engine, EngineError, Mode, Slot};
use crate::name::check_name;
use crate::replica::LayerInfo;

impl Engine {
    fn refuse_if_rebuilding(&self) -> Result<(), EngineError> {
        if self.rebuilding.load(Ordering::Acquire) {
            return Err(EngineError::Busy {
                volume: self.name.clone(),
                what: "a replica rebuild is running; retry when it has finished".into(),
            });
        }
        Ok(())
    }

    pub(super) fn rw_backends(&self) -> Vec<(Arc<Slot>, Backend)> {
        self.slots()
            .iter()
            .filter(|s| s.mode() == Mode::ReadWrite)
            .filter_map(|s| s.backend.clone().map(|b| (Arc::clone(s), b)))
            .collect()
    }

    /// Runs a control `op` on every RW replica; failures mark the replica
    /// ERR. Returns the first success, or an error naming every failure.
    async fn on_every_rw<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, EngineError>
    where
        F: Fn(Backend) -> Fut,
        Fut: std::future::Future<Output = Result<T, BackendError>>,
    {
        if self.is_fenced() {
            return Err(EngineError::Busy {
                volume: self.name.clone(),
                what: format!("{what}: the engine is fenced (another engine took the volume over)"),
            });
        }
        let targets = self.rw_backends();
        let timeout = self.config.io_timeout;
        let results = join_all(
            targets
                .iter()
                .map(|(_, b)| tokio::time::timeout(timeout, op(b.clone()))),
        )
        .await;
        let mut first = None;
        let mut errors = Vec::new();
        for ((slot, _), r) in targets.iter().zip(results) {
            match r {
                Ok(Ok(v)) => {
                    if first.is_none() {
                        first = Some(v);
                    }
                }
                Ok(Err(e)) => {
                    errors.push(format!("{}: {e}", slot.address));
                    // A refused request (unknown or duplicate name) says
                    // nothing about the replica's health.
                    if e.reason != super::FaultReason::Invalid {
                        self.fail(slot, e.reason, format!("{what}: {}", e.message));
                    }
                }
                Err(_) => {
                    errors.push(format!("{}: timed out", slot.address));
                    self.fail(
                        slot,
                        super::FaultReason::Timeout,
                        format!("{what}: no answer within {timeout:?}"),
                    );
                }
            }
        }
        match first {
            Some(v) => Ok(v),
            _ => Err(EngineError::Operation {
                volume: self.name.clone(),
                op: what,
                detail: if errors.is_empty() {
                    self.why_unavailable()
                } else {
                    errors.join("; ")
                },
            }),
        }
    }

    /// Takes a user snapshot named `name` on every RW replica.
    pub async fn snapshot(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<LayerInfo, EngineError> {
        check_name(name)?;
        self.refuse_if_rebuilding()?;
        let _gate = self.gate.write().await;
        self.refuse_if_suspended()?;
        self.on_every_rw("snapshot", |b| {
            let labels = labels.clone();
            async move { b.snapshot(name, true, labels).await }
        })
        .await
    }

    /// The chain as the first RW replica reports it, bottom to head.
    pub async fn snapshots(&self) -> Result<Vec<LayerInfo>, EngineError> {
        let _gate = self.gate.read().await;
        let mut targets = self.rw_backends();
        targets.sort_by_key(|(s, _)| !s.is_local());
        let Some((slot, backend)) = targets.into_iter().next() else {
            return Err(EngineError::NoUsableReplica {
                volume: self.name.clone(),
                detail: self.why_unavailable(),
            });
        };
        match tokio::time::timeout(self.config.io_timeout, backend.info()).await {
            Ok(Ok(info)) => Ok(info.chain),
            Ok(Err(e)) => Err(EngineError::Operation {
                volume: self.name.clone(),
                op: "list snapshots",
                detail: format!("{}: {e}", slot.address),
            }),
            Err(_) => Err(EngineError::Operation {
                volume: self.name.clone(),
                op: "list snapshots",
                detail: format!("{}: timed out", slot.address),
            }),
        }
    }

    /// Removes snapshot `name` on every RW replica (merging it into its child).
    pub async fn remove_snapshot(&self, name: &str) -> Result<(), EngineError> {
        check_name(name)?;
        self.refuse_if_rebuilding()?;
        let _gate = self.gate.write().await;
        self.refuse_if_suspended()?;
        self.on_every_rw("remove snapshot", |b| async move {
            b.remove_snapshot(name).await
        })
        .await
    }

    /// Reverts every RW replica to snapshot `name`. Clients should reconnect
    /// afterwards: their caches hold the discarded data.
    pub async fn revert(&self, name: &str) -> Result<(), EngineError> {
        check_name(name)?;
        self.refuse_if_rebuilding()?;
        let _gate = self.gate.write().await;
        self.refuse_if_suspended()?;
        self.on_every_rw("revert", |b| async move { b.revert(name).await })
            .await
    }
}
