//! Every 5 s: the kernel's figures over the last ~10 s, next to the
//! engines' own timing of their write legs, written into this node's
//! status (`model::kernel_io::KernelIo`) for the health checks.
//!
//! Written only while there is something to say (activity in this window
//! or the last written one), so an idle node does not churn the store.

use std::collections::{BTreeMap, VecDeque};

use vigil_ebpf::{Hist, Snapshot, SysOp, Tracer};

use super::Observed;
use super::peers::PeerTotals;
use super::targets::{Targets, names};
use vigil_model::Node;
use vigil_model::kernel_io::{DiskKernelIo, KernelIo, PeerKernelIo};

/// Reads kept: the window is from the oldest to the newest (≈ 10 s).
const KEEP: usize = 3;

/// `(sum seconds, count)` of the engines' write legs per replica name.
pub(super) type Legs = BTreeMap<String, (f64, u64)>;

struct Sample {
    at: u64,
    snap: Snapshot,
    /// Per peer node, read with the snapshot (`peers::totals`).
    peers: BTreeMap<String, PeerTotals>,
    legs: Legs,
    /// Seconds the syscall probe had been attached, since the start.
    syscall_secs: u64,
}

#[derive(Default)]
pub struct Summarizer {
    history: VecDeque<Sample>,
    last_active: Option<bool>,
}

/// `vigil_replica_write_latency_seconds_{sum,count}` per replica, from
/// this process's recorded metrics.
fn engine_legs() -> Legs {
    engine_legs_in(&crate::metrics::recorded_text())
}

/// The same, from a rendered metrics page.
pub(super) fn engine_legs_in(text: &str) -> Legs {
    let name = vigil_engine::engine::metrics::REPLICA_WRITE_LATENCY_SECONDS;
    let mut legs = Legs::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (is_sum, rest) = if let Some(r) = rest.strip_prefix("_sum") {
            (true, r)
        } else if let Some(r) = rest.strip_prefix("_count") {
            (false, r)
        } else {
            continue;
        };
        let Some(replica) = rest
            .split("replica=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let e = legs.entry(replica.to_string()).or_default();
        if is_sum {
            e.0 = value;
        } else {
            e.1 = value as u64;
        }
    }
    legs
}

fn mean(h: &Hist) -> f64 {
    if h.count == 0 {
        0.0
    } else {
        h.sum_ns as f64 / h.count as f64 / 1e9
    }
}

impl Summarizer {
    /// `syscall_secs`: seconds the syscall probe has been attached since
    /// the start ([`super::sampling::Sampler::attached_secs`]).
    pub async fn step(
        &mut self,
        h: &Observed,
        tracer: &Tracer,
        _targets: &Targets,
        syscall_secs: u64,
    ) {
        let snap = match tracer.read() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "eBPF: read maps");
                return;
            }
        };
        let peers = super::peers::totals(&snap, &names());
        self.history.push_back(Sample {
            at: vigil_control::health::view::now_secs(),
            snap,
            peers,
            legs: engine_legs(),
            syscall_secs,
        });
        while self.history.len() > KEEP {
            self.history.pop_front();
        }
        let (Some(old), Some(new)) = (self.history.front(), self.history.back()) else {
            return;
        };
        if self.history.len() < 2 {
            return;
        }
        let mut summary = summarize(h, old, new);
        summary.probes = tracer
            .probes()
            .iter()
            .map(|p| p.as_str().to_string())
            .collect();
        let active = summary
            .disks
            .iter()
            .any(|d| d.writes + d.fsyncs + d.reads > 0)
            || summary.peers.iter().any(|p| p.retransmits > 0)
            || summary.runqueue_waits > 0;
        if !active && self.last_active == Some(false) {
            return;
        }
        let me = h.node.clone();
        let result = h
            .cluster
            .modify::<Node, _>(&me, |n| {
                n.status.kernel_io = Some(summary.clone());
                Ok(true)
            })
            .await;
        match result {
            Ok(_) => self.last_active = Some(active),
            Err(e) => tracing::debug!(error = %e, "eBPF: write the kernel I/O summary"),
        }
    }
}

