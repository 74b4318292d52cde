//! Where a layer's allocation comes from when a replica opens.
//!
//! A layer's extent index says which blocks the layer holds; a read takes
//! each block from the topmost layer holding it. On ext4, XFS, btrfs and
//! tmpfs the data file itself tells (`SEEK_DATA`/`SEEK_HOLE`), so nothing
//! else is stored. A filesystem that cannot report holes (FUSE without an
//! lseek handler, NFS before 4.2) calls every byte of a file data; read
//! that way a head layer would hide every snapshot below it, and data a
//! guest flushed before a snapshot would read back as zeros after a
//! restart. There each layer's metadata carries its allocation map
//! (`LayerMeta::allocated`), written at the points that make data durable:
//!
//! | when | map written | why it is exact enough |
//! |---|---|---|
//! | a layer is created (replica, snapshot's new head, revert) | empty | nothing written yet |
//! | snapshot freezes the head | the head's index | under the chain write lock, after fsync |
//! | a snapshot is merged into its child | the child's index | after the copy's fsync, the merge's commit |
//! | a rebuild installs a staged layer | the staged ranges | after its fsync |
//! | flush (and `set_revision`) of the head | the head's index, if changed | taken *before* the fsync |
//! | the head is re-parented (install commits) | the head's index | after an fsync |
//!
//! The flush takes the map before it syncs: every range in it finished its
//! write before, so the sync covers it, and a write that lands later is
//! simply not in the map (after a power cut it reads as the data below:
//! an unflushed write lost, which a block device may do). A map therefore
//! never names a block whose data might not be on disk, so no flushed
//! write is hidden and no unflushed one reads as zeros. Flushes that
//! allocate rewrite the map (write, fsync, rename, fsync the directory):
//! the price of such a filesystem, paid only there.

use std::path::Path;

use super::chain::Layer;
use super::extent::ExtentSet;
use super::file::{self, LayerFile};
use super::fsutil::{Result, get_mut_m};
use super::meta::LayerMeta;

/// How a replica learns its layers' allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Allocation {
    /// The filesystem reports holes: `SEEK_DATA`/`SEEK_HOLE` at open, no map
    /// stored (a map left from an earlier mount is ignored and dropped from
    /// the head).
    Holes,
    /// It does not: every layer's metadata carries its map.
    Maps,
}

impl Allocation {
    /// Probes the filesystem of `dir` (see [`file::probe_holes`]).
    pub(super) fn probe(dir: &Path) -> Result<Allocation> {
        Ok(if file::probe_holes(dir)? {
            Allocation::Holes
        } else {
            Allocation::Maps
        })
    }

    /// The map to store in a layer's metadata for `set` (none with holes).
    pub(super) fn map_of(self, set: &ExtentSet) -> Option<Vec<[u64; 2]>> {
        match self {
            Allocation::Holes => None,
            Allocation::Maps => Some(encode(set)),
        }
    }

    /// The allocation of a layer as its files on disk give it: its map, or
    /// the file's own holes. A layer without a map on a filesystem without
    /// holes (written before maps existed) counts as fully written, which
    /// keeps its own data but hides what lies below it; that is logged.
    pub(super) fn on_disk(self, file: &LayerFile, meta: &LayerMeta) -> Result<ExtentSet> {
        match (self, &meta.allocated) {
            (Allocation::Maps, Some(ranges)) => Ok(decode(ranges)),
            (Allocation::Maps, None) => {
                tracing::warn!(layer = %meta.name, "layer has no allocation map on a filesystem that does not report holes; every block of it counts as written");
                file.scan_extents(meta.size)
            }
            (Allocation::Holes, _) => file.scan_extents(meta.size),
        }
    }
}

/// Removes the head's allocation map, if it has one, from its metadata.
pub(super) fn drop_head_map(dir: &Path, head: &mut Layer) -> Result<()> {
    let meta = get_mut_m(&mut head.meta);
    if meta.allocated.is_none() {
        return Ok(());
    }
    let mut new = meta.clone();
    new.allocated = None;
    new.store(dir)?;
    *meta = new;
    tracing::info!(layer = %head.name, "filesystem reports holes now; dropped the head's allocation map");
    Ok(())
}

/// The stored form of an extent set: its ranges in order.
pub(super) fn encode(set: &ExtentSet) -> Vec<[u64; 2]> {
    set.iter().map(|(s, e)| [s, e]).collect()
}

/// An extent set from its stored form (validated by `LayerMeta::load`).
pub(super) fn decode(ranges: &[[u64; 2]]) -> ExtentSet {
    let mut set = ExtentSet::new();
    for &[s, e] in ranges {
        set.insert(s, e);
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let mut set = ExtentSet::new();
        set.insert(0, 4096);
        set.insert(8192, 16384);
        set.insert(4096, 8192);
        let stored = encode(&set);
        assert_eq!(stored, vec![[0, 16384]]);
        assert_eq!(decode(&stored), set);
        assert_eq!(Allocation::Holes.map_of(&set), None);
        assert_eq!(Allocation::Maps.map_of(&set), Some(stored));
    }
}
