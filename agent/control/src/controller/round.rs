//! The loop every agent runs: a round after any store change and every
//! [`RESYNC`] regardless; each round reads one [`Snapshot`] and gives it to
//! every controller in a fixed order.

use std::sync::Arc;
use std::time::Duration;

use super::{
    Snapshot, eviction, integrity, maintenance, migration, orphans, registration, replace,
    replicas, uninstall, volumes,
};
use crate::cluster::Result;
use crate::local::Local;

/// Longest time between two rounds.
pub const RESYNC: Duration = Duration::from_secs(2);

/// Runs rounds until the task is aborted.
pub async fn run(local: Arc<Local>) {
    let (kick_tx, mut kick_rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(watch_changes(Arc::clone(&local), kick_tx));
    let mut round: u64 = 0;
    loop {
        round += 1;
        if let Err(e) = run_round(&local, round).await {
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

pub(crate) async fn run_round(local: &Arc<Local>, round: u64) -> Result<()> {
    let uninstall = local.cluster.uninstall_record().await?;
    if uninstall::quiesce(local, uninstall.as_ref()).await {
        return Ok(());
    }
    let snap = Snapshot::read(&local.cluster).await?;
    local
        .lease_clock
        .set_on_loss(snap.settings.engine_on_lease_loss());
    super::nodes::mark_down(&local.cluster, &snap).await;
    replicas::reconcile(local, &snap).await;
    volumes::reconcile(local, &snap).await;
    migration::reconcile(local, &snap).await;
    super::recovery::reconcile(&local.cluster, &local.me.name, &snap).await;
    maintenance::reconcile(local, &snap).await;
    replace::reconcile(local, &snap).await;
    if let Some(u) = &uninstall {
        uninstall::reconcile(local, &snap, u).await;
    }
    eviction::reconcile(local, &snap).await;
    if round.is_multiple_of(orphans::EVERY_ROUNDS) {
        orphans::sweep(local, &snap).await;
    }
    integrity::run(local, &snap, round).await;
    if round.is_multiple_of(30) {
        local.cluster.prune_events().await;
    }
    // Every 5 rounds (≤ 10 s): a disk that starts failing or fills up must
    // leave the scheduler's choices soon, and the check costs a few reads.
    if round.is_multiple_of(5) {
        registration::refresh_disks(local).await;
    }
    Ok(())
}

/// Turns store changes into kicks; re-watches after errors.
async fn watch_changes(local: Arc<Local>, kick: tokio::sync::mpsc::Sender<()>) {
    loop {
        let after = match local.cluster.revision().await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "watch: cannot read revision");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match local.cluster.watch_all(after).await {
            Ok(mut stream) => {
                while let Some(ev) = stream.recv().await {
                    match ev {
                        Ok(ev) if crate::cluster::watch::is_event(ev.key()) => {}
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
