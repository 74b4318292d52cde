//! Adding a replica to a running engine. The order of side effects:
//!
//! 1. With the I/O gate held exclusively: take a system snapshot on every RW
//!    replica and on the new one, then add the new one as WO. From here on
//!    it receives every write into its (new, empty) head, and the source's
//!    read-only chain is frozen: nothing the source's snapshots hold can
//!    change while we copy them.
//! 2. For each read-only layer of the source, bottom to top: if the target
//!    already has a layer of that name with the same checksum, skip it;
//!    otherwise stage it and copy only its allocated extents, hashing them
//!    as they stream (the layer's checksum; a stored one on the source
//!    must match it, so a layer rotted on the source is not spread).
//! 3. Install the copied chain on the target (atomic on the target: its
//!    read-only layers become exactly the source's, its head is kept and
//!    re-parented), then switch WO → RW.
//!
//! Any failure marks the target ERR (`rebuild_failed`) and leaves the
//! volume as it was. Snapshot operations are refused while a rebuild runs.
//! A fenced engine's rebuild stops at its next step (before the next layer,
//! chunk, install or flush), so it writes nothing more to the target.
//!
//! Trims and zeroes reaching the target in step 2 land in its head as holes
//! (nothing lies below yet); the target's install (step 3) writes real
//! zeros there where the installed chain has data (`replica/rebuild.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tracing::Instrument;

use super::status::RebuildProgress;
use super::{Backend, BackendError, Engine, EngineError, FaultReason, MAX_REPLICA_IO, Mode, Slot};
use crate::replica::{Checksum, Extent, LayerDigest, LayerInfo};

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Clears the engine's rebuilding flag however the rebuild ends: dropped on
/// an early error return, or moved into the copy task and dropped there.
struct RebuildFlag(Arc<Engine>);

impl Drop for RebuildFlag {
    fn drop(&mut self) {
        self.0.rebuilding.store(false, Ordering::Release);
    }
}

impl Engine {
    /// Adds a replica and starts rebuilding it in the background. Returns
    /// once it is WO (receiving writes); `status()` shows the progress.
    ///
    /// The whole rebuild, background copy included, is one `rebuild` span
    /// (volume, replica, source): one trace across the agents involved.
    pub async fn add_replica(
        self: &Arc<Self>,
        address: String,
        backend: Backend,
    ) -> Result<(), EngineError> {
        let span = tracing::info_span!(
            "rebuild",
            volume = %self.name,
            replica = %address,
            source = tracing::field::Empty,
        );
        self.start_rebuild(address, backend, span.clone())
            .instrument(span)
            .await
    }

