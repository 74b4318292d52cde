//! vigil's control plane: typed access to the cluster store ([`cluster`],
//! the only code that encodes store keys) and replica placement
//! ([`scheduler`], a pure function), this node's resources ([`local`]) and
//! the controllers that turn what users asked for into what runs
//! ([`controller`]), the pure health checks ([`health`]).

pub mod checksums;
pub mod cluster;
pub mod controller;
pub mod failpoints;
pub mod health;
pub mod local;
pub mod scheduler;
