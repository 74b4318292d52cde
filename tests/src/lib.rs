//! Shared harness of the integration tests: start real `vigil agent`
//! processes, drive them with the real `vigil` CLI, run real NBD clients.
//! Tests live in `tests/tests/*.rs`, one scenario per file.

#![allow(clippy::unwrap_used)] // test harness: a failed step should fail the test loudly

pub mod agent;
pub mod bundle;
pub mod cluster;
pub mod doctor;
pub mod ebpf;
pub mod etcd;
pub mod faults;
pub mod fsvolume;
pub mod keep_logs;
pub mod nemesis;
pub mod netns;
pub mod otlp;
pub mod prom;
pub mod prometheus;
pub mod tools;

pub use agent::Agent;
pub use cluster::{Cluster, ClusterBuilder};
pub use etcd::Etcd;