    async fn start_rebuild(
        self: &Arc<Self>,
        address: String,
        backend: Backend,
        span: tracing::Span,
    ) -> Result<(), EngineError> {
        if self
            .slots()
            .iter()
            .any(|s| s.address == address && s.mode() != Mode::Error)
        {
            return Err(EngineError::DuplicateReplica(address));
        }
        if self
            .rebuilding
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(EngineError::Busy {
                volume: self.name.clone(),
                what: "another replica is being rebuilt; one rebuild at a time".into(),
            });
        }
        let flag = RebuildFlag(Arc::clone(self));
        if backend.epoch() != self.epoch {
            return Err(self.unusable(
                &address,
                &format!(
                    "opened for epoch {}, the engine's is {}",
                    backend.epoch(),
                    self.epoch
                ),
            ));
        }
        // Before anything touches the target (even the claim of a local
        // one): a replica of a newer in-sync generation is never rebuilt
        // over. (A remote one was claimed in its connection's handshake;
        // a claim changes no data.) If it does not answer, the steps below
        // fail on it anyway.
        if let Ok(Ok(info)) = tokio::time::timeout(self.config.io_timeout, backend.info()).await {
            self.refuse_newer_generation(&address, info.in_sync_generation)?;
        }
        // Claim the new replica before anything is written to it: an older
        // engine's requests to it are refused from here on.
        match tokio::time::timeout(self.config.io_timeout, backend.claim()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.reason == FaultReason::Fenced => {
                self.fence_for_newer(&address, e.message.clone());
                return Err(EngineError::StaleEpoch {
                    volume: self.name.clone(),
                    epoch: self.epoch,
                    detail: format!("replica {address}: {}", e.message),
                });
            }
            Ok(Err(e)) => return Err(self.unusable(&address, &e.to_string())),
            Err(_) => return Err(self.unusable(&address, "no answer in time")),
        }
        let info = match tokio::time::timeout(self.config.io_timeout, backend.info()).await {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => return Err(self.unusable(&address, &e.to_string())),
            Err(_) => return Err(self.unusable(&address, "no answer in time")),
        };
        if info.size != self.size {
            return Err(EngineError::SizeMismatch {
                volume: self.name.clone(),
                address,
                replica_size: info.size,
                volume_size: self.size,
            });
        }
        // Step 1: freeze a common point and join as WO.
        let (slot, source, chain) = {
            let _gate = self.gate.write().await;
            self.refuse_if_suspended()?;
            if self.is_fenced() {
                return Err(EngineError::Busy {
                    volume: self.name.clone(),
                    what: "the engine is fenced (another engine took the volume over)".into(),
                });
            }
            let mut sources = self.rw_backends();
            sources.sort_by_key(|(s, _)| !s.is_local());
            let Some((source_slot, source)) = sources.first().cloned() else {
                return Err(EngineError::NoUsableReplica {
                    volume: self.name.clone(),
                    detail: self.why_unavailable(),
                });
            };
            span.record("source", source_slot.address.as_str());
            let snap = format!("rebuild-{}-{}", now_unix(), rand::random::<u32>());
            let mut chain = None;
            for (s, b) in &sources {
                match b.snapshot(&snap, false, Default::default()).await {
                    Ok(_) if Arc::ptr_eq(s, &source_slot) => {
                        chain = Some(b.info().await.map_err(|e| self.op_err(s, e))?.chain);
                    }
                    Ok(_) => {}
                    Err(e) => self.fail(s, e.reason, format!("rebuild snapshot: {}", e.message)),
                }
            }
            let chain = chain.ok_or_else(|| EngineError::Operation {
                volume: self.name.clone(),
                op: "rebuild",
                detail: format!("snapshot on source {} failed", source_slot.address),
            })?;
            backend
                .snapshot(&snap, false, Default::default())
                .await
                .map_err(|e| self.unusable(&address, &e.to_string()))?;
            let slot = Arc::new(Slot::new(
                address.clone(),
                Some(backend.clone()),
                Mode::WriteOnly,
            ));
            self.replace_slots(|v| {
                v.retain(|s| s.address != address);
                v.push(Arc::clone(&slot));
            });
            (slot, (source_slot, source), chain)
        };
        let engine = Arc::clone(self);
        let task = async move {
            let _flag = flag;
            let layers: Vec<LayerInfo> = chain.into_iter().filter(|l| l.read_only).collect();
            let done = match engine.copy_chain(&slot, &source, &layers).await {
                Ok(()) => engine.switch_to_rw(&slot, &source.1).await,
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => {
                    tracing::info!(volume = %engine.name, replica = %slot.address, "rebuild done, replica RW")
                }
                Err(e) => engine.fail(&slot, FaultReason::RebuildFailed, e),
            }
            if let Ok(mut r) = slot.rebuild.lock()
                && let Some(p) = r.as_mut()
            {
                p.finished_unix = Some(now_unix());
            }
        };
        // The copy outlives this call: it carries the rebuild span along.
        tokio::spawn(task.instrument(span));
        Ok(())
    }

    /// Step 4: with I/O held off, flush the source, give the target the
    /// source's revision (they have seen the same writes since the rebuild
    /// snapshot, and the target now holds everything before it), then WO → RW.
    async fn switch_to_rw(&self, slot: &Slot, source: &Backend) -> Result<(), String> {
        let Some(target) = slot.backend.clone() else {
            return Err("target has no backend".into());
        };
        let _gate = self.gate.write().await;
        if self.is_fenced() {
            return Err("the engine is fenced (another engine took the volume over)".into());
        }
        if let Some(s) = self.suspended() {
            return Err(format!("the engine is suspended: {}", s.reason));
        }
        source
            .flush()
            .await
            .map_err(|e| format!("flush source: {e}"))?;
        let revision = source
            .info()
            .await
            .map_err(|e| format!("source info: {e}"))?
            .revision;
        target
            .set_revision(revision)
            .await
            .map_err(|e| format!("set target revision: {e}"))?;
        slot.mode
            .compare_exchange(
                Mode::WriteOnly.to_u8(),
                Mode::ReadWrite.to_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(|_| self.membership.grew())
            .map_err(|_| "target left WO during the rebuild".to_string())
    }

    fn unusable(&self, address: &str, why: &str) -> EngineError {
        EngineError::NoUsableReplica {
            volume: self.name.clone(),
            detail: format!("{address}: {why}"),
        }
    }

    fn op_err(&self, slot: &Slot, e: BackendError) -> EngineError {
        EngineError::Operation {
            volume: self.name.clone(),
            op: "rebuild",
            detail: format!("{}: {e}", slot.address),
        }
    }

    /// Between two steps of the copy (staging a layer, copying a chunk,
    /// installing, flushing): whether the copy may go on. A fenced engine
    /// stops here: another engine may own the volume's replicas now, and
    /// this one must not write to any of them, the target included, so the
    /// copy ends at the step after the fence (a step already running when
    /// the fence lands finishes: a chunk into a staged file, which nothing
    /// reads until an install, or the install itself, which the switch to
    /// RW then refuses to follow). Tests can hold the copy here.
    async fn next_step(&self, slot: &Slot) -> Result<(), String> {
        #[cfg(test)]
        hold::step(&self.name).await;
        if self.is_fenced() {
            return Err(
                "the engine is fenced (another engine took the volume over); rebuild stopped"
                    .into(),
            );
        }
        // A suspended engine does no replica I/O at all: the rebuild fails
        // and is started again once the engine resumes.
        if let Some(s) = self.suspended() {
            return Err(format!(
                "the engine is suspended ({}); rebuild stopped",
                s.reason
            ));
        }
        if slot.mode() == Mode::Error {
            return Err("target failed during rebuild".into());
        }
        Ok(())
    }

    /// Step 2 and 3: copies what differs, installs the chain.
    async fn copy_chain(
        &self,
        slot: &Arc<Slot>,
        (source_slot, source): &(Arc<Slot>, Backend),
        layers: &[LayerInfo],
    ) -> Result<(), String> {
        let Some(target) = slot.backend.clone() else {
            return Err("target has no backend".into());
        };
        let fmt = |what: &str, e: BackendError| format!("{what}: {e}");
        let have = target
            .info()
            .await
            .map_err(|e| fmt("target info", e))?
            .chain;
        let mut plan = Vec::new();
        let mut total = 0u64;
        let mut skipped = 0usize;
        let mut installed = Vec::with_capacity(layers.len());
        for layer in layers {
            let mut info = layer.clone();
            // A layer the target already holds is kept when its checksum is
            // the source's (computed there if not stored yet: a read of the
            // layer, so only when the allocated sizes agree — the target's
            // own rebuild snapshot of a fresh head never does). A layer to
            // copy is hashed as it streams past instead (`copy_layer`): no
            // second read of the source.
            let held = have.iter().find(|l| {
                l.name == layer.name && l.read_only && l.allocated_bytes == layer.allocated_bytes
            });
            let same = match held {
                Some(_) => {
                    let sum = source
                        .layer_checksum(&layer.name)
                        .await
                        .map_err(|e| fmt("source checksum", e))?;
                    info.checksum = Some(sum.clone());
                    target.layer_checksum(&layer.name).await.ok() == Some(sum)
                }
                None => false,
            };
            if same {
                skipped += 1;
            } else {
                let extents = source
                    .layer_extents(&layer.name)
                    .await
                    .map_err(|e| fmt("source extents", e))?;
                total += extents.iter().map(|e| e.len).sum::<u64>();
                plan.push((installed.len(), extents));
            }
            installed.push(info);
        }
        if let Ok(mut r) = slot.rebuild.lock() {
            *r = Some(RebuildProgress {
                source: source_slot.address.clone(),
                bytes_done: 0,
                bytes_total: total,
                layers_skipped: skipped,
                layers_copied: plan.len(),
                started_unix: now_unix(),
                finished_unix: None,
            });
        }
        tracing::info!(volume = %self.name, replica = %slot.address, source = %source_slot.address,
            bytes_total = total, layers_skipped = skipped, layers_copied = plan.len(), "rebuild started");
        for (index, extents) in &plan {
            let info = &mut installed[*index];
            self.next_step(slot).await?;
            target
                .stage_layer(info)
                .await
                .map_err(|e| fmt("stage layer", e))?;
            let sum = self
                .copy_layer(slot, source, &target, &info.name, extents)
                .await?;
            // The source's stored checksum, when it has one, must be what
            // its data hashes to now: a layer rotted on the source's disk
            // is not spread to a new replica.
            if let Some(want) = &info.checksum
                && *want != sum
            {
                return Err(format!(
                    "source layer {:?} reads as checksum {} {}, its stored checksum is {} {}: the source's data changed on disk",
                    info.name, sum.method, sum.value, want.method, want.value
                ));
            }
            info.checksum = Some(sum);
        }
        self.next_step(slot).await?;
        target
            .install_chain(&installed)
            .await
            .map_err(|e| fmt("install chain", e))?;
        self.next_step(slot).await?;
        target.flush().await.map_err(|e| fmt("flush target", e))?;
        Ok(())
    }
}

