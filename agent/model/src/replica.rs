//! A replica object: one copy of a volume on one disk of one node.

use serde::{Deserialize, Serialize};

use super::{InstanceState, Object};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replica {
    /// `<volume>-r-<8 hex>`; also the replica's directory name on its disk.
    pub name: String,
    pub spec: ReplicaSpec,
    pub status: ReplicaStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaSpec {
    pub volume: String,
    pub node: String,
    /// UUID of the disk it lives on.
    pub disk: String,
    /// Volume size in bytes.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub state: InstanceState,
    /// `tcp://host:port/name` while running.
    #[serde(default)]
    pub address: String,
    /// Why it is in `error`, or what it is waiting for.
    #[serde(default)]
    pub message: String,
    /// Mode in the engine (`RW`, `WO`, `ERR`) while the volume is attached.
    #[serde(default)]
    pub mode: ReplicaMode,
    /// Why the engine took it out of service (written by the engine's agent
    /// while the replica is ERR there; cleared once it is RW again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<ReplicaFault>,
    /// The current or last rebuild into it (written by the engine's agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<ReplicaRebuild>,
    /// A problem its own agent found in its files (missing, truncated or
    /// corrupt layer), cleared when a check finds the chain whole again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<IntegrityProblem>,
    /// Bytes its layer files allocate, as its own agent last saw (updated
    /// when it moves by a MiB or more).
    #[serde(default)]
    pub actual_size_bytes: u64,
    /// Its data is gone for good (its disk was replaced or its directory
    /// wiped), as its own agent found: it never comes back, so it is
    /// replaced at once and removed from the volume (no replenishment wait).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
    /// When its own agent last reset it — deleted its damaged files and
    /// created it again empty, to be rebuilt in full (Unix seconds; 0 =
    /// never). A reset newer than the engine's fault makes it due for a
    /// rebuild at once.
    #[serde(default)]
    pub reset_unix: u64,
    /// When its own agent last verified its whole chain (every read-only
    /// layer's data against its checksum) after a reset and rebuild (Unix
    /// seconds; 0 = never). Older than `reset_unix` means not yet.
    #[serde(default)]
    pub verified_unix: u64,
    /// The checksums of its read-only layers, recomputed from the data by
    /// its own agent every `integrity-check-interval`, for the volume's
    /// owner to compare across replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_checksums: Option<LayerChecksums>,
}

/// A replica's read-only layers' checksums as computed from the data on
/// its disk at one time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerChecksums {
    /// When they were computed (Unix seconds).
    pub computed_unix: u64,
    /// Layer name → its checksum and file.
    pub layers: std::collections::BTreeMap<String, LayerSum>,
}

/// One layer's checksum (method:value) and the file it was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSum {
    pub checksum: String,
    pub file: String,
}

/// The engine's record of why a replica is ERR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaFault {
    /// Stable reason (`connection_lost`, `io_error`, ...; the engine's
    /// `FaultReason::as_str`).
    pub reason: String,
    /// The last error seen, verbatim.
    pub message: String,
    /// When it was marked ERR (Unix seconds).
    pub at_unix: u64,
}

/// A rebuild into a replica, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRebuild {
    /// Address of the replica copied from.
    pub source: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub started_unix: u64,
    /// Set once it finished (successfully or not).
    #[serde(default)]
    pub finished_unix: Option<u64>,
    /// Last time `bytes_done` moved (Unix seconds): a rebuild whose
    /// progress is old is stuck.
    pub progressed_unix: u64,
}

/// What is wrong with a replica's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntegrityKind {
    /// A layer file named by the chain is not there.
    Missing,
    /// A layer file is shorter than its metadata says.
    Truncated,
    /// A layer's checksum or metadata does not match.
    Corrupt,
    /// The files could not be read at all.
    Unreadable,
}

impl IntegrityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IntegrityKind::Missing => "missing",
            IntegrityKind::Truncated => "truncated",
            IntegrityKind::Corrupt => "corrupt",
            IntegrityKind::Unreadable => "unreadable",
        }
    }
}

/// A problem found in a replica's files by its agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityProblem {
    pub kind: IntegrityKind,
    /// The file concerned (full path on its node).
    pub file: String,
    /// What the check said.
    pub message: String,
    /// When it was found (Unix seconds).
    pub found_unix: u64,
}

impl Replica {
    /// A new replica object, not yet created on its node.
    pub fn new(name: String, spec: ReplicaSpec) -> Replica {
        Replica {
            name,
            spec,
            status: ReplicaStatus {
                state: InstanceState::Starting,
                address: String::new(),
                message: String::new(),
                mode: ReplicaMode::Unreported,
                fault: None,
                rebuild: None,
                integrity: None,
                actual_size_bytes: 0,
                lost: false,
                reset_unix: 0,
                verified_unix: 0,
                layer_checksums: None,
            },
        }
    }
}

impl Object for Replica {
    const PREFIX: &'static str = "replicas/";
    const KIND: &'static str = "replica";
    fn name(&self) -> &str {
        &self.name
    }
}

/// A replica's mode in its volume's engine, as the engine's agent last
/// reported it. Stored and shown as the engine shows it (`RW`, `WO`,
/// `ERR`), and as `""` before any engine reported one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ReplicaMode {
    /// No engine has reported a mode (never attached, or not yet).
    #[default]
    #[serde(rename = "")]
    Unreported,
    /// In sync: serves reads and takes writes.
    #[serde(rename = "RW")]
    ReadWrite,
    /// Takes writes while a rebuild fills in older data.
    #[serde(rename = "WO")]
    WriteOnly,
    /// Out of service in the engine (its `fault` says why).
    #[serde(rename = "ERR")]
    Error,
}

impl ReplicaMode {
    /// `RW`, `WO`, `ERR` or `""`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaMode::Unreported => "",
            ReplicaMode::ReadWrite => "RW",
            ReplicaMode::WriteOnly => "WO",
            ReplicaMode::Error => "ERR",
        }
    }

    /// RW, or never in an engine yet: the replica holds the whole data as
    /// far as anyone knows (what "healthy" counts for a detached volume).
    pub fn is_rw_or_unreported(self) -> bool {
        matches!(self, ReplicaMode::ReadWrite | ReplicaMode::Unreported)
    }
}

impl From<vigil_engine::engine::Mode> for ReplicaMode {
    fn from(m: vigil_engine::engine::Mode) -> Self {
        match m {
            vigil_engine::engine::Mode::ReadWrite => ReplicaMode::ReadWrite,
            vigil_engine::engine::Mode::WriteOnly => ReplicaMode::WriteOnly,
            vigil_engine::engine::Mode::Error => ReplicaMode::Error,
        }
    }
}

impl std::fmt::Display for ReplicaMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
