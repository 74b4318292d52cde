//! Watching the whole cluster for changes, as the controller loop does to
//! run a round after any change. Events (the cluster's log) are not
//! changes anyone reconciles.

use vigil_model::{Event, Object};
use vigil_store::{Revision, WatchStream};

use super::{Cluster, Result};

impl Cluster {
    /// The store's current revision (a cheap read).
    pub async fn revision(&self) -> Result<Revision> {
        Ok(self
            .store
            .list(vigil_model::node::LIVENESS_PREFIX)
            .await?
            .revision)
    }

    /// Every change after revision `after`.
    pub async fn watch_all(&self, after: Revision) -> Result<WatchStream> {
        Ok(self.store.watch("", after).await?)
    }
}

/// Whether a changed key is an event (the cluster's log), which no
/// controller reconciles.
pub fn is_event(key: &str) -> bool {
    key.starts_with(Event::PREFIX)
}
