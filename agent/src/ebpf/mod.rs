//! eBPF I/O tracing, the agent's side: the policy over `vigil-ebpf`.
//!
//! * `--ebpf off|auto|required` decides whether the programs are loaded and
//!   whether failing to load them stops the agent ([`start`]);
//! * `targets.rs` tells the kernel what is vigil's — the agent's own
//!   process, its open replica files (per disk), the block devices holding
//!   its disks, the replica servers of the other nodes — and keeps that
//!   current as replicas, disks and peers change;
//! * `render.rs` turns the kernel's maps into `vigil_ebpf_*` at each scrape;
//! * `summary.rs` writes a small window of those figures into the node's
//!   status (`model::kernel_io`), which the health checks read
//!   (`health/kernel_io.rs`), so they work from any agent and from a
//!   support bundle.
//!
//! The process has one tracer (the programs filter on our tgid), so it is
//! process-global, set once before the daemon starts.

mod peers;
mod render;
mod sampling;
mod summary;
mod targets;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use vigil_ebpf::{Probe, Reason, Tracer, Unavailable};

pub use render::render;

/// `--ebpf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Never load the programs.
    Off,
    /// Load them when the kernel and our privileges allow; run without them otherwise.
    Auto,
    /// Refuse to start without them.
    Required,
}

/// `--ebpf-probes`: one of [`Probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeArg {
    Syscalls,
    Block,
    Tcp,
    Runqueue,
}

impl From<ProbeArg> for Probe {
    fn from(p: ProbeArg) -> Probe {
        match p {
            ProbeArg::Syscalls => Probe::Syscalls,
            ProbeArg::Block => Probe::Block,
            ProbeArg::Tcp => Probe::Tcp,
            ProbeArg::Runqueue => Probe::RunQueue,
        }
    }
}

/// Whether tracing runs, and if not, why.
pub enum Tracing {
    Loaded(Tracer),
    Unavailable(Unavailable),
}

static STATE: OnceLock<Tracing> = OnceLock::new();
/// `--ebpf-syscall-duty`.
static SYSCALL_DUTY: OnceLock<u8> = OnceLock::new();

/// The tracer, when loaded.
pub fn tracer() -> Option<&'static Tracer> {
    match STATE.get() {
        Some(Tracing::Loaded(t)) => Some(t),
        _ => None,
    }
}

/// Why tracing is not running (`None` while it runs or before [`start`]).
pub fn unavailable() -> Option<&'static Unavailable> {
    match STATE.get() {
        Some(Tracing::Unavailable(u)) => Some(u),
        _ => None,
    }
}

/// Loads and attaches the programs as `mode` says. Only `required` turns a
/// failure into an error; `auto` logs the reason and carries on with
/// user-space timing alone.
pub fn start(mode: Mode, probes: &[ProbeArg], syscall_duty: u8) -> Result<(), Unavailable> {
    let _ = SYSCALL_DUTY.set(syscall_duty);
    let probes: BTreeSet<Probe> = probes.iter().map(|p| Probe::from(*p)).collect();
    let state = match mode {
        Mode::Off => Tracing::Unavailable(Unavailable::new(Reason::Disabled, "--ebpf off")),
        Mode::Auto | Mode::Required => match Tracer::load(std::process::id(), &probes) {
            Ok(t) => {
                tracing::info!(probes = %probe_list(t.probes()), "eBPF tracing loaded");
                Tracing::Loaded(t)
            }
            Err(e) if mode == Mode::Required => return Err(e),
            Err(e) => {
                tracing::warn!(
                    reason = e.reason.as_str(),
                    detail = %e.detail,
                    "eBPF tracing unavailable; falling back to user-space timing"
                );
                Tracing::Unavailable(e)
            }
        },
    };
    let _ = STATE.set(state);
    Ok(())
}

/// Probe names, comma-separated (`syscalls,block`), or `none`.
pub fn probe_list(probes: &BTreeSet<Probe>) -> String {
    if probes.is_empty() {
        return "none".to_string();
    }
    probes
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// What the eBPF glue reads and writes, and nothing more: this node's
/// name, the cluster (its node object, the peers' replica addresses), its
/// replicas (files and disks to trace) and the replica server's open
/// connections (which peers are clients).
pub struct Observed {
    pub node: String,
    pub cluster: vigil_control::cluster::Cluster,
    pub replicas: Arc<vigil_control::local::replicas::ReplicaSet>,
    pub served: vigil_engine::protocol::ServedConnections,
}

/// Keeps the kernel's filters current and writes the node's kernel I/O
/// summary; returns at once when tracing is not loaded.
pub async fn run(h: Observed) {
    let Some(tracer) = tracer() else {
        summary::unavailable(&h).await;
        return;
    };
    let mut targets = targets::Targets::new(&h);
    let mut summary = summary::Summarizer::default();
    let mut sampler = sampling::Sampler::new(SYSCALL_DUTY.get().copied().unwrap_or(100));
    let mut tick: u64 = 0;
    loop {
        // Peers change rarely and cost a store read: every 5 s. Replica
        // files change as replicas open: every second.
        if tick.is_multiple_of(5) {
            targets.refresh_peers(&h, tracer).await;
        }
        targets.refresh_files(tracer);
        sampler.step(tracer, tick);
        if tick.is_multiple_of(5) {
            summary
                .step(&h, tracer, &targets, sampler.attached_secs())
                .await;
        }
        tick += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
