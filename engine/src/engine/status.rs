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

/// How an engine learnt that a newer one took its volume over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FencedByNewer {
    /// The replica that refused this engine.
    pub replica: String,
    /// What it said (names the newer epoch).
    pub message: String,
    /// When, seconds since the Unix epoch.
    pub at_unix: u64,
}

impl std::fmt::Display for FencedByNewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "engine fenced: replica {} refused it ({}); a newer engine owns the volume",
            self.replica, self.message
        )
    }
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
    /// When faulted or fenced, why — naming every replica and its reason,
    /// or the newer engine that took the volume over.
    pub unavailable_reason: Option<String>,
    /// This engine's epoch: taken from the cluster store at its start; each
    /// replica refuses every engine older than the newest that claimed it.
    #[serde(default)]
    pub epoch: u64,
    /// Set when a replica refused this engine because a newer engine
    /// claimed it: the engine no longer owns the volume and fails every
    /// request. Faulted from then on.
    #[serde(default)]
    pub fenced_by_newer: Option<FencedByNewer>,
    /// Set while replica I/O is suspended (the agent could not renew its
    /// node lease): why, since when, and what clients see meanwhile.
    #[serde(default)]
    pub suspended: Option<super::Suspended>,
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
        let fenced_by_newer = self.fenced_by_newer();
        let robustness = if rw == 0 || fenced_by_newer.is_some() {
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
            unavailable_reason: match &fenced_by_newer {
                Some(f) => Some(f.to_string()),
                None if rw == 0 => Some(self.why_unavailable()),
                None => self.below_min_rw(),
            },
            epoch: self.epoch,
            fenced_by_newer,
            suspended: self.suspended(),
            replicas,
        }
    }
}
