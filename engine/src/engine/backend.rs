//! How an engine reaches one replica: in-process (same agent, no socket) or
//! over the replica protocol. One async surface over both, with errors
//! already classified into a [`FaultReason`].

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::mode::FaultReason;
use crate::protocol::ReplicaClient;
use crate::replica::{Checksum, Extent, LayerInfo, Replica, ReplicaError, ReplicaInfo};

/// A failed replica call: the reason it implies and the error text.
#[derive(Debug, Clone)]
pub struct BackendError {
    /// What kind of failure this is.
    pub reason: FaultReason,
    /// The underlying error, verbatim.
    pub message: String,
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

type Result<T> = std::result::Result<T, BackendError>;

/// One replica as the engine sees it.
#[derive(Clone)]
pub enum Backend {
    /// A replica on this agent, called directly: reads and writes through
    /// io_uring ([`Replica::read_async`]), the rest on the blocking pool.
    Local(LocalReplica),
    /// A replica on another agent, over the replica protocol (claimed for
    /// the connection's epoch in its handshake).
    Remote(ReplicaClient),
}

/// An in-process replica and the epoch of the engine using it: every call
/// is admitted under that epoch ([`Replica::admit`]), as the replica
/// server admits a remote engine's requests.
#[derive(Clone)]
pub struct LocalReplica {
    replica: Arc<Replica>,
    epoch: u64,
}

fn local_err(e: ReplicaError) -> BackendError {
    BackendError {
        reason: FaultReason::of_replica_error(&e),
        message: e.to_string(),
    }
}

fn remote_err(e: crate::protocol::ClientError) -> BackendError {
    BackendError {
        reason: FaultReason::of_client_error(&e),
        message: e.to_string(),
    }
}

fn join_err(e: tokio::task::JoinError) -> BackendError {
    BackendError {
        reason: FaultReason::IoError,
        message: format!("replica task failed: {e}"),
    }
}

/// Runs a blocking replica call on the blocking pool, admitted under the
/// engine's epoch (refused once a newer engine claimed the replica).
async fn blocking<T: Send + 'static>(
    replica: &LocalReplica,
    f: impl FnOnce(&Replica) -> std::result::Result<T, ReplicaError> + Send + 'static,
) -> Result<T> {
    let r = Arc::clone(&replica.replica);
    let epoch = replica.epoch;
    tokio::task::spawn_blocking(move || {
        let _admitted = r.admit(epoch)?;
        f(&r)
    })
    .await
    .map_err(join_err)?
    .map_err(local_err)
}

/// Like [`blocking`], for a chain or rebuild operation: within a traced
/// span (a rebuild, an API request) it runs in a span of its own named like
/// the server's (`replica.<op>`), so local and remote replicas trace alike.
async fn blocking_traced<T: Send + 'static>(
    op: &'static str,
    replica: &LocalReplica,
    f: impl FnOnce(&Replica) -> std::result::Result<T, ReplicaError> + Send + 'static,
) -> Result<T> {
    if tracing::Span::current().is_none() {
        return blocking(replica, f).await;
    }
    let name = replica
        .replica
        .dir()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let span = tracing::info_span!("replica.local", otel.name = op, replica = %name);
    blocking(replica, move |r| span.in_scope(|| f(r))).await
}

impl Backend {
    /// An in-process replica for the engine of `epoch`. Nothing is claimed
    /// yet: [`Backend::claim`] does that (the engine, before it serves).
    pub fn local(replica: Arc<Replica>, epoch: u64) -> Backend {
        Backend::Local(LocalReplica { replica, epoch })
    }

    /// True for an in-process replica.
    pub fn is_local(&self) -> bool {
        matches!(self, Backend::Local(_))
    }

    /// The epoch of the engine this backend serves.
    pub fn epoch(&self) -> u64 {
        match self {
            Backend::Local(l) => l.epoch,
            Backend::Remote(c) => c.epoch(),
        }
    }

