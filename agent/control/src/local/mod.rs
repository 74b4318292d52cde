//! This node's local resources: its disks, the replicas open on them, the
//! engines running here, what the NBD listeners serve, and how an engine
//! reaches a replica. The controllers act on them; the daemon creates them
//! and serves them on its listeners.

pub mod backends;
pub mod disks;
pub mod engines;
pub mod frontend;
pub mod lease_clock;
pub mod maintenance;
pub mod names;
pub mod replicas;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use vigil_engine::engine::EngineConfig;

use crate::cluster::Cluster;

/// Who this node is and where other nodes and clients reach it: what it
/// registers in its node object.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The node's name (`--node`).
    pub name: String,
    /// Advertised `host:port` of the replica server.
    pub replica_address: String,
    /// Advertised `host:port` of the NBD server.
    pub nbd_address: String,
    /// Path of the NBD unix socket.
    pub nbd_socket: PathBuf,
    /// `http://host:port` of this agent's API, as other agents reach it.
    pub api_address: String,
    /// Node labels (`--label k=v`).
    pub labels: BTreeMap<String, String>,
}

/// What the controllers of one agent act with: this node's identity, the
/// cluster, and its local replicas, engines and backends. The daemon
/// builds one; the API, metrics and the eBPF glue read from it; nothing
/// here knows of listeners, the API token or the CLI.
pub struct Local {
    pub me: Identity,
    /// The cluster state.
    pub cluster: Cluster,
    /// The replicas open on this node's disks.
    pub replicas: Arc<replicas::ReplicaSet>,
    /// The engines this node serves over NBD.
    pub engines: Arc<engines::EngineSet>,
    /// Engines the controllers started (others came from `vigil engine
    /// create` and are left alone).
    pub managed_engines: names::NameSet,
    /// Live-migration target exports (`controller::migration`).
    pub handovers: Arc<frontend::Handovers>,
    /// Maintenance engines of detached volumes (never in `engines`).
    pub maintenance: maintenance::MaintenanceEngines,
    /// Opens replica addresses for this node's engines.
    pub backends: backends::Backends,
    /// When the node's lease was last renewed: engines are suspended when
    /// it cannot be renewed in time (`controller::lease_fence`).
    pub lease_clock: lease_clock::LeaseClock,
    /// How the engines started here are tuned.
    pub engine: EngineConfig,
    /// True while this agent stands still for an uninstall (Cleaning or
    /// Done): when the record disappears it registers again
    /// (`controller::uninstall`).
    pub quiet: std::sync::atomic::AtomicBool,
}

impl Local {
    /// Every engine of this node: the volumes' and the maintenance engines.
    pub fn all_engines(&self) -> Vec<Arc<vigil_engine::engine::Engine>> {
        let mut all = self.engines.all();
        all.extend(self.maintenance.all());
        all
    }
}
