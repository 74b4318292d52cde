//! The progress of a node eviction, kept in `NodeStatus::eviction` by the
//! eviction controller (`controller/eviction.rs`). The node's spec says
//! what the operator asked (`eviction_requested`); this says how far the
//! cluster got, so `vigil node get N -o json`, the health checks and a
//! support bundle all read the same answer.
//!
//! ```text
//!  evict N        every replica of N has a replacement being rebuilt
//!  ──────► Moving ◄─────────────────────────────┐
//!            │  │ a volume cannot be moved       │ capacity returned
//!            │  └──────────────────────────► Blocked
//!            │ no replica left on N              │
//!            ▼                                   │
//!        Completed ◄─────────────────────────────┘ (its last replica left)
//!  evict --cancel (from any phase): the status is cleared
//! ```

use serde::{Deserialize, Serialize};

/// Where a node's eviction is; see the module diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvictionPhase {
    /// Replicas are being replaced elsewhere (or wait their turn).
    Moving,
    /// At least one volume cannot move; see its entry.
    Blocked,
    /// No replica is left on the node.
    Completed,
}

impl EvictionPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            EvictionPhase::Moving => "moving",
            EvictionPhase::Blocked => "blocked",
            EvictionPhase::Completed => "completed",
        }
    }
}

/// Where one volume's move off the node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeEvictionState {
    /// A replacement is placed and being rebuilt (or is RW and the evicted
    /// replica is about to be retired).
    Moving,
    /// Nothing blocks it, but it has not started (the volume's owner has
    /// not placed the replacement yet, the volume is changing state, the
    /// rebuild limit is reached…).
    Waiting,
    /// It cannot move now; `reason` says why (the scheduler's per-node
    /// reasons, or no replica to copy from).
    Blocked,
}

impl VolumeEvictionState {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeEvictionState::Moving => "moving",
            VolumeEvictionState::Waiting => "waiting",
            VolumeEvictionState::Blocked => "blocked",
        }
    }
}

/// One volume that still has a replica on the evicted node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeEviction {
    pub volume: String,
    /// Its replicas still on the node.
    pub replicas: Vec<String>,
    pub state: VolumeEvictionState,
    /// Replicas placed elsewhere that are not RW yet (the replacements).
    #[serde(default)]
    pub replacements: Vec<String>,
    /// What it waits for, or why it is blocked.
    #[serde(default)]
    pub reason: String,
}

/// A node eviction's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eviction {
    pub phase: EvictionPhase,
    /// Unix seconds when the controller first saw the request.
    pub started_at: u64,
    /// Unix seconds of the last phase change.
    pub phase_since: u64,
    /// Replicas still on the node (every volume together).
    pub replicas_left: usize,
    /// Replicas moved off since it started.
    #[serde(default)]
    pub replicas_moved: usize,
    /// One entry per volume still on the node, by volume name.
    #[serde(default)]
    pub volumes: Vec<VolumeEviction>,
}

impl Eviction {
    /// The volumes that cannot move now.
    pub fn blocked(&self) -> impl Iterator<Item = &VolumeEviction> {
        self.volumes
            .iter()
            .filter(|v| v.state == VolumeEvictionState::Blocked)
    }
}
