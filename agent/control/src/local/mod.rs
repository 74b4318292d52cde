//! This node's local resources: its disks, the replicas open on them, the
//! engines running here, what the NBD listeners serve, and how an engine
//! reaches a replica. The controllers act on them; the daemon creates them
//! and serves them on its listeners.

pub mod backends;
pub mod disks;
pub mod engines;
pub mod frontend;
pub mod names;
pub mod replicas;
