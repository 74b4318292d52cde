"""Cluster overview: nodes, volumes by robustness, health checks, capacity,
rebuilds, migrations and evictions, cluster-wide I/O.

Cluster-wide series are reported alike by every agent (docs/metrics.md,
"who reports what"), so they are reduced with max by their own labels to
count each object once."""

from __future__ import annotations

from grafana_foundation_sdk.models import common as cm

from .common import JOB, Board, Query, datasource_var, st, step, tbl, timeline, ts, value_map

UID = "vigil-cluster"


def build() -> Board:
    b = Board(
        UID,
        "vigil / Cluster overview",
        "Nodes, volumes, health checks, capacity and repairs of one vigil cluster.",
        [datasource_var()],
    )

    b.row("Nodes")
    b.add(st("Nodes ready", "none", [Query("max(vigil_cluster_nodes_ready)", "ready", instant=True)],
             desc="Registered nodes whose agent holds its liveness lease."))
    b.add(st("Nodes expected", "none", [Query("max(vigil_cluster_nodes_expected)", "expected", instant=True)],
             desc="Nodes registered in the cluster; more than ready means a node is down."))
    b.add(st("Agents scraped", "none", [Query(f"sum(up{{{JOB}}})", "up", instant=True)],
             desc="Agents Prometheus scraped successfully (job vigil)."))
    b.add(st("Agents not scraped", "none", [Query(f"sum(1 - up{{{JOB}}})", "down", instant=True)],
             desc="Agents whose last scrape failed: the agent is down or unreachable.",
             thresholds=[step(None, "green"), step(1, "red")]))
    b.add(st("Store reachable", "none", [Query("min(vigil_store_up)", "store", instant=True)],
             desc="0 when some agent could not read the cluster store at its last scrape.",
             mappings=value_map({"1": ("reachable", "green"), "0": ("UNREACHABLE", "red")})))
    b.add(st("Active health checks", "none",
             [Query("count(max by (code) (vigil_health_check))", "checks", instant=True)],
             desc="Failing, unmuted health checks (vigil doctor).",
             no_value="0", thresholds=[step(None, "green"), step(1, "orange")]))
    b.add(timeline("Node readiness", [Query("max by (node) (vigil_node_ready)", "{{node}}")],
                   value_map({"1": ("ready", "green"), "0": ("DOWN", "red")}), w=24,
                   desc="Each node's liveness as every agent sees it (a dead node's own agent reports nothing)."))

    b.row("Volumes")
    b.add(st("Volumes", "none", [Query("count(max by (volume) (vigil_volume_state))", "volumes", instant=True)]))
    b.add(st("Volumes by robustness", "none",
             [Query("count by (robustness) (max by (volume, robustness) (vigil_volume_robustness))",
                    "{{robustness}}", instant=True)],
             w=10, text_mode=cm.BigValueTextMode.VALUE_AND_NAME,
             desc="healthy: every desired replica serves; degraded: fewer; faulted: none (I/O fails); unknown: detached."))
    b.add(st("Volumes by state", "none",
             [Query("count by (state) (max by (volume, state) (vigil_volume_state))", "{{state}}", instant=True)],
             w=10, text_mode=cm.BigValueTextMode.VALUE_AND_NAME))
    b.add(ts("Volumes by robustness over time", "none",
             [Query("count by (robustness) (max by (volume, robustness) (vigil_volume_robustness))", "{{robustness}}")],
             w=12))
    b.add(ts("Replicas healthy / desired", "none",
             [Query("sum(max by (volume) (vigil_volume_replicas_healthy))", "healthy"),
              Query("sum(max by (volume) (vigil_volume_replicas_desired))", "desired")],
             w=12, desc="Across all volumes; a gap is lost redundancy (rebuilding, failed or unschedulable replicas)."))

    b.row("Health checks")
    b.add(tbl("Active health checks by code", "none",
              [Query("max by (code, severity) (vigil_health_check)", instant=True, fmt="table"),
               Query("max by (code) (vigil_health_check_objects)", instant=True, fmt="table")],
              w=12, no_value="no failing health check",
              desc="See docs/health-checks.md for each code's cause and fix; `vigil doctor` for the items."))
    b.add(ts("Health checks over time", "none",
             [Query("max by (code, severity) (vigil_health_check)", "{{code}} ({{severity}})")],
             w=12, no_value="no failing health check"))
    b.add(tbl("Muted health checks", "none",
              [Query("max by (code) (vigil_health_check_muted)", instant=True, fmt="table")],
              w=12, h=5, no_value="nothing muted",
              desc="Checks an operator muted (vigil health mute); still evaluated, not counted."))
    b.add(ts("Automatic repairs", "ops",
             [Query("sum by (action) (rate(vigil_remediations_total[$__rate_interval]))", "{{action}}")],
             w=12, h=5, desc="Remediations taken by the agents: rebuilds, replacements, salvage..."))

    b.row("Capacity")
    b.add(st("Disk capacity", "bytes", [Query("sum(vigil_disk_capacity_bytes)", "capacity", instant=True)],
             desc="Sum over registered disks (disks sharing one filesystem count it once each)."))
    b.add(st("Disk used", "bytes", [Query("sum(vigil_disk_used_bytes)", "used", instant=True)]))
    b.add(st("Scheduled", "bytes", [Query("sum(vigil_disk_scheduled_bytes)", "scheduled", instant=True)],
             desc="Sum of the sizes of replicas placed on the disks."))
    b.add(st("Provisioned", "bytes", [Query("sum(max by (volume) (vigil_volume_size_bytes))", "size", instant=True)],
             desc="Sum of volume sizes."))
    b.add(st("Allocated", "bytes",
             [Query("sum(max by (volume) (vigil_volume_actual_size_bytes))", "allocated", instant=True)],
             desc="Bytes allocated by each volume's largest replica, summed."))
    b.add(st("Fullest disk", "percentunit",
             [Query("max(1 - vigil_disk_available_bytes / vigil_disk_capacity_bytes)", "fullest", instant=True)],
             thresholds=[step(None, "green"), step(0.85, "orange"), step(0.95, "red")]))
    b.add(ts("Capacity over time", "bytes",
             [Query("sum(vigil_disk_capacity_bytes)", "capacity"),
              Query("sum(vigil_disk_used_bytes)", "used"),
              Query("sum(vigil_disk_scheduled_bytes)", "scheduled")], w=24))

    b.row("Rebuilds, migrations, evictions")
    b.add(st("Rebuilds in progress", "none",
             [Query("count(max by (volume, replica) (vigil_replica_rebuild_size_bytes))", "rebuilds", instant=True)],
             no_value="0"))
    b.add(tbl("Rebuild progress", "percentunit",
              [Query("max by (volume, replica) (vigil_replica_rebuild_copied_bytes)"
                     " / max by (volume, replica) (vigil_replica_rebuild_size_bytes)", instant=True, fmt="table")],
              w=10, h=6, no_value="no rebuild running"))
    b.add(tbl("Live migrations", "s",
              [Query("max by (volume, phase, source, target) (vigil_volume_migration_phase_seconds)",
                     instant=True, fmt="table")],
              w=10, h=6, no_value="no migration running",
              desc="Seconds each running live migration has spent in its phase."))
    b.add(ts("Node evictions: replicas left", "none",
             [Query("max by (node, phase) (vigil_node_eviction_replicas_left)", "{{node}} {{phase}}")],
             w=24, h=6, no_value="no eviction",
             desc="Replicas still on nodes being evicted; blocked means no other place satisfies their rules."))

    b.row("I/O")
    b.add(ts("Cluster IOPS", "iops",
             [Query("sum by (op) (rate(vigil_volume_io_ops_total[$__rate_interval]))", "{{op}}")]))
    b.add(ts("Cluster throughput", "Bps",
             [Query("sum by (op) (rate(vigil_volume_io_bytes_total[$__rate_interval]))", "{{op}}")]))
    b.add(ts("Events recorded", "ops",
             [Query("sum by (severity) (rate(vigil_events_recorded_total[$__rate_interval]))", "{{severity}}")],
             w=24, h=6))
    return b
