//! Rebuild target side: staging read-only layers received from a source
//! replica into `<layer file>.partial` files, then installing a whole
//! read-only chain under the existing head.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use super::alloc::Allocation;
use super::chain::{Chain, Layer};
use super::extent::ExtentSet;
use super::file::LayerFile;
use super::fsutil::{
    Result, corrupt, get_mut, get_mut_m, io_err, lock, remove_file_if_exists, remove_leftovers,
    rlock, sync_dir, wlock,
};
use super::meta::{self, LayerMeta, check_snapshot_name};
use super::{Checksum, LayerInfo, Replica, ReplicaError, check_range, checksum, fault};
use crate::size::BLOCK_SIZE;

/// A layer being received.
pub(super) struct Staged {
    info: LayerInfo,
    path: PathBuf,
    file: LayerFile,
    /// Ranges written so far: the layer's extents once complete.
    extents: Mutex<ExtentSet>,
    /// Open to `write_staged`; an install closes it (waiting for writes in
    /// flight) so no late write can land in an installed layer.
    writable: RwLock<bool>,
}

/// Staged layers an install has closed to writers; those not installed
/// when it returns (an error) are reopened.
struct Closed(Vec<Arc<Staged>>);

impl Closed {
    fn close(&mut self, st: &Arc<Staged>) {
        *wlock(&st.writable) = false;
        self.0.push(Arc::clone(st));
    }

    /// `st` was installed: it stays closed for good.
    fn installed(&mut self, st: &Arc<Staged>) {
        self.0.retain(|x| !Arc::ptr_eq(x, st));
    }
}

impl Drop for Closed {
    fn drop(&mut self) {
        for st in &self.0 {
            *wlock(&st.writable) = true;
        }
    }
}

/// Where a layer of the installed chain comes from.
enum Source {
    /// A staged file, with its checksum and extents.
    Staged(Arc<Staged>, Checksum, ExtentSet),
    /// The existing layer of that name.
    Kept,
}

impl Replica {
    /// See [`Replica::stage_layer`].
    pub(super) fn stage_layer_impl(&self, info: &LayerInfo) -> Result<()> {
        check_snapshot_name(&info.name)?;
        self.check_layer_size(info)?;
        let path = meta::staged_path(&self.dir, &info.name);
        let mut staged = lock(&self.staged);
        staged.remove(&info.name);
        // A fresh inode, so a late write to an earlier stage cannot land here.
        remove_file_if_exists(&path)?;
        let file = LayerFile::create(&path, info.size, self.direct_io)?;
        tracing::debug!(layer = %info.name, "staging layer");
        staged.insert(
            info.name.clone(),
            Arc::new(Staged {
                info: info.clone(),
                path,
                file,
                extents: Mutex::new(ExtentSet::new()),
                writable: RwLock::new(true),
            }),
        );
        Ok(())
    }

    fn check_layer_size(&self, info: &LayerInfo) -> Result<()> {
        if info.size == 0 || !info.size.is_multiple_of(BLOCK_SIZE) || info.size > self.size() {
            return Err(ReplicaError::InvalidArgument(format!(
                "layer {:?} size {} must be a positive multiple of {BLOCK_SIZE} up to {}",
                info.name,
                info.size,
                self.size()
            )));
        }
        Ok(())
    }

    /// See [`Replica::write_staged`].
    pub(super) fn write_staged_impl(&self, layer: &str, offset: u64, data: &[u8]) -> Result<()> {
        let st = lock(&self.staged)
            .get(layer)
            .cloned()
            .ok_or_else(|| ReplicaError::NotFound(format!("staged layer {layer:?}")))?;
        let end = check_range(offset, data.len() as u64, st.info.size)?;
        if data.is_empty() {
            return Ok(());
        }
        let open = rlock(&st.writable);
        if !*open {
            return Err(ReplicaError::NotFound(format!(
                "staged layer {layer:?} is being installed"
            )));
        }
        st.file.write_at(offset, data)?;
        lock(&st.extents).insert(offset, end);
        Ok(())
    }

