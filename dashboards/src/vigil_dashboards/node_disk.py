"""Node and disk: readiness, disk capacity/scheduled/used and I/O errors,
store latency and errors, the agent process (RSS, fds, threads), evictions.

Process and store series carry no `node` label (each agent reports about
itself); `by_node` joins it from `vigil_build_info`."""

from __future__ import annotations

from grafana_foundation_sdk.models import common as cm

from .common import (
    JOB,
    Board,
    Query,
    by_node,
    datasource_var,
    node_var,
    st,
    tbl,
    timeline,
    ts,
    value_map,
)

UID = "vigil-node-disk"

N = 'node=~"$node"'


def build() -> Board:
    b = Board(
        UID,
        "vigil / Node and disk",
        "Per node: liveness, disks (capacity, scheduled, used, errors), store access and the agent process.",
        [datasource_var(), node_var()],
    )

    b.row("Node")
    b.add(timeline("Node readiness", [Query(f"max by (node) (vigil_node_ready{{{N}}})", "{{node}}")],
                   value_map({"1": ("ready", "green"), "0": ("DOWN", "red")}), w=12,
                   desc="Liveness lease as the cluster sees it (reported by every agent, so a dead node shows too)."))
    b.add(timeline("Agent scraped",
                   [Query(by_node(f"max by (job, instance) (up{{{JOB}}})"), "{{node}}")],
                   value_map({"1": ("up", "green"), "0": ("DOWN", "red")}), w=12,
                   desc="Whether Prometheus reaches the agent (a dead agent's node label is gone with its series: see the cluster overview)."))
    b.add(tbl("Agent version", "none", [Query(f"max by (node, version) (vigil_build_info{{{N}}})", instant=True,
                                              fmt="table")], w=8, h=6))
    b.add(st("Uptime", "s", [Query(f"time() - max by (node) ({by_node('vigil_process_start_time_seconds')})",
                                   "{{node}}", instant=True)], w=8, h=6,
             text_mode=cm.BigValueTextMode.VALUE_AND_NAME))
    b.add(st("Store reachable", "none", [Query(f"max by (node) ({by_node('vigil_store_up')})", "{{node}}",
                                               instant=True)], w=8, h=6,
             text_mode=cm.BigValueTextMode.VALUE_AND_NAME,
             mappings=value_map({"1": ("reachable", "green"), "0": ("UNREACHABLE", "red")})))

    b.row("Disks")
    b.add(ts("Capacity, used, scheduled", "bytes",
             [Query(f"max by (node, path) (vigil_disk_capacity_bytes{{{N}}})", "{{node}} {{path}} capacity"),
              Query(f"max by (node, path) (vigil_disk_used_bytes{{{N}}})", "{{node}} {{path}} used"),
              Query(f"max by (node, path) (vigil_disk_scheduled_bytes{{{N}}})", "{{node}} {{path}} scheduled")],
             w=12, desc="Scheduled is the sum of replica sizes placed on the disk; it may exceed capacity (over-provisioning)."))
    b.add(ts("Disk fill", "percentunit",
             [Query(f"1 - max by (node, path) (vigil_disk_available_bytes{{{N}}})"
                    f" / max by (node, path) (vigil_disk_capacity_bytes{{{N}}})", "{{node}} {{path}}")],
             w=12, desc="DISK_NEARLY_FULL at 85 %, DISK_FULL at 95 % or below the reservation."))
    b.add(ts("Scheduled / capacity", "percentunit",
             [Query(f"max by (node, path) (vigil_disk_scheduled_bytes{{{N}}})"
                    f" / max by (node, path) (vigil_disk_capacity_bytes{{{N}}})", "{{node}} {{path}}")], w=8))
    b.add(ts("Available and reserved", "bytes",
             [Query(f"max by (node, path) (vigil_disk_available_bytes{{{N}}})", "{{node}} {{path}} available"),
              Query(f"max by (node, path) (vigil_disk_reserved_bytes{{{N}}})", "{{node}} {{path}} reserved")], w=8))
    b.add(ts("Disk I/O errors", "short",
             [Query(f"sum by (node, path) (increase(vigil_disk_io_errors_total{{{N}}}[$__rate_interval]))",
                    "{{node}} {{path}}")], w=8,
             desc="I/O and no-space errors from replica files on the disk (DISK_FAILING / DISK_FULL)."))
    b.add(tbl("Disk states", "none", [Query(f"max by (node, disk, path, state) (vigil_disk_state{{{N}}})",
                                            instant=True, fmt="table")], w=12, h=6))
    b.add(ts("Replicas on the node", "none",
             [Query(f"count by (node) (vigil_replica_actual_size_bytes{{{N}}})", "{{node}}")], w=12, h=6))

    b.row("Store")
    b.add(ts("Store request latency p99", "s",
             [Query("histogram_quantile(0.99, sum by (le, node, op) ("
                    + by_node("rate(vigil_store_request_duration_seconds_bucket[$__rate_interval])") + "))",
                    "{{node}} {{op}}")], w=12))
    b.add(ts("Store request latency p50", "s",
             [Query("histogram_quantile(0.5, sum by (le, node, op) ("
                    + by_node("rate(vigil_store_request_duration_seconds_bucket[$__rate_interval])") + "))",
                    "{{node}} {{op}}")], w=12))
    b.add(ts("Store requests", "reqps",
             [Query("sum by (node, op) ("
                    + by_node("rate(vigil_store_request_duration_seconds_count[$__rate_interval])") + ")",
                    "{{node}} {{op}}")], w=12))
    b.add(ts("Store errors", "reqps",
             [Query("sum by (node, op, kind) ("
                    + by_node("rate(vigil_store_request_errors_total[$__rate_interval])") + ")",
                    "{{node}} {{op}} {{kind}}")], w=12, no_value="no error",
             desc="conflict is an expected compare-and-swap loss; other kinds mean the store is failing."))

    b.row("Agent process")
    b.add(ts("Resident memory", "bytes", [Query(by_node("vigil_process_resident_memory_bytes"), "{{node}}")], w=6))
    b.add(ts("Open file descriptors", "none", [Query(by_node("vigil_process_open_fds"), "{{node}}")], w=6))
    b.add(ts("Threads", "none", [Query(by_node("vigil_process_threads"), "{{node}}")], w=6))
    b.add(ts("Metrics render time", "s", [Query(by_node("vigil_scrape_duration_seconds"), "{{node}}")], w=6))

    b.row("Eviction")
    b.add(ts("Replicas left to move", "none",
             [Query(f"max by (node, phase) (vigil_node_eviction_replicas_left{{{N}}})", "{{node}} {{phase}}")],
             w=24, h=6, no_value="no eviction"))
    return b
