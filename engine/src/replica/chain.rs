//! The in-memory chain: each layer's open file, metadata and extent index,
//! loaded from disk by following parent links down from the head, plus
//! read resolution through the chain and cleanup of unreferenced files.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use super::alloc::Allocation;
use super::extent::ExtentSet;
use super::file::LayerFile;
use super::fsutil::{Result, corrupt, io_err, lock, remove_leftovers, rlock, sync_dir};
use super::meta::{
    self, LayerMeta, REPLICA_FILE, REVISION_FILE, ReplicaMeta, head_counter, is_cleanable,
};
use super::{LayerInfo, checksum};

/// One layer of the chain.
pub(super) struct Layer {
    /// The layer's name (immutable for this value; renames build a new one).
    pub name: String,
    /// The data file's path.
    pub path: PathBuf,
    /// The open data file.
    pub file: LayerFile,
    /// Allocated ranges. Only the head's changes under the chain read lock.
    pub extents: RwLock<ExtentSet>,
    /// Persisted metadata; also serialises writes of this layer's meta file.
    pub meta: Mutex<LayerMeta>,
    /// Ranges the guest zeroed (trim, write-zeroes) while this layer was the
    /// head and no layer below held data, so they were left as holes. An
    /// install may later put data below them (a rebuild target gets its
    /// chain after its head took writes); it writes real zeros there first
    /// (`rebuild.rs`). In memory only: a replica reopened in the middle of
    /// a rebuild is rebuilt again on a new head, and the ranges still
    /// needed by a finished install were written as zeros before it.
    pub zeroed: Mutex<ExtentSet>,
}

impl Layer {
    /// Wraps an open file and its metadata.
    pub(super) fn new(dir: &Path, meta: LayerMeta, file: LayerFile, extents: ExtentSet) -> Layer {
        Layer {
            name: meta.name.clone(),
            path: meta::layer_path(dir, &meta.name),
            file,
            extents: RwLock::new(extents),
            meta: Mutex::new(meta),
            zeroed: Mutex::new(ExtentSet::new()),
        }
    }

    /// The public description.
    pub(super) fn info(&self) -> LayerInfo {
        let bytes = rlock(&self.extents).bytes();
        lock(&self.meta).info(bytes)
    }

    /// The metadata file's path.
    pub(super) fn meta_path(&self, dir: &Path) -> PathBuf {
        meta::meta_path(dir, &self.name)
    }

    /// The stored checksum, or computes it from the extent index and stores
    /// it. Callers hold at least the chain read lock, so a read-only
    /// layer's content cannot change meanwhile.
    pub(super) fn checksum(&self, dir: &Path) -> Result<super::Checksum> {
        if let Some(c) = lock(&self.meta).checksum.clone() {
            return Ok(c);
        }
        let extents = rlock(&self.extents).clone();
        let sum = checksum::compute(&self.file, &extents)?;
        self.store_checksum(dir, sum.clone())?;
        Ok(sum)
    }

    /// Records a checksum in memory and in the meta file.
    pub(super) fn store_checksum(&self, dir: &Path, sum: super::Checksum) -> Result<()> {
        let mut m = lock(&self.meta);
        let mut new = m.clone();
        new.checksum = Some(sum);
        new.store(dir)?;
        *m = new;
        Ok(())
    }
}

/// The chain, bottom (oldest snapshot) to head (last).
pub(super) struct Chain {
    /// Layers bottom to top; never empty, the last is the head.
    pub layers: Vec<Layer>,
    /// Where the layers' allocation is kept (the filesystem's holes, or
    /// maps in the layer metadata).
    pub allocation: Allocation,
}

impl Chain {
    /// The writable head.
    pub(super) fn head(&self) -> &Layer {
        // The chain is never empty: every constructor pushes a head.
        &self.layers[self.layers.len() - 1]
    }

    /// The writable head, mutably (chain changes under the write lock).
    pub(super) fn head_mut(&mut self) -> &mut Layer {
        let last = self.layers.len() - 1;
        &mut self.layers[last]
    }

    /// Index of the layer called `name`.
    pub(super) fn find(&self, name: &str) -> Option<usize> {
        self.layers.iter().position(|l| l.name == name)
    }

    /// The next head's counter.
    pub(super) fn next_head_counter(&self) -> u64 {
        head_counter(&self.head().name) + 1
    }