impl Engine {
    /// Copies one layer's allocated `extents` from `source` into the
    /// target's staged layer `name` and returns the layer's checksum,
    /// computed from the data as it was sent.
    ///
    /// Up to [`COPY_WINDOW`] chunks are in flight, each read from the source
    /// and then written to the target: the source's next reads overlap the
    /// target's writes. Chunks finish in order (`FuturesOrdered`), so the
    /// digest sees the layer's bytes in order. A fence stops new chunks (the
    /// step check before each); chunks already started finish into the
    /// staged file, which nothing reads before the install.
    async fn copy_layer(
        &self,
        slot: &Arc<Slot>,
        source: &Backend,
        target: &Backend,
        name: &str,
        extents: &[crate::replica::Extent],
    ) -> Result<Checksum, String> {
        let fmt = |what: &str, e: BackendError| format!("{what}: {e}");
        let mut digest = LayerDigest::default();
        let mut in_flight = FuturesOrdered::new();
        let mut result = Ok(());
        let hash = |digest: &mut LayerDigest, done: Result<(Option<Extent>, Bytes), String>| {
            done.map(|(starts, data)| {
                if let Some(ext) = starts {
                    digest.extent(ext.offset, ext.len);
                }
                digest.data(&data);
            })
        };
        'copy: for (starts, pos, n) in chunks(extents) {
            while in_flight.len() >= COPY_WINDOW {
                if let Some(done) = in_flight.next().await
                    && let Err(e) = hash(&mut digest, done)
                {
                    result = Err(e);
                    break 'copy;
                }
            }
            if let Err(e) = self.next_step(slot).await {
                result = Err(e);
                break;
            }
            let (source, target) = (source.clone(), target.clone());
            in_flight.push_back(async move {
                let data = source
                    .read_layer(name, pos, n as u32)
                    .await
                    .map_err(|e| fmt("read source layer", e))?;
                target
                    .write_staged(name, pos, data.clone())
                    .await
                    .map_err(|e| fmt("write target layer", e))?;
                slot.rebuild_done.fetch_add(n, Ordering::Relaxed);
                Ok::<_, String>((starts, data))
            });
        }
        // Chunks already started finish, whatever ended the copy.
        while let Some(done) = in_flight.next().await {
            let hashed = hash(&mut digest, done);
            if result.is_ok() {
                result = hashed;
            }
        }
        result.map(|()| digest.finish())
    }
}

