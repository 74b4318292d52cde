//! Every metric family vigil exports: name, type, labels and meaning. The
//! HELP lines on `/metrics` come from here, docs/metrics.md is checked
//! against it (a test fails when they disagree), and a test checks a real
//! render against it, so code, catalogue and document cannot drift apart.

use super::names::*;

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    #[cfg(test)]
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Where a family's values come from, which decides who reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Recorded as things happen (data path, store requests, actions).
    Recorded,
    /// Computed at each scrape from the cluster state and this agent.
    Scraped,
    /// Read from the kernel's eBPF maps at each scrape (`crate::ebpf`).
    Kernel,
}

/// One metric family.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
    pub source: Source,
}

const fn f(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
    source: Source,
) -> Family {
    Family {
        name,
        kind,
        labels,
        help,
        source,
    }
}

use Kind::{Counter, Gauge, Histogram};
use Source::{Kernel, Recorded, Scraped};

// The engine's data-path families (recorded by `vigil_engine`).
use vigil_engine::engine::metrics::{
    REPLICA_FAULTS_TOTAL as ENGINE_REPLICA_FAULTS,
    REPLICA_WRITE_LATENCY_SECONDS as ENGINE_REPLICA_WRITE_LATENCY,
    VOLUME_IO_BYTES_TOTAL as ENGINE_VOLUME_IO_BYTES,
    VOLUME_IO_ERRORS_TOTAL as ENGINE_VOLUME_IO_ERRORS,
    VOLUME_IO_LATENCY_SECONDS as ENGINE_VOLUME_IO_LATENCY,
    VOLUME_IO_OPS_TOTAL as ENGINE_VOLUME_IO_OPS,
};

