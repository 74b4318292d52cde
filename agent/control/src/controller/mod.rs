//! The controllers embedded in every agent. They are level-triggered: a
//! round reads the cluster (linearizably), compares what is asked with what
//! is, and takes the next step for the objects this agent owns, each step a
//! compare-and-swap. A round runs after any store change (a watch) and
//! every [`RESYNC`] regardless, so a missed event only delays work.
//!
//! Ownership (exactly one agent acts on an object at a time):
//! - a replica object is owned by the agent of its `spec.node`;
//! - an attaching, attached or detaching volume (and its engine object) by
//!   the agent of the node it is attached to (`status.attached_node`);
//! - any other volume by one ready node chosen by rendezvous hashing of the
//!   volume's name over the ready nodes ([`owner_of`]). Two agents that
//!   briefly disagree on readiness both try; compare-and-swap lets one win.
//!
//! Registration and liveness ([`registration`]) and the lease fence
//! ([`lease_fence`]) run beside the loop ([`run`]).

mod checksums;
mod disk_condition;
pub mod drain;
mod engine_report;
mod eviction;
pub mod in_sync;
mod integrity;
pub mod lease_fence;
pub mod maintenance;
pub mod migration;
pub mod nodes;
mod orphans;
pub mod recovery;
pub mod registration;
mod repair;
mod replace;
mod replenish;
mod replicas;
mod round;
mod salvage;
#[cfg(test)]
mod tests;
pub mod uninstall;
mod volumes;

pub use round::{RESYNC, run};

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use vigil_model::{Disk, Engine, Node, Replica, Versioned, Volume};

use crate::cluster::{Cluster, Result};

/// Counter of automatic repairs, label `action` (listed in the metrics
/// catalogue with its HELP).
pub const REMEDIATIONS: &str = "vigil_remediations_total";

/// Counts one automatic repair (`vigil_remediations_total{action}`).
pub fn remediation(action: &'static str) {
    metrics::counter!(REMEDIATIONS, "action" => action).increment(1);
}

/// What one round sees.
pub struct Snapshot {
    pub volumes: Vec<Versioned<Volume>>,
    pub replicas: Vec<Versioned<Replica>>,
    pub engines: BTreeMap<String, Versioned<Engine>>,
    pub ready: BTreeSet<String>,
    /// Every registered node, by name.
    pub nodes: BTreeMap<String, Versioned<Node>>,
    /// Every registered disk, by UUID.
    pub disks: BTreeMap<String, Versioned<Disk>>,
    /// The settings, read with the rest.
    pub settings: vigil_model::settings::Settings,
    /// Wall-clock time of the read (Unix seconds).
    pub now: u64,
}

impl Snapshot {
    pub async fn read(c: &Cluster) -> Result<Snapshot> {
        // Replicas before volumes: a replica is created in the same
        // transaction as its volume and a volume is removed only after its
        // replicas, so this order never shows a live replica without its
        // volume (the other order can, and would delete a new replica).
        let replicas = c.list::<Replica>().await?;
        Ok(Snapshot {
            volumes: c.list::<Volume>().await?,
            replicas,
            engines: c
                .list::<Engine>()
                .await?
                .into_iter()
                .map(|e| (e.object.name.clone(), e))
                .collect(),
            ready: c.ready_nodes().await?,
            nodes: c
                .list::<Node>()
                .await?
                .into_iter()
                .map(|n| (n.object.name.clone(), n))
                .collect(),
            disks: c
                .list::<Disk>()
                .await?
                .into_iter()
                .map(|d| (d.object.uuid.clone(), d))
                .collect(),
            settings: c.settings().await?,
            now: vigil_model::now_unix() as u64,
        })
    }

    /// How long `node` has been down, as first seen by any agent; `None`
    /// while it is ready (or not yet seen down).
    pub fn down_for(&self, node: &str) -> Option<Duration> {
        if self.ready.contains(node) {
            return None;
        }
        let since = self.nodes.get(node)?.object.status.down_since?;
        Some(Duration::from_secs(self.now.saturating_sub(since)))
    }

    /// True when `node` has been down for at least `node-down-timeout`:
    /// only then do controllers act on what it held.
    pub fn node_gone(&self, node: &str) -> bool {
        self.down_for(node)
            .is_some_and(|d| d >= self.settings.node_down_timeout())
    }

    /// The replica objects of `volume`.
    pub fn replicas_of<'a>(
        &'a self,
        volume: &'a str,
    ) -> impl Iterator<Item = &'a Versioned<Replica>> {
        self.replicas
            .iter()
            .filter(move |r| r.object.spec.volume == volume)
    }
}

/// The agent that acts on `volume` now (see the module docs).
pub fn owner_of(volume: &Volume, ready: &BTreeSet<String>) -> Option<String> {
    if let Some(n) = &volume.status.attached_node {
        return Some(n.clone());
    }
    rendezvous(&volume.name, ready)
}

/// The node of `nodes` that rendezvous hashing picks for `name`: every
/// agent that sees the same set picks the same node.
pub fn rendezvous(name: &str, nodes: &BTreeSet<String>) -> Option<String> {
    nodes
        .iter()
        .max_by_key(|node| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (name, node).hash(&mut h);
            h.finish()
        })
        .cloned()
}
