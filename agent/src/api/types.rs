//! Request and response bodies of the HTTP API, shared by the server and the
//! CLI (one binary, one definition).

use serde::{Deserialize, Serialize};
use vigil_engine::engine::EngineStatus;
use vigil_engine::replica::{LayerInfo, ReplicaInfo, VerifyReport};

/// `GET /v1/node`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Advertised replica server `host:port`.
    pub replica_address: String,
    /// Advertised NBD server `host:port`.
    pub nbd_address: String,
    /// NBD unix socket path.
    pub nbd_socket: String,
    /// Data directory.
    pub data_dir: String,
}

/// `POST /v1/replicas`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateReplica {
    /// Replica name.
    pub name: String,
    /// Size: bytes or with a unit (`64MiB`).
    pub size: String,
}

/// A replica on this agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaView {
    /// Replica name.
    pub name: String,
    /// Its address for `engine create --replica`.
    pub url: String,
    /// Directory on disk.
    pub dir: String,
    /// Size, revision, generation, chain.
    pub info: ReplicaInfo,
}

/// `POST /v1/engines`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateEngine {
    /// Volume name (the NBD export name).
    pub name: String,
    /// Size: bytes or with a unit.
    pub size: String,
    /// Replica addresses, `tcp://host:port/name`.
    pub replicas: Vec<String>,
}

/// An engine on this agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineView {
    /// `nbd://host:port/NAME`.
    pub nbd_uri: String,
    /// `nbd+unix:///NAME?socket=PATH`.
    pub nbd_unix_uri: String,
    /// Robustness and each replica.
    #[serde(flatten)]
    pub status: EngineStatus,
}

/// `POST /v1/engines/NAME/replicas`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddReplica {
    /// `tcp://host:port/name`.
    pub url: String,
}

/// `POST /v1/engines/NAME/snapshots`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateSnapshot {
    /// Snapshot name; generated when absent.
    pub name: Option<String>,
}

/// `GET /v1/engines/NAME/snapshots`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotList {
    /// The chain, bottom to head.
    pub chain: Vec<LayerInfo>,
}

/// `GET /v1/replicas/NAME/verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyView {
    /// Replica name.
    pub name: String,
    /// True when no problem was found.
    pub ok: bool,
    /// The report.
    #[serde(flatten)]
    pub report: VerifyReport,
}

/// Every error body: a stable code and a message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable, machine-readable code, e.g. `invalid_size`.
    pub code: String,
    /// For humans.
    pub message: String,
}
