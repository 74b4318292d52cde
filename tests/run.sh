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
command -v fio      >/dev/null || need_pkgs+=(fio)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "== installing: ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

echo "== formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --release -- -D warnings

echo "== build (release: integration tests run the real binary)"
cargo build --release --workspace --bins

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --release --no-fail-fast "$@"
else
  cargo test --workspace --release --no-fail-fast "$@"
fi
