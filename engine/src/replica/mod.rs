//! The replica store: one directory per replica holding a chain of layers —
//! sparse layer files (holes are never-written blocks) and small crash-safe
//! JSON metadata. See ARCHITECTURE.md for the on-disk layout.
//!
//! All I/O methods take byte offsets and lengths that are multiples of
//! [`crate::size::BLOCK_SIZE`] and lie within the volume; anything else is
//! `InvalidArgument`. Caller buffers may be unaligned in memory.
//! Every method is blocking and `&self`: the type is `Send + Sync` and safe
//! to call from many threads at once.

mod types;

use std::collections::BTreeMap;
use std::path::Path;

pub use types::*;

/// An open replica.
pub struct Replica {
    _private: (),
}

type Result<T> = std::result::Result<T, ReplicaError>;

#[allow(unused_variables, clippy::missing_errors_doc)]
impl Replica {
    /// Creates a new, empty replica of `size` bytes in `dir` (which must not
    /// exist or be empty) with one head layer and revision 0.
    pub fn create(dir: &Path, size: u64, opts: &ReplicaOptions) -> Result<Replica> {
        unimplemented!("replica store in progress")
    }
    /// Opens an existing replica, rebuilding the extent index from the
    /// layer files' allocation (SEEK_DATA/SEEK_HOLE).
    pub fn open(dir: &Path, opts: &ReplicaOptions) -> Result<Replica> {
        unimplemented!("replica store in progress")
    }
    /// Volume size in bytes.
    pub fn size(&self) -> u64 {
        unimplemented!("replica store in progress")
    }
    /// The replica's directory.
    pub fn dir(&self) -> &Path {
        unimplemented!("replica store in progress")
    }
    /// Reads `buf.len()` bytes at `offset` through the chain; never-written
    /// blocks read as zeros without touching the disk.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        unimplemented!("replica store in progress")
    }
    /// Writes `data` at `offset` into the head.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        unimplemented!("replica store in progress")
    }
    /// Discards a range (reads of it return zeros afterwards).
    pub fn trim(&self, offset: u64, len: u64) -> Result<()> {
        unimplemented!("replica store in progress")
    }
    /// Writes zeros to a range (deallocating where nothing lies below).
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        unimplemented!("replica store in progress")
    }
    /// Makes every completed write durable (fdatasync) and persists the revision.
    pub fn flush(&self) -> Result<()> {
        unimplemented!("replica store in progress")
    }
    /// Bumps and persists the generation; returns the new value.
    pub fn bump_generation(&self) -> Result<u64> {
        unimplemented!("replica store in progress")
    }
    /// Freezes the head as snapshot `name` and starts a new empty head on top.
    pub fn snapshot(
        &self,
        name: &str,
        user_created: bool,
        labels: BTreeMap<String, String>,
    ) -> Result<LayerInfo> {
        unimplemented!("replica store in progress")
    }
    /// Removes snapshot `name`, merging its data into its child.
    pub fn remove_snapshot(&self, name: &str) -> Result<()> {
        unimplemented!("replica store in progress")
    }
    /// Discards the head and every snapshot above `name`; a new empty head
    /// sits on `name`.
    pub fn revert(&self, name: &str) -> Result<()> {
        unimplemented!("replica store in progress")
    }
    /// Size, revision, generation and the chain bottom to head.
    pub fn info(&self) -> ReplicaInfo {
        unimplemented!("replica store in progress")
    }
    /// Checks every layer file is present and sized and every read-only
    /// layer's checksum matches.
    pub fn verify(&self) -> Result<VerifyReport> {
        unimplemented!("replica store in progress")
    }
    /// Allocated extents of one layer (rebuild source).
    pub fn layer_extents(&self, layer: &str) -> Result<Vec<Extent>> {
        unimplemented!("replica store in progress")
    }
    /// Raw read of one layer's file (holes read as zeros).
    pub fn read_layer(&self, layer: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        unimplemented!("replica store in progress")
    }
    /// The checksum of a read-only layer, computing and storing it if missing.
    pub fn layer_checksum(&self, layer: &str) -> Result<Checksum> {
        unimplemented!("replica store in progress")
    }
    /// Starts receiving a read-only layer from a rebuild source into a
    /// staging file (replacing any earlier partial one).
    pub fn stage_layer(&self, info: &LayerInfo) -> Result<()> {
        unimplemented!("replica store in progress")
    }
    /// Writes data into a staged layer.
    pub fn write_staged(&self, layer: &str, offset: u64, data: &[u8]) -> Result<()> {
        unimplemented!("replica store in progress")
    }
    /// Replaces every read-only layer with `layers` (bottom to top): each is
    /// either staged or already present with the same checksum. The head is
    /// kept and re-parented onto the last one. Atomic and crash-safe.
    pub fn install_chain(&self, layers: &[LayerInfo]) -> Result<()> {
        unimplemented!("replica store in progress")
    }
}
