//! The replica store: one directory per replica holding a chain of layers —
//! sparse layer files (holes are never-written blocks) and small crash-safe
//! JSON metadata. See ARCHITECTURE.md for the on-disk layout.
//!
//! All I/O methods take byte offsets and lengths that are multiples of
//! [`crate::size::BLOCK_SIZE`] and lie within the volume; anything else is
//! `InvalidArgument`. Caller buffers may be unaligned in memory.
//! Every method is blocking and `&self`: the type is `Send + Sync` and safe
//! to call from many threads at once.

mod aligned;
// Network payloads land in these directly, ready for O_DIRECT.
pub(crate) use aligned::{ALIGN, AlignedBuf};
mod alloc;
mod chain;
mod checksum;
mod expand;
mod extent;
mod fault;
mod file;
mod fsutil;
mod gate;
mod meta;
mod rebuild;
mod ring_io;
mod snapshot;
mod state;
mod types;
mod verify;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_chain;
#[cfg(test)]
mod tests_crash;
#[cfg(test)]
mod tests_expand;
#[cfg(test)]
mod tests_health;
#[cfg(test)]
mod tests_holes;
#[cfg(test)]
mod tests_model;
#[cfg(test)]
mod tests_rebuild;
#[cfg(test)]
mod tests_ring;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard};

pub use checksum::LayerDigest;
pub use types::*;

use crate::size::{BLOCK_SIZE, check_volume_size};
use alloc::Allocation;
use chain::{Chain, Layer};
use file::LayerFile;
use fsutil::{io_err, lock, rlock, sync_dir, sync_parent, wlock};
use meta::{LayerMeta, ReplicaMeta};
use rebuild::Staged;
use state::StateFile;

/// An open replica.
///
/// Locking: `chain` is read-locked by reads, writes, trims and flushes,
/// which therefore run concurrently; the head's extent index has its own
/// lock. Snapshot, remove, revert, install and expand take the chain write
/// lock. `meta` (replica.json) and the state file have leaf locks of
/// their own. `fence` comes before all of them: an engine's request holds
/// it shared (see [`Replica::admit`]) for its whole run, a claim by a newer
/// engine exclusively, so no older engine's request is in flight once a
/// claim returns.
///
/// Asynchronous reads and writes ([`Replica::read_async`],
/// [`Replica::write_async`], through io_uring) hold neither lock across
/// the kernel's work: they hold a pass of `gate`, which chain operations
/// close (then take the chain write lock) and a claim drains, and check
/// the epoch against `claimed` under it. The blocking methods below are
/// the fallback path and what chain operations use.
pub struct Replica {
    dir: PathBuf,
    /// Volume size in bytes. Atomic so that `expand(&self)` can grow it;
    /// it only changes under the chain write lock.
    size: AtomicU64,
    direct_io: bool,
    chain: RwLock<Chain>,
    /// Serialises flushes that persist the head's allocation map
    /// ([`Allocation::Maps`]), so an older map never replaces a newer one.
    head_map: Mutex<()>,
    meta: Mutex<ReplicaMeta>,
    revision: AtomicU64,
    revfile: StateFile,
    /// The highest engine epoch that claimed the replica (persisted in the
    /// state file before it changes here).
    fence: RwLock<u64>,
    /// `fence`'s value, for asynchronous I/O, which checks it under a gate
    /// pass instead of the lock (see `ring_io.rs`).
    claimed: AtomicU64,
    /// Keeps chain operations and claims apart from asynchronous I/O in
    /// flight (see `gate.rs`).
    gate: Arc<gate::Gate>,
    staged: Mutex<HashMap<String, Arc<Staged>>>,
    /// Operations that failed with a disk error since open; see
    /// [`Replica::io_errors`].
    io_errors: AtomicU64,
}

type Result<T> = std::result::Result<T, ReplicaError>;

