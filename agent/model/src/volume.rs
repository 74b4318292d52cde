//! A volume: what users create, attach and delete by name.

use serde::{Deserialize, Serialize};

use super::{Object, VolumeState};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub spec: VolumeSpec,
    pub status: VolumeStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// Size in bytes, a multiple of 4096.
    pub size: u64,
    /// Desired number of replicas.
    pub replicas: u32,
    pub data_locality: DataLocality,
    /// Node the user asked to attach it to; `None` when detached or
    /// detaching.
    #[serde(default)]
    pub node: Option<String>,
    /// Node tags its replicas' nodes must carry.
    #[serde(default)]
    pub node_tags: Vec<String>,
    /// Disk tags its replicas' disks must carry.
    #[serde(default)]
    pub disk_tags: Vec<String>,
    /// Unix seconds.
    pub created_at: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeStatus {
    pub state: VolumeState,
    /// `healthy`, `degraded`, `faulted` or `unknown` (detached).
    pub robustness: Robustness,
    /// Node whose engine serves it (set from attaching until detached).
    #[serde(default)]
    pub attached_node: Option<String>,
    /// NBD URI while attached.
    #[serde(default)]
    pub endpoint: String,
    /// Why it cannot progress, or the last scheduling note (e.g. a soft
    /// rule that was relaxed).
    #[serde(default)]
    pub message: String,
    /// Scheduling notes per node, from the last placement.
    #[serde(default)]
    pub scheduling: Vec<String>,
    /// Bumped on every state change; lets observers see each transition.
    #[serde(default)]
    pub transitions: u64,
    /// A live migration in progress (attached volumes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<super::migration::Migration>,
    /// A maintenance engine rebuilding replicas of this detached volume
    /// (see [`super::maintenance`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<super::maintenance::Maintenance>,
    /// The last engine of this volume that a newer one fenced (a replica
    /// refused it for a newer epoch), as its agent recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced: Option<FencedEngine>,
    /// Set while writes wait or fail because fewer replicas are RW than
    /// `min-replicas-to-write` requires: why, in the engine's words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub writes_blocked: String,
}

/// An engine that lost its volume to a newer one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FencedEngine {
    /// The node it ran on.
    pub node: String,
    /// Its epoch.
    pub epoch: u64,
    /// What the refusing replica said (names the newer epoch).
    pub message: String,
    /// When its agent recorded it, seconds since the Unix epoch.
    pub at_unix: u64,
}

/// Where the volume's data lives relative to its engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DataLocality {
    /// Replicas go wherever the scheduler finds room.
    #[default]
    Disabled,
    /// Try to keep one replica on the node the volume is attached to.
    BestEffort,
    /// The only replica must be on the attached node.
    StrictLocal,
}

impl DataLocality {
    pub const ALL: [&'static str; 3] = ["disabled", "best-effort", "strict-local"];
    pub fn as_str(self) -> &'static str {
        match self {
            DataLocality::Disabled => "disabled",
            DataLocality::BestEffort => "best-effort",
            DataLocality::StrictLocal => "strict-local",
        }
    }
}

impl std::str::FromStr for DataLocality {
    type Err = String;
    fn from_str(s: &str) -> Result<DataLocality, String> {
        match s {
            "disabled" => Ok(DataLocality::Disabled),
            "best-effort" => Ok(DataLocality::BestEffort),
            "strict-local" => Ok(DataLocality::StrictLocal),
            _ => Err(format!(
                "unknown data locality {s:?}; allowed: {}",
                DataLocality::ALL.join(", ")
            )),
        }
    }
}

/// How many of the desired replicas are usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Robustness {
    /// Every desired replica is RW.
    Healthy,
    /// Some, not all.
    Degraded,
    /// None.
    Faulted,
    /// Not attached: no engine measures it.
    #[default]
    Unknown,
}

impl Robustness {
    pub fn as_str(self) -> &'static str {
        match self {
            Robustness::Healthy => "healthy",
            Robustness::Degraded => "degraded",
            Robustness::Faulted => "faulted",
            Robustness::Unknown => "unknown",
        }
    }
}

impl Volume {
    /// Moves the volume to `to`, checking the transition table and counting
    /// the change. Every state write goes through here.
    pub fn set_state(&mut self, to: VolumeState) -> Result<(), super::state::TransitionError> {
        self.status.state.check(to)?;
        if self.status.state != to {
            self.status.state = to;
            self.status.transitions += 1;
        }
        Ok(())
    }
}

impl Object for Volume {
    const PREFIX: &'static str = "volumes/";
    const KIND: &'static str = "volume";
    fn name(&self) -> &str {
        &self.name
    }
}
