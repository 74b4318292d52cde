//! Offline expansion: growing the volume size of a replica.
//!
//! Only the head grows. Snapshot layers keep their (smaller) size: their
//! extent index never reaches past it, so reads of the new range fall
//! through them to zeros, and their files and checksums stay untouched.
//!
//! Order of the durable steps (each one leaves a chain that opens):
//! 1. store `replica.json` with the new size — the commit point. Layer
//!    sizes only have to be <= the volume size, so the old head is valid.
//! 2. extend the head file (`set_len`, the tail is a hole) and fsync it.
//! 3. store the head's meta with the new size.
//!
//! A crash before step 1 leaves the old size. After it the replica has the
//! new size and `open` finishes steps 2–3 (both idempotent) before
//! anything else sees the head, so the head always spans the volume.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::chain::Layer;
use super::fsutil::{Result, get_mut_m, lock};
use super::{Replica, ReplicaError};
use crate::size::check_volume_size;

impl Replica {
    /// Grows the volume to `new_size` bytes. Smaller than the current size
    /// is `InvalidArgument`; the same size is a no-op except that it
    /// finishes an expansion an earlier error interrupted.
    ///
    /// Runs under the chain write lock, so no I/O sees a half-expanded
    /// replica; afterwards reads and writes reach the new range, which
    /// reads as zeros. Crash-safe: see the module docs for the order.
    pub fn expand(&self, new_size: u64) -> Result<()> {
        check_volume_size(new_size).map_err(|e| ReplicaError::InvalidArgument(e.to_string()))?;
        let _span = tracing::debug_span!("expand", new_size).entered();
        let dir = self.dir.as_path();
        let (_gate, mut chain) = self.chain_exclusive();
        {
            // replica.json as on disk (it can be ahead of `self.size` if an
            // earlier expand failed after its commit): that is the size a
            // reopen would have, so it is the one that must not shrink.
            let mut m = lock(&self.meta);
            if new_size < m.size {
                return Err(ReplicaError::InvalidArgument(format!(
                    "replicas only grow: {new_size} bytes is below the size {}",
                    m.size
                )));
            }
            if new_size > m.size {
                let mut new = m.clone();
                new.size = new_size;
                new.store(dir)?; // step 1: the commit point
                *m = new;
            }
        }
        grow_head(dir, chain.head_mut(), new_size)?;
        // Published last, still under the write lock: I/O checked against
        // the new size only runs once the head spans it.
        let old = self.size.swap(new_size, Ordering::SeqCst);
        if old != new_size {
            tracing::info!(dir = %dir.display(), old, new_size, "replica expanded");
        }
        Ok(())
    }
}

/// Steps 2 and 3 for the head: extends its file and stores its meta with
/// `size`. Idempotent, and a no-op when the head already has that size.
/// Returns whether anything had to be done.
pub(super) fn grow_head(dir: &Path, head: &mut Layer, size: u64) -> Result<bool> {
    let file_len = head.file.len()?;
    let meta = get_mut_m(&mut head.meta);
    if meta.size >= size && file_len >= size {
        return Ok(false);
    }
    head.file.extend(size)?; // step 2
    let mut new = meta.clone();
    new.size = size;
    new.store(dir)?; // step 3
    *meta = new;
    Ok(true)
}
