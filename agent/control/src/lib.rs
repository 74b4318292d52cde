//! vigil's control plane: typed access to the cluster store ([`cluster`],
//! the only code that encodes store keys) and replica placement
//! ([`scheduler`], a pure function). The controllers that turn what users
//! asked for into what runs move here from the binary as they lose their
//! dependency on the whole agent (issue 19).

pub mod checksums;
pub mod cluster;
pub mod controller;
pub mod health;
pub mod local;
pub mod scheduler;
