//! The replica protocol: framed binary over TCP between an engine and the
//! replicas on other agents. Handshake with version and cluster-token
//! authentication, request ids for pipelining, an explicit maximum frame size.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::net::TcpListener;

use crate::address::ReplicaAddress;
use crate::replica::{Checksum, ErrorKind, Extent, LayerInfo, Replica, ReplicaInfo, VerifyReport};

/// The shared secret every agent of a cluster holds.
#[derive(Clone)]
pub struct ClusterToken(String);

impl std::fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterToken(<redacted>)")
    }
}

/// Errors loading the cluster token.
#[derive(Debug, Error)]
pub enum TokenError {
    /// Reading or writing the token file failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The token is empty.
    #[error("cluster token is empty ({0})")]
    Empty(String),
}

#[allow(unused_variables)]
impl ClusterToken {
    /// From `VIGIL_CLUSTER_TOKEN`, else `<data_dir>/cluster-token`, else a new
    /// random token written there (mode 0600).
    pub fn load(data_dir: &Path) -> Result<ClusterToken, TokenError> {
        unimplemented!("protocol in progress")
    }
    /// A token from a literal string.
    pub fn new(s: impl Into<String>) -> ClusterToken {
        ClusterToken(s.into())
    }
}

/// Where a replica server finds the replicas it serves.
pub trait ReplicaSource: Send + Sync + 'static {
    /// The open replica named `name`, if this server has it.
    fn replica(&self, name: &str) -> Option<Arc<Replica>>;
}

/// Replica server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Peers must prove they hold this token.
    pub token: ClusterToken,
}

/// Serves replicas on `listener` until the task is dropped.
#[allow(unused_variables)]
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn ReplicaSource>,
    config: ServerConfig,
) -> std::io::Result<()> {
    unimplemented!("protocol in progress")
}

/// Errors from a replica client.
#[derive(Debug, Clone, Error)]
pub enum ClientError {
    /// Could not connect.
    #[error("connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    /// The server refused the handshake (token, version, unknown replica).
    #[error("refused by {addr}: {message}")]
    Refused { addr: String, message: String },
    /// The connection broke; every request in flight fails with this.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The replica answered with an error.
    #[error("replica error ({kind:?}): {message}")]
    Remote { kind: ErrorKind, message: String },
    /// The peer sent something that violates the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// A connection to one remote replica; cheap to clone, many requests in flight.
#[derive(Clone)]
pub struct ReplicaClient {
    _private: (),
}

#[allow(unused_variables)]
impl ReplicaClient {
    /// Connects and authenticates within `timeout`.
    pub async fn connect(
        addr: &ReplicaAddress,
        token: &ClusterToken,
        timeout: Duration,
    ) -> Result<ReplicaClient, ClientError> {
        unimplemented!("protocol in progress")
    }
    /// True once the connection has failed.
    pub fn is_closed(&self) -> bool {
        unimplemented!()
    }
    pub async fn ping(&self) -> Result<(), ClientError> {
        unimplemented!()
    }
    pub async fn read(&self, offset: u64, len: u32) -> Result<Bytes, ClientError> {
        unimplemented!()
    }
    pub async fn write(&self, offset: u64, data: Bytes) -> Result<(), ClientError> {
        unimplemented!()
    }
    pub async fn trim(&self, offset: u64, len: u64) -> Result<(), ClientError> {
        unimplemented!()
    }
    pub async fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), ClientError> {
        unimplemented!()
    }
    pub async fn flush(&self) -> Result<(), ClientError> {
        unimplemented!()
    }
    pub async fn info(&self) -> Result<ReplicaInfo, ClientError> {
        unimplemented!()
    }
    pub async fn bump_generation(&self) -> Result<u64, ClientError> {
        unimplemented!()
    }
    pub async fn snapshot(
        &self,
        name: &str,
        user_created: bool,
        labels: BTreeMap<String, String>,
    ) -> Result<LayerInfo, ClientError> {
        unimplemented!()
    }
    pub async fn remove_snapshot(&self, name: &str) -> Result<(), ClientError> {
        unimplemented!()
    }
    pub async fn revert(&self, name: &str) -> Result<(), ClientError> {
        unimplemented!()
    }
    pub async fn verify(&self) -> Result<VerifyReport, ClientError> {
        unimplemented!()
    }
    pub async fn layer_extents(&self, layer: &str) -> Result<Vec<Extent>, ClientError> {
        unimplemented!()
    }
    pub async fn read_layer(&self, layer: &str, offset: u64, len: u32) -> Result<Bytes, ClientError> {
        unimplemented!()
    }
    pub async fn layer_checksum(&self, layer: &str) -> Result<Checksum, ClientError> {
        unimplemented!()
    }
    pub async fn stage_layer(&self, info: &LayerInfo) -> Result<(), ClientError> {
        unimplemented!()
    }
    pub async fn write_staged(&self, layer: &str, offset: u64, data: Bytes) -> Result<(), ClientError> {
        unimplemented!()
    }
    pub async fn install_chain(&self, layers: &[LayerInfo]) -> Result<(), ClientError> {
        unimplemented!()
    }
}
