//! A maintenance engine: an engine a detached volume's owner runs on its
//! own node, outside the NBD catalog, only to rebuild replicas (eviction
//! moves a detached volume's replicas this way). Recorded in
//! `VolumeStatus::maintenance` by compare-and-swap before the engine starts
//! and cleared only after it stopped, so an attach can wait for it: the
//! volume stays `detached` and `spec.node` stays `None` throughout, and at
//! most one engine (maintenance or not) writes the replicas at a time.

use serde::{Deserialize, Serialize};

/// Who runs the maintenance engine of a detached volume, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    /// The node running it.
    pub node: String,
    /// What it is for (e.g. "evicting replica v-r-1234abcd from n1").
    pub reason: String,
    /// Unix seconds when it was claimed.
    pub since: u64,
}
