//! The checks fed by eBPF (`model::kernel_io`, written by each node's agent
//! into its node status every ~5 s over a ~10 s window): DISK_SLOW,
//! DISK_IO_ERRORS, REPLICA_LINK_RETRANSMITS, AGENT_CPU_STARVED. A window
//! older than [`STALE_SECS`] is ignored (the node stopped writing: down,
//! or tracing stopped), so a check never outlives its evidence.

use super::codes::*;
use super::evaluate::Eval;
use vigil_model::kernel_io::KernelIo;

/// A summary older than this says nothing about now.
pub const STALE_SECS: u64 = 60;
/// DISK_SLOW: the mean kernel latency of writes and syncs above this…
pub const DISK_SLOW_SECONDS: f64 = 0.1;
/// …over at least this many calls in the window…
pub const DISK_SLOW_MIN_CALLS: u64 = 10;
/// …while the engine's own timing of its write legs to replicas on the
/// disk (when an engine here wrote to it) is at least this fraction of it.
pub const DISK_SLOW_AGREEMENT: f64 = 0.5;
/// REPLICA_LINK_RETRANSMITS: retransmitted segments in the window.
pub const RETRANSMITS_MIN: u64 = 10;
/// AGENT_CPU_STARVED: 99th percentile run-queue wait above this…
pub const STARVED_P99_SECONDS: f64 = 0.25;
/// …over at least this many waits…
pub const STARVED_MIN_WAITS: u64 = 50;
/// …or at least [`STARVED_LONG_WAITS`] waits this long (a busy agent has
/// thousands of short waits per second, so a CPU quota that stalls it for
/// most of every second moves the 99th percentile little).
pub const STARVED_LONG_WAIT_SECONDS: f64 = 0.25;
pub const STARVED_LONG_WAITS: u64 = 3;

fn ms(s: f64) -> String {
    format!("{:.1} ms", s * 1e3)
}

impl Eval<'_> {
    pub(super) fn kernel_io(&mut self) {
        for n in &self.view.nodes {
            let Some(k) = &n.status.kernel_io else {
                continue;
            };
            if self.view.now_unix.saturating_sub(k.at) > STALE_SECS || !self.is_live(&n.name) {
                continue;
            }
            self.disk_kernel(&n.name, k);
            self.links_kernel(&n.name, k);
            self.cpu_kernel(&n.name, k);
        }
    }

    fn disk_kernel(&mut self, node: &str, k: &KernelIo) {
        for d in &k.disks {
            let object = format!("disk/{}", d.disk);
            let on = match &d.device {
                Some(dev) => format!("{node}:{} (/dev/{dev})", d.path),
                None => format!("{node}:{}", d.path),
            };
            let calls = d.writes + d.fsyncs;
            let kernel = d.write_path_mean_seconds();
            let agrees = d
                .engine_write_mean_seconds
                .is_none_or(|u| u >= kernel * DISK_SLOW_AGREEMENT);
            if calls >= DISK_SLOW_MIN_CALLS && kernel > DISK_SLOW_SECONDS && agrees {
                let user = match d.engine_write_mean_seconds {
                    Some(u) => format!(
                        "; the engine's writes to replicas on it take {} on average",
                        ms(u)
                    ),
                    None => String::new(),
                };
                let block = if d.block_requests > 0 {
                    format!(
                        "; block requests on the device take {} ({} in the window)",
                        ms(d.block_mean_seconds),
                        d.block_requests
                    )
                } else {
                    String::new()
                };
                self.add(
                    DISK_SLOW,
                    object.clone(),
                    format!(
                        "disk {} at {on}: the kernel measured {} writes at {} and {} fsyncs at {} over the last {} s (threshold {}){user}{block}",
                        d.disk,
                        d.writes,
                        ms(d.write_mean_seconds),
                        d.fsyncs,
                        ms(d.fsync_mean_seconds),
                        k.window_secs,
                        ms(DISK_SLOW_SECONDS),
                    ),
                    Vec::new(),
                );
            }
            let errors = d.syscall_errors + d.block_errors;
            if errors > 0 {
                let caused_by = self.present(DISK_FAILING, &object).into_iter().collect();
                self.add(
                    DISK_IO_ERRORS,
                    object,
                    format!(
                        "disk {} at {on}: {} replica-file syscall(s) and {} block request(s) failed in the kernel over the last {} s",
                        d.disk, d.syscall_errors, d.block_errors, k.window_secs
                    ),
                    caused_by,
                );
            }
        }
    }

    fn links_kernel(&mut self, node: &str, k: &KernelIo) {
        for p in &k.peers {
            if p.retransmits < RETRANSMITS_MIN {
                continue;
            }
            let caused_by = self.node_down(&p.node).into_iter().collect();
            self.add(
                REPLICA_LINK_RETRANSMITS,
                format!("link/{node}->{}", p.node),
                format!(
                    "{} TCP segment(s) retransmitted from {node} to {} on replica connections over the last {} s (smoothed RTT {})",
                    p.retransmits,
                    p.node,
                    k.window_secs,
                    ms(p.rtt_mean_seconds)
                ),
                caused_by,
            );
        }
    }

    fn cpu_kernel(&mut self, node: &str, k: &KernelIo) {
        let p99 =
            k.runqueue_waits >= STARVED_MIN_WAITS && k.runqueue_p99_seconds > STARVED_P99_SECONDS;
        let long = k.runqueue_long_waits >= STARVED_LONG_WAITS;
        if p99 || long {
            self.add(
                AGENT_CPU_STARVED,
                format!("node/{node}"),
                if long {
                    format!(
                        "the agent's threads on {node} were kept off a CPU for {} or more {} times over the last {} s ({} waits; 99th percentile under {})",
                        ms(STARVED_LONG_WAIT_SECONDS),
                        k.runqueue_long_waits,
                        k.window_secs,
                        k.runqueue_waits,
                        ms(k.runqueue_p99_seconds)
                    )
                } else {
                    format!(
                        "the agent's threads on {node} waited up to {} (99th percentile) for a CPU over the last {} s ({} waits)",
                        ms(k.runqueue_p99_seconds),
                        k.window_secs,
                        k.runqueue_waits
                    )
                },
                Vec::new(),
            );
        }
    }
}
