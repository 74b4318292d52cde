//! On-disk metadata: file naming, `replica.json` and the per-layer
//! `<layer>.img.meta` JSON files. Decoding never panics: anything malformed
//! is a `Corrupt` error naming the file.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsutil::{Result, corrupt, io_err, write_atomic};
use super::{Checksum, LayerInfo, ReplicaError};
use crate::name::check_name;
use crate::size::{BLOCK_SIZE, check_volume_size};

/// The replica-level metadata file.
pub(super) const REPLICA_FILE: &str = "replica.json";
/// The persisted revision counter.
pub(super) const REVISION_FILE: &str = "revision";
/// Version of this on-disk layout.
pub(super) const FORMAT_VERSION: u32 = 1;

const HEAD_PREFIX: &str = "volume-head-";
const SNAP_PREFIX: &str = "volume-snap-";

/// Whether `name` is a head layer's name (`volume-head-<digits>`).
pub(super) fn is_head_name(name: &str) -> bool {
    name.strip_prefix(HEAD_PREFIX)
        .is_some_and(|d| !d.is_empty() && d.len() <= 20 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The head's name for a counter value: `volume-head-003`.
pub(super) fn head_name(counter: u64) -> String {
    format!("{HEAD_PREFIX}{counter:03}")
}

/// The counter of a head name (0 if it does not parse).
pub(super) fn head_counter(name: &str) -> u64 {
    name.strip_prefix(HEAD_PREFIX)
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// Checks a user-supplied snapshot name: a valid name that cannot be
/// mistaken for a head's.
pub(super) fn check_snapshot_name(name: &str) -> Result<()> {
    check_name(name).map_err(|e| ReplicaError::InvalidArgument(e.to_string()))?;
    if name.starts_with(HEAD_PREFIX) {
        return Err(ReplicaError::InvalidArgument(format!(
            "snapshot name {name:?} must not start with {HEAD_PREFIX:?}"
        )));
    }
    Ok(())
}

/// Whether a name read from disk may be used to build a path.
fn valid_layer_name(name: &str) -> bool {
    is_head_name(name) || check_snapshot_name(name).is_ok()
}

/// A layer's data file name: `volume-head-003.img`, `volume-snap-<name>.img`.
pub(super) fn layer_file_name(name: &str) -> String {
    if is_head_name(name) {
        format!("{name}.img")
    } else {
        format!("{SNAP_PREFIX}{name}.img")
    }
}

/// A layer's data file.
pub(super) fn layer_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(layer_file_name(name))
}

/// A layer's metadata file.
pub(super) fn meta_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{}.meta", layer_file_name(name)))
}

/// A staged (rebuild) layer's data file.
pub(super) fn staged_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{}.partial", layer_file_name(name)))
}

/// Whether a file in the replica directory is ours to clean up when no
/// metadata references it: temp files, staged files, layer files.
pub(super) fn is_cleanable(file_name: &str) -> bool {
    file_name.ends_with(".tmp")
        || file_name.ends_with(".partial")
        || ((file_name.starts_with(HEAD_PREFIX) || file_name.starts_with(SNAP_PREFIX))
            && (file_name.ends_with(".img") || file_name.ends_with(".img.meta")))
}

/// `replica.json`: the commit point naming the head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ReplicaMeta {
    /// Layout version, [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Volume size in bytes.
    pub size: u64,
    /// The head layer's name.
    pub head: String,
    /// Bumped each time an engine opens the replica for writing.
    pub generation: u64,
    /// Checksum method for new read-only layers.
    pub checksum_method: String,
}

impl ReplicaMeta {
    /// Reads and validates `replica.json`; a missing file is `NotFound`.
    pub(super) fn load(dir: &Path) -> Result<ReplicaMeta> {
        let path = dir.join(REPLICA_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ReplicaError::NotFound(format!(
                    "no replica at {} ({REPLICA_FILE} missing)",
                    dir.display()
                )));
            }
            Err(e) => return Err(io_err("read replica metadata", &path)(e)),
        };
        let m: ReplicaMeta = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(&path, format!("malformed replica metadata: {e}")))?;
        if m.format_version != FORMAT_VERSION {
            return Err(corrupt(
                &path,
                format!("unsupported format version {}", m.format_version),
            ));
        }
        check_volume_size(m.size).map_err(|e| corrupt(&path, e.to_string()))?;
        if !is_head_name(&m.head) {
            return Err(corrupt(&path, format!("invalid head name {:?}", m.head)));
        }
        Ok(m)
    }

    /// Writes `replica.json` crash-safely.
    pub(super) fn store(&self, dir: &Path) -> Result<()> {
        write_json(&dir.join(REPLICA_FILE), self)
    }
}

