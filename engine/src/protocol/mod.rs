//! The replica protocol: framed binary over TCP between an engine and the
//! replicas on other agents. Handshake with version and cluster-token
//! authentication, request ids for pipelining, an explicit maximum frame size.
//!
//! * [`frame`]: the 24-byte header and the bounded frame reader/writer.
//! * [`message`]: requests and responses and their payload encodings.
//! * [`handshake`]: HELLO / CHALLENGE / AUTH / RESULT.
//! * [`server`]: accept loop and per-connection request pipeline.
//! * [`client`]: one pipelined connection with request-id dispatch.
//! * [`outbox`]: a connection's outgoing frames, written directly or batched.
//! * [`served`]: the connections a server holds open, for observers.
//! * [`trace_context`]: hooks through which requests carry a trace context.

mod client;
// Visible to the crate for the fuzz targets (`crate::fuzzing`).
pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod message;
mod outbox;
mod served;
mod server;
mod token;
pub mod trace_context;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::net::TcpListener;

use crate::address::ReplicaAddress;
use crate::replica::{Checksum, ErrorKind, Extent, LayerInfo, Replica, ReplicaInfo, VerifyReport};

pub use frame::{MAX_DATA_LEN, MAX_FRAME_PAYLOAD};
use message::{Request, Response};
pub use served::{ServedConnection, ServedConnections};

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

impl ClusterToken {
    /// From `VIGIL_CLUSTER_TOKEN`, else `<data_dir>/cluster-token`, else a new
    /// random token written there (mode 0600).
    pub fn load(data_dir: &Path) -> Result<ClusterToken, TokenError> {
        let env = std::env::var(token::TOKEN_ENV).ok();
        token::load(data_dir, env)
    }
    /// A token from a literal string.
    pub fn new(s: impl Into<String>) -> ClusterToken {
        ClusterToken(s.into())
    }
    /// The HMAC key.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
    /// The secret itself, for sending it to another agent's API as a bearer
    /// token. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether `presented` is this token, in time that does not depend on
    /// where the first difference is.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        let mut diff = a.len() ^ b.len();
        for i in 0..a.len().max(b.len()) {
            let x = a.get(i).copied().unwrap_or(0);
            let y = b.get(i).copied().unwrap_or(0);
            diff |= usize::from(x ^ y);
        }
        diff == 0
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
    /// Filled with the connections open at any time.
    pub connections: ServedConnections,
}

/// Serves replicas on `listener` until the task is dropped (which closes
/// every connection it accepted). Returns only if the listener fails for good.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn ReplicaSource>,
    config: ServerConfig,
) -> std::io::Result<()> {
    server::serve_ops(
        listener,
        Arc::new(server::SourceAdapter(source)),
        config.token,
        server::HANDSHAKE_TIMEOUT,
        config.connections,
    )
    .await
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
    inner: Arc<client::ClientInner>,
}

impl std::fmt::Debug for ReplicaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaClient")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

fn unexpected(r: Response) -> ClientError {
    ClientError::Protocol(format!("unexpected response {r:?}"))
}

fn data_len_check(len: usize) -> Result<(), ClientError> {
    if len > MAX_DATA_LEN {
        return Err(ClientError::Protocol(format!(
            "{len} bytes of data exceeds the protocol maximum of {MAX_DATA_LEN}"
        )));
    }
    Ok(())
}

