//! Request and response bodies of the HTTP API, shared by the server and the
//! CLI (one binary, one definition).

use serde::{Deserialize, Serialize};
use vigil_engine::engine::EngineStatus;
pub use vigil_engine::replica::{LayerInfo, ReplicaInfo, VerifyReport};

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
    /// One line per item, when the error is about several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// `POST /v1/volumes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateVolume {
    pub name: String,
    /// Bytes or with a unit (`64MiB`).
    pub size: String,
    /// Desired replicas (default: the `default-replica-count` setting).
    #[serde(default)]
    pub replicas: Option<u32>,
    /// `disabled`, `best-effort` or `strict-local` (default: the
    /// `default-data-locality` setting).
    #[serde(default)]
    pub data_locality: Option<String>,
    /// Node tags the replicas' nodes must carry.
    #[serde(default)]
    pub node_tags: Vec<String>,
    /// Disk tags the replicas' disks must carry.
    #[serde(default)]
    pub disk_tags: Vec<String>,
}

/// `POST /v1/volumes/NAME/attach`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct AttachVolume {
    /// Node to attach to (default: the node answering the request).
    #[serde(default)]
    pub node: Option<String>,
}

/// `POST /v1/volumes/NAME/expand`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExpandVolume {
    pub size: String,
}

/// `POST /v1/volumes/V/salvage`: make `replica` the volume's only in-sync
/// member, giving up what only the members held.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SalvageVolume {
    pub replica: String,
    #[serde(default)]
    pub accept_data_loss: bool,
}

/// A volume as `vigil volume get` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeView {
    pub name: String,
    pub size: u64,
    /// Desired number of replicas.
    pub number_of_replicas: u32,
    pub data_locality: String,
    /// `creating`, `detached`, `attaching`, `attached`, `detaching`, `deleting`.
    pub state: String,
    /// `healthy`, `degraded`, `faulted`, or `unknown` while detached.
    pub robustness: String,
    /// Node whose engine serves it.
    pub attached_node: Option<String>,
    /// Node the user asked to attach it to.
    pub desired_node: Option<String>,
    /// `nbd://host:port/NAME` while attached.
    pub endpoint: String,
    /// What it is waiting for or why it cannot progress.
    pub message: String,
    /// Scheduling notes (relaxed soft rules, unplaced replicas per node).
    pub scheduling: Vec<String>,
    pub node_tags: Vec<String>,
    pub disk_tags: Vec<String>,
    pub created_at: f64,
    /// State changes so far (`status.transitions`): an observer that sees
    /// it grow by exactly one saw every transition.
    #[serde(default)]
    pub transitions: u64,
    /// A live migration in progress: target, phase, since when, why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<crate::migration::Migration>,
    /// A maintenance engine rebuilding replicas of this detached volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<crate::maintenance::Maintenance>,
    pub replicas: Vec<VolumeReplicaView>,
}

/// One replica of a volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeReplicaView {
    pub name: String,
    pub node: String,
    /// Disk UUID.
    pub disk: String,
    /// Disk path on its node.
    pub disk_path: String,
    /// Instance state: `starting`, `running`, `stopping`, `stopped`, `error`.
    pub state: String,
    /// Engine mode while attached: `RW`, `WO`, `ERR` (empty when detached).
    pub mode: crate::replica::ReplicaMode,
    pub address: String,
    pub message: String,
    /// Why the engine took it out of service (while ERR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<crate::replica::ReplicaFault>,
    /// The current or last rebuild into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<crate::replica::ReplicaRebuild>,
    /// What its agent found wrong with its files, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<crate::replica::IntegrityProblem>,
    /// Bytes its layer files allocate.
    #[serde(default)]
    pub actual_size_bytes: u64,
}

/// A node of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterNodeView {
    pub name: String,
    /// Whether its agent holds its liveness lease.
    pub ready: bool,
    pub api_address: String,
    pub replica_address: String,
    pub nbd_address: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub allow_scheduling: bool,
    pub eviction_requested: bool,
    /// The eviction's progress while one is requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction: Option<crate::eviction::Eviction>,
    /// The kernel's view of the node's I/O (eBPF), when its agent traces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_io: Option<crate::kernel_io::KernelIo>,
    pub version: String,
    pub store: String,
    pub disks: Vec<DiskView>,
}

/// `POST /v1/nodes/NAME`: fields to change.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct UpdateNode {
    #[serde(default)]
    pub allow_scheduling: Option<bool>,
    #[serde(default)]
    pub eviction_requested: Option<bool>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

/// A disk of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskView {
    pub uuid: String,
    pub node: String,
    pub path: String,
    /// `ready`, `missing` or `replaced`.
    pub state: String,
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub scheduled_bytes: u64,
    pub reserved_bytes: u64,
    pub allow_scheduling: bool,
    pub tags: Vec<String>,
    pub message: String,
}

/// A setting with its definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SettingView {
    pub name: String,
    pub value: String,
    pub default: String,
    pub is_default: bool,
    pub allowed: String,
    pub description: String,
}

/// `PUT /v1/settings/NAME`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetSetting {
    pub value: String,
}

/// `POST /v1/volumes/NAME/migrate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrateVolume {
    /// The node the volume moves to.
    pub to: String,
}

/// Answer of `POST /v1/uninstall` and `GET /v1/uninstall`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UninstallReply {
    /// `started` (this call claimed it), `in_progress` (claimed before, by
    /// `uninstall.by_node`), `done`, or `none` (status: nothing asked).
    pub outcome: String,
    /// One line for humans.
    pub message: String,
    /// The record, when there is one.
    pub uninstall: Option<crate::uninstall::Uninstall>,
}

/// `DELETE /v1/engines/NAME/snapshots/SNAP` (and the volume's route).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRemoved {
    /// The snapshot removed.
    pub removed: String,
}

/// `POST /v1/engines/NAME/snapshots/SNAP/revert` (and the volume's route).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotReverted {
    /// The snapshot the volume now starts from.
    pub reverted_to: String,
}

/// `DELETE /v1/replicas/NAME`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaDeleted {
    /// The replica deleted.
    pub deleted: String,
}

/// `GET /v1/logs?limit=N`: this agent's newest log lines (each a JSON
/// object as text), oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLines {
    pub lines: Vec<String>,
}