    /// Claims the replica for this backend's epoch ([`Replica::claim`]):
    /// persisted before it returns, and from then on every older engine's
    /// request is refused. A remote replica was claimed in the connection's
    /// handshake; a ping confirms the claim still holds.
    pub async fn claim(&self) -> Result<()> {
        match self {
            Backend::Local(l) => {
                let r = Arc::clone(&l.replica);
                let epoch = l.epoch;
                tokio::task::spawn_blocking(move || r.claim(epoch))
                    .await
                    .map_err(join_err)?
                    .map_err(local_err)
            }
            Backend::Remote(c) => c.ping().await.map_err(remote_err),
        }
    }

    /// Checks the replica is alive: a protocol round trip, or nothing for a
    /// local one (its failures surface on I/O).
    pub async fn ping(&self) -> Result<()> {
        match self {
            Backend::Local(_) => Ok(()),
            Backend::Remote(c) => {
                if c.is_closed() {
                    return Err(BackendError {
                        reason: FaultReason::ConnectionLost,
                        message: "connection closed".into(),
                    });
                }
                c.ping().await.map_err(remote_err)
            }
        }
    }

    /// Reads `len` bytes at `offset` (aligned).
    pub async fn read(&self, offset: u64, len: u32) -> Result<Bytes> {
        match self {
            Backend::Local(r) => r
                .replica
                .read_async(r.epoch, offset, len as usize)
                .await
                .map_err(local_err),
            Backend::Remote(c) => c.read(offset, len).await.map_err(remote_err),
        }
    }

    /// Writes `data` at `offset` (aligned).
    pub async fn write(&self, offset: u64, data: Bytes) -> Result<()> {
        match self {
            Backend::Local(r) => r
                .replica
                .write_async(r.epoch, offset, data)
                .await
                .map_err(local_err),
            Backend::Remote(c) => c.write(offset, data).await.map_err(remote_err),
        }
    }

    /// Discards a range (aligned).
    pub async fn trim(&self, offset: u64, len: u64) -> Result<()> {
        match self {
            Backend::Local(r) => blocking(r, move |r| r.trim(offset, len)).await,
            Backend::Remote(c) => c.trim(offset, len).await.map_err(remote_err),
        }
    }

