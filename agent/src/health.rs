//! The health checks as this agent serves them: `vigil-control`'s view of
//! the cluster plus this agent's own suspended engines, evaluated by its
//! checks.

use vigil_control::health::view::SuspendedEngine;
use vigil_control::health::{Report, View, evaluate};

use crate::daemon::Agent;

/// The cluster as this agent sees it, its suspended engines included.
pub async fn view(agent: &Agent) -> View {
    let mut view = View::read(&agent.local.cluster, &agent.config.node_name).await;
    // After the read: an engine suspended while it waited is reported.
    view.suspended_engines = suspended_engines(agent);
    view
}

/// Reads the cluster and evaluates it; never fails (an unreadable store is
/// the STORE_UNREACHABLE check).
pub async fn report(agent: &Agent) -> Report {
    evaluate(&view(agent).await)
}

/// This agent's suspended engines (volumes' and maintenance engines).
fn suspended_engines(agent: &Agent) -> Vec<SuspendedEngine> {
    let mut out: Vec<SuspendedEngine> = agent
        .local
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
