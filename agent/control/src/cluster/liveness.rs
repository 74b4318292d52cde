//! Node liveness: each agent holds a lease and a liveness key bound to it,
//! so a dead agent's key disappears when its lease runs out. A node is
//! ready while its key exists.

use std::collections::BTreeSet;
use std::time::Duration;

use vigil_model::node::{LIVENESS_PREFIX, liveness_key};
use vigil_store::{Expect, LeaseId, Op, StoreError};

use super::{Cluster, Result};

impl Cluster {
    /// Names of the nodes whose agents hold their liveness lease now.
    pub async fn ready_nodes(&self) -> Result<BTreeSet<String>> {
        let listing = self.store.list(LIVENESS_PREFIX).await?;
        Ok(listing
            .kvs
            .into_iter()
            .filter_map(|kv| kv.key.strip_prefix(LIVENESS_PREFIX).map(str::to_string))
            .collect())
    }

    /// Writes this node's liveness record bound to `lease`.
    pub async fn set_live(&self, lease: LeaseId) -> Result<()> {
        self.store
            .txn(vec![Op::Put {
                key: liveness_key(&self.node),
                value: vigil_model::now_unix().to_string().into_bytes(),
                expect: Expect::Any,
                lease: Some(lease),
            }])
            .await?;
        Ok(())
    }

    /// A new lease of `ttl` for this node's liveness key.
    pub async fn grant_liveness_lease(&self, ttl: Duration) -> Result<LeaseId> {
        Ok(self.store.grant_lease(ttl).await?)
    }

    /// Renews the liveness lease; `LeaseExpired` when it is gone (the
    /// caller takes a new one).
    pub async fn renew_liveness_lease(
        &self,
        lease: LeaseId,
    ) -> std::result::Result<(), StoreError> {
        self.store.keep_alive(lease).await
    }

    /// Revokes the lease of this node's liveness key, if it has one: the
    /// node shows down at once (a clean shutdown).
    pub async fn go_offline(&self) {
        let key = liveness_key(&self.node);
        if let Ok(Some(kv)) = self.store.get(&key).await
            && let Some(lease) = kv.lease
        {
            let _ = self.store.revoke_lease(lease).await;
        }
    }
}