/// Chunks of the rebuild copy in flight at once (each at most
/// [`MAX_REPLICA_IO`]: 16 MiB of buffers per rebuild).
const COPY_WINDOW: usize = 4;

/// The copy's chunks, `(the extent it starts, offset, length)`, each at
/// most [`MAX_REPLICA_IO`], in order; the first chunk of each extent
/// carries it (the checksum hashes each extent's place before its data).
fn chunks(extents: &[Extent]) -> impl Iterator<Item = (Option<Extent>, u64, u64)> + '_ {
    extents.iter().flat_map(|ext| {
        let end = ext.offset + ext.len;
        (ext.offset..end)
            .step_by(MAX_REPLICA_IO as usize)
            .map(move |pos| {
                (
                    (pos == ext.offset).then_some(*ext),
                    pos,
                    (end - pos).min(MAX_REPLICA_IO),
                )
            })
    })
}

/// Test-only: holds a volume's rebuild copy between its steps, so a test can
/// act (send zeroes, fence the engine) at a known point of the copy without
/// relying on timing. Keyed by volume name; tests use distinct names.
#[cfg(test)]
pub(super) mod hold {
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

    use tokio::sync::{Semaphore, watch};

    /// The hold on one volume's copy.
    pub(in crate::engine) struct Hold {
        /// One permit per step allowed to proceed.
        permits: Semaphore,
        /// Steps reached so far (including the one waiting).
        reached: watch::Sender<usize>,
    }

