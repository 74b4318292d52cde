"""eBPF I/O: what the kernel measured for the agent — syscall latency on
replica files per disk, block-device latency, TCP retransmits and RTT on
replica links, run-queue delay of the agent's threads.

Series names and labels follow the eBPF metric contract (docs/metrics.md).
Without eBPF (no privileges, no kernel BTF...) the agent reports
`vigil_ebpf_unavailable{reason}` and none of the data series: every data
panel then says so instead of showing an empty graph."""

from __future__ import annotations

from grafana_foundation_sdk.models import common as cm

from .common import Board, Query, datasource_var, hm, node_var, quantile, st, ts

UID = "vigil-ebpf"

N = 'node=~"$node"'
NO_EBPF = "eBPF unavailable (see eBPF status)"


def build() -> Board:
    b = Board(
        UID,
        "vigil / eBPF I/O",
        "Kernel-side measurements of the agents (eBPF): syscalls, block devices, TCP, scheduler.",
        [datasource_var(), node_var()],
    )

    b.row("Status")
    b.add(st("eBPF status", "none",
             [Query(f"max by (node) (vigil_ebpf_loaded{{{N}}}) == 1", "{{node}}: eBPF loaded", instant=True),
              Query(f"max by (node, reason) (vigil_ebpf_unavailable{{{N}}}) == 1",
                    "{{node}}: eBPF unavailable: {{reason}}", instant=True)],
             w=24, h=4, text_mode=cm.BigValueTextMode.NAME,
             no_value="eBPF unavailable: the agents report no eBPF status (agent without eBPF support)",
             desc="Loading needs root or CAP_BPF+CAP_PERFMON and kernel BTF; reason is disabled, not_permitted, "
                  "no_btf, load_failed or attach_failed."))

    b.row("Syscalls on replica files")
    sys_b = f"vigil_ebpf_syscall_latency_seconds_bucket{{{N}}}"
    for op in ("read", "write", "fsync"):
        b.add(hm(f"Syscall {op} latency", "s",
                 f'sum by (le) (rate(vigil_ebpf_syscall_latency_seconds_bucket{{{N}, op="{op}"}}[$__rate_interval]))',
                 w=8, no_value=NO_EBPF))
    b.add(ts("Syscall latency p99 by disk", "s",
             [Query(quantile(0.99, sys_b, "node, disk, op"), "{{node}} {{disk}} {{op}}")], w=12, no_value=NO_EBPF))
    b.add(ts("Syscall errors", "ops",
             [Query(f"sum by (node, disk, op) (rate(vigil_ebpf_syscall_errors_total{{{N}}}[$__rate_interval]))",
                    "{{node}} {{disk}} {{op}}")], w=12, no_value=NO_EBPF))

    b.row("Block devices")
    blk_b = f"vigil_ebpf_block_latency_seconds_bucket{{{N}}}"
    b.add(hm("Block I/O latency", "s",
             f"sum by (le) (rate(vigil_ebpf_block_latency_seconds_bucket{{{N}}}[$__rate_interval]))",
             w=12, no_value=NO_EBPF))
    b.add(ts("Block latency p99 by device", "s",
             [Query(quantile(0.99, blk_b, "node, device, op"), "{{node}} {{device}} {{op}}")], w=12,
             no_value=NO_EBPF))
    b.add(ts("Block errors", "ops",
             [Query(f"sum by (node, device) (rate(vigil_ebpf_block_errors_total{{{N}}}[$__rate_interval]))",
                    "{{node}} {{device}}")], w=12, no_value=NO_EBPF))
    b.add(ts("Block requests in flight", "none",
             [Query(f"max by (node, device) (vigil_ebpf_block_inflight{{{N}}})", "{{node}} {{device}}")], w=12,
             no_value=NO_EBPF))

    b.row("Replica links (TCP)")
    b.add(ts("TCP retransmits", "short",
             [Query(f"sum by (node, peer_node) (rate(vigil_ebpf_tcp_retransmits_total{{{N}}}[$__rate_interval]))",
                    "{{node}} → {{peer_node}}")], w=12, no_value=NO_EBPF,
             desc="Retransmitted segments on replica data connections (REPLICA_LINK_RETRANSMITS)."))
    b.add(ts("TCP RTT p99", "s",
             [Query(quantile(0.99, f"vigil_ebpf_tcp_rtt_seconds_bucket{{{N}}}", "node, peer_node"),
                    "{{node}} → {{peer_node}}")], w=12, no_value=NO_EBPF))

    b.row("Scheduler")
    b.add(hm("Run-queue delay of agent threads", "s",
             f"sum by (le) (rate(vigil_ebpf_runqueue_delay_seconds_bucket{{{N}}}[$__rate_interval]))",
             w=12, no_value=NO_EBPF))
    b.add(ts("Run-queue delay p99", "s",
             [Query(quantile(0.99, f"vigil_ebpf_runqueue_delay_seconds_bucket{{{N}}}", "node"), "{{node}}")],
             w=12, no_value=NO_EBPF, desc="Time runnable agent threads waited for a CPU (AGENT_CPU_STARVED)."))
    return b
