//! What `engine show` reports: the volume's robustness and each replica's
//! mode, fault and rebuild progress.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::{Engine, Fault, Mode};

/// Healthy (every replica RW), degraded (some), faulted (none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Robustness {
    /// Every replica is RW.
    Healthy,
    /// At least one replica is RW, at least one is not.
    Degraded,
    /// No replica is RW: the frontend gets I/O errors.
    Faulted,
}

/// A rebuild into one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildProgress {
    /// The RW replica data is copied from.
    pub source: String,
    /// Bytes copied so far.
    pub bytes_done: u64,
    /// Bytes to copy (allocated data of the layers that differ).
    pub bytes_total: u64,
    /// Layers skipped because the target already had them (same checksum).
    pub layers_skipped: usize,
    /// Layers copied.
    pub layers_copied: usize,
    /// Started, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Finished, if it has.
    pub finished_unix: Option<u64>,
}

/// One replica in `engine show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// `tcp://host:port/name`.
    pub address: String,
    /// Reached in-process (same agent).
    pub local: bool,
    /// RW, WO or ERR.
    pub mode: Mode,
    /// Why it is ERR.
    pub fault: Option<Fault>,
    /// The current or last rebuild into it.
    pub rebuild: Option<RebuildProgress>,
}

/// The whole engine in `engine show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStatus {
    /// Volume name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Healthy, degraded or faulted.
    pub robustness: Robustness,
    /// When faulted, why — naming every replica and its reason.
    pub unavailable_reason: Option<String>,
    /// Each replica.
    pub replicas: Vec<ReplicaStatus>,
}

impl Engine {
    /// A consistent-enough picture of the engine for humans and the API.
    pub fn status(&self) -> EngineStatus {
        let slots = self.slots();
        let replicas: Vec<ReplicaStatus> = slots
            .iter()
            .map(|s| {
                let rebuild = s.rebuild.lock().ok().and_then(|r| r.clone()).map(|mut r| {
                    r.bytes_done = s.rebuild_done.load(Ordering::Relaxed);
                    r
                });
                ReplicaStatus {
                    address: s.address.clone(),
                    local: s.is_local(),
                    mode: s.mode(),
                    fault: s.fault.lock().ok().and_then(|f| f.clone()),
                    rebuild,
                }
            })
            .collect();
        let rw = replicas
            .iter()
            .filter(|r| r.mode == Mode::ReadWrite)
            .count();
        let robustness = if rw == 0 {
            Robustness::Faulted
        } else if rw == replicas.len() {
            Robustness::Healthy
        } else {
            Robustness::Degraded
        };
        EngineStatus {
            name: self.name.clone(),
            size: self.size,
            robustness,
            unavailable_reason: (rw == 0).then(|| self.why_unavailable()),
            replicas,
        }
    }
}
