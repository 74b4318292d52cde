//! The in-sync generation on the engine's side (DRBD's data generations).
//!
//! The control plane records a volume's in-sync set with a generation that
//! grows on every change of the set and on every chain operation; each
//! member then persists the generation it joined
//! ([`crate::replica::Replica::join_generation`]). The engine carries the
//! newest generation it was told (or, before that, the newest its replicas
//! reported at start) and uses it for one rule: **a rebuild never runs
//! onto a replica whose persisted generation is higher than the engine's**
//! — such a replica joined a set this engine never heard of (the store
//! that started this engine is older than that replica, e.g. restored from
//! a backup), so it may hold newer data than every source here, and
//! copying over it would destroy exactly that.

use std::sync::atomic::Ordering;

use super::{Engine, EngineError, FaultReason, Mode};

impl Engine {
    /// The newest in-sync generation this engine knows: the highest of its
    /// replicas' at start, then each one [`Engine::join_generation`] was
    /// given. Never decreases.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The control plane recorded `generation` with `members` (replica
    /// addresses) in sync: each of them that is RW here persists it
    /// (fdatasync, admitted under the engine's epoch). A member that fails
    /// to is marked ERR like one whose write failed (so the next record
    /// leaves it out); a refusal for a newer epoch fences the engine and is
    /// returned. Call it only after the store holds `generation` — a replica
    /// must never know a generation the store does not (ARCHITECTURE.md,
    /// "The in-sync generation").
    pub async fn join_generation(
        &self,
        generation: u64,
        members: &[String],
    ) -> Result<(), EngineError> {
        let known = self.generation.fetch_max(generation, Ordering::AcqRel);
        if generation < known {
            // A newer generation was joined already (a recorder and a chain
            // operation raced): sending this one would lower the members'.
            return Ok(());
        }
        let slots = self.slots();
        let joining = slots
            .iter()
            .filter(|s| s.mode() == Mode::ReadWrite && members.contains(&s.address));
        for slot in joining {
            if self.is_fenced() {
                break;
            }
            let Some(backend) = &slot.backend else {
                continue;
            };
            let joined =
                tokio::time::timeout(self.config.io_timeout, backend.join_generation(generation))
                    .await;
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.reason == FaultReason::Fenced => {
                    self.fence_for_newer(&slot.address, e.message.clone());
                }
                Ok(Err(e)) => {
                    self.mark_err(
                        slot,
                        e.reason,
                        format!("persist in-sync generation {generation}: {}", e.message),
                    );
                }
                Err(_) => {
                    self.mark_err(
                        slot,
                        FaultReason::Timeout,
                        format!("no answer while persisting in-sync generation {generation}"),
                    );
                }
            }
        }
        if self.is_fenced() {
            return Err(EngineError::StaleEpoch {
                volume: self.name.clone(),
                epoch: self.epoch,
                detail: self
                    .fenced_by_newer()
                    .map(|f| f.to_string())
                    .unwrap_or_else(|| "the engine is fenced".into()),
            });
        }
        Ok(())
    }

    /// Refuses to rebuild onto the replica at `address` when it persisted a
    /// generation newer than this engine's.
    pub(super) fn refuse_newer_generation(
        &self,
        address: &str,
        replica_generation: u64,
    ) -> Result<(), EngineError> {
        let engine_generation = self.generation();
        if replica_generation <= engine_generation {
            return Ok(());
        }
        tracing::warn!(volume = %self.name, replica = %address, replica_generation, engine_generation, "not rebuilding over a replica of a newer in-sync generation");
        Err(EngineError::NewerGeneration {
            volume: self.name.clone(),
            address: address.to_string(),
            replica_generation,
            engine_generation,
        })
    }
}