    /// Reads `buf.len()` bytes at `offset`: each range from the topmost
    /// layer holding it, zeros (without disk reads) where none does.
    pub(super) fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset + buf.len() as u64;
        let (found, holes) = self.resolve(offset, end);
        for (a, b, layer) in found {
            let slice = &mut buf[(a - offset) as usize..(b - offset) as usize];
            self.layers[layer].file.read_at(a, slice)?;
        }
        for (a, b) in holes {
            buf[(a - offset) as usize..(b - offset) as usize].fill(0);
        }
        Ok(())
    }

    /// Where `[offset, end)` reads from: the ranges held by some layer,
    /// each with the index of the topmost layer holding it, and the ranges
    /// no layer holds (they read as zeros).
    #[allow(clippy::type_complexity)]
    pub(super) fn resolve(
        &self,
        offset: u64,
        end: u64,
    ) -> (Vec<(u64, u64, usize)>, Vec<(u64, u64)>) {
        let mut pending = vec![(offset, end)];
        let mut found = Vec::new();
        for (index, layer) in self.layers.iter().enumerate().rev() {
            if pending.is_empty() {
                break;
            }
            let mut rest = Vec::new();
            let ext = rlock(&layer.extents);
            for &(s, e) in &pending {
                for (a, b, held) in super::extent::split_by(&ext, s, e) {
                    if held {
                        found.push((a, b, index));
                    } else {
                        rest.push((a, b));
                    }
                }
            }
            pending = rest;
        }
        (found, pending)
    }

    /// Union of the extents of every layer below the head.
    pub(super) fn lower_extents(&self, start: u64, end: u64) -> ExtentSet {
        let mut set = ExtentSet::new();
        for layer in &self.layers[..self.layers.len() - 1] {
            for (s, e) in rlock(&layer.extents).overlaps(start, end) {
                set.insert(s, e);
            }
        }
        set
    }

    /// Loads the chain named by `rmeta`: follows parent links from the head
    /// to the bottom, validating each layer, then opens the files and
    /// builds the extent index (from the files' holes or the layers' maps,
    /// as `allocation` says).
    pub(super) fn load(
        dir: &Path,
        rmeta: &ReplicaMeta,
        direct: bool,
        allocation: Allocation,
    ) -> Result<Chain> {
        let mut metas: Vec<LayerMeta> = Vec::new();
        let mut seen = HashSet::new();
        let mut next = Some(rmeta.head.clone());
        let mut child_meta: Option<PathBuf> = None;
        while let Some(name) = next {
            if !seen.insert(name.clone()) {
                return Err(corrupt(
                    &meta::meta_path(dir, &name),
                    format!("parent links loop back to layer {name:?}"),
                ));
            }
            let mpath = meta::meta_path(dir, &name);
            if !mpath.exists()
                && let Some(child) = &child_meta
            {
                return Err(corrupt(
                    child,
                    format!("parent layer {name:?} does not exist"),
                ));
            }
            let m = LayerMeta::load(dir, &name, rmeta.size)?;
            let is_head = metas.is_empty();
            if m.read_only == is_head {
                let what = if is_head {
                    "the head is marked read-only"
                } else {
                    "a snapshot below the head is marked writable"
                };
                return Err(corrupt(&mpath, what));
            }
            let data = meta::layer_path(dir, &name);
            match fs::symlink_metadata(&data) {
                Ok(md) if md.is_file() => {}
                Ok(_) => return Err(corrupt(&data, "layer data file is not a regular file")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(corrupt(
                        &data,
                        format!("data file of layer {name:?} is missing"),
                    ));
                }
                Err(e) => return Err(io_err("stat layer file", &data)(e)),
            }
            next = m.parent.clone();
            child_meta = Some(mpath);
            metas.push(m);
        }
        metas.reverse();
        let mut layers = Vec::with_capacity(metas.len());
        for m in metas {
            let path = meta::layer_path(dir, &m.name);
            let file = LayerFile::open(&path, direct)?;
            let extents = allocation.on_disk(&file, &m)?;
            layers.push(Layer::new(dir, m, file, extents));
        }
        Ok(Chain { layers, allocation })
    }

    /// Deletes files of ours that the chain does not reference: temp files,
    /// staged files, layer data and metadata left by an interrupted
    /// operation. Files we do not recognise are left alone.
    pub(super) fn clean_leftovers(&self, dir: &Path) -> Result<()> {
        let mut keep: HashSet<String> = [REPLICA_FILE, REVISION_FILE]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for l in &self.layers {
            let f = meta::layer_file_name(&l.name);
            keep.insert(format!("{f}.meta"));
            keep.insert(f);
        }
        let mut doomed = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err("list replica directory", dir))? {
            let entry = entry.map_err(io_err("list replica directory", dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !keep.contains(&name) && is_cleanable(&name) {
                tracing::info!(file = %name, "removing leftover file");
                doomed.push(entry.path());
            }
        }
        if !doomed.is_empty() {
            remove_leftovers(&doomed);
            sync_dir(dir)?;
        }
        Ok(())
    }
}
