#!/usr/bin/env bash
# The one test command: installs what the tests need, builds, runs everything.
# Usage: tests/run.sh [extra nextest args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Real clients and tools the integration tests drive (Debian packages).
need_pkgs=()
command -v qemu-img >/dev/null || need_pkgs+=(qemu-utils)
command -v qemu-io  >/dev/null || need_pkgs+=(qemu-utils)
command -v nbdinfo  >/dev/null || need_pkgs+=(libnbd-bin)
command -v nbdcopy  >/dev/null || need_pkgs+=(libnbd-bin)
# The nemesis writer's NBD session (tests/nbd_session.py): libnbd for Python.
/usr/bin/python3 -c 'import nbd' 2>/dev/null || need_pkgs+=(python3-libnbd)
command -v fio      >/dev/null || need_pkgs+=(fio)
command -v etcd     >/dev/null || need_pkgs+=(etcd-server)
command -v etcdctl  >/dev/null || need_pkgs+=(etcd-client)
command -v protoc   >/dev/null || need_pkgs+=(protobuf-compiler)
command -v promtool >/dev/null || need_pkgs+=(prometheus)
command -v prometheus >/dev/null || need_pkgs+=(prometheus)   # the server: dashboards_prometheus.rs
# Disk faults (tests/faults, tests/src/faults.rs): FUSE passthrough, loop ext4.
command -v fusermount3 >/dev/null || need_pkgs+=(fuse3)
/usr/bin/python3 -c 'import fusepy' 2>/dev/null || need_pkgs+=(python3-fusepy)
command -v mkfs.ext4 >/dev/null || need_pkgs+=(e2fsprogs)
command -v losetup  >/dev/null || need_pkgs+=(mount)
# eBPF (ebpf/tests/object.rs rebuilds the committed object with clang-14).
command -v clang-14 >/dev/null || need_pkgs+=(clang-14)
command -v llc-14   >/dev/null || need_pkgs+=(llvm-14)
[ -f /usr/include/bpf/bpf_helpers.h ] || need_pkgs+=(libbpf-dev)
command -v setpriv >/dev/null || need_pkgs+=(util-linux)
# Packet loss on a replica link (tests/tests/ebpf_diagnoses.rs).
command -v nft      >/dev/null || need_pkgs+=(nftables)
# Network namespaces and veth pairs of the nemesis suite (tests/src/netns.rs).
command -v ip       >/dev/null || need_pkgs+=(iproute2)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "== installing: ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# The OTLP receiver of tests/tests/traces_otlp.rs decodes exports with the
# official protobuf bindings (PyPI).
if ! python3 -c 'import opentelemetry.proto' 2>/dev/null; then
  echo "== installing: opentelemetry-proto (PyPI)"
  python3 -m pip install -q opentelemetry-proto
fi

# The dashboards are generated and validated with Grafana's foundation SDK
# (pinned in dashboards/requirements.txt); the alert-test coverage check
# reads the rule files with PyYAML. (The version is compared after pip has
# printed everything: `pip show | grep -q` under pipefail fails whenever grep
# stops reading early.)
sdk_pin="$(grep -v '^#' dashboards/requirements.txt | head -1)"
if ! python3 -c 'import grafana_foundation_sdk, yaml' 2>/dev/null \
   || [ "$(python3 -m pip show grafana-foundation-sdk 2>/dev/null | sed -n 's/^Version: //p')" != "${sdk_pin#*==}" ]; then
  echo "== installing: ${sdk_pin} pyyaml (PyPI)"
  python3 -m pip install -q "${sdk_pin}" pyyaml
fi

# The etcd store is a cargo feature (etcd-client needs protoc); the tests
# exercise both stores, so everything is built with it.
FEATURES=(--features vigil/etcd)

echo "== formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --release "${FEATURES[@]}" -- -D warnings

echo "== build (release: integration tests run the real binary)"
cargo build --release --workspace --bins "${FEATURES[@]}"

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --release "${FEATURES[@]}" --no-fail-fast "$@"
else
  cargo test --workspace --release "${FEATURES[@]}" --no-fail-fast "$@"
fi
