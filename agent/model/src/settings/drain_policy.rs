//! `node-drain-policy`: what keeps a node from draining (the check itself
//! is the drain controller's).

use serde::{Deserialize, Serialize};

/// What `node-drain-policy` says counts as a blocker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrainPolicy {
    /// A volume whose last healthy replica is on the node blocks, attached
    /// or not.
    BlockIfContainsLastReplica,
    /// Only an attached volume's last healthy replica blocks; a detached
    /// volume's replicas are stopped and may go down with the node.
    AllowIfReplicaIsStopped,
    /// Nothing blocks.
    AlwaysAllow,
}

impl DrainPolicy {
    pub const ALL: [&'static str; 3] = [
        "block-if-contains-last-replica",
        "allow-if-replica-is-stopped",
        "always-allow",
    ];

    /// The policy named `s`; the default for anything else (the setting
    /// is validated when set).
    pub fn parse(s: &str) -> DrainPolicy {
        match s {
            "allow-if-replica-is-stopped" => DrainPolicy::AllowIfReplicaIsStopped,
            "always-allow" => DrainPolicy::AlwaysAllow,
            _ => DrainPolicy::BlockIfContainsLastReplica,
        }
    }
}