/// `<layer>.img.meta`: everything about a layer but its data, and on a
/// filesystem that does not report holes its allocation too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct LayerMeta {
    /// Layer name (a snapshot's name or `volume-head-NNN`).
    pub name: String,
    /// The layer below.
    pub parent: Option<String>,
    /// Logical size in bytes.
    pub size: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Made by a user.
    pub user_created: bool,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A snapshot (true) or the head.
    pub read_only: bool,
    /// Checksum of a read-only layer, once computed.
    #[serde(default)]
    pub checksum: Option<Checksum>,
    /// The layer's allocated ranges `[start, end)` in bytes, kept only on a
    /// filesystem that cannot report holes (`file::probe_holes`), where the
    /// data file alone would read as fully written and hide the layers
    /// below. Absent elsewhere: `SEEK_DATA` is the truth there. See
    /// `alloc.rs` for when it is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<Vec<[u64; 2]>>,
}

impl LayerMeta {
    /// Reads `<layer>.img.meta` for the layer `name` and checks it is
    /// well-formed and really describes `name`.
    pub(super) fn load(dir: &Path, name: &str, volume_size: u64) -> Result<LayerMeta> {
        let path = meta_path(dir, name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(corrupt(
                    &path,
                    format!("metadata of layer {name:?} is missing"),
                ));
            }
            Err(e) => return Err(io_err("read layer metadata", &path)(e)),
        };
        let m: LayerMeta = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(&path, format!("malformed layer metadata: {e}")))?;
        if m.name != name {
            return Err(corrupt(
                &path,
                format!("metadata names layer {:?}, expected {name:?}", m.name),
            ));
        }
        if let Some(p) = &m.parent
            && !valid_layer_name(p)
        {
            return Err(corrupt(&path, format!("invalid parent name {p:?}")));
        }
        if m.size == 0 || !m.size.is_multiple_of(BLOCK_SIZE) || m.size > volume_size {
            return Err(corrupt(
                &path,
                format!(
                    "layer size {} is not a positive multiple of {BLOCK_SIZE} within the volume size {volume_size}",
                    m.size
                ),
            ));
        }
        if let Some(ranges) = &m.allocated {
            check_allocated(ranges, m.size).map_err(|d| corrupt(&path, d))?;
        }
        Ok(m)
    }

    /// Writes the metadata crash-safely.
    pub(super) fn store(&self, dir: &Path) -> Result<()> {
        write_json(&meta_path(dir, &self.name), self)
    }

    /// The public description, given the allocated bytes.
    pub(super) fn info(&self, allocated_bytes: u64) -> LayerInfo {
        LayerInfo {
            name: self.name.clone(),
            parent: self.parent.clone(),
            size: self.size,
            created_unix: self.created_unix,
            user_created: self.user_created,
            labels: self.labels.clone(),
            read_only: self.read_only,
            checksum: self.checksum.clone(),
            allocated_bytes,
        }
    }
}

/// An allocation map must be what `ExtentSet` would store: block-aligned,
/// non-empty, sorted, non-touching ranges within the layer.
fn check_allocated(ranges: &[[u64; 2]], size: u64) -> std::result::Result<(), String> {
    let mut prev_end = None;
    for &[s, e] in ranges {
        if s >= e || e > size || !s.is_multiple_of(BLOCK_SIZE) || !e.is_multiple_of(BLOCK_SIZE) {
            return Err(format!(
                "allocated range [{s}, {e}) is not a block-aligned range within the layer size {size}"
            ));
        }
        if prev_end.is_some_and(|p| s <= p) {
            return Err(format!(
                "allocated range [{s}, {e}) overlaps or touches the one before it"
            ));
        }
        prev_end = Some(e);
    }
    Ok(())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| {
        io_err("encode metadata", path)(io::Error::new(io::ErrorKind::InvalidData, e))
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_head_name("volume-head-003"));
        assert!(!is_head_name("volume-head-"));
        assert!(!is_head_name("volume-head-x"));
        assert_eq!(head_name(3), "volume-head-003");
        assert_eq!(head_counter("volume-head-1234"), 1234);
        assert_eq!(layer_file_name("volume-head-003"), "volume-head-003.img");
        assert_eq!(layer_file_name("s1"), "volume-snap-s1.img");
        assert!(check_snapshot_name("volume-head-9").is_err());
        assert!(check_snapshot_name("../x").is_err());
        assert!(is_cleanable("volume-snap-a.img.partial"));
        assert!(is_cleanable("replica.json.tmp"));
        assert!(is_cleanable("volume-head-002.img.meta"));
        assert!(!is_cleanable("replica.json"));
        assert!(!is_cleanable("notes.txt"));
    }
}