    static HOLDS: Mutex<Vec<(String, Arc<Hold>)>> = Mutex::new(Vec::new());

    fn holds() -> MutexGuard<'static, Vec<(String, Arc<Hold>)>> {
        HOLDS.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds every step of `volume`'s copy until [`Hold::allow`] lets it go.
    pub(in crate::engine) fn install(volume: &str) -> Arc<Hold> {
        let h = Arc::new(Hold {
            permits: Semaphore::new(0),
            reached: watch::channel(0).0,
        });
        let mut all = holds();
        all.retain(|(v, _)| v != volume);
        all.push((volume.to_string(), Arc::clone(&h)));
        h
    }

    impl Hold {
        /// Lets `n` more steps proceed.
        pub(in crate::engine) fn allow(&self, n: usize) {
            self.permits.add_permits(n);
        }

        /// Waits until the copy has reached its `n`th step (1-based).
        pub(in crate::engine) async fn reached(&self, n: usize) {
            let mut rx = self.reached.subscribe();
            let _ = rx.wait_for(|&r| r >= n).await;
        }
    }

    /// Called at each step of the copy.
    pub(super) async fn step(volume: &str) {
        let found = holds()
            .iter()
            .find(|(v, _)| v == volume)
            .map(|(_, h)| Arc::clone(h));
        let Some(h) = found else {
            return;
        };
        h.reached.send_modify(|r| *r += 1);
        if let Ok(p) = h.permits.acquire().await {
            p.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_extent_is_announced_by_its_first_chunk_only() {
        let m = MAX_REPLICA_IO;
        let extents = [
            Extent {
                offset: 0,
                len: 2 * m + 4096,
            },
            Extent {
                offset: 3 * m,
                len: 8192,
            },
        ];
        let got: Vec<_> = chunks(&extents).collect();
        assert_eq!(
            got,
            vec![
                (Some(extents[0]), 0, m),
                (None, m, m),
                (None, 2 * m, 4096),
                (Some(extents[1]), 3 * m, 8192),
            ]
        );
    }
}