/// Records once, in the node's status, that this agent runs without eBPF
/// and why (for `vigil doctor` and support bundles).
pub async fn unavailable(h: &Observed) {
    let Some(u) = super::unavailable() else {
        return;
    };
    let k = KernelIo {
        at: vigil_control::health::view::now_secs(),
        unavailable: Some(format!("{}: {}", u.reason, u.detail)),
        ..KernelIo::default()
    };
    let me = h.node.clone();
    if let Err(e) = h
        .cluster
        .modify::<Node, _>(&me, |n| {
            n.status.kernel_io = Some(k.clone());
            Ok(true)
        })
        .await
    {
        tracing::debug!(error = %e, "record eBPF unavailable in the node status");
    }
}

fn summarize(h: &Observed, old: &Sample, new: &Sample) -> KernelIo {
    let names = names();
    let sys = |s: &Snapshot, disk: usize, op: SysOp| {
        s.syscalls
            .iter()
            .find(|x| x.disk as usize == disk && x.op == op)
            .map(|x| x.hist.clone())
            .unwrap_or_default()
    };
    let blk = |s: &Snapshot, dev: u32| {
        let mut h = Hist::default();
        for b in s.block.iter().filter(|b| b.dev == dev) {
            h.merge(&b.hist);
        }
        h
    };
    // Replica name → disk UUID, for this node's replicas.
    let replica_disk: BTreeMap<String, String> = h
        .replicas
        .all_held()
        .into_iter()
        .map(|(name, held)| (name, held.disk))
        .collect();
    let mut disks = Vec::new();
    for (i, (uuid, path, device)) in names.disks.iter().enumerate() {
        let w = sys(&new.snap, i, SysOp::Write).since(&sys(&old.snap, i, SysOp::Write));
        let f = sys(&new.snap, i, SysOp::Fsync).since(&sys(&old.snap, i, SysOp::Fsync));
        let r = sys(&new.snap, i, SysOp::Read).since(&sys(&old.snap, i, SysOp::Read));
        let (b, block_errors) = match device {
            Some(d) => {
                let errs = |s: &Snapshot| {
                    s.devices
                        .iter()
                        .find(|x| x.dev == d.dev)
                        .map(|x| x.errors)
                        .unwrap_or(0)
                };
                (
                    blk(&new.snap, d.dev).since(&blk(&old.snap, d.dev)),
                    errs(&new.snap).saturating_sub(errs(&old.snap)),
                )
            }
            None => (Hist::default(), 0),
        };
        let (mut leg_sum, mut leg_n) = (0.0, 0u64);
        for (replica, (sum, n)) in &new.legs {
            if replica_disk.get(replica) != Some(uuid) {
                continue;
            }
            let (osum, on) = old.legs.get(replica).copied().unwrap_or((0.0, 0));
            leg_sum += (sum - osum).max(0.0);
            leg_n += n.saturating_sub(on);
        }
        disks.push(DiskKernelIo {
            disk: uuid.clone(),
            path: path.display().to_string(),
            device: device.as_ref().map(|d| d.name.clone()),
            writes: w.count,
            write_mean_seconds: mean(&w),
            fsyncs: f.count,
            fsync_mean_seconds: mean(&f),
            reads: r.count,
            read_mean_seconds: mean(&r),
            syscall_errors: w.errors + f.errors + r.errors,
            block_requests: b.count,
            block_mean_seconds: mean(&b),
            block_errors,
            engine_write_mean_seconds: (leg_n > 0).then(|| leg_sum / leg_n as f64),
            engine_writes: leg_n,
        });
    }
    let mut peers = Vec::new();
    for (node, now) in &new.peers {
        let w = match old.peers.get(node) {
            Some(o) => now.since(o),
            None => now.clone(),
        };
        peers.push(PeerKernelIo {
            node: node.clone(),
            retransmits: w.retransmits,
            rtt_mean_seconds: mean(&w.rtt),
        });
    }
    let runq = new.snap.runqueue.since(&old.snap.runqueue);
    KernelIo {
        at: new.at,
        window_secs: new.at.saturating_sub(old.at),
        disks,
        peers,
        runqueue_waits: runq.count,
        runqueue_long_waits: runq
            .at_least_seconds(vigil_control::health::kernel_io::STARVED_LONG_WAIT_SECONDS),
        runqueue_p99_seconds: runq.quantile_upper_seconds(0.99).unwrap_or(0.0),
        probes: Vec::new(),
        syscall_traced_secs: new.syscall_secs.saturating_sub(old.syscall_secs),
        unavailable: None,
    }
}
