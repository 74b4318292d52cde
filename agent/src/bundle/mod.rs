//! The support bundle: one archive from every node of the cluster, and
//! diagnosis from that archive alone (`docs/support-bundle.md`).
//!
//! * [`node`] — one node's part (logs, metrics, replica chain metadata,
//!   disks, agent config, system facts), served by
//!   `GET /v1/support-bundle/node`.
//! * [`cluster`] — the cluster-wide part (every store object, events, the
//!   health [`vigil_control::health::View`] and report, settings, mutes).
//! * [`collect`] — the coordinator behind `POST /v1/support-bundle`: asks
//!   every node in parallel, each with its own timeout, and writes the
//!   archive ([`archive`]) with its manifest.
//! * [`redact`] — secrets never enter the bundle.
//! * [`offline`] — `vigil doctor --bundle` and `vigil bundle inspect`.
//! * [`cli`] — `vigil support-bundle`.

pub mod archive;
pub mod cli;
pub mod cluster;
pub mod collect;
pub mod node;
pub mod offline;
pub mod redact;

use serde::{Deserialize, Serialize};

/// How long a node may take to answer unless asked otherwise.
pub const DEFAULT_NODE_TIMEOUT_SECS: u64 = 5;

/// What to collect (the body of `POST /v1/support-bundle`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Only events and log lines of the last this many seconds (all when
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_secs: Option<u64>,
    /// Only these volumes' replicas and events (all when empty). The
    /// cluster state and the health view are always whole: the offline
    /// doctor needs them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Only these nodes (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// Seconds each node may take ([`DEFAULT_NODE_TIMEOUT_SECS`] when
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_timeout_secs: Option<u64>,
}

impl Request {
    /// Whether the volume is wanted.
    pub fn wants_volume(&self, volume: &str) -> bool {
        self.volumes.is_empty() || self.volumes.iter().any(|v| v == volume)
    }

    /// Unix time from which events and log lines are kept.
    pub fn cutoff_unix(&self, now: f64) -> Option<f64> {
        self.since_secs.map(|s| now - s as f64)
    }
}

/// The volume a replica belongs to, from its name (`<volume>-r-<hex>`).
pub fn volume_of_replica(replica: &str) -> &str {
    replica.rsplit_once("-r-").map_or(replica, |(v, _)| v)
}

/// vigil's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