impl Replica {
    /// Creates a new, empty replica of `size` bytes in `dir` (which must not
    /// exist or be empty) with one head layer and revision 0.
    pub fn create(dir: &Path, size: u64, opts: &ReplicaOptions) -> Result<Replica> {
        check_volume_size(size).map_err(|e| ReplicaError::InvalidArgument(e.to_string()))?;
        match fs::read_dir(dir) {
            Ok(mut entries) => {
                if dir.join(meta::REPLICA_FILE).exists() {
                    return Err(ReplicaError::AlreadyExists(format!(
                        "a replica exists in {}",
                        dir.display()
                    )));
                }
                if entries.next().is_some() {
                    return Err(ReplicaError::InvalidArgument(format!(
                        "directory {} is not empty",
                        dir.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(io_err("create replica directory", dir))?;
                sync_parent(dir)?;
            }
            Err(e) => return Err(io_err("list replica directory", dir)(e)),
        }
        let direct = opts.direct_io && file::probe_direct(dir)?;
        let allocation = Allocation::probe(dir)?;
        // Head first, then the revision file, replica.json last: until it
        // exists the directory is not a replica (open says NotFound).
        let head = meta::head_name(1);
        let path = meta::layer_path(dir, &head);
        let lf = LayerFile::create(&path, size, direct)?;
        let hm = LayerMeta {
            name: head.clone(),
            parent: None,
            size,
            created_unix: fsutil::now_unix(),
            user_created: false,
            labels: BTreeMap::new(),
            read_only: false,
            checksum: None,
            allocated: allocation.map_of(&extent::ExtentSet::new()),
        };
        hm.store(dir)?;
        let revfile = StateFile::create(&dir.join(meta::REVISION_FILE))?;
        let rmeta = ReplicaMeta {
            format_version: meta::FORMAT_VERSION,
            size,
            head,
            generation: 0,
            checksum_method: checksum::METHOD.to_string(),
        };
        rmeta.store(dir)?;
        sync_dir(dir)?;
        tracing::debug!(dir = %dir.display(), size, direct, "created replica");
        let layer = Layer::new(dir, hm, lf, extent::ExtentSet::new());
        Ok(Replica::assemble(
            dir,
            rmeta,
            direct,
            Chain {
                layers: vec![layer],
                allocation,
            },
            revfile,
            state::Record::default(),
        ))
    }

    /// Opens an existing replica, rebuilding the extent index from the
    /// layer files' allocation (SEEK_DATA/SEEK_HOLE), or from the layers'
    /// allocation maps on a filesystem that does not report holes.
    pub fn open(dir: &Path, opts: &ReplicaOptions) -> Result<Replica> {
        let rmeta = ReplicaMeta::load(dir)?;
        let direct = opts.direct_io && file::probe_direct(dir)?;
        let allocation = Allocation::probe(dir)?;
        let mut chain = Chain::load(dir, &rmeta, direct, allocation)?;
        if allocation == Allocation::Holes {
            // A map the head kept on an earlier mount would go stale here
            // (flushes no longer update it): drop it before any write.
            alloc::drop_head_map(dir, chain.head_mut())?;
        }
        let (revfile, record) = StateFile::open(&dir.join(meta::REVISION_FILE))?;
        chain.clean_leftovers(dir)?;
        // replica.json is the commit point of an expansion: a head smaller
        // than the volume means one was interrupted after it, so finish it.
        if expand::grow_head(dir, chain.head_mut(), rmeta.size)? {
            tracing::info!(dir = %dir.display(), size = rmeta.size, "completed an interrupted expansion");
        }
        tracing::debug!(dir = %dir.display(), layers = chain.layers.len(), revision = record.revision, epoch = record.epoch, in_sync_generation = record.generation, "opened replica");
        Ok(Replica::assemble(
            dir, rmeta, direct, chain, revfile, record,
        ))
    }

    fn assemble(
        dir: &Path,
        rmeta: ReplicaMeta,
        direct_io: bool,
        chain: Chain,
        revfile: StateFile,
        record: state::Record,
    ) -> Replica {
        Replica {
            dir: dir.to_path_buf(),
            size: AtomicU64::new(rmeta.size),
            direct_io,
            chain: RwLock::new(chain),
            head_map: Mutex::new(()),
            meta: Mutex::new(rmeta),
            revision: AtomicU64::new(record.revision),
            revfile,
            fence: RwLock::new(record.epoch),
            claimed: AtomicU64::new(record.epoch),
            gate: Arc::default(),
            staged: Mutex::new(HashMap::new()),
            io_errors: AtomicU64::new(0),
        }
    }

    /// Operations on this replica that failed with a disk error
    /// ([`ErrorKind::Io`] or [`ErrorKind::NoSpace`]) since it was opened:
    /// reads, writes, trims, write-zeroes, flushes, revision updates,
    /// snapshot/remove/revert and the rebuild calls (read layer, stage,
    /// write staged, install). Invalid requests and lookups that find
    /// nothing do not count. The control plane watches it for a disk going
    /// bad before an engine notices.
    pub fn io_errors(&self) -> u64 {
        self.io_errors.load(Ordering::Relaxed)
    }

    /// Claims the replica for the engine of `epoch`: from now on every
    /// request of a lower epoch is refused ([`ReplicaError::StaleEpoch`]).
    /// The new epoch is persisted (fdatasync) before it takes effect, and
    /// the claim waits for the requests admitted under an older epoch to
    /// finish, so once it returns no older engine's request is in flight
    /// or can start, even after a crash. Claiming with the current epoch
    /// again is a no-op (epochs come from the cluster store, one per engine
    /// start, so an equal epoch is the same engine); a lower one is refused.
    /// Epoch 0 is no engine: it claims nothing (a reachability probe, or a
    /// peer of a protocol version without epochs), and its requests are
    /// admitted only while no engine has claimed the replica.
    pub fn claim(&self, epoch: u64) -> Result<()> {
        if epoch == 0 {
            return Ok(());
        }
        let raised = self.counted(|| {
            let mut fence = wlock(&self.fence);
            if epoch < *fence {
                return Err(ReplicaError::StaleEpoch {
                    epoch,
                    claimed: *fence,
                });
            }
            if epoch > *fence {
                self.revfile.persist_epoch(epoch)?;
                tracing::info!(dir = %self.dir.display(), epoch, previous = *fence, "replica claimed by a newer engine");
                *fence = epoch;
                self.claimed.store(epoch, Ordering::SeqCst);
                return Ok(true);
            }
            Ok(false)
        })?;
        // Blocking requests admitted under the old epoch were waited for by
        // the fence's write lock; asynchronous ones hold gate passes.
        if raised {
            self.gate.drain();
        }
        Ok(())
    }

    /// Admits one request of the engine of `epoch`: refused with
    /// [`ReplicaError::StaleEpoch`] when a newer engine claimed the replica.
    /// Hold the returned guard while the request runs (a claim waits for it).
    pub fn admit(&self, epoch: u64) -> Result<Admission<'_>> {
        let fence = rlock(&self.fence);
        if *fence > epoch {
            return Err(ReplicaError::StaleEpoch {
                epoch,
                claimed: *fence,
            });
        }
        Ok(Admission {
            _fence: Some(fence),
        })
    }

    /// The highest epoch that claimed the replica (0: none yet).
    pub fn epoch(&self) -> u64 {
        *rlock(&self.fence)
    }

    /// Persists `generation` (fdatasync) as the in-sync generation this
    /// replica last joined: the control plane recorded it as a member of
    /// that generation's set, or ran a chain operation on it as one. Set
    /// exactly, lower or higher (the newest record wins on reopen). Like
    /// every mutation, call it under an [`Admission`] of the engine's epoch
    /// (the replica server and the engine's local backend do), so a fenced
    /// engine cannot move it.
    pub fn join_generation(&self, generation: u64) -> Result<()> {
        self.counted(|| {
            let previous = self.revfile.current().generation;
            self.revfile.persist_generation(generation)?;
            if previous != generation {
                tracing::debug!(dir = %self.dir.display(), generation, previous, "replica joined an in-sync generation");
            }
            Ok(())
        })
    }

    /// The in-sync generation this replica last joined (0: none yet).
    pub fn in_sync_generation(&self) -> u64 {
        self.revfile.current().generation
    }

    /// The chain for a chain operation: the gate closed (no asynchronous
    /// I/O in flight, see `gate.rs`), then the chain's write lock.
    fn chain_exclusive(&self) -> (gate::Exclusive<'_>, RwLockWriteGuard<'_, Chain>) {
        let gate = self.gate.exclusive();
        (gate, wlock(&self.chain))
    }

    /// Counts a failed operation in `io_errors` if it is a disk error.
    fn count_failure<T>(&self, result: &Result<T>) {
        if let Err(e) = result
            && is_disk_error(e)
        {
            self.io_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs `op`, counting it in `io_errors` if it fails with a disk error.
    fn counted<T>(&self, op: impl FnOnce() -> Result<T>) -> Result<T> {
        let result = op();
        if let Err(e) = &result
            && is_disk_error(e)
        {
            self.io_errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Volume size in bytes.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::SeqCst)
    }
    /// The replica's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks an I/O request against alignment and the volume size and
    /// returns its end.
    fn check_io(&self, offset: u64, len: u64) -> Result<u64> {
        check_range(offset, len, self.size())
    }

    /// Reads `buf.len()` bytes at `offset` through the chain; never-written
    /// blocks read as zeros without touching the disk.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.counted(|| {
            self.check_io(offset, buf.len() as u64)?;
            rlock(&self.chain).read(offset, buf)
        })
    }
    /// Writes `data` at `offset` into the head.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.counted(|| {
            let end = self.check_io(offset, data.len() as u64)?;
            if data.is_empty() {
                return Ok(());
            }
            let chain = rlock(&self.chain);
            let head = chain.head();
            // Data first, index second: a concurrent read sees either the old
            // data or the new, never a hole where data used to be.
            head.file.write_at(offset, data)?;
            wlock(&head.extents).insert(offset, end);
            self.revision.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
    /// Discards a range (reads of it return zeros afterwards).
    pub fn trim(&self, offset: u64, len: u64) -> Result<()> {
        self.counted(|| self.zero_range(offset, len))
    }
    /// Writes zeros to a range (deallocating where nothing lies below).
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.counted(|| self.zero_range(offset, len))
    }

    /// Makes `[offset, offset + len)` read as zeros: holes in the head where
    /// no lower layer has data, real zeros where one does (so the index
    /// never falls through to old data). The holes are remembered in the
    /// head's `zeroed` set: an install can put data below them later.
    fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        let end = self.check_io(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let chain = rlock(&self.chain);
        let head = chain.head();
        let lower = chain.lower_extents(offset, end);
        for (s, e, below) in extent::split_by(&lower, offset, end) {
            if below {
                head.file.write_zeros(s, e - s)?;
                wlock(&head.extents).insert(s, e);
                continue;
            }
            lock(&head.zeroed).insert(s, e);
            // Punch and unindex in one critical section so a racing write
            // ends up either entirely before or entirely after the trim.
            let mut ext = wlock(&head.extents);
            if ext.overlaps(s, e).is_empty() {
                continue;
            }
            if head.file.punch_hole(s, e - s)? {
                ext.remove(s, e);
            } else {
                drop(ext);
                head.file.write_zeros(s, e - s)?;
                wlock(&head.extents).insert(s, e);
            }
        }
        self.revision.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Makes every completed write durable (fdatasync) and persists the revision.
    pub fn flush(&self) -> Result<()> {
        self.counted(|| {
            // Every operation counted in `rev` finished its pwrite before the
            // count was bumped, so the fdatasync below covers it.
            let rev = self.revision.load(Ordering::SeqCst);
            self.sync_head(&rlock(&self.chain))?;
            self.revfile.persist_revision(rev)
        })
    }
    /// Adopts revision `rev` and persists it (after syncing the head): a
    /// rebuilt replica takes its source's revision when it turns RW, so that
    /// replicas in sync carry equal revisions and a stale one stands out.
    pub fn set_revision(&self, rev: u64) -> Result<()> {
        self.counted(|| {
            self.sync_head(&rlock(&self.chain))?;
            self.revision.store(rev, Ordering::SeqCst);
            self.revfile.force_revision(rev)
        })
    }

    /// Makes the head's completed writes durable (fdatasync) and, where the
    /// filesystem does not report holes, then persists the head's
    /// allocation map as it was before the sync (see `alloc.rs`).
    fn sync_head(&self, chain: &Chain) -> Result<()> {
        let head = chain.head();
        if chain.allocation == Allocation::Holes {
            return head.file.sync_data();
        }
        let _one_at_a_time = lock(&self.head_map);
        let map = alloc::encode(&rlock(&head.extents));
        head.file.sync_data()?;
        let mut meta = lock(&head.meta);
        if meta.allocated.as_ref() == Some(&map) {
            return Ok(());
        }
        let mut new = meta.clone();
        new.allocated = Some(map);
        new.store(&self.dir)?;
        *meta = new;
        Ok(())
    }

    /// Bumps and persists the generation; returns the new value.
    pub fn bump_generation(&self) -> Result<u64> {
        let mut m = lock(&self.meta);
        let mut new = m.clone();
        new.generation += 1;
        new.store(&self.dir)?;
        *m = new;
        Ok(m.generation)
    }

    /// Writes replica.json with a new head name (the commit point of
    /// snapshot and revert).
    fn commit_head(&self, head: &str) -> Result<()> {
        let mut m = lock(&self.meta);
        let mut new = m.clone();
        new.head = head.to_string();
        new.store(&self.dir)?;
        *m = new;
        Ok(())
    }

    /// Freezes the head as snapshot `name` and starts a new empty head on top.
    pub fn snapshot(
        &self,
        name: &str,
        user_created: bool,
        labels: BTreeMap<String, String>,
    ) -> Result<LayerInfo> {
        self.refuse_if_damaged()?;
        self.counted(|| self.snapshot_impl(name, user_created, labels))
    }
    /// Removes snapshot `name`, merging its data into its child.
    pub fn remove_snapshot(&self, name: &str) -> Result<()> {
        self.refuse_if_damaged()?;
        self.counted(|| self.remove_snapshot_impl(name))
    }
    /// Discards the head and every snapshot above `name`; a new empty head
    /// sits on `name`.
    pub fn revert(&self, name: &str) -> Result<()> {
        self.refuse_if_damaged()?;
        self.counted(|| self.revert_impl(name))
    }
    /// Size, revision, generation and the chain bottom to head.
    pub fn info(&self) -> ReplicaInfo {
        let chain = rlock(&self.chain);
        ReplicaInfo {
            size: self.size(),
            revision: self.revfile.current().revision,
            epoch: self.epoch(),
            generation: lock(&self.meta).generation,
            in_sync_generation: self.in_sync_generation(),
            chain: chain.layers.iter().map(Layer::info).collect(),
            direct_io: self.direct_io && chain.layers.iter().all(|l| l.file.direct()),
        }
    }
    /// Checks every layer file is present and sized and every read-only
    /// layer's checksum matches.
    pub fn verify(&self) -> Result<VerifyReport> {
        verify::verify(&self.dir, &rlock(&self.chain))
    }
    /// The cheap part of [`Replica::verify`]: every layer's data and
    /// metadata file present, metadata readable and its parent links
    /// consistent, file sizes as the metadata says. Reads no data and
    /// computes or stores no checksum, so it can run every few seconds.
    /// Problems have the kinds `missing`, `size`, `metadata`, `parent`.
    pub fn check_files(&self) -> Result<VerifyReport> {
        Ok(verify::check_files(&self.dir, &rlock(&self.chain)))
    }
    /// Fails with [`ReplicaError::Corrupt`] naming the first damaged file
    /// when [`Replica::check_files`] finds a problem: every chain operation
    /// checks the files first, so a layer lost under a replica is found
    /// before a new layer is built on it.
    fn refuse_if_damaged(&self) -> Result<()> {
        verify::refuse_if_damaged(&self.dir, &rlock(&self.chain))
    }
    /// The checksum of read-only layer `layer` recomputed from its data on
    /// disk, ignoring the stored one (the periodic cross-replica comparison
    /// needs what the disk holds now), and the layer's file. Reads the
    /// whole layer; run it rarely.
    pub fn fresh_layer_checksum(&self, layer: &str) -> Result<(Checksum, PathBuf)> {
        verify::fresh_checksum(&rlock(&self.chain), layer)
    }
    /// Allocated extents of one layer (rebuild source).
    pub fn layer_extents(&self, layer: &str) -> Result<Vec<Extent>> {
        let chain = rlock(&self.chain);
        let l = find_layer(&chain, layer)?;
        let ext = rlock(&l.extents);
        Ok(ext
            .iter()
            .map(|(s, e)| Extent {
                offset: s,
                len: e - s,
            })
            .collect())
    }
    /// Raw read of one layer's file (holes read as zeros).
    pub fn read_layer(&self, layer: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.counted(|| {
            self.check_io(offset, buf.len() as u64)?;
            let chain = rlock(&self.chain);
            find_layer(&chain, layer)?.file.read_at(offset, buf)
        })
    }
    /// The checksum of a read-only layer, computing and storing it if missing.
    pub fn layer_checksum(&self, layer: &str) -> Result<Checksum> {
        let chain = rlock(&self.chain);
        let l = find_layer(&chain, layer)?;
        if !lock(&l.meta).read_only {
            return Err(ReplicaError::InvalidArgument(format!(
                "layer {layer:?} is the writable head; only snapshots have checksums"
            )));
        }
        l.checksum(&self.dir)
    }
    /// Starts receiving a read-only layer from a rebuild source into a
    /// staging file (replacing any earlier partial one).
    pub fn stage_layer(&self, info: &LayerInfo) -> Result<()> {
        self.counted(|| self.stage_layer_impl(info))
    }
    /// Writes data into a staged layer.
    pub fn write_staged(&self, layer: &str, offset: u64, data: &[u8]) -> Result<()> {
        self.counted(|| self.write_staged_impl(layer, offset, data))
    }
    /// Replaces every read-only layer with `layers` (bottom to top): each is
    /// either staged or already present with the same checksum. The head is
    /// kept and re-parented onto the last one. Atomic and crash-safe.
    pub fn install_chain(&self, layers: &[LayerInfo]) -> Result<()> {
        self.counted(|| self.install_chain_impl(layers))
    }
}

/// A request admitted under its engine's epoch ([`Replica::admit`]); a
/// newer engine's claim waits until it is dropped.
pub struct Admission<'a> {
    _fence: Option<std::sync::RwLockReadGuard<'a, u64>>,
}

impl Admission<'static> {
    /// An admission that holds nothing back (test replicas without fencing).
    #[cfg(test)]
    pub(crate) fn unfenced() -> Admission<'static> {
        Admission { _fence: None }
    }
}

/// Checks `[offset, offset + len)` is block-aligned and within `size`;
/// returns the end.
fn check_range(offset: u64, len: u64, size: u64) -> Result<u64> {
    if !offset.is_multiple_of(BLOCK_SIZE) || !len.is_multiple_of(BLOCK_SIZE) {
        return Err(ReplicaError::InvalidArgument(format!(
            "offset {offset} and length {len} must be multiples of {BLOCK_SIZE}"
        )));
    }
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(end),
        _ => Err(ReplicaError::InvalidArgument(format!(
            "range at {offset} of {len} bytes lies beyond the size {size}"
        ))),
    }
}

/// Whether `e` is the disk's fault (counted in [`Replica::io_errors`]).
fn is_disk_error(e: &ReplicaError) -> bool {
    matches!(e.kind(), ErrorKind::Io | ErrorKind::NoSpace)
}

/// The layer called `name`, or `NotFound`.
fn find_layer<'a>(chain: &'a Chain, name: &str) -> Result<&'a Layer> {
    chain
        .find(name)
        .map(|i| &chain.layers[i])
        .ok_or_else(|| ReplicaError::NotFound(format!("layer {name:?}")))
}