    /// See [`Replica::install_chain`].
    ///
    /// The commit point is the head's meta file naming its new parent.
    /// Before it, the chain the head's meta names must stay intact, so new
    /// layer files and metas are written first. If installing needs to
    /// change a layer of the current chain in place (a staged layer
    /// replacing one of the same name, or a kept layer getting a new
    /// parent), a first commit re-parents the head onto the part of the
    /// current chain below the first such layer; that layer and the ones
    /// above it are then unreferenced and can be rewritten. Layers that are
    /// not in the new chain are deleted after the final commit. A crash
    /// therefore leaves the old chain, that truncated intermediate one (the
    /// replica is being rebuilt, its data is not yet authoritative), or the
    /// new one; staged files and unreferenced layers are cleaned on open.
    pub(super) fn install_chain_impl(&self, layers: &[LayerInfo]) -> Result<()> {
        let _span = tracing::debug_span!("install_chain", layers = layers.len()).entered();
        let dir = self.dir.as_path();
        let (_gate, mut chain) = self.chain_exclusive();
        let mut staged = lock(&self.staged);

        let mut names = HashSet::new();
        for l in layers {
            check_snapshot_name(&l.name)?;
            self.check_layer_size(l)?;
            if !names.insert(l.name.as_str()) {
                return Err(ReplicaError::InvalidArgument(format!(
                    "layer {:?} listed twice",
                    l.name
                )));
            }
        }
        let head_idx = chain.layers.len() - 1;
        let mut plan = Vec::with_capacity(layers.len());
        let mut closed = Closed(Vec::new());
        for l in layers {
            if let Some(st) = staged.get(&l.name) {
                if st.info.size != l.size {
                    return Err(ReplicaError::InvalidArgument(format!(
                        "layer {:?} was staged with size {}, installed with {}",
                        l.name, st.info.size, l.size
                    )));
                }
                closed.close(st);
                st.file.sync_data()?;
                let ext = lock(&st.extents).clone();
                let sum = checksum::compute(&st.file, &ext)?;
                if let Some(want) = &l.checksum
                    && *want != sum
                {
                    return Err(corrupt(
                        &st.path,
                        format!(
                            "staged layer {:?} has checksum {} {}, the source has {} {}",
                            l.name, sum.method, sum.value, want.method, want.value
                        ),
                    ));
                }
                plan.push(Source::Staged(Arc::clone(st), sum, ext));
                continue;
            }
            let kept = match chain.find(&l.name).filter(|&i| i < head_idx) {
                Some(i) => Some(chain.layers[i].checksum(dir)?),
                None => None,
            };
            match (kept, &l.checksum) {
                (Some(have), Some(want)) if have == *want => plan.push(Source::Kept),
                _ => {
                    return Err(ReplicaError::InvalidArgument(format!(
                        "layer {:?} is neither staged nor present with the same checksum",
                        l.name
                    )));
                }
            }
        }
        // Before any commit, so every chain a crash can leave reads zeros there.
        self.fill_zeroed_holes(&chain, layers, &plan)?;
        let new_parent = |i: usize| i.checked_sub(1).map(|p| layers[p].name.clone());

        // Phase 1, only if a layer of the current chain must change in place.
        let first_touched = chain.layers[..head_idx].iter().position(|old| {
            layers
                .iter()
                .position(|l| l.name == old.name)
                .is_some_and(|ni| {
                    matches!(plan[ni], Source::Staged(..))
                        || lock(&old.meta).parent != new_parent(ni)
                })
        });
        let mut pool: Vec<Layer> = Vec::new();
        if let Some(p) = first_touched {
            let parent = p.checked_sub(1).map(|i| chain.layers[i].name.clone());
            self.set_head_parent(&mut chain, parent)?;
            let Some(head) = chain.layers.pop() else {
                unreachable!("the chain always has a head");
            };
            pool = chain.layers.split_off(p);
            chain.layers.push(head);
            tracing::debug!(kept_below = p, "head re-parented before rewriting layers");
        }

        // Phase 2: put every new layer in place, unreferenced until the commit.
        let mut prepared: Vec<Option<Layer>> = Vec::with_capacity(layers.len());
        for (ni, (l, src)) in layers.iter().zip(plan).enumerate() {
            match src {
                Source::Staged(st, sum, ext) => {
                    let path = meta::layer_path(dir, &l.name);
                    fault::crash_point()
                        .and_then(|()| fs::rename(&st.path, &path))
                        .map_err(io_err("install staged layer", &path))?;
                    closed.installed(&st);
                    staged.remove(&l.name);
                    let m = LayerMeta {
                        name: l.name.clone(),
                        parent: new_parent(ni),
                        size: l.size,
                        created_unix: l.created_unix,
                        user_created: l.user_created,
                        labels: l.labels.clone(),
                        read_only: true,
                        checksum: Some(sum),
                        allocated: chain.allocation.map_of(&ext),
                    };
                    m.store(dir)?;
                    let file = LayerFile::open(&path, self.direct_io)?;
                    prepared.push(Some(Layer::new(dir, m, file, ext)));
                }
                Source::Kept => {
                    let layer = chain
                        .layers
                        .iter_mut()
                        .chain(pool.iter_mut())
                        .find(|x| x.name == l.name);
                    if let Some(layer) = layer {
                        let meta = get_mut_m(&mut layer.meta);
                        if meta.parent != new_parent(ni) {
                            let mut m = meta.clone();
                            m.parent = new_parent(ni);
                            m.store(dir)?;
                            *meta = m;
                        }
                    }
                    prepared.push(None);
                }
            }
        }
        sync_dir(dir)?;
        let top = layers.last().map(|l| l.name.clone());
        self.set_head_parent(&mut chain, top)?;

        // Committed: rebuild the in-memory chain, delete what is unreferenced.
        let Some(head) = chain.layers.pop() else {
            unreachable!("the chain always has a head");
        };
        let mut old: HashMap<String, Layer> = chain
            .layers
            .drain(..)
            .chain(pool)
            .map(|l| (l.name.clone(), l))
            .collect();
        for (l, prep) in layers.iter().zip(prepared) {
            match prep.or_else(|| old.remove(&l.name)) {
                Some(layer) => chain.layers.push(layer),
                None => tracing::error!(layer = %l.name, "kept layer vanished during install"),
            }
        }
        chain.layers.push(head);
        let mut doomed = Vec::new();
        for (name, layer) in old {
            // A staged layer of the same name now lives at that path.
            if !names.contains(name.as_str()) {
                doomed.push(layer.path.clone());
                doomed.push(layer.meta_path(dir));
            }
        }
        remove_leftovers(&doomed);
        if let Err(e) = sync_dir(dir) {
            tracing::warn!(error = %e, "could not sync the directory after installing a chain");
        }
        tracing::debug!(removed = doomed.len() / 2, "chain installed");
        Ok(())
    }

