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
//! Registration and liveness ([`registration`]) run beside the loop.

pub mod checksums;
mod disk_condition;
pub mod drain;
mod engine_report;
mod eviction;
pub mod in_sync;
mod integrity;
pub mod lease_fence;
pub mod maintenance;
pub mod migration;
mod nodes;
mod orphans;
pub mod recovery;
pub mod registration;
mod repair;
mod replace;
mod replenish;
mod replicas;
mod salvage;
pub mod uninstall;
mod volumes;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use crate::daemon::Agent;
use vigil_control::cluster::Result;
use vigil_model::{Disk, Engine, Node, Replica, Versioned, Volume};

/// Longest time between two rounds.
pub const RESYNC: Duration = Duration::from_secs(2);

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
    pub async fn read(agent: &Agent) -> Result<Snapshot> {
        let c = &agent.cluster;
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

/// Runs rounds until the task is aborted.
pub async fn run(agent: Arc<Agent>) {
    let (kick_tx, mut kick_rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(watch_changes(Arc::clone(&agent), kick_tx));
    let mut round: u64 = 0;
    loop {
        round += 1;
        if let Err(e) = run_round(&agent, round).await {
            tracing::warn!(error = %e, "controller round failed; retrying");
        }
        tokio::select! {
            _ = kick_rx.recv() => {
                // let a burst of changes settle into one round
                tokio::time::sleep(Duration::from_millis(5)).await;
                while kick_rx.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

async fn run_round(agent: &Arc<Agent>, round: u64) -> Result<()> {
    let uninstall = agent.cluster.uninstall_record().await?;
    if uninstall::quiesce(agent, uninstall.as_ref()).await {
        return Ok(());
    }
    let snap = Snapshot::read(agent).await?;
    agent
        .lease_clock
        .set_on_loss(snap.settings.engine_on_lease_loss());
    nodes::mark_down(agent, &snap).await;
    replicas::reconcile(agent, &snap).await;
    volumes::reconcile(agent, &snap).await;
    migration::reconcile(agent, &snap).await;
    recovery::reconcile(agent, &snap).await;
    maintenance::reconcile(agent, &snap).await;
    replace::reconcile(agent, &snap).await;
    if let Some(u) = &uninstall {
        uninstall::reconcile(agent, &snap, u).await;
    }
    eviction::reconcile(agent, &snap).await;
    if round.is_multiple_of(orphans::EVERY_ROUNDS) {
        orphans::sweep(agent, &snap).await;
    }
    integrity::run(agent, &snap, round).await;
    if round.is_multiple_of(30) {
        agent.cluster.prune_events().await;
    }
    // Every 5 rounds (≤ 10 s): a disk that starts failing or fills up must
    // leave the scheduler's choices soon, and the check costs a few reads.
    if round.is_multiple_of(5) {
        registration::refresh_disks(agent).await;
    }
    Ok(())
}

/// Turns store changes into kicks; re-watches after errors.
async fn watch_changes(agent: Arc<Agent>, kick: tokio::sync::mpsc::Sender<()>) {
    loop {
        let after = match agent.cluster.store().list("liveness/").await {
            Ok(l) => l.revision,
            Err(e) => {
                tracing::debug!(error = %e, "watch: cannot read revision");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match agent.cluster.store().watch("", after).await {
            Ok(mut stream) => {
                while let Some(ev) = stream.recv().await {
                    match ev {
                        Ok(ev) if ev.key().starts_with("events/") => {}
                        Ok(_) => {
                            let _ = kick.try_send(());
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "watch broke");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "watch failed"),
        }
        let _ = kick.try_send(());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