impl ReplicaClient {
    /// Connects and authenticates within `timeout`, for no engine (epoch
    /// 0): refused once any engine claimed the replica. Engines use
    /// [`ReplicaClient::connect_claiming`].
    pub async fn connect(
        addr: &ReplicaAddress,
        token: &ClusterToken,
        timeout: Duration,
    ) -> Result<ReplicaClient, ClientError> {
        Self::connect_claiming(addr, token, timeout, 0).await
    }
    /// Connects and authenticates within `timeout` for the engine of
    /// `epoch`, which claims the replica: the server persists the epoch
    /// before it accepts, and refuses every request of an older engine from
    /// then on. An engine older than the replica's epoch is refused with
    /// [`ClientError::Remote`] of kind [`ErrorKind::StaleEpoch`].
    pub async fn connect_claiming(
        addr: &ReplicaAddress,
        token: &ClusterToken,
        timeout: Duration,
        epoch: u64,
    ) -> Result<ReplicaClient, ClientError> {
        let inner = client::connect_negotiated(addr, token, timeout, epoch).await?;
        Ok(ReplicaClient {
            inner: Arc::new(inner),
        })
    }
    /// The epoch of the engine this connection serves.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch()
    }
    /// True once the connection has failed.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
    async fn done(&self, req: Request) -> Result<(), ClientError> {
        match self.inner.call(req).await? {
            Response::Done => Ok(()),
            r => Err(unexpected(r)),
        }
    }
    async fn data(&self, req: Request, len: u32) -> Result<Bytes, ClientError> {
        match self.inner.call(req).await? {
            Response::Data(d) if d.len() == len as usize => Ok(d),
            Response::Data(d) => Err(ClientError::Protocol(format!(
                "asked for {len} bytes, got {}",
                d.len()
            ))),
            r => Err(unexpected(r)),
        }
    }
    /// A full round trip to the server.
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.done(Request::Ping).await
    }
    pub async fn read(&self, offset: u64, len: u32) -> Result<Bytes, ClientError> {
        data_len_check(len as usize)?;
        self.data(Request::Read { offset, len }, len).await
    }
    pub async fn write(&self, offset: u64, data: Bytes) -> Result<(), ClientError> {
        data_len_check(data.len())?;
        self.done(Request::Write { offset, data }).await
    }
    pub async fn trim(&self, offset: u64, len: u64) -> Result<(), ClientError> {
        self.done(Request::Trim { offset, len }).await
    }
    pub async fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), ClientError> {
        self.done(Request::WriteZeroes { offset, len }).await
    }
    pub async fn flush(&self) -> Result<(), ClientError> {
        self.done(Request::Flush).await
    }
    pub async fn info(&self) -> Result<ReplicaInfo, ClientError> {
        match self.inner.call(Request::Info).await? {
            Response::Info(i) => Ok(i),
            r => Err(unexpected(r)),
        }
    }
    pub async fn bump_generation(&self) -> Result<u64, ClientError> {
        match self.inner.call(Request::BumpGeneration).await? {
            Response::Generation(g) => Ok(g),
            r => Err(unexpected(r)),
        }
    }
    pub async fn snapshot(
        &self,
        name: &str,
        user_created: bool,
        labels: BTreeMap<String, String>,
    ) -> Result<LayerInfo, ClientError> {
        let req = Request::Snapshot {
            name: name.to_string(),
            user_created,
            labels,
        };
        match self.inner.call(req).await? {
            Response::Layer(l) => Ok(l),
            r => Err(unexpected(r)),
        }
    }
    pub async fn remove_snapshot(&self, name: &str) -> Result<(), ClientError> {
        self.done(Request::RemoveSnapshot {
            name: name.to_string(),
        })
        .await
    }
    pub async fn revert(&self, name: &str) -> Result<(), ClientError> {
        self.done(Request::Revert {
            name: name.to_string(),
        })
        .await
    }
    pub async fn verify(&self) -> Result<VerifyReport, ClientError> {
        match self.inner.call(Request::Verify).await? {
            Response::Verify(v) => Ok(v),
            r => Err(unexpected(r)),
        }
    }
    pub async fn layer_extents(&self, layer: &str) -> Result<Vec<Extent>, ClientError> {
        let req = Request::LayerExtents {
            layer: layer.to_string(),
        };
        match self.inner.call(req).await? {
            Response::Extents(e) => Ok(e),
            r => Err(unexpected(r)),
        }
    }
    pub async fn read_layer(
        &self,
        layer: &str,
        offset: u64,
        len: u32,
    ) -> Result<Bytes, ClientError> {
        data_len_check(len as usize)?;
        let req = Request::ReadLayer {
            layer: layer.to_string(),
            offset,
            len,
        };
        self.data(req, len).await
    }
    pub async fn layer_checksum(&self, layer: &str) -> Result<Checksum, ClientError> {
        let req = Request::LayerChecksum {
            layer: layer.to_string(),
        };
        match self.inner.call(req).await? {
            Response::Checksum(c) => Ok(c),
            r => Err(unexpected(r)),
        }
    }
    pub async fn stage_layer(&self, info: &LayerInfo) -> Result<(), ClientError> {
        self.done(Request::StageLayer { info: info.clone() }).await
    }
    pub async fn write_staged(
        &self,
        layer: &str,
        offset: u64,
        data: Bytes,
    ) -> Result<(), ClientError> {
        data_len_check(data.len())?;
        self.done(Request::WriteStaged {
            layer: layer.to_string(),
            offset,
            data,
        })
        .await
    }
    pub async fn install_chain(&self, layers: &[LayerInfo]) -> Result<(), ClientError> {
        self.done(Request::InstallChain {
            layers: layers.to_vec(),
        })
        .await
    }
    /// Makes the replica adopt `revision` (see `Replica::set_revision`).
    pub async fn set_revision(&self, revision: u64) -> Result<(), ClientError> {
        self.done(Request::SetRevision { revision }).await
    }
    /// Makes the replica persist the in-sync `generation` it joins (see
    /// `Replica::join_generation`). A server older than protocol version 4
    /// keeps no generation: nothing is sent, it keeps reporting 0 (which no
    /// check reads as newer than anything), and the call succeeds.
    pub async fn join_generation(&self, generation: u64) -> Result<(), ClientError> {
        if self.inner.version() < handshake::GENERATION_VERSION {
            tracing::debug!(
                generation,
                version = self.inner.version(),
                "replica server predates in-sync generations; not sent"
            );
            return Ok(());
        }
        self.done(Request::JoinGeneration { generation }).await
    }
}
