//! Chain changes that keep the data: snapshot, remove a snapshot (merge it
//! into its child) and revert. Each runs under the chain write lock and
//! orders its side effects so that a crash at any point leaves a chain
//! that opens: new files first, the metadata switch (the commit) next,
//! deletion of what became unreferenced last. Leftovers of an interrupted
//! operation are unreferenced and `open` removes them.

use std::collections::BTreeMap;
use std::fs;
use std::mem;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use super::aligned::AlignedBuf;
use super::chain::{Chain, Layer};
use super::extent::ExtentSet;
use super::file::LayerFile;
use super::fsutil::{
    Result, get_mut, get_mut_m, io_err, lock, remove_file_if_exists, remove_leftovers, sync_dir,
};
use super::meta::{self, LayerMeta, check_snapshot_name};
use super::{LayerInfo, Replica, ReplicaError, checksum, fault};

impl Replica {
    /// See [`Replica::snapshot`].
    ///
    /// Order: fsync the head; hard-link its file as `volume-snap-<name>.img`
    /// and write that layer's meta; create the new head file and its meta;
    /// switch `replica.json` to the new head (commit); unlink the old head's
    /// name. Before the commit the old head is intact and the new files are
    /// unreferenced; after it the old head's name is.
    ///
    /// A user's snapshot gets its checksum here, synchronously: a read of
    /// the head's extents (O_DIRECT, so from the disk) while the snapshot
    /// holds the volume's I/O. A system snapshot (a rebuild's) does not: the
    /// rebuild hashes the layer as it streams to the new replica, and
    /// reading it first froze a 512 MiB volume for 0.4 s; its checksum is
    /// computed on first need otherwise ([`Replica::layer_checksum`]).
    pub(super) fn snapshot_impl(
        &self,
        name: &str,
        user_created: bool,
        labels: BTreeMap<String, String>,
    ) -> Result<LayerInfo> {
        check_snapshot_name(name)?;
        let _span = tracing::debug_span!("snapshot", name).entered();
        let (_gate, mut chain) = self.chain_exclusive();
        if chain.find(name).is_some() {
            return Err(ReplicaError::AlreadyExists(format!("snapshot {name:?}")));
        }
        let dir = self.dir.as_path();
        let next_head = meta::head_name(chain.next_head_counter());
        let head = chain.head();
        head.file.sync_data()?;
        self.revfile
            .persist_revision(self.revision.load(Ordering::SeqCst))?;
        let extents = super::fsutil::rlock(&head.extents).clone();
        let sum = match user_created {
            true => Some(checksum::compute(&head.file, &extents)?),
            false => None,
        };
        let old_meta = lock(&head.meta).clone();

        let snap_path = meta::layer_path(dir, name);
        // Anything under these names now is an unreferenced leftover.
        remove_file_if_exists(&snap_path)?;
        remove_file_if_exists(&meta::meta_path(dir, name))?;
        fault::crash_point()
            .and_then(|()| fs::hard_link(&head.path, &snap_path))
            .map_err(io_err("link snapshot file", &snap_path))?;
        let snap_meta = LayerMeta {
            name: name.to_string(),
            parent: old_meta.parent.clone(),
            size: old_meta.size,
            created_unix: super::fsutil::now_unix(),
            user_created,
            labels,
            read_only: true,
            checksum: sum,
            allocated: chain.allocation.map_of(&extents),
        };
        snap_meta.store(dir)?;
        let new_head = self.create_head(&chain, &next_head, Some(name.to_string()))?;
        sync_dir(dir)?;
        self.commit_head(&next_head)?;

        remove_leftovers(&[head.path.clone(), head.meta_path(dir)]);
        if let Err(e) = sync_dir(dir) {
            tracing::warn!(error = %e, "could not sync the directory after a snapshot");
        }
        let Some(old) = chain.layers.pop() else {
            unreachable!("the chain always has a head");
        };
        let Layer { file, extents, .. } = old;
        let file = file.renamed(snap_path);
        let extents = extents.into_inner().unwrap_or_else(PoisonError::into_inner);
        let snap = Layer::new(dir, snap_meta, file, extents);
        let info = snap.info();
        chain.layers.push(snap);
        chain.layers.push(new_head);
        tracing::debug!(head = %next_head, "snapshot taken");
        Ok(info)
    }

    /// Creates an empty sparse head file and its meta (not yet committed).
    fn create_head(&self, chain: &Chain, name: &str, parent: Option<String>) -> Result<Layer> {
        let dir = self.dir.as_path();
        let path = meta::layer_path(dir, name);
        remove_file_if_exists(&meta::meta_path(dir, name))?;
        let file = LayerFile::create(&path, self.size(), self.direct_io)?;
        let m = LayerMeta {
            name: name.to_string(),
            parent,
            size: self.size(),
            created_unix: super::fsutil::now_unix(),
            user_created: false,
            labels: BTreeMap::new(),
            read_only: false,
            checksum: None,
            allocated: chain.allocation.map_of(&ExtentSet::new()),
        };
        m.store(dir)?;
        Ok(Layer::new(dir, m, file, ExtentSet::new()))
    }

