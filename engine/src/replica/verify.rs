//! Chain verification: every layer file present and sized as its metadata
//! says, metadata on disk readable and consistent with the parent links,
//! every read-only layer's checksum matching its data on disk.
//!
//! Two depths share the file checks: [`check_files`] stops there (a stat
//! and a small JSON read per layer, cheap enough to run every few seconds),
//! [`verify`] also reads every read-only layer's data for its checksum.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::alloc::Allocation;
use super::chain::{Chain, Layer};
use super::fsutil::{Result, lock};
use super::meta::LayerMeta;
use super::{ChainProblem, VerifyReport, checksum};

fn problem(layer: &str, file: PathBuf, kind: &str, detail: String) -> ChainProblem {
    ChainProblem {
        layer: layer.to_string(),
        file,
        kind: kind.to_string(),
        detail,
    }
}

/// Verifies `chain` (held under the chain read lock by the caller, so
/// read-only layers cannot change meanwhile). Missing checksums are
/// computed and stored. Only errors that stop verification itself are
/// returned as `Err`; everything wrong with the chain is a problem.
pub(super) fn verify(dir: &Path, chain: &Chain) -> Result<VerifyReport> {
    let mut problems = Vec::new();
    for (i, layer) in chain.layers.iter().enumerate() {
        if let Some(mem) = check_layer_files(dir, chain, i, &mut problems)
            && mem.read_only
        {
            check_checksum(dir, chain.allocation, layer, &mem, &mut problems)?;
        }
    }
    Ok(VerifyReport {
        layers_checked: chain.layers.len(),
        problems,
    })
}

/// The file checks of [`verify`] alone: no data is read and no checksum
/// computed or stored, so the chain on disk is left untouched. Problems
/// have the kinds `missing`, `size`, `metadata` and `parent`.
pub(super) fn check_files(dir: &Path, chain: &Chain) -> VerifyReport {
    let mut problems = Vec::new();
    for i in 0..chain.layers.len() {
        check_layer_files(dir, chain, i, &mut problems);
    }
    VerifyReport {
        layers_checked: chain.layers.len(),
        problems,
    }
}

/// Checks layer `i`'s metadata (readable, parent link, same as in memory)
/// and data file (present, sized). Returns the in-memory metadata if the
/// data file is there to be checksummed.
fn check_layer_files(
    dir: &Path,
    chain: &Chain,
    i: usize,
    problems: &mut Vec<ChainProblem>,
) -> Option<LayerMeta> {
    let layer = &chain.layers[i];
    let expected_parent = i.checked_sub(1).map(|p| chain.layers[p].name.clone());
    let name = layer.name.as_str();
    // Memory and disk read under one hold of the layer's meta lock: a
    // checksum being stored meanwhile (which holds it across its write)
    // would otherwise look like a mismatch.
    let (mem, on_disk) = {
        let meta = lock(&layer.meta);
        (meta.clone(), LayerMeta::load(dir, name, u64::MAX))
    };
    let meta_path = layer.meta_path(dir);
    match on_disk {
        Ok(disk) => {
            if disk.parent != expected_parent {
                problems.push(problem(
                    name,
                    meta_path.clone(),
                    "parent",
                    format!(
                        "parent is {:?}, the chain has {:?} below",
                        disk.parent, expected_parent
                    ),
                ));
            }
            if disk != mem {
                problems.push(problem(
                    name,
                    meta_path,
                    "metadata",
                    "metadata on disk differs from the open replica's".to_string(),
                ));
            }
        }
        Err(e) => problems.push(problem(name, meta_path, "metadata", e.to_string())),
    }

    let path = layer.path.clone();
    match fs::metadata(&path) {
        Ok(md) if md.len() != mem.size => problems.push(problem(
            name,
            path.clone(),
            "size",
            format!("file is {} bytes, metadata says {}", md.len(), mem.size),
        )),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            problems.push(problem(
                name,
                path,
                "missing",
                "layer data file does not exist".to_string(),
            ));
            return None;
        }
        Err(e) => {
            problems.push(problem(name, path, "missing", format!("cannot stat: {e}")));
            return None;
        }
    }
    Some(mem)
}

/// Recomputes the checksum of read-only layer `layer` from the data on
/// disk (its allocation scanned afresh or read from its map, the stored
/// checksum ignored), so bytes changed under the replica since the
/// snapshot are noticed. The caller holds the chain read lock. Returns the checksum and the file.
pub(super) fn fresh_checksum(chain: &Chain, name: &str) -> Result<(super::Checksum, PathBuf)> {
    let i = chain
        .find(name)
        .ok_or_else(|| super::ReplicaError::NotFound(format!("layer {name:?}")))?;
    let layer = &chain.layers[i];
    let mem = lock(&layer.meta).clone();
    if !mem.read_only {
        return Err(super::ReplicaError::InvalidArgument(format!(
            "layer {name:?} is the writable head; only snapshots have checksums"
        )));
    }
    let ext = chain.allocation.on_disk(&layer.file, &mem)?;
    Ok((checksum::compute(&layer.file, &ext)?, layer.path.clone()))
}

