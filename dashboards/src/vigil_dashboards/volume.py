"""Volume: state and robustness, frontend IOPS/throughput/latency per op,
replicas with their states, modes and write latency, rebuild progress,
migration; degraded/faulted periods as annotations."""

from __future__ import annotations

from grafana_foundation_sdk.models import common as cm

from .common import Board, Query, datasource_var, hm, quantile, st, tbl, timeline, ts, value_map, volume_var

UID = "vigil-volume"

V = 'volume=~"$volume"'


def build() -> Board:
    b = Board(
        UID,
        "vigil / Volume",
        "One or more volumes: I/O as the engine sees it, replicas, rebuilds and migrations.",
        [datasource_var(), volume_var()],
    )
    b.annotation(
        "Degraded or faulted",
        f'max by (volume, robustness) (vigil_volume_robustness{{{V}, robustness=~"degraded|faulted"}})',
        "orange",
    )

    b.row("State")
    b.add(st("State", "none", [Query(f"max by (volume, state) (vigil_volume_state{{{V}}})", "{{volume}}: {{state}}",
                                     instant=True)],
             w=6, text_mode=cm.BigValueTextMode.NAME))
    b.add(st("Robustness", "none",
             [Query(f"max by (volume, robustness) (vigil_volume_robustness{{{V}}})", "{{volume}}: {{robustness}}",
                    instant=True)],
             w=6, text_mode=cm.BigValueTextMode.NAME))
    b.add(st("Size", "bytes", [Query(f"max by (volume) (vigil_volume_size_bytes{{{V}}})", "{{volume}}",
                                     instant=True)], w=4))
    b.add(st("Allocated", "bytes", [Query(f"max by (volume) (vigil_volume_actual_size_bytes{{{V}}})", "{{volume}}",
                                          instant=True)], w=4))
    b.add(st("Replicas healthy / desired", "none",
             [Query(f"max by (volume) (vigil_volume_replicas_healthy{{{V}}})", "{{volume}} healthy", instant=True),
              Query(f"max by (volume) (vigil_volume_replicas_desired{{{V}}})", "{{volume}} desired", instant=True)],
             w=4))
    b.add(timeline("Robustness over time",
                   [Query(f"max by (volume, robustness) (vigil_volume_robustness{{{V}}})", "{{volume}} {{robustness}}")],
                   value_map({"1": ("current", "blue")}), w=24, h=5))

    b.row("Frontend I/O")
    b.add(ts("IOPS", "iops",
             [Query(f"sum by (volume, op) (rate(vigil_volume_io_ops_total{{{V}}}[$__rate_interval]))",
                    "{{volume}} {{op}}")], w=8))
    b.add(ts("Throughput", "Bps",
             [Query(f"sum by (volume, op) (rate(vigil_volume_io_bytes_total{{{V}}}[$__rate_interval]))",
                    "{{volume}} {{op}}")], w=8))
    b.add(ts("I/O errors", "ops",
             [Query(f"sum by (volume, op) (rate(vigil_volume_io_errors_total{{{V}}}[$__rate_interval]))",
                    "{{volume}} {{op}}")], w=8, no_value="no error"))
    lat = f"vigil_volume_io_latency_seconds_bucket{{{V}}}"
    b.add(ts("Latency p50", "s", [Query(quantile(0.5, lat, "volume, op"), "{{volume}} {{op}}")], w=8))
    b.add(ts("Latency p99", "s", [Query(quantile(0.99, lat, "volume, op"), "{{volume}} {{op}}")], w=8))
    b.add(ts("Latency p99.9", "s", [Query(quantile(0.999, lat, "volume, op"), "{{volume}} {{op}}")], w=8))
    b.add(hm("Read latency", "s", f'sum by (le) (rate(vigil_volume_io_latency_seconds_bucket{{{V}, op="read"}}[$__rate_interval]))'))
    b.add(hm("Write latency", "s", f'sum by (le) (rate(vigil_volume_io_latency_seconds_bucket{{{V}, op="write"}}[$__rate_interval]))'))

    b.row("Replicas")
    b.add(tbl("Replica states", "none",
              [Query(f"max by (volume, replica, node, state) (vigil_replica_state{{{V}}})", instant=True, fmt="table")],
              desc="Instance state of each replica on its node (starting, running, stopping, stopped, error)."))
    b.add(tbl("Replica modes", "none",
              [Query(f"max by (volume, replica, node, mode) (vigil_replica_mode{{{V}}})", instant=True, fmt="table")],
              desc="Mode in the engine: RW serves, WO is rebuilding, ERR is out of service. Only while attached."))
    b.add(ts("Replica write latency p99", "s",
             [Query(quantile(0.99, f"vigil_replica_write_latency_seconds_bucket{{{V}}}", "volume, replica"),
                    "{{replica}}")], w=8,
             desc="One write leg per replica as the engine sees it: a slow replica stands out here."))
    b.add(ts("Replica allocated bytes", "bytes",
             [Query(f"max by (replica, node) (vigil_replica_actual_size_bytes{{{V}}})", "{{replica}} on {{node}}")],
             w=8))
    b.add(ts("Replica faults", "short",
             [Query(f"sum by (replica, reason) (increase(vigil_replica_faults_total{{{V}}}[$__rate_interval]))",
                    "{{replica}} {{reason}}")], w=8, no_value="no fault",
             desc="Transitions to ERR in the engine, by reason."))

    b.row("Rebuilds and migrations")
    b.add(ts("Rebuild progress", "percentunit",
             [Query(f"max by (volume, replica) (vigil_replica_rebuild_copied_bytes{{{V}}})"
                    f" / max by (volume, replica) (vigil_replica_rebuild_size_bytes{{{V}}})", "{{replica}}")],
             w=8, no_value="no rebuild running"))
    b.add(ts("Rebuild copied", "bytes",
             [Query(f"max by (volume, replica) (vigil_replica_rebuild_copied_bytes{{{V}}})", "{{replica}} copied"),
              Query(f"max by (volume, replica) (vigil_replica_rebuild_size_bytes{{{V}}})", "{{replica}} to copy")],
             w=8, no_value="no rebuild running"))
    b.add(ts("Migration phase age", "s",
             [Query(f"max by (volume, phase, source, target) (vigil_volume_migration_phase_seconds{{{V}}})",
                    "{{volume}} {{source}}→{{target}} {{phase}}")],
             w=8, no_value="no migration running"))
    return b