    /// See [`Replica::remove_snapshot`].
    ///
    /// The removed layer's extents that its child does not cover are copied
    /// into the child, in place. Reads through the chain return the same
    /// data before, during and after the copy (the copied ranges hold the
    /// same bytes in both layers), so a crash mid-copy is harmless. Order:
    /// (child is a snapshot) clear its stored checksum, since its content is
    /// about to change; copy; fdatasync the child; write the child's meta
    /// with the new parent and checksum (commit); delete the removed
    /// layer's files, now unreferenced.
    pub(super) fn remove_snapshot_impl(&self, name: &str) -> Result<()> {
        let _span = tracing::debug_span!("remove_snapshot", name).entered();
        let dir = self.dir.as_path();
        let (_gate, mut chain) = self.chain_exclusive();
        let idx = snapshot_index(&chain, name, "only snapshots can be removed")?;
        let allocation = chain.allocation;
        let (lower, upper) = chain.layers.split_at_mut(idx + 1);
        let victim = &mut lower[idx];
        let child = &mut upper[0];
        let victim_ext = get_mut(&mut victim.extents).clone();
        let parent = get_mut_m(&mut victim.meta).parent.clone();
        let to_copy = victim_ext.difference(get_mut(&mut child.extents));

        let mut child_meta = get_mut_m(&mut child.meta).clone();
        if child_meta.read_only && child_meta.checksum.is_some() {
            child_meta.checksum = None;
            child_meta.store(dir)?;
            *get_mut_m(&mut child.meta) = child_meta.clone();
        }
        let mut buf = AlignedBuf::new(usize::MAX);
        let cap = buf.as_slice().len() as u64;
        for (s, e) in to_copy.iter() {
            let mut off = s;
            while off < e {
                let n = (e - off).min(cap) as usize;
                let chunk = &mut buf.as_mut_slice()[..n];
                victim.file.read_at(off, chunk)?;
                fault::crash_point().map_err(io_err("write layer file", &child.path))?;
                child.file.write_at(off, chunk)?;
                get_mut(&mut child.extents).insert(off, off + n as u64);
                off += n as u64;
            }
        }
        child.file.sync_data()?;
        let ext = get_mut(&mut child.extents).clone();
        if child_meta.read_only {
            child_meta.checksum = Some(checksum::compute(&child.file, &ext)?);
        }
        // The child's map gains the copied ranges (and, for the head, its
        // writes so far: all synced just now) in the same commit.
        child_meta.allocated = allocation.map_of(&ext);
        child_meta.parent = parent;
        child_meta.store(dir)?;
        *get_mut_m(&mut child.meta) = child_meta;

        let doomed = [victim.path.clone(), victim.meta_path(dir)];
        chain.layers.remove(idx);
        remove_leftovers(&doomed);
        if let Err(e) = sync_dir(dir) {
            tracing::warn!(error = %e, "could not sync the directory after removing a snapshot");
        }
        tracing::debug!(copied = to_copy.bytes(), "snapshot removed");
        Ok(())
    }

    /// See [`Replica::revert`].
    ///
    /// Order: create the new empty head on `name`; switch `replica.json` to
    /// it (commit); delete the old head and the snapshots above `name`.
    pub(super) fn revert_impl(&self, name: &str) -> Result<()> {
        let _span = tracing::debug_span!("revert", name).entered();
        let dir = self.dir.as_path();
        let (_gate, mut chain) = self.chain_exclusive();
        let idx = snapshot_index(&chain, name, "revert needs a snapshot")?;
        let next_head = meta::head_name(chain.next_head_counter());
        let new_head = self.create_head(&chain, &next_head, Some(name.to_string()))?;
        sync_dir(dir)?;
        self.commit_head(&next_head)?;

        let dropped = chain.layers.split_off(idx + 1);
        chain.layers.push(new_head);
        let mut doomed = Vec::new();
        for l in &dropped {
            doomed.push(l.path.clone());
            doomed.push(l.meta_path(dir));
        }
        mem::drop(dropped);
        remove_leftovers(&doomed);
        if let Err(e) = sync_dir(dir) {
            tracing::warn!(error = %e, "could not sync the directory after a revert");
        }
        Ok(())
    }
}

/// The chain index of snapshot `name`: `NotFound` if absent,
/// `InvalidArgument` (with `why_not_head`) if it names the head.
fn snapshot_index(chain: &Chain, name: &str, why_not_head: &str) -> Result<usize> {
    let idx = chain
        .find(name)
        .ok_or_else(|| ReplicaError::NotFound(format!("snapshot {name:?}")))?;
    if idx + 1 == chain.layers.len() {
        return Err(ReplicaError::InvalidArgument(format!(
            "{name:?} is the head; {why_not_head}"
        )));
    }
    Ok(idx)
}
