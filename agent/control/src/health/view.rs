//! Everything an evaluation reads, in one serialisable value: read from the
//! store by [`View::read`], or loaded from a support bundle and evaluated
//! offline.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigil_engine::engine::Suspended;

use crate::cluster::{Cluster, ClusterError};
use vigil_model::uninstall::Uninstall;
use vigil_model::{Disk, Engine, Mute, Node, Object, Replica, Volume};

/// How long [`View::read`] waits for the store before reporting it
/// unreachable.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The cluster as one agent saw it at `now_unix`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// Node whose agent read it.
    pub observer: String,
    pub now_unix: u64,
    /// Why the store could not be read; every list is then empty.
    #[serde(default)]
    pub store_error: Option<String>,
    pub nodes: Vec<Node>,
    /// Nodes holding their liveness lease.
    pub live: BTreeSet<String>,
    pub disks: Vec<Disk>,
    pub volumes: Vec<Volume>,
    pub replicas: Vec<Replica>,
    pub engines: Vec<Engine>,
    /// Every stored mute (expired ones included; evaluation ignores them).
    pub mutes: Vec<Mute>,
    /// The `rebuild-stuck-timeout` setting, seconds.
    pub rebuild_stuck_secs: u64,
    /// The `migration-timeout` setting, seconds (0 in views written before
    /// it existed: the default is used).
    #[serde(default)]
    pub migration_timeout_secs: u64,
    /// The uninstall record, when one exists.
    #[serde(default)]
    pub uninstall: Option<Uninstall>,
    /// The `uninstall-stuck-timeout` setting, seconds.
    #[serde(default = "default_uninstall_stuck_secs")]
    pub uninstall_stuck_secs: u64,
    /// The observer's own engines that are suspended, read from the engines
    /// themselves and not from the store: a node that lost its lease
    /// cannot write to the store, so only it can tell (ENGINE_SUSPENDED).
    #[serde(default)]
    pub suspended_engines: Vec<SuspendedEngine>,
}

/// One engine of the observer that is suspended (`Engine::suspended`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspendedEngine {
    pub volume: String,
    /// The engine's epoch.
    pub epoch: u64,
    /// Why, when and what its clients see.
    pub suspended: Suspended,
}

fn default_uninstall_stuck_secs() -> u64 {
    vigil_model::settings::Settings::default()
        .uninstall_stuck_timeout()
        .as_secs()
}

/// Seconds since the Unix epoch, whole.
pub fn now_secs() -> u64 {
    vigil_model::now_unix() as u64
}

impl View {
    /// Reads the cluster as `observer` sees it. Never fails: a store error
    /// (or no answer within [`READ_TIMEOUT`]) becomes `store_error` with
    /// empty lists. `suspended_engines` is the observer's own to fill in,
    /// after the read (an engine suspended while it waited is reported).
    pub async fn read(cluster: &Cluster, observer: &str) -> View {
        let observer = observer.to_string();
        let read = tokio::time::timeout(READ_TIMEOUT, read_all(cluster, observer.clone()));
        match read.await {
            Ok(Ok(view)) => view,
            Ok(Err(e)) => View::unreachable(observer, format!("read the cluster store: {e}")),
            Err(_) => View::unreachable(
                observer,
                format!(
                    "read the cluster store: no answer within {} s",
                    READ_TIMEOUT.as_secs()
                ),
            ),
        }
    }

    /// A view that only says the store could not be read.
    pub fn unreachable(observer: String, error: String) -> View {
        View {
            observer,
            now_unix: now_secs(),
            store_error: Some(error),
            rebuild_stuck_secs: vigil_model::settings::Settings::default()
                .rebuild_stuck_timeout()
                .as_secs(),
            uninstall_stuck_secs: default_uninstall_stuck_secs(),
            ..View::default()
        }
    }
}

async fn list<T: Object>(c: &Cluster) -> Result<Vec<T>, ClusterError> {
    Ok(c.list::<T>().await?.into_iter().map(|v| v.object).collect())
}

async fn read_all(c: &Cluster, observer: String) -> Result<View, ClusterError> {
    let settings = c.settings().await?;
    Ok(View {
        observer,
        now_unix: now_secs(),
        store_error: None,
        nodes: list(c).await?,
        live: c.ready_nodes().await?,
        disks: list(c).await?,
        volumes: list(c).await?,
        replicas: list(c).await?,
        engines: list(c).await?,
        mutes: list(c).await?,
        rebuild_stuck_secs: settings.rebuild_stuck_timeout().as_secs(),
        migration_timeout_secs: settings.migration_timeout().as_secs(),
        uninstall: c.uninstall_record().await?.map(|r| r.object),
        uninstall_stuck_secs: settings.uninstall_stuck_timeout().as_secs(),
        suspended_engines: Vec::new(),
    })
}
