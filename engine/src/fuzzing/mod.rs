//! The bodies of the fuzz targets (feature `fuzzing`): each takes the
//! fuzzer's bytes, drives the real decoder that reads them from the network
//! or the disk, and panics only when a property fails — a decoder that
//! panics, or one that answers neither a valid value nor a typed error, or a
//! value that does not survive a round trip.
//!
//! The same functions are called by the fuzz binaries in `fuzz/` (one per
//! [`TARGETS`] entry, under `cargo afl`) and by the corpus replay test
//! (`tests/tests/fuzz_corpus.rs`), so the committed corpus is checked by
//! every CI run with no fuzzer installed. See `docs/fuzzing.md`.
//!
//! * [`nbd`]: option haggling and transmission requests, through the real
//!   NBD connection code over an in-memory stream.
//! * [`protocol`]: replica-protocol frames and messages, and both sides of
//!   the handshake.
//! * [`metadata`]: `replica.json`, the layers' `.meta` files and the state
//!   record, through [`Replica::open`](crate::replica::Replica::open).

pub mod metadata;
pub mod nbd;
pub mod protocol;
mod seeds;

pub use seeds::seeds;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// What a target made of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The input decoded into a valid value (a negotiated export, a
    /// message, an open replica...) and every property held.
    Accepted,
    /// The input was refused with a typed error, and every property held.
    Refused,
}

/// One fuzz target: its name (the fuzz binary and `fuzz/corpus/<name>/`)
/// and its body.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]) -> Outcome,
}

/// Every target, in the order `bench/fuzz.sh` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "nbd_handshake",
        run: nbd::handshake,
    },
    Target {
        name: "nbd_transmission",
        run: nbd::transmission,
    },
    Target {
        name: "protocol_frame",
        run: protocol::frames,
    },
    Target {
        name: "protocol_handshake",
        run: protocol::handshake,
    },
    Target {
        name: "replica_metadata",
        run: metadata::replica_metadata,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|t| t.name == name)
}

/// Does whatever a target needs once per process before the fuzzer forks
/// (the metadata target's template replica). Fuzz binaries call it before
/// entering the fuzz loop; calling it is optional elsewhere.
pub fn prepare() {
    metadata::prepare();
}

/// Runs `fut` to completion on a runtime of its own (current thread, time
/// and I/O enabled) that is dropped afterwards, so no task of one input
/// outlives it into the next.
fn block_on<F: Future>(fut: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("fuzz harness: cannot build a tokio runtime: {e}"));
    rt.block_on(fut)
}

/// An `AsyncWrite` that keeps everything written to it, readable after the
/// writer was moved into (and dropped by) the code under test.
#[derive(Debug, Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Big-endian integers at a position of an output the harness checks; the
/// caller checked the length.
fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}