/// The catalogue.
pub const FAMILIES: &[Family] = &[
    // process
    f(
        BUILD_INFO,
        Gauge,
        &["version", "node"],
        "Always 1; labels carry the agent's version and node name.",
        Scraped,
    ),
    f(
        PROCESS_RESIDENT_MEMORY,
        Gauge,
        &[],
        "Resident memory of the agent process in bytes.",
        Scraped,
    ),
    f(
        PROCESS_THREADS,
        Gauge,
        &[],
        "Threads of the agent process.",
        Scraped,
    ),
    f(
        PROCESS_OPEN_FDS,
        Gauge,
        &[],
        "Open file descriptors of the agent process.",
        Scraped,
    ),
    f(
        PROCESS_START_TIME,
        Gauge,
        &[],
        "Start time of the agent process, seconds since the Unix epoch.",
        Scraped,
    ),
    f(
        vigil_engine::ring::IO_URING_ACTIVE,
        Gauge,
        &[],
        "1 while replica file I/O goes through io_uring on the runtime's workers, 0 when it fell back to the blocking pool (io_uring unavailable, or --io-engine blocking; the log says why).",
        Recorded,
    ),
    f(
        SCRAPE_DURATION,
        Gauge,
        &[],
        "Time the previous /metrics render took on this agent, in seconds.",
        Scraped,
    ),
    // store
    f(
        STORE_REQUEST_DURATION,
        Histogram,
        &["op"],
        "Latency of this agent's requests to the cluster store, by operation.",
        Recorded,
    ),
    f(
        STORE_REQUEST_ERRORS,
        Counter,
        &["op", "kind"],
        "Failed store requests by operation and error kind (conflict is an expected compare-and-swap loss).",
        Recorded,
    ),
    f(
        STORE_UP,
        Gauge,
        &[],
        "1 when this agent read the cluster store for this scrape, 0 when it could not.",
        Scraped,
    ),
    // cluster and nodes (every agent reports the same cluster-wide view)
    f(
        CLUSTER_NODES_EXPECTED,
        Gauge,
        &[],
        "Nodes registered in the cluster (reported by every agent, so a dead node is still counted).",
        Scraped,
    ),
    f(
        CLUSTER_NODES_READY,
        Gauge,
        &[],
        "Registered nodes whose agent holds its liveness lease (reported by every agent).",
        Scraped,
    ),
    f(
        NODE_READY,
        Gauge,
        &["node"],
        "1 when the node's agent holds its liveness lease, 0 when not (reported by every agent for every node).",
        Scraped,
    ),
    f(
        NODE_EVICTION_REPLICAS_LEFT,
        Gauge,
        &["node", "phase"],
        "Replicas still on a node being evicted; phase is moving, blocked or completed (reported by every agent for every node with an eviction).",
        Scraped,
    ),
    // disks (reported by the disk's own agent)
    f(
        DISK_STATE,
        Gauge,
        &["node", "disk", "path", "state"],
        "1 for the disk's current state (ready, missing, replaced), as its agent sees it.",
        Scraped,
    ),
    f(
        DISK_CAPACITY,
        Gauge,
        &["node", "disk", "path"],
        "Size of the filesystem holding the disk, in bytes.",
        Scraped,
    ),
    f(
        DISK_AVAILABLE,
        Gauge,
        &["node", "disk", "path"],
        "Free bytes on the disk's filesystem.",
        Scraped,
    ),
    f(
        DISK_USED,
        Gauge,
        &["node", "disk", "path"],
        "Used bytes on the disk's filesystem (capacity minus available).",
        Scraped,
    ),
    f(
        DISK_SCHEDULED,
        Gauge,
        &["node", "disk", "path"],
        "Sum of the sizes of the replicas scheduled on the disk, in bytes.",
        Scraped,
    ),
    f(
        DISK_RESERVED,
        Gauge,
        &["node", "disk", "path"],
        "Bytes kept free on the disk for other users of the filesystem.",
        Scraped,
    ),
    f(
        DISK_IO_ERRORS,
        Counter,
        &["node", "disk", "path"],
        "I/O and no-space errors from this disk's replica files since the agent started.",
        Scraped,
    ),
    // volumes (reported by one agent per volume: where it is attached, else its owner)
    f(
        VOLUME_STATE,
        Gauge,
        &["volume", "state"],
        "1 for the volume's current state (creating, detached, attaching, attached, detaching, deleting).",
        Scraped,
    ),
    f(
        VOLUME_MIGRATION_PHASE_SECONDS,
        Gauge,
        &["volume", "phase", "source", "target"],
        "Seconds a live migration of the volume has been in its current phase (starting, ready, confirming, source-stopping, switching, rolling-back); absent when none runs.",
        Scraped,
    ),
    f(
        VOLUME_ROBUSTNESS,
        Gauge,
        &["volume", "robustness"],
        "1 for the volume's robustness (healthy, degraded, faulted; unknown while detached).",
        Scraped,
    ),
    f(
        VOLUME_SIZE,
        Gauge,
        &["volume"],
        "Volume size in bytes.",
        Scraped,
    ),
    f(
        VOLUME_ACTUAL_SIZE,
        Gauge,
        &["volume"],
        "Bytes allocated by the volume's largest replica (all layers).",
        Scraped,
    ),
    f(
        VOLUME_REPLICAS_DESIRED,
        Gauge,
        &["volume"],
        "Replica count the volume asks for.",
        Scraped,
    ),
    f(
        VOLUME_REPLICAS_HEALTHY,
        Gauge,
        &["volume"],
        "Replicas in RW mode (attached) or running (detached).",
        Scraped,
    ),
    f(
        ENGINE_VOLUME_IO_OPS,
        Counter,
        &["volume", "op"],
        "Frontend requests completed by the volume's engine, by op (read, write, flush, trim, write_zeroes).",
        Recorded,
    ),
    f(
        ENGINE_VOLUME_IO_BYTES,
        Counter,
        &["volume", "op"],
        "Bytes of successful frontend requests, by op (read, write, trim, write_zeroes).",
        Recorded,
    ),
    f(
        ENGINE_VOLUME_IO_ERRORS,
        Counter,
        &["volume", "op"],
        "Frontend requests answered with an error, by op.",
        Recorded,
    ),
    f(
        ENGINE_VOLUME_IO_LATENCY,
        Histogram,
        &["volume", "op"],
        "Latency of frontend requests in the engine, from receipt to answer, by op.",
        Recorded,
    ),
    // engines (reported by the agent running them)
    f(
        ENGINE_SUSPENDED,
        Gauge,
        &["volume"],
        "1 while the volume's engine on this node is suspended (the node could not renew its liveness lease, so no client I/O reaches the replicas), else 0; reported by the engine's own agent even when the store is unreachable.",
        Scraped,
    ),
    f(
        ENGINE_SUSPENSIONS,
        Counter,
        &["volume", "outcome"],
        "Suspensions of the volume's engine on this node that ended, by outcome: resumed (the lease came back and no newer engine existed) or fenced (a newer engine had taken the volume over).",
        Recorded,
    ),
    // replicas
    f(
        REPLICA_STATE,
        Gauge,
        &["volume", "replica", "node", "state"],
        "1 for the replica instance's state (starting, running, stopping, stopped, error); reported with its volume.",
        Scraped,
    ),
    f(
        REPLICA_MODE,
        Gauge,
        &["volume", "replica", "node", "mode"],
        "1 for the replica's mode in the engine (RW, WO, ERR); reported by the engine's agent, node is the replica's node.",
        Scraped,
    ),
    f(
        REPLICA_ACTUAL_SIZE,
        Gauge,
        &["volume", "replica", "node"],
        "Bytes allocated by the replica's layer files; reported by its own agent.",
        Scraped,
    ),
    f(
        REPLICA_REBUILD_COPIED,
        Gauge,
        &["volume", "replica"],
        "Bytes copied so far by the rebuild running into the replica.",
        Scraped,
    ),
    f(
        REPLICA_REBUILD_SIZE,
        Gauge,
        &["volume", "replica"],
        "Bytes the running rebuild into the replica has to copy.",
        Scraped,
    ),
    f(
        ENGINE_REPLICA_WRITE_LATENCY,
        Histogram,
        &["volume", "replica"],
        "Latency of each write leg to one replica, as the engine sees it.",
        Recorded,
    ),
    f(
        ENGINE_REPLICA_FAULTS,
        Counter,
        &["volume", "replica", "reason"],
        "Replica transitions to ERR in the engine, by reason.",
        Recorded,
    ),
    // health
    f(
        HEALTH_CHECK,
        Gauge,
        &["code", "severity"],
        "1 for each active (not muted) health check; see docs/health-checks.md. Reported by every agent.",
        Scraped,
    ),
    f(
        HEALTH_CHECK_OBJECTS,
        Gauge,
        &["code"],
        "Objects affected by each active health check.",
        Scraped,
    ),
    f(
        HEALTH_CHECK_MUTED,
        Gauge,
        &["code"],
        "1 for each health check currently muted by an operator.",
        Scraped,
    ),
    // actions
    f(
        REMEDIATIONS,
        Counter,
        &["action"],
        "Automatic repair actions this agent took: rebuild_replica, fail_replica, replace_replica, retire_replica, discard_orphan_replica, detach_from_dead_node, salvage, roll_back_migration.",
        Recorded,
    ),
    f(
        EVENTS_RECORDED,
        Counter,
        &["severity"],
        "Events this agent recorded, by severity.",
        Recorded,
    ),
    // eBPF (docs/ebpf.md): what the kernel sees of this agent's I/O
    f(
        EBPF_LOADED,
        Gauge,
        &["node"],
        "1 when the agent's eBPF programs are loaded and attached, else 0.",
        Kernel,
    ),
    f(
        EBPF_UNAVAILABLE,
        Gauge,
        &["node", "reason"],
        "1 when eBPF tracing is not running, with why: disabled, not_permitted, no_btf, load_failed, attach_failed.",
        Kernel,
    ),
    f(
        EBPF_SYSCALL_LATENCY,
        Histogram,
        &["node", "disk", "op"],
        "Kernel-measured latency of the agent's syscalls on replica files, per disk; op is read (pread/preadv), write (pwrite/pwritev) or fsync (fsync/fdatasync).",
        Kernel,
    ),
    f(
        EBPF_SYSCALL_ERRORS,
        Counter,
        &["node", "disk", "op"],
        "The agent's syscalls on replica files that returned an error, per disk and op.",
        Kernel,
    ),
    f(
        EBPF_BLOCK_LATENCY,
        Histogram,
        &["node", "device", "op"],
        "Block request latency from issue to completion on devices holding vigil disks; op is read, write, flush, discard or other.",
        Kernel,
    ),
    f(
        EBPF_BLOCK_ERRORS,
        Counter,
        &["node", "device"],
        "Block requests completed with an error on devices holding vigil disks.",
        Kernel,
    ),
    f(
        EBPF_BLOCK_INFLIGHT,
        Gauge,
        &["node", "device"],
        "Block requests issued and not yet completed on the device at the scrape.",
        Kernel,
    ),
    f(
        EBPF_TCP_RETRANSMITS,
        Counter,
        &["node", "peer_node"],
        "TCP segments this node retransmitted to the peer on replica connections (its engines' connections to the peer's replica server, and the peer's engines' connections to this node's).",
        Kernel,
    ),
    f(
        EBPF_TCP_RTT,
        Histogram,
        &["node", "peer_node"],
        "Smoothed TCP round-trip time samples on replica connections with the peer, one per segment received.",
        Kernel,
    ),
    f(
        EBPF_RUNQUEUE_DELAY,
        Histogram,
        &["node"],
        "Time the agent's threads waited in a CPU run queue after becoming runnable.",
        Kernel,
    ),
];

/// Whether `labels` are exactly the label names the catalogue gives the
/// family `name` (checked in debug builds on every scraped series).
pub fn labels_match(name: &str, labels: &[(&'static str, String)]) -> bool {
    FAMILIES
        .iter()
        .find(|f| f.name == name)
        .is_some_and(|f| f.labels.iter().copied().eq(labels.iter().map(|(k, _)| *k)))
}
