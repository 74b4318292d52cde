//! Hooks that let the engine take part in distributed traces without
//! depending on OpenTelemetry: the engine uses `tracing` only, and the agent
//! registers, once at startup, how to turn the current span into a W3C
//! `traceparent` string and how to make a span the child of one.
//!
//! Without hooks (the agent exports no traces) nothing is injected or
//! attached, and the cost of a request is one atomic load.
//!
//! Also here: the sampling rate of data-path I/O spans (NBD requests).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest trace context carried on the wire (a `traceparent` is 55 bytes).
pub const MAX_TRACE_CONTEXT_LEN: usize = 255;

/// The two functions the agent provides.
#[derive(Debug, Clone, Copy)]
struct Hooks {
    inject: fn() -> Option<String>,
    attach: fn(&tracing::Span, &str),
}

static HOOKS: OnceLock<Hooks> = OnceLock::new();

/// Registers the hooks: `inject` returns the current span's context (or
/// `None` outside a traced span); `attach` makes `span` (not yet entered) a
/// child of the remote context `ctx`. Set once; returns false if hooks were
/// already set (the first ones stay).
pub fn set_hooks(inject: fn() -> Option<String>, attach: fn(&tracing::Span, &str)) -> bool {
    HOOKS.set(Hooks { inject, attach }).is_ok()
}

/// True once hooks are registered (traces are exported).
pub fn enabled() -> bool {
    HOOKS.get().is_some()
}

/// The current span's context to send with a request, if any. Contexts the
/// wire cannot carry (empty, too long, not printable ASCII) are dropped.
pub fn inject() -> Option<String> {
    let ctx = (HOOKS.get()?.inject)()?;
    valid(ctx.as_bytes()).then_some(ctx)
}

/// Makes `span` a child of the remote context `ctx` (no-op without hooks).
pub fn attach(span: &tracing::Span, ctx: &str) {
    if let Some(h) = HOOKS.get() {
        (h.attach)(span, ctx);
    }
}

/// Whether `ctx` may be carried on the wire: 1..=255 bytes of printable ASCII.
pub(crate) fn valid(ctx: &[u8]) -> bool {
    !ctx.is_empty()
        && ctx.len() <= MAX_TRACE_CONTEXT_LEN
        && ctx.iter().all(|b| (0x20..0x7f).contains(b))
}

/// Sampling threshold for data-path I/O spans: a request is traced when a
/// random u64 is below it; 0 means never.
static IO_SAMPLE_THRESHOLD: AtomicU64 = AtomicU64::new(0);

/// Sets the fraction (0..=1, clamped; NaN is 0) of NBD requests that get a
/// span of their own.
pub fn set_io_sample_rate(rate: f64) {
    let rate = if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    };
    let threshold = if rate >= 1.0 {
        u64::MAX
    } else {
        // Truncation intended: rate < 1 keeps the product below 2^64.
        (rate * u64::MAX as f64) as u64
    };
    IO_SAMPLE_THRESHOLD.store(threshold, Ordering::Relaxed);
}

/// Whether this I/O request is sampled. With a rate of 0 this is one load
/// and one branch.
#[inline]
pub fn sample_io() -> bool {
    let t = IO_SAMPLE_THRESHOLD.load(Ordering::Relaxed);
    t != 0 && (t == u64::MAX || rand::random::<u64>() < t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity() {
        assert!(valid(
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid(b""));
        assert!(!valid(&[b'a'; 256]));
        assert!(valid(&[b'a'; 255]));
        assert!(!valid(b"00-\n"));
        assert!(!valid("é".as_bytes()));
    }

    #[test]
    fn sampling_rates() {
        set_io_sample_rate(0.0);
        assert!((0..1000).all(|_| !sample_io()));
        set_io_sample_rate(1.0);
        assert!((0..1000).all(|_| sample_io()));
        set_io_sample_rate(f64::NAN);
        assert!(!sample_io());
        set_io_sample_rate(0.5);
        let n = (0..10_000).filter(|_| sample_io()).count();
        assert!((4000..6000).contains(&n), "{n}");
        set_io_sample_rate(0.0);
    }
}
