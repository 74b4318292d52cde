//! A disk: a directory given to vigil, identified by the UUID in the
//! identity file at its root.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Object;

/// A disk as registered by its node's agent. Keyed by UUID: a wiped or
/// swapped disk gets a new UUID and so is a different object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// The UUID from the identity file.
    pub uuid: String,
    pub spec: DiskSpec,
    pub status: DiskStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DiskSpec {
    /// Node the disk is on.
    pub node: String,
    /// Its path on that node.
    pub path: String,
    /// Disk tags a volume can require.
    #[serde(default)]
    pub tags: Vec<String>,
    /// False when the operator disabled scheduling here.
    #[serde(default = "yes")]
    pub allow_scheduling: bool,
    /// Bytes kept free for other users of the filesystem.
    #[serde(default)]
    pub reserved_bytes: u64,
}

fn yes() -> bool {
    true
}

/// Observed by the node's agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DiskStatus {
    /// Whether the directory is present with this UUID right now.
    pub state: DiskState,
    /// Filesystem size.
    pub capacity_bytes: u64,
    /// Free bytes on the filesystem.
    pub available_bytes: u64,
    /// Sum of the sizes of the replicas scheduled here (the scheduler
    /// rewrites this in the same transaction that places a replica, so two
    /// concurrent placements cannot both take the last free space).
    pub scheduled_bytes: u64,
    /// When the agent last refreshed this (Unix seconds).
    pub updated_at: f64,
    /// Why the disk is not ready, if it is not.
    #[serde(default)]
    pub message: String,
    /// Set while the disk returns I/O errors (EIO), by its own agent;
    /// cleared once it has worked for a recovery window. The scheduler
    /// places nothing here meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<DiskTrouble>,
    /// Set while writes here recently failed with ENOSPC, by its own
    /// agent, even when `available_bytes` looks fine afterwards (space
    /// freed by the failed writes, root-reserved blocks); cleared like
    /// `failing`, once a write works again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_space: Option<DiskTrouble>,
    /// Disk errors counted by each replica open on this disk when its
    /// agent last looked (non-zero counts only), so the next look tells new
    /// errors from old ones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub io_errors_seen: BTreeMap<String, u64>,
}

/// A disk condition observed by its node's agent: since when, the newest
/// evidence, and what it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskTrouble {
    /// First error of this episode (Unix seconds).
    pub since_unix: u64,
    /// Newest error (Unix seconds); the condition clears a recovery window
    /// after it when the disk works again.
    pub last_unix: u64,
    /// Errors seen in this episode.
    pub errors: u64,
    /// The newest error, verbatim (file and errno when known).
    pub message: String,
}

/// Whether a registered disk is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DiskState {
    /// Present with its UUID.
    #[default]
    Ready,
    /// Its node's agent no longer finds it at its path.
    Missing,
    /// Another disk (another UUID) is now at its path.
    Replaced,
}

impl DiskState {
    /// `ready`, `missing` or `replaced`, as the API and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskState::Ready => "ready",
            DiskState::Missing => "missing",
            DiskState::Replaced => "replaced",
        }
    }
}

impl Object for Disk {
    const PREFIX: &'static str = "disks/";
    const KIND: &'static str = "disk";
    fn name(&self) -> &str {
        &self.uuid
    }
}
