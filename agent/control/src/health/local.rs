//! The health checks as one agent serves them: the cluster's view plus
//! this node's own suspended engines (which only its agent knows),
//! evaluated.

use super::view::SuspendedEngine;
use super::{Report, View, evaluate};
use crate::local::Local;

/// The cluster as this node sees it, its suspended engines included.
pub async fn view(local: &Local) -> View {
    let mut view = View::read(&local.cluster, &local.me.name).await;
    // After the read: an engine suspended while it waited is reported.
    view.suspended_engines = suspended_engines(local);
    view
}

/// Reads the cluster and evaluates it; never fails (an unreadable store is
/// the STORE_UNREACHABLE check).
pub async fn report(local: &Local) -> Report {
    evaluate(&view(local).await)
}

/// This node's suspended engines (volumes' and maintenance engines).
fn suspended_engines(local: &Local) -> Vec<SuspendedEngine> {
    let mut out: Vec<SuspendedEngine> = local
        .all_engines()
        .iter()
        .filter_map(|e| {
            Some(SuspendedEngine {
                volume: e.name().to_string(),
                epoch: e.epoch(),
                suspended: e.suspended()?,
            })
        })
        .collect();
    out.sort_by(|a, b| a.volume.cmp(&b.volume));
    out
}