    /// Zeroes a range (aligned).
    pub async fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        match self {
            Backend::Local(r) => blocking(r, move |r| r.write_zeroes(offset, len)).await,
            Backend::Remote(c) => c.write_zeroes(offset, len).await.map_err(remote_err),
        }
    }

    /// Makes completed writes durable.
    pub async fn flush(&self) -> Result<()> {
        match self {
            Backend::Local(r) => r.replica.flush_async(r.epoch).await.map_err(local_err),
            Backend::Remote(c) => c.flush().await.map_err(remote_err),
        }
    }

    /// Size, revision, generation, chain.
    pub async fn info(&self) -> Result<ReplicaInfo> {
        match self {
            Backend::Local(r) => blocking(r, |r| Ok(r.info())).await,
            Backend::Remote(c) => c.info().await.map_err(remote_err),
        }
    }

    /// Bumps the replica's generation (done when an engine opens it).
    pub async fn bump_generation(&self) -> Result<u64> {
        match self {
            Backend::Local(r) => {
                blocking_traced("replica.bump_generation", r, |r| r.bump_generation()).await
            }
            Backend::Remote(c) => c.bump_generation().await.map_err(remote_err),
        }
    }

    /// Freezes the head as snapshot `name`.
    pub async fn snapshot(
        &self,
        name: &str,
        user_created: bool,
        labels: BTreeMap<String, String>,
    ) -> Result<LayerInfo> {
        match self {
            Backend::Local(r) => {
                let name = name.to_string();
                blocking_traced("replica.snapshot", r, move |r| {
                    r.snapshot(&name, user_created, labels)
                })
                .await
            }
            Backend::Remote(c) => c
                .snapshot(name, user_created, labels)
                .await
                .map_err(remote_err),
        }
    }

    /// Removes snapshot `name` (merging it into its child).
    pub async fn remove_snapshot(&self, name: &str) -> Result<()> {
        match self {
            Backend::Local(r) => {
                let name = name.to_string();
                blocking_traced("replica.remove_snapshot", r, move |r| {
                    r.remove_snapshot(&name)
                })
                .await
            }
            Backend::Remote(c) => c.remove_snapshot(name).await.map_err(remote_err),
        }
    }

    /// Reverts to snapshot `name`.
    pub async fn revert(&self, name: &str) -> Result<()> {
        match self {
            Backend::Local(r) => {
                let name = name.to_string();
                blocking_traced("replica.revert", r, move |r| r.revert(&name)).await
            }
            Backend::Remote(c) => c.revert(name).await.map_err(remote_err),
        }
    }

    /// Allocated extents of one layer.
    pub async fn layer_extents(&self, layer: &str) -> Result<Vec<Extent>> {
        match self {
            Backend::Local(r) => {
                let layer = layer.to_string();
                blocking_traced("replica.layer_extents", r, move |r| r.layer_extents(&layer)).await
            }
            Backend::Remote(c) => c.layer_extents(layer).await.map_err(remote_err),
        }
    }

    /// Raw read of one layer.
    pub async fn read_layer(&self, layer: &str, offset: u64, len: u32) -> Result<Bytes> {
        match self {
            Backend::Local(r) => {
                let layer = layer.to_string();
                blocking_traced("replica.read_layer", r, move |r| {
                    let mut buf = vec![0u8; len as usize];
                    r.read_layer(&layer, offset, &mut buf)?;
                    Ok(Bytes::from(buf))
                })
                .await
            }
            Backend::Remote(c) => c.read_layer(layer, offset, len).await.map_err(remote_err),
        }
    }

    /// Checksum of a read-only layer.
    pub async fn layer_checksum(&self, layer: &str) -> Result<Checksum> {
        match self {
            Backend::Local(r) => {
                let layer = layer.to_string();
                blocking_traced("replica.layer_checksum", r, move |r| {
                    r.layer_checksum(&layer)
                })
                .await
            }
            Backend::Remote(c) => c.layer_checksum(layer).await.map_err(remote_err),
        }
    }

    /// Starts receiving a layer.
    pub async fn stage_layer(&self, info: &LayerInfo) -> Result<()> {
        match self {
            Backend::Local(r) => {
                let info = info.clone();
                blocking_traced("replica.stage_layer", r, move |r| r.stage_layer(&info)).await
            }
            Backend::Remote(c) => c.stage_layer(info).await.map_err(remote_err),
        }
    }

    /// Writes into a staged layer.
    pub async fn write_staged(&self, layer: &str, offset: u64, data: Bytes) -> Result<()> {
        match self {
            Backend::Local(r) => {
                let layer = layer.to_string();
                blocking_traced("replica.write_staged", r, move |r| {
                    r.write_staged(&layer, offset, &data)
                })
                .await
            }
            Backend::Remote(c) => c
                .write_staged(layer, offset, data)
                .await
                .map_err(remote_err),
        }
    }

    /// Adopts `revision` and persists it.
    pub async fn set_revision(&self, revision: u64) -> Result<()> {
        match self {
            Backend::Local(r) => {
                blocking_traced("replica.set_revision", r, move |r| r.set_revision(revision)).await
            }
            Backend::Remote(c) => c.set_revision(revision).await.map_err(remote_err),
        }
    }

    /// Persists the in-sync `generation` the replica joins
    /// ([`Replica::join_generation`]), admitted under the engine's epoch.
    pub async fn join_generation(&self, generation: u64) -> Result<()> {
        match self {
            Backend::Local(r) => {
                blocking_traced("replica.join_generation", r, move |r| {
                    r.join_generation(generation)
                })
                .await
            }
            Backend::Remote(c) => c.join_generation(generation).await.map_err(remote_err),
        }
    }

    /// Installs a received chain.
    pub async fn install_chain(&self, layers: &[LayerInfo]) -> Result<()> {
        match self {
            Backend::Local(r) => {
                let layers = layers.to_vec();
                blocking_traced("replica.install_chain", r, move |r| {
                    r.install_chain(&layers)
                })
                .await
            }
            Backend::Remote(c) => c.install_chain(layers).await.map_err(remote_err),
        }
    }
}
