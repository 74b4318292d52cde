//! How an engine on this node reaches a replica: in-process when the
//! replica is on this node, else over the replica protocol.

use std::sync::Arc;
use std::time::Duration;

use vigil_engine::address::ReplicaAddress;
use vigil_engine::engine::{Backend, Fault, FaultReason};
use vigil_engine::protocol::{ClusterToken, ReplicaClient};

use super::replicas::ReplicaSet;

/// How long connecting to a remote replica may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens replica addresses for engines of this node.
pub struct Backends {
    token: ClusterToken,
    /// This node's advertised replica server `host:port`: addresses on it
    /// are opened in-process.
    replica_address: String,
    replicas: Arc<ReplicaSet>,
}

impl Backends {
    pub fn new(token: ClusterToken, replica_address: String, replicas: Arc<ReplicaSet>) -> Self {
        Backends {
            token,
            replica_address,
            replicas,
        }
    }

    /// Opens a replica address for the engine of `epoch`: in-process when
    /// the replica is on this agent, else over the replica protocol (whose
    /// handshake claims the replica for `epoch`; the engine claims a local
    /// one before it serves).
    pub async fn open(&self, address: &ReplicaAddress, epoch: u64) -> Result<Backend, Fault> {
        if address.server == self.replica_address {
            return match self.replicas.get(&address.name) {
                Some(r) => Ok(Backend::local(r, epoch)),
                None => Err(Fault::now(
                    FaultReason::Refused,
                    format!("no replica {:?} on this node", address.name),
                )),
            };
        }
        ReplicaClient::connect_claiming(address, &self.token, CONNECT_TIMEOUT, epoch)
            .await
            .map(Backend::Remote)
            .map_err(|e| Fault::now(FaultReason::of_client_error(&e), e.to_string()))
    }

    /// Whether a replica answers (a connection for no engine, epoch 0: it
    /// claims nothing and can neither read nor write a claimed replica).
    pub async fn reach(&self, address: &ReplicaAddress) -> Result<(), Fault> {
        self.open(address, 0).await.map(drop)
    }
}
