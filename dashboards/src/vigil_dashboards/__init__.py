"""vigil's Grafana dashboards as code (Grafana foundation SDK)."""

from . import cluster, ebpf, node_disk, volume

# File name (without .json) -> builder; the order is the README's.
DASHBOARDS = {
    "vigil-cluster": cluster.build,
    "vigil-volume": volume.build,
    "vigil-node-disk": node_disk.build,
    "vigil-ebpf": ebpf.build,
}
