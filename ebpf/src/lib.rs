//! vigil's eBPF programs and their reader.
//!
//! The programs are C (`bpf/vigil.bpf.c`, GPL), compiled with clang for the
//! bpf target; the compiled object is committed (`bpf/vigil.bpf.o`) and
//! embedded here, so building vigil needs no clang. `tests/object.rs`
//! rebuilds it from source and fails when the result no longer has the
//! programs and map layouts this crate expects.
//!
//! This crate loads and attaches the programs ([`Tracer::load`]), takes the
//! filters from the agent ([`Tracer::set_files`], [`Tracer::set_devices`],
//! [`Tracer::set_peers`]) and reads the kernel's histograms and counters
//! into plain values ([`Tracer::read`] → [`Snapshot`]). What to trace and
//! what the figures mean is the agent's business.

pub mod layout;
pub mod shape;
mod snapshot;
mod tracer;
mod unavailable;

pub use snapshot::*;
pub use tracer::{ATTACHMENTS, PeerUpdate, Probe, Tracer, TracerError};
pub use unavailable::{Reason, Unavailable};

/// The compiled programs (built from `bpf/vigil.bpf.c`, see the top of it).
pub static OBJECT: &[u8] = include_bytes!("../bpf/vigil.bpf.o");

/// The kernel's dev_t encoding (MAJOR << 20 | MINOR), as block tracepoints
/// report it, from a major and minor number.
pub fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xf_ffff)
}

#[cfg(test)]
mod tests;
