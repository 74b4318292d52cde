//! vigil's data plane: everything between a block-device client and the bytes
//! on a replica's disk. This crate knows nothing of the control plane; the
//! agent composes replicas and engines and decides what they should be.
//!
//! * [`replica`]  — the replica store: a directory of sparse layer files
//!   (a writable head over read-only snapshots) and crash-safe metadata.
//! * [`protocol`] — the replica protocol: framed, authenticated, pipelined
//!   binary over TCP between an engine and remote replicas.
//! * [`engine`]   — the per-volume replication controller: fans writes out,
//!   reads from one healthy replica, marks failing ones ERR with a reason,
//!   rebuilds new ones.
//! * [`ring`]     — io_uring on tokio's worker threads, for replica file
//!   I/O without a hand-off to the blocking pool.
//! * [`nbd`]      — the NBD frontend that serves engines to unmodified clients.
//! * [`device`]   — the block-device interface between frontend and engine.
//! * [`handover`] — a live migration target's export: forwards to the
//!   source's engine, then switches to its own without dropping clients.
//! * `fuzzing` (feature `fuzzing`) — the bodies of the fuzz targets in
//!   `fuzz/`, replayed over the committed corpus by an ordinary test.

pub mod address;
pub mod device;
pub mod engine;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod handover;
pub mod name;
pub mod nbd;
pub mod protocol;
pub mod replica;
pub mod ring;
pub mod size;
