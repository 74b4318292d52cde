//! Data-path metrics, recorded through the `metrics` facade (the agent
//! installs the Prometheus recorder).
//!
//! Handles are obtained once — per volume and op on the op's first request,
//! per replica on its first write — and kept in structs: a request then
//! costs a load, a few atomic adds and one `Instant` pair, with no label
//! allocation, map lookup or lock. Series appear on first use, so idle
//! volumes cost a scrape almost nothing. A replica fault (rare) registers
//! its series on the spot.
//!
//! The names and labels below are what dashboards and alerts key on; do not
//! rename them.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use metrics::{Counter, Histogram};

use super::FaultReason;
use crate::address::ReplicaAddress;
use crate::device::DeviceError;

/// Frontend requests completed, successful or not. Labels: `volume`, `op`
/// (every [`IoOp`]).
pub const VOLUME_IO_OPS_TOTAL: &str = "vigil_volume_io_ops_total";
/// Bytes of frontend requests that completed successfully. Labels: `volume`,
/// `op` (every [`IoOp`] except `flush`, which moves no bytes). For `trim`
/// and `write_zeroes` it is the length of the range.
pub const VOLUME_IO_BYTES_TOTAL: &str = "vigil_volume_io_bytes_total";
/// Frontend requests answered with an error (including invalid ones, e.g.
/// out of range). Labels: `volume`, `op` (every [`IoOp`]).
pub const VOLUME_IO_ERRORS_TOTAL: &str = "vigil_volume_io_errors_total";
/// Seconds from the engine receiving a frontend request (its
/// [`crate::device::ExportDevice`] method being called) to its answer; a
/// write with FUA includes its flush. Labels: `volume`, `op` (every [`IoOp`]).
pub const VOLUME_IO_LATENCY_SECONDS: &str = "vigil_volume_io_latency_seconds";
/// Seconds one replica took to answer one fan-out leg of a data write, a
/// trim or a write-zeroes (flushes are not included), as the engine saw it:
/// from the fan-out's start to that replica's answer, error or timeout.
/// A frontend write larger than 4 MiB is several legs. Labels: `volume`,
/// `replica` (the replica's name, see [`replica_label`]).
pub const REPLICA_WRITE_LATENCY_SECONDS: &str = "vigil_replica_write_latency_seconds";
/// Replicas leaving service: one per RW→ERR or WO→ERR transition, plus one
/// per replica that is ERR when its engine starts (stale or unopenable).
/// Labels: `volume`, `replica` (its name), `reason`
/// ([`FaultReason::as_str`]).
pub const REPLICA_FAULTS_TOTAL: &str = "vigil_replica_faults_total";

/// Label: the volume's name.
pub const LABEL_VOLUME: &str = "volume";
/// Label: the frontend operation, [`IoOp::as_str`].
pub const LABEL_OP: &str = "op";
/// Label: the replica's name (last segment of its address).
pub const LABEL_REPLICA: &str = "replica";
/// Label: the fault reason, [`FaultReason::as_str`].
pub const LABEL_REASON: &str = "reason";

/// A frontend operation, as the `op` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// `read`
    Read,
    /// `write`
    Write,
    /// `flush`
    Flush,
    /// `trim`
    Trim,
    /// `write_zeroes`
    WriteZeroes,
}

impl IoOp {
    /// Every operation, in label order.
    pub const ALL: [IoOp; 5] = [
        IoOp::Read,
        IoOp::Write,
        IoOp::Flush,
        IoOp::Trim,
        IoOp::WriteZeroes,
    ];

    /// The `op` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            IoOp::Read => "read",
            IoOp::Write => "write",
            IoOp::Flush => "flush",
            IoOp::Trim => "trim",
            IoOp::WriteZeroes => "write_zeroes",
        }
    }

    /// Whether the operation has a byte count (every one but flush).
    pub fn moves_bytes(self) -> bool {
        self != IoOp::Flush
    }
}

/// The `replica` label for an address: the replica's name, i.e. the last
/// path segment of `tcp://host:port/<name>`. Never the whole address, so a
/// replica keeps its series if its server moves. An address that does not
/// parse (not expected: the agent checks them) falls back to its text after
/// the last `/`.
pub fn replica_label(address: &str) -> String {
    match address.parse::<ReplicaAddress>() {
        Ok(a) => a.name,
        Err(_) => ReplicaAddress::name_of(address).to_string(),
    }
}

