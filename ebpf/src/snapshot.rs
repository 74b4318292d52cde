//! What the programs measured, read from their maps at one moment, as plain
//! Rust values (no kernel types): the agent turns it into metrics and
//! health inputs.

use std::net::Ipv4Addr;

use crate::layout::{HIST_SLOTS, RawHist};

/// A log2 latency histogram: `slots[s]` counts events shorter than 2^s µs
/// (and at least 2^(s-1) µs); the last slot counts everything longer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hist {
    pub slots: [u64; HIST_SLOTS],
    pub count: u64,
    pub sum_ns: u64,
    /// Events that ended in an error (a negative syscall return, a block
    /// request completed with an error).
    pub errors: u64,
}

impl Default for Hist {
    fn default() -> Hist {
        Hist {
            slots: [0; HIST_SLOTS],
            count: 0,
            sum_ns: 0,
            errors: 0,
        }
    }
}

impl Hist {
    /// Upper bound of slot `s` in seconds (2^s µs); `None` for the overflow slot.
    pub fn upper_bound_seconds(s: usize) -> Option<f64> {
        (s < HIST_SLOTS - 1).then(|| (1u64 << s) as f64 / 1e6)
    }

    /// Adds another histogram into this one.
    pub fn merge(&mut self, o: &Hist) {
        for (a, b) in self.slots.iter_mut().zip(o.slots.iter()) {
            *a += b;
        }
        self.count += o.count;
        self.sum_ns += o.sum_ns;
        self.errors += o.errors;
    }

    /// Events in `self` not in `older` (a window between two reads).
    pub fn since(&self, older: &Hist) -> Hist {
        let mut d = Hist::default();
        for (s, slot) in d.slots.iter_mut().enumerate() {
            *slot = self.slots[s].saturating_sub(older.slots[s]);
        }
        d.count = self.count.saturating_sub(older.count);
        d.sum_ns = self.sum_ns.saturating_sub(older.sum_ns);
        d.errors = self.errors.saturating_sub(older.errors);
        d
    }

    /// Events at least `seconds` long, counting whole slots whose lower
    /// bound (2^(s-1) µs) reaches it: a lower estimate.
    pub fn at_least_seconds(&self, seconds: f64) -> u64 {
        let us = seconds * 1e6;
        self.slots
            .iter()
            .enumerate()
            .filter(|(s, _)| *s >= 1 && (1u64 << (s - 1)) as f64 >= us)
            .map(|(_, n)| n)
            .sum()
    }

    /// The smallest slot bound below which at least `q` of the events fall
    /// (an upper estimate of the quantile), in seconds; `None` when empty.
    pub fn quantile_upper_seconds(&self, q: f64) -> Option<f64> {
        let total: u64 = self.slots.iter().sum();
        if total == 0 {
            return None;
        }
        let want = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (s, n) in self.slots.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(Hist::upper_bound_seconds(s).unwrap_or(f64::INFINITY));
            }
        }
        None
    }
}

impl From<&RawHist> for Hist {
    fn from(r: &RawHist) -> Hist {
        Hist {
            slots: r.slots,
            count: r.count,
            sum_ns: r.sum_ns,
            errors: r.errors,
        }
    }
}

/// A traced syscall family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SysOp {
    /// pread64, preadv, preadv2.
    Read,
    /// pwrite64, pwritev, pwritev2.
    Write,
    /// fsync, fdatasync.
    Fsync,
}

impl SysOp {
    pub fn from_raw(op: u32) -> Option<SysOp> {
        match op {
            0 => Some(SysOp::Read),
            1 => Some(SysOp::Write),
            2 => Some(SysOp::Fsync),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SysOp::Read => "read",
            SysOp::Write => "write",
            SysOp::Fsync => "fsync",
        }
    }
}

/// A block request's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BlkOp {
    Read,
    Write,
    Flush,
    Discard,
    Other,
}

impl BlkOp {
    pub fn from_raw(op: u32) -> BlkOp {
        match op {
            0 => BlkOp::Read,
            1 => BlkOp::Write,
            2 => BlkOp::Flush,
            3 => BlkOp::Discard,
            _ => BlkOp::Other,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            BlkOp::Read => "read",
            BlkOp::Write => "write",
            BlkOp::Flush => "flush",
            BlkOp::Discard => "discard",
            BlkOp::Other => "other",
        }
    }
}

/// Syscalls on one vigil disk's replica files, one op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallSeries {
    /// The disk index the agent gave in [`crate::Tracer::set_files`].
    pub disk: u32,
    pub op: SysOp,
    pub hist: Hist,
}

/// Block requests on one device, one op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSeries {
    /// Kernel dev_t (major << 20 | minor); see [`crate::kernel_dev`].
    pub dev: u32,
    pub op: BlkOp,
    pub hist: Hist,
}

/// Counters of one traced device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCounters {
    pub dev: u32,
    pub issued: u64,
    pub completed: u64,
    pub errors: u64,
}

impl DeviceCounters {
    /// Requests issued and not completed yet.
    pub fn inflight(&self) -> u64 {
        self.issued.saturating_sub(self.completed)
    }
}

/// One replica server this agent connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSeries {
    pub addr: Ipv4Addr,
    pub port: u16,
    /// Smoothed RTT samples (µs resolution) from tcp_probe.
    pub rtt: Hist,
    pub retransmits: u64,
}

/// Everything, read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub syscalls: Vec<SyscallSeries>,
    pub block: Vec<BlockSeries>,
    pub devices: Vec<DeviceCounters>,
    pub peers: Vec<PeerSeries>,
    /// Time the agent's threads waited in a run queue before running.
    pub runqueue: Hist,
}
