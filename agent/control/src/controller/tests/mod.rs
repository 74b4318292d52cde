//! The controllers' unit tests. `cluster_only` drives the controllers that
//! need only the cluster against the embedded store; the others run a
//! [`bed::Bed`] of agents in this process (real replicas, engines and
//! servers on loopback, no controller loop) and step it round by round.

mod bed;
mod cluster_only;
mod maintenance;
mod migration;
mod registration;
mod replace;
mod uninstall;
mod volumes;
