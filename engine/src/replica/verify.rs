//! Chain verification: every layer file present and sized as its metadata
//! says, metadata on disk readable and consistent with the parent links,
//! every read-only layer's checksum matching its data on disk.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

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
        let expected_parent = i.checked_sub(1).map(|p| chain.layers[p].name.clone());
        check_layer(dir, layer, expected_parent, &mut problems)?;
    }
    Ok(VerifyReport {
        layers_checked: chain.layers.len(),
        problems,
    })
}

fn check_layer(
    dir: &Path,
    layer: &Layer,
    expected_parent: Option<String>,
    problems: &mut Vec<ChainProblem>,
) -> Result<()> {
    let name = layer.name.as_str();
    let mem = lock(&layer.meta).clone();
    let meta_path = layer.meta_path(dir);
    match LayerMeta::load(dir, name, u64::MAX) {
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
            return Ok(());
        }
        Err(e) => {
            problems.push(problem(name, path, "missing", format!("cannot stat: {e}")));
            return Ok(());
        }
    }

    if !mem.read_only {
        return Ok(());
    }
    // Recompute from the allocation on disk, not from the index, so that
    // data appearing in a hole is noticed too.
    let actual = match layer
        .file
        .scan_extents(mem.size)
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
