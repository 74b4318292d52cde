//! Plain data about a replica and its layers, shared by the store, the
//! replica protocol (serialised as JSON in control frames) and the agent.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A byte range `[offset, offset + len)` holding data in one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    /// Start, in bytes, a multiple of 4096.
    pub offset: u64,
    /// Length, in bytes, a multiple of 4096.
    pub len: u64,
}

/// A layer checksum and the method that produced it, so a future method can
/// coexist with layers checksummed by an older one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    /// Method name, e.g. `crc64nvme-extents-v1`.
    pub method: String,
    /// The value, lowercase hex.
    pub value: String,
}

/// One layer of a replica's chain, bottom (oldest snapshot) to top (head).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Layer name: a snapshot's name, or the head's.
    pub name: String,
    /// The layer below, `None` for the bottom one.
    pub parent: Option<String>,
    /// Logical size in bytes (the volume size when the layer was made).
    pub size: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Made by a user (true) or by the system, e.g. for a rebuild (false).
    pub user_created: bool,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Read-only (a snapshot) or the writable head.
    pub read_only: bool,
    /// Checksum of a read-only layer, once computed.
    pub checksum: Option<Checksum>,
    /// Bytes allocated in the layer's file.
    pub allocated_bytes: u64,
}

/// What a replica reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// Volume size in bytes.
    pub size: u64,
    /// Count of writes made durable by the last flush; the replica with the
    /// highest revision holds the newest data after a crash.
    pub revision: u64,
    /// The highest engine epoch that claimed the replica (0: none yet).
    #[serde(default)]
    pub epoch: u64,
    /// Bumped each time an engine opens the replica for writing.
    pub generation: u64,
    /// The in-sync generation the replica last joined (persisted; 0: none
    /// yet, or a replica server older than protocol version 4). Never
    /// higher than the cluster store's generation for the volume unless
    /// the store lost a change (restored from a backup): see
    /// [`Replica::join_generation`](super::Replica::join_generation).
    #[serde(default)]
    pub in_sync_generation: u64,
    /// The chain, bottom to head.
    pub chain: Vec<LayerInfo>,
    /// Whether layer files use O_DIRECT (false after a fallback).
    pub direct_io: bool,
}

impl ReplicaInfo {
    /// Bytes allocated by every layer file of the chain.
    pub fn allocated_bytes(&self) -> u64 {
        self.chain.iter().map(|l| l.allocated_bytes).sum()
    }
}

/// A problem found by verify, naming the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainProblem {
    /// The layer concerned.
    pub layer: String,
    /// The file concerned (absolute path).
    pub file: PathBuf,
    /// What is wrong: `missing`, `size`, `checksum`, `metadata`, `parent`.
    pub kind: String,
    /// Details, e.g. expected and found values.
    pub detail: String,
}

/// Result of verifying a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Layers checked, bottom to head.
    pub layers_checked: usize,
    /// Every problem found; empty means the chain is sound.
    pub problems: Vec<ChainProblem>,
}

/// Options for opening a replica.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// Use O_DIRECT on layer files (default); falls back to buffered I/O
    /// with a warning where the filesystem refuses it.
    pub direct_io: bool,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions { direct_io: true }
    }
}

/// A stable classification of replica errors, carried over the replica
/// protocol so the engine can give a typed reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Bad offset, length, name or state for the request.
    InvalidArgument,
    /// An I/O error from the filesystem.
    Io,
    /// The disk is full.
    NoSpace,
    /// A snapshot, layer or replica does not exist.
    NotFound,
    /// It already exists.
    AlreadyExists,
    /// Metadata or data on disk is inconsistent.
    Corrupt,
    /// A newer engine claimed the replica: the requesting engine is fenced.
    StaleEpoch,
}

/// Errors from the replica store.
#[derive(Debug, Error)]
pub enum ReplicaError {
    /// The request is invalid (unaligned, out of range, bad name...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A filesystem call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing, "verb object" (e.g. "write layer").
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No such snapshot or layer.
    #[error("not found: {0}")]
    NotFound(String),
    /// A snapshot with that name exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// Metadata or files on disk contradict each other.
    #[error("corrupt replica at {path}: {detail}")]
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// What is inconsistent.
        detail: String,
    },
    /// The request's engine epoch is older than the one that claimed the
    /// replica: another engine owns the volume now.
    #[error("stale engine epoch {epoch}: the replica was claimed by epoch {claimed}")]
    StaleEpoch {
        /// The requesting engine's epoch.
        epoch: u64,
        /// The highest epoch that claimed the replica.
        claimed: u64,
    },
}

impl ReplicaError {
    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReplicaError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            ReplicaError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                ErrorKind::NoSpace
            }
            ReplicaError::Io { .. } => ErrorKind::Io,
            ReplicaError::NotFound(_) => ErrorKind::NotFound,
            ReplicaError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            ReplicaError::Corrupt { .. } => ErrorKind::Corrupt,
            ReplicaError::StaleEpoch { .. } => ErrorKind::StaleEpoch,
        }
    }
}
