//! `vigil doctor`'s "Kernel view (eBPF)" section: per node, what the kernel
//! measured over its last window next to the engine's own timing — "the
//! engine's writes to replicas on disk D take 40 ms; in the kernel,
//! fdatasync takes 38 ms on /dev/loop3" — or why a node has no kernel view.

use std::fmt::Write as _;

use vigil_model::kernel_io::KernelIo;

fn ms(s: f64) -> String {
    format!("{:.1} ms", s * 1e3)
}

/// The section for `nodes` (the `GET /v1/nodes` answer); empty when no
/// node reports anything.
pub fn section(nodes: &serde_json::Value) -> String {
    let reported: Vec<(String, KernelIo)> = nodes
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| {
            let k = serde_json::from_value::<KernelIo>(n.get("kernel_io")?.clone()).ok()?;
            Some((n["name"].as_str().unwrap_or("?").to_string(), k))
        })
        .collect();
    section_of(reported.iter().map(|(n, k)| (n.as_str(), k)))
}

/// The section for the nodes of a health view (a support bundle's, for
/// `vigil doctor --bundle`).
pub fn section_of_view(view: &vigil_control::health::View) -> String {
    section_of(
        view.nodes
            .iter()
            .filter_map(|n| Some((n.name.as_str(), n.status.kernel_io.as_ref()?))),
    )
}

fn section_of<'a>(nodes: impl Iterator<Item = (&'a str, &'a KernelIo)>) -> String {
    let mut out = String::new();
    for (name, k) in nodes {
        out.push_str(&node_lines(name, k));
    }
    if out.is_empty() {
        return out;
    }
    format!("\nKernel view (eBPF):\n{out}")
}

fn node_lines(name: &str, k: &KernelIo) -> String {
    let mut out = String::new();
    if let Some(why) = &k.unavailable {
        let _ = writeln!(
            out,
            "  {name}: eBPF unavailable ({why}); user-space timing only"
        );
        return out;
    }
    let probes = if k.probes.is_empty() {
        String::new()
    } else if k.probes.iter().any(|p| p == "syscalls") {
        format!(
            "; probes {}; syscalls traced {} of {} s",
            k.probes.join(","),
            k.syscall_traced_secs.min(k.window_secs),
            k.window_secs
        )
    } else {
        format!("; probes {}", k.probes.join(","))
    };
    let _ = writeln!(out, "  {name} (last {} s{probes}):", k.window_secs);
    for d in &k.disks {
        let dev = d
            .device
            .as_ref()
            .map(|x| format!(" on /dev/{x}"))
            .unwrap_or_default();
        let engine = match d.engine_write_mean_seconds {
            Some(u) => format!(
                "the engine's writes to replicas on it take {} ({} writes)",
                ms(u),
                d.engine_writes
            ),
            None => "no engine on this node wrote to it".to_string(),
        };
        let mut kernel = Vec::new();
        if d.writes > 0 {
            kernel.push(format!(
                "pwrite {} ({} calls)",
                ms(d.write_mean_seconds),
                d.writes
            ));
        }
        if d.fsyncs > 0 {
            kernel.push(format!(
                "fdatasync {} ({} calls)",
                ms(d.fsync_mean_seconds),
                d.fsyncs
            ));
        }
        if d.reads > 0 {
            kernel.push(format!(
                "pread {} ({} calls)",
                ms(d.read_mean_seconds),
                d.reads
            ));
        }
        if d.block_requests > 0 {
            kernel.push(format!(
                "block requests{dev} {} ({})",
                ms(d.block_mean_seconds),
                d.block_requests
            ));
        }
        let kernel = if kernel.is_empty() {
            "no replica I/O in the kernel".to_string()
        } else {
            format!("in the kernel: {}", kernel.join(", "))
        };
        let errors = d.syscall_errors + d.block_errors;
        let errors = if errors > 0 {
            format!("; {errors} failed")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "    disk {} ({}{dev}): {engine}; {kernel}{errors}",
            d.disk, d.path
        );
    }
    for p in &k.peers {
        let _ = writeln!(
            out,
            "    link to {}: {} segments retransmitted by this node, smoothed RTT {}",
            p.node,
            p.retransmits,
            ms(p.rtt_mean_seconds)
        );
    }
    if k.runqueue_waits > 0 {
        let _ = writeln!(
            out,
            "    agent threads: {} run-queue waits, 99th percentile under {}, {} of {} or more",
            k.runqueue_waits,
            ms(k.runqueue_p99_seconds),
            k.runqueue_long_waits,
            ms(vigil_control::health::kernel_io::STARVED_LONG_WAIT_SECONDS)
        );
    }
    out
}
