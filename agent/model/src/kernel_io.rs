//! What the kernel saw of a node's I/O over the last window, as the node's
//! agent measured it with eBPF (the `vigil-ebpf` crate). Kept in the node's status
//! so every agent's health checks — and a support bundle's — read it.

use serde::{Deserialize, Serialize};

/// One window of kernel figures for one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct KernelIo {
    /// End of the window (Unix seconds).
    pub at: u64,
    /// Length of the window in seconds.
    pub window_secs: u64,
    #[serde(default)]
    pub disks: Vec<DiskKernelIo>,
    #[serde(default)]
    pub peers: Vec<PeerKernelIo>,
    /// Run-queue waits of the agent's threads in the window.
    #[serde(default)]
    pub runqueue_waits: u64,
    /// Run-queue waits of at least `health::kernel_io::STARVED_LONG_WAIT_SECONDS`.
    #[serde(default)]
    pub runqueue_long_waits: u64,
    /// Upper bound of the 99th percentile run-queue wait, seconds.
    #[serde(default)]
    pub runqueue_p99_seconds: f64,
    /// The probes attached (`syscalls`, `block`, `tcp`, `runqueue`): a
    /// figure of a probe not listed was not measured, not zero.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<String>,
    /// Seconds of the window the syscall probe was attached: it is sampled
    /// (`--ebpf-syscall-duty`), so the syscall counts cover only those.
    #[serde(default)]
    pub syscall_traced_secs: u64,
    /// Set (and nothing else) when the node's agent runs without eBPF:
    /// `reason: detail`, e.g. `not_permitted: loading eBPF programs needs …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// Syscalls on one disk's replica files, and block requests on its device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DiskKernelIo {
    /// Disk UUID.
    pub disk: String,
    pub path: String,
    /// Block device holding it (`loop3`), when it is on one.
    #[serde(default)]
    pub device: Option<String>,
    /// pwrite/pwritev calls and their mean latency (seconds).
    pub writes: u64,
    pub write_mean_seconds: f64,
    /// fsync/fdatasync calls and their mean latency (seconds).
    pub fsyncs: u64,
    pub fsync_mean_seconds: f64,
    pub reads: u64,
    pub read_mean_seconds: f64,
    /// Syscalls on replica files that returned an error.
    pub syscall_errors: u64,
    /// Block requests completed on the device and their mean latency.
    #[serde(default)]
    pub block_requests: u64,
    #[serde(default)]
    pub block_mean_seconds: f64,
    /// Block requests completed with an error.
    #[serde(default)]
    pub block_errors: u64,
    /// Mean latency of the engines' write legs to replicas on this disk,
    /// as user space timed them on this node (absent when no engine here
    /// wrote to it in the window).
    #[serde(default)]
    pub engine_write_mean_seconds: Option<f64>,
    #[serde(default)]
    pub engine_writes: u64,
}

impl DiskKernelIo {
    /// Mean kernel latency of writes and syncs together.
    pub fn write_path_mean_seconds(&self) -> f64 {
        let n = self.writes + self.fsyncs;
        if n == 0 {
            return 0.0;
        }
        (self.write_mean_seconds * self.writes as f64
            + self.fsync_mean_seconds * self.fsyncs as f64)
            / n as f64
    }
}

/// TCP on the connections to one peer's replica server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PeerKernelIo {
    pub node: String,
    pub retransmits: u64,
    #[serde(default)]
    pub rtt_mean_seconds: f64,
}