    /// Writes real zeros into the head over the holes the guest zeroed
    /// (`Layer::zeroed`) wherever a layer of the chain about to be installed
    /// holds data: without them that data would show through the holes
    /// once it lies below the head. A rebuild target is the case: its head
    /// takes the guest's trims and zeroes (as holes, nothing lies below
    /// yet) before the source's chain arrives.
    ///
    /// Runs before the install's first commit and syncs the head: zeros
    /// where the guest asked for zeros read the same over the old chain,
    /// so a crash in the middle changes nothing a reader sees, and once a
    /// commit puts the new layers below, the zeros are durable.
    fn fill_zeroed_holes(
        &self,
        chain: &Chain,
        layers: &[LayerInfo],
        plan: &[Source],
    ) -> Result<()> {
        let head = chain.head();
        let zeroed = lock(&head.zeroed).clone();
        let mut below = ExtentSet::new();
        for (l, src) in layers.iter().zip(plan) {
            let kept;
            let ext = match src {
                Source::Staged(_, _, ext) => ext,
                Source::Kept => match chain.find(&l.name) {
                    Some(i) => {
                        kept = rlock(&chain.layers[i].extents);
                        &*kept
                    }
                    None => continue,
                },
            };
            for (s, e) in zeroed.iter() {
                for (a, b) in ext.overlaps(s, e) {
                    below.insert(a, b);
                }
            }
        }
        // Where the head holds data (zeros or a later write) it wins already.
        let todo = below.difference(&rlock(&head.extents));
        if todo.bytes() == 0 {
            return Ok(());
        }
        for (s, e) in todo.iter() {
            fault::crash_point().map_err(io_err("write zeros into the head", &head.path))?;
            head.file.write_zeros(s, e - s)?;
            wlock(&head.extents).insert(s, e);
        }
        head.file.sync_data()?;
        // Data in the head now; a later trim that punches it re-adds it.
        let mut z = lock(&head.zeroed);
        for (s, e) in todo.iter() {
            z.remove(s, e);
        }
        tracing::debug!(
            bytes = todo.bytes(),
            "zeroed holes filled before the install"
        );
        Ok(())
    }

    /// Rewrites the head's meta with a new parent (a commit point). Where
    /// the head keeps an allocation map, the map is brought up to date in
    /// the same write, after syncing the head (so it names only data on
    /// disk, the zeros `fill_zeroed_holes` wrote among them).
    fn set_head_parent(&self, chain: &mut Chain, parent: Option<String>) -> Result<()> {
        let allocation = chain.allocation;
        let Some(head) = chain.layers.last_mut() else {
            unreachable!("the chain always has a head");
        };
        let map = match allocation {
            Allocation::Holes => None,
            Allocation::Maps => {
                head.file.sync_data()?;
                allocation.map_of(get_mut(&mut head.extents))
            }
        };
        let meta = get_mut_m(&mut head.meta);
        let mut m = meta.clone();
        m.parent = parent;
        m.allocated = map;
        m.store(&self.dir)?;
        *meta = m;
        Ok(())
    }
}