/// The first problem [`check_files`] finds, as the error a chain operation
/// (snapshot, remove, revert) fails with: it names the file, and its kind
/// (`Corrupt`) takes the replica out of service in the engine rather than
/// building a new layer on a broken chain.
pub(super) fn refuse_if_damaged(dir: &Path, chain: &Chain) -> Result<()> {
    match check_files(dir, chain).problems.into_iter().next() {
        None => Ok(()),
        Some(p) => Err(super::ReplicaError::Corrupt {
            path: p.file,
            detail: format!("layer {} file is {}: {}", p.layer, p.kind, p.detail),
        }),
    }
}

/// Recomputes a read-only layer's checksum and compares it with the stored
/// one (storing it if there is none yet).
fn check_checksum(
    dir: &Path,
    allocation: Allocation,
    layer: &Layer,
    mem: &LayerMeta,
    problems: &mut Vec<ChainProblem>,
) -> Result<()> {
    let name = layer.name.as_str();
    let path = layer.path.clone();
    // Recompute from the allocation on disk, not from the index, so that
    // data appearing in a hole is noticed too (where the filesystem reports
    // holes; elsewhere the stored map is the allocation).
    let actual = match allocation
        .on_disk(&layer.file, mem)
        .and_then(|ext| checksum::compute(&layer.file, &ext))
    {
        Ok(c) => c,
        Err(e) => {
            problems.push(problem(name, path, "checksum", format!("cannot read: {e}")));
            return Ok(());
        }
    };
    match &mem.checksum {
        Some(stored) if *stored == actual => {}
        Some(stored) if stored.method != actual.method => problems.push(problem(
            name,
            path,
            "checksum",
            format!("unknown checksum method {:?}", stored.method),
        )),
        Some(stored) => problems.push(problem(
            name,
            path,
            "checksum",
            format!("stored {}, data gives {}", stored.value, actual.value),
        )),
        None => layer.store_checksum(dir, actual)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::fs::{self, OpenOptions};
    use std::os::unix::fs::FileExt;

    use crate::replica::tests::{new_replica, pattern, snap, work_tmp};
    use crate::replica::{ErrorKind, Replica, ReplicaError};
    use crate::size::BLOCK_SIZE;

    fn with_snapshot(tmp: &tempfile::TempDir) -> Replica {
        let r = new_replica(tmp, 16);
        r.write(0, &pattern(1, 4)).unwrap();
        snap(&r, "s1");
        r.write(8 * BLOCK_SIZE, &pattern(2, 1)).unwrap();
        r
    }

    #[test]
    fn chain_operations_refuse_a_missing_layer_naming_the_file() {
        let tmp = work_tmp();
        let r = with_snapshot(&tmp);
        let s1 = r.dir().join("volume-snap-s1.img");
        fs::remove_file(&s1).unwrap();
        let before = r.info();
        for (op, res) in [
            (
                "snapshot",
                r.snapshot("s2", true, Default::default()).map(|_| ()),
            ),
            ("remove", r.remove_snapshot("s1")),
            ("revert", r.revert("s1")),
        ] {
            let e = res.expect_err(op);
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{op}: {e}");
            match &e {
                ReplicaError::Corrupt { path, detail } => {
                    assert_eq!(path, &s1, "{op}");
                    assert!(detail.contains("missing"), "{op}: {detail}");
                }
                other => panic!("{op}: {other}"),
            }
        }
        // Nothing was changed by the refused operations.
        assert_eq!(r.info(), before);
    }

    #[test]
    fn fresh_checksum_sees_bytes_changed_under_a_stored_checksum() {
        let tmp = work_tmp();
        let r = with_snapshot(&tmp);
        let stored = r.layer_checksum("s1").unwrap();
        let (fresh, file) = r.fresh_layer_checksum("s1").unwrap();
        assert_eq!(fresh, stored);
        assert_eq!(file, r.dir().join("volume-snap-s1.img"));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, BLOCK_SIZE + 3).unwrap();
        b[0] ^= 0x01;
        f.write_all_at(&b, BLOCK_SIZE + 3).unwrap();
        f.sync_all().unwrap();
        let (after, _) = r.fresh_layer_checksum("s1").unwrap();
        assert_ne!(after, stored);
        // The stored one is left as it was: only verify judges it.
        assert_eq!(r.layer_checksum("s1").unwrap(), stored);
        let head = r.info().chain.last().unwrap().name.clone();
        assert_eq!(
            r.fresh_layer_checksum(&head).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
}
