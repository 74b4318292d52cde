//! An engine object: the volume's controller instance on the node it is
//! attached to. One per attached volume, named after the volume.

use serde::{Deserialize, Serialize};

use super::{InstanceState, Object};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Engine {
    /// The volume's name.
    pub name: String,
    pub spec: EngineSpec,
    pub status: EngineStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineSpec {
    /// Node that runs it.
    pub node: String,
    /// True while the engine should run; false asks its node to stop it.
    pub run: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineStatus {
    pub state: InstanceState,
    /// `nbd://host:port/volume` while running.
    #[serde(default)]
    pub endpoint: String,
    /// `nbd+unix:///volume?socket=...` while running.
    #[serde(default)]
    pub unix_endpoint: String,
    #[serde(default)]
    pub message: String,
}

impl Engine {
    pub fn new(volume: &str, node: &str) -> Engine {
        Engine {
            name: volume.to_string(),
            spec: EngineSpec {
                node: node.to_string(),
                run: true,
            },
            status: EngineStatus {
                state: InstanceState::Starting,
                endpoint: String::new(),
                unix_endpoint: String::new(),
                message: String::new(),
            },
        }
    }
}

impl Object for Engine {
    const PREFIX: &'static str = "engines/";
    const KIND: &'static str = "engine";
    fn name(&self) -> &str {
        &self.name
    }
}
