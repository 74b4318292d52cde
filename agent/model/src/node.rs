//! A node: a machine running one agent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Object;

/// A node as registered by its agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub spec: NodeSpec,
    pub status: NodeStatus,
}

/// What the agent and the operator say about the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NodeSpec {
    /// `http://host:port` of the agent's API.
    pub api_address: String,
    /// `host:port` of the replica server.
    pub replica_address: String,
    /// `host:port` of the NBD server.
    pub nbd_address: String,
    /// Labels from `--label k=v` (`zone` is used by the scheduler).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Node tags a volume can require.
    #[serde(default)]
    pub tags: Vec<String>,
    /// False when the operator disabled scheduling here.
    #[serde(default = "yes")]
    pub allow_scheduling: bool,
    /// True when the operator asked to evict the node: nothing new is
    /// scheduled on it.
    #[serde(default)]
    pub eviction_requested: bool,
}

fn yes() -> bool {
    true
}

/// What the agent observed when it last registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NodeStatus {
    /// vigil version of the agent.
    pub version: String,
    /// When the agent last started (Unix seconds).
    pub started_at: f64,
    /// The store the agent uses (`embedded` or `etcd`).
    pub store: String,
    /// When another agent first saw this node's liveness lease gone (Unix
    /// seconds); cleared when the node registers again. Controllers act on
    /// a down node only once it has been down for `node-down-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_since: Option<u64>,
    /// The progress of an eviction asked for in `spec.eviction_requested`
    /// (written by the eviction controller; kept across re-registration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction: Option<super::eviction::Eviction>,
    /// The kernel's view of the node's I/O over the last window (eBPF;
    /// absent when tracing is unavailable there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_io: Option<super::kernel_io::KernelIo>,
}

impl Node {
    /// The `zone` label, if any.
    pub fn zone(&self) -> Option<&str> {
        self.spec.labels.get("zone").map(String::as_str)
    }
}

impl Object for Node {
    const PREFIX: &'static str = "nodes/";
    const KIND: &'static str = "node";
    fn name(&self) -> &str {
        &self.name
    }
}

/// Key of a node's liveness record, bound to the agent's lease: present
/// exactly while the agent renews it.
pub fn liveness_key(node: &str) -> String {
    format!("liveness/{node}")
}

/// Prefix of every liveness record.
pub const LIVENESS_PREFIX: &str = "liveness/";
