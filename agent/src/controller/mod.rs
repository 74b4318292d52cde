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
mod engine_report;
mod eviction;
pub mod in_sync;
mod integrity;
pub mod lease_fence;
pub mod maintenance;
pub mod migration;
mod orphans;
pub mod registration;
mod repair;
mod replace;
mod replenish;
mod replicas;
mod salvage;
pub mod uninstall;
mod volumes;

use std::sync::Arc;
use std::time::Duration;

use crate::daemon::Agent;
use vigil_control::cluster::Result;
pub use vigil_control::controller::{Snapshot, owner_of, rendezvous};

/// Longest time between two rounds.
pub const RESYNC: Duration = Duration::from_secs(2);

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
    let snap = Snapshot::read(&agent.cluster).await?;
    agent
        .lease_clock
        .set_on_loss(snap.settings.engine_on_lease_loss());
    vigil_control::controller::nodes::mark_down(&agent.cluster, &snap).await;
    replicas::reconcile(agent, &snap).await;
    volumes::reconcile(agent, &snap).await;
    migration::reconcile(agent, &snap).await;
    vigil_control::controller::recovery::reconcile(&agent.cluster, &agent.config.node_name, &snap)
        .await;
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
