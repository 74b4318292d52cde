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
    pub mode: String,
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
                mode: String::new(),
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
