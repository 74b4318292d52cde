//! A replica's mode inside an engine and the typed reason it left service.
//!
//! Transitions (the only ones the engine makes):
//! * `WO → RW`  — a rebuild finished and the replica holds the full chain.
//! * `RW → ERR`, `WO → ERR` — a request failed or timed out, the connection
//!   broke, or a ping went unanswered; the [`Fault`] records why and when.
//!
//! ERR is terminal for the slot: a replica comes back only by being added
//! again, which starts a rebuild in WO. A new engine starts its replicas RW,
//! except those whose persisted revision is behind the newest (ERR, stale).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::protocol::ClientError;
use crate::replica::{ErrorKind, ReplicaError};

/// The mode of one replica in an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Read-write: in sync, serves reads and receives writes.
    #[serde(rename = "RW")]
    ReadWrite,
    /// Write-only: receives writes while a rebuild fills in older data.
    #[serde(rename = "WO")]
    WriteOnly,
    /// Out of service, with a [`Fault`] saying why.
    #[serde(rename = "ERR")]
    Error,
}

impl Mode {
    /// `RW`, `WO` or `ERR`, as the API and the model show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ReadWrite => "RW",
            Mode::WriteOnly => "WO",
            Mode::Error => "ERR",
        }
    }
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Mode::ReadWrite => 0,
            Mode::WriteOnly => 1,
            Mode::Error => 2,
        }
    }
    pub(crate) fn from_u8(v: u8) -> Mode {
        match v {
            0 => Mode::ReadWrite,
            1 => Mode::WriteOnly,
            _ => Mode::Error,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::ReadWrite => "RW",
            Mode::WriteOnly => "WO",
            Mode::Error => "ERR",
        })
    }
}

/// Why a replica was marked ERR. Stable snake_case names: they appear in the
/// API, in logs and as the `reason` label of `vigil_replica_faults_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultReason {
    /// The replica's disk returned an I/O error.
    IoError,
    /// The replica's disk is full.
    NoSpace,
    /// A request or ping got no answer in time (frozen process, hung disk).
    Timeout,
    /// The TCP connection to the replica broke (process died, network cut).
    ConnectionLost,
    /// The replica server could not be reached at all.
    Unreachable,
    /// The replica server refused us (token, version, unknown replica).
    Refused,
    /// The replica's data or metadata failed a consistency check.
    ChecksumMismatch,
    /// The replica does not match the volume (size) or answered nonsense.
    Invalid,
    /// A rebuild into this replica failed.
    RebuildFailed,
    /// At engine start its persisted revision was behind the others': it
    /// missed writes (it was ERR, or crashed before a flush) and needs a rebuild.
    Stale,
    /// A newer engine claimed the replica (a higher epoch): this engine no
    /// longer owns the volume. Not the replica's fault: the engine fences
    /// itself and fails every request.
    Fenced,
}

impl FaultReason {
    /// Stable name, e.g. `connection_lost`.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultReason::IoError => "io_error",
            FaultReason::NoSpace => "no_space",
            FaultReason::Timeout => "timeout",
            FaultReason::ConnectionLost => "connection_lost",
            FaultReason::Unreachable => "unreachable",
            FaultReason::Refused => "refused",
            FaultReason::ChecksumMismatch => "checksum_mismatch",
            FaultReason::Invalid => "invalid",
            FaultReason::RebuildFailed => "rebuild_failed",
            FaultReason::Stale => "stale",
            FaultReason::Fenced => "fenced",
        }
    }

    /// The reason a failed replica request implies.
    pub fn of_client_error(e: &ClientError) -> FaultReason {
        match e {
            ClientError::Connect { .. } => FaultReason::Unreachable,
            ClientError::Refused { .. } => FaultReason::Refused,
            ClientError::ConnectionLost(_) => FaultReason::ConnectionLost,
            ClientError::Remote { kind, .. } => FaultReason::of_kind(*kind),
            ClientError::Protocol(_) => FaultReason::Invalid,
        }
    }

    /// The reason a failed local replica call implies.
    pub fn of_replica_error(e: &ReplicaError) -> FaultReason {
        FaultReason::of_kind(e.kind())
    }

    fn of_kind(kind: ErrorKind) -> FaultReason {
        match kind {
            ErrorKind::Io => FaultReason::IoError,
            ErrorKind::NoSpace => FaultReason::NoSpace,
            ErrorKind::Corrupt => FaultReason::ChecksumMismatch,
            ErrorKind::StaleEpoch => FaultReason::Fenced,
            ErrorKind::InvalidArgument | ErrorKind::NotFound | ErrorKind::AlreadyExists => {
                FaultReason::Invalid
            }
        }
    }
}

impl fmt::Display for FaultReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A replica's departure from service: why, when, and the error that did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// The typed reason.
    pub reason: FaultReason,
    /// When, seconds since the Unix epoch.
    pub at_unix: u64,
    /// The last error seen, verbatim.
    pub last_error: String,
}

impl Fault {
    /// A fault happening now.
    pub fn now(reason: FaultReason, last_error: impl Into<String>) -> Fault {
        Fault {
            reason,
            at_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            last_error: last_error.into(),
        }
    }
}