/// The handles of one frontend operation of one volume.
/// One op's series for one volume, registered on the op's first request:
/// an attached volume that never sees a trim has no trim series, and an
/// idle one adds almost nothing to a scrape (a histogram is 22 lines; a
/// thousand volumes × five ops × two histograms would make every scrape
/// slow). After the first request, recording is a load plus the atomics.
pub(super) struct OpMetrics {
    volume: Arc<str>,
    op: IoOp,
    handles: OnceLock<OpHandles>,
}

struct OpHandles {
    ops: Counter,
    bytes: Counter,
    errors: Counter,
    latency: Histogram,
}

impl OpMetrics {
    fn new(volume: &Arc<str>, op: IoOp) -> OpMetrics {
        OpMetrics {
            volume: Arc::clone(volume),
            op,
            handles: OnceLock::new(),
        }
    }

    fn handles(&self) -> &OpHandles {
        self.handles
            .get_or_init(|| OpHandles::register(&self.volume, self.op))
    }
}

impl OpHandles {
    fn register(volume: &str, op: IoOp) -> OpHandles {
        let labels = [
            (LABEL_VOLUME, volume.to_string()),
            (LABEL_OP, op.as_str().to_string()),
        ];
        OpHandles {
            ops: metrics::counter!(VOLUME_IO_OPS_TOTAL, &labels),
            // Flush has no bytes series at all, rather than one stuck at 0.
            bytes: if op.moves_bytes() {
                metrics::counter!(VOLUME_IO_BYTES_TOTAL, &labels)
            } else {
                Counter::noop()
            },
            errors: metrics::counter!(VOLUME_IO_ERRORS_TOTAL, &labels),
            latency: metrics::histogram!(VOLUME_IO_LATENCY_SECONDS, &labels),
        }
    }
}

impl OpMetrics {
    /// Records one answered request that arrived at `started`, of `bytes`
    /// bytes (counted only if it succeeded).
    pub(super) fn record<T>(&self, started: Instant, bytes: u64, result: &Result<T, DeviceError>) {
        let h = self.handles();
        h.latency.record(started.elapsed().as_secs_f64());
        h.ops.increment(1);
        match result {
            Ok(_) => h.bytes.increment(bytes),
            Err(_) => h.errors.increment(1),
        }
    }
}

/// The frontend metrics of one volume, registered (at zero) when its engine
/// starts so every series exists before the first request.
pub(super) struct VolumeMetrics {
    pub(super) read: OpMetrics,
    pub(super) write: OpMetrics,
    pub(super) flush: OpMetrics,
    pub(super) trim: OpMetrics,
    pub(super) write_zeroes: OpMetrics,
}

impl VolumeMetrics {
    pub(super) fn register(volume: &str) -> VolumeMetrics {
        let volume: Arc<str> = Arc::from(volume);
        VolumeMetrics {
            read: OpMetrics::new(&volume, IoOp::Read),
            write: OpMetrics::new(&volume, IoOp::Write),
            flush: OpMetrics::new(&volume, IoOp::Flush),
            trim: OpMetrics::new(&volume, IoOp::Trim),
            write_zeroes: OpMetrics::new(&volume, IoOp::WriteZeroes),
        }
    }
}

/// The write-latency histogram of one replica of `volume`.
pub(super) fn replica_write_latency(volume: &str, address: &str) -> Histogram {
    metrics::histogram!(
        REPLICA_WRITE_LATENCY_SECONDS,
        LABEL_VOLUME => volume.to_string(),
        LABEL_REPLICA => replica_label(address),
    )
}

/// Counts one replica fault. Registers the series on the spot: faults are
/// rare, and a series per reason that never happens would be noise.
pub(super) fn record_fault(volume: &str, address: &str, reason: FaultReason) {
    metrics::counter!(
        REPLICA_FAULTS_TOTAL,
        LABEL_VOLUME => volume.to_string(),
        LABEL_REPLICA => replica_label(address),
        LABEL_REASON => reason.as_str(),
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_label_is_the_name_not_the_address() {
        assert_eq!(replica_label("tcp://10.0.0.1:9500/vol-r1"), "vol-r1");
        assert_eq!(replica_label("tcp://[::1]:9500/r2"), "r2");
        assert_eq!(replica_label("odd/thing"), "thing");
        assert_eq!(replica_label("plain"), "plain");
    }

    #[test]
    fn op_labels_are_stable() {
        let names: Vec<&str> = IoOp::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(names, ["read", "write", "flush", "trim", "write_zeroes"]);
    }
}
