#!/usr/bin/env python3
"""Benchmark vigil volumes against qemu-nbd, side by side, in one run.

Targets (all on the same disk, all filled with data first so reads hit
real blocks, all O_DIRECT: qemu-nbd --cache=none --aio=io_uring):
  qemu-nbd      a raw file served by qemu-nbd over TCP
  vigil-1r      a 1-replica vigil volume (replica in-process with the engine)
  vigil-3r      a 3-replica vigil volume on three agents on this host
Workloads (fio, nbd engine): 4k random read/write at QD1 and QD32,
1M sequential read/write at QD8. Prints IOPS, MB/s, p50/p99 latency and the
ratio to qemu-nbd.

Usage: bench/nbd_vs_qemu.py [--size 1GiB] [--runtime 15] [--dir DIR] [--only WORKLOAD...]
Needs: a release build (cargo build --release), qemu-nbd, fio.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, VIGIL, Agent, fill, fio, free_port, wait_port  # noqa: E402

WORKLOADS = [
    ("randread-4k-qd1", "randread", "4k", 1),
    ("randread-4k-qd32", "randread", "4k", 32),
    ("randwrite-4k-qd1", "randwrite", "4k", 1),
    ("randwrite-4k-qd32", "randwrite", "4k", 32),
    ("seqread-1m-qd8", "read", "1M", 8),
    ("seqwrite-1m-qd8", "write", "1M", 8),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1GiB", help="volume size (fio uses all of it)")
    ap.add_argument("--runtime", type=int, default=15)
    ap.add_argument("--dir", default=None, help="where files live (default: a temp dir under bench/)")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--targets", nargs="*", default=["qemu-nbd", "vigil-1r", "vigil-3r"])
    a = ap.parse_args()
    for tool in ("fio", "qemu-nbd", "qemu-img"):
        if not shutil.which(tool):
            sys.exit(f"{tool} missing: apt-get install fio qemu-utils")
    if not os.path.exists(VIGIL):
        sys.exit(f"{VIGIL} missing: cargo build --release")
    size_bytes = int(subprocess.run(["numfmt", "--from=iec-i", a.size.replace("B", "")],
                                    capture_output=True, text=True, check=True).stdout)
    root = tempfile.mkdtemp(prefix="bench-", dir=a.dir or os.path.join(ROOT, "bench"))
    procs = []
    try:
        uris = {}
        if "qemu-nbd" in a.targets:
            raw = os.path.join(root, "qemu.raw")
            subprocess.run(["qemu-img", "create", "-f", "raw", raw, str(size_bytes)], check=True, capture_output=True)
            port = free_port()
            procs.append(subprocess.Popen(["qemu-nbd", "-f", "raw", "--cache=none", "--aio=io_uring", "-x", "bench",
                                           "-b", "127.0.0.1", "-p", str(port), "-t", "-e", "8", raw],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(port)
            uris["qemu-nbd"] = f"nbd://127.0.0.1:{port}/bench"
        agents = []
        if "vigil-1r" in a.targets or "vigil-3r" in a.targets:
            agents = [Agent(root, f"n{i}", procs) for i in (1, 2, 3)]
        if "vigil-1r" in a.targets:
            r = agents[0].cli("replica", "create", "one-r", "--size", str(size_bytes))["url"]
            uris["vigil-1r"] = agents[0].cli("engine", "create", "one", "--size", str(size_bytes), "--replica", r)["nbd_uri"]
        if "vigil-3r" in a.targets:
            rs = [ag.cli("replica", "create", f"three-r{i}", "--size", str(size_bytes))["url"] for i, ag in enumerate(agents)]
            args = ["engine", "create", "three", "--size", str(size_bytes)]
            for r in rs:
                args += ["--replica", r]
            uris["vigil-3r"] = agents[0].cli(*args)["nbd_uri"]
        for name, uri in uris.items():
            print(f"filling {name} ({a.size}) ...", file=sys.stderr)
            fill(uri, size_bytes)
        results = {}
        for wl, rw, bs, qd in WORKLOADS:
            if a.only and wl not in a.only:
                continue
            for name, uri in uris.items():
                print(f"{wl} on {name} ...", file=sys.stderr)
                results[(wl, name)] = fio(uri, rw, bs, qd, size_bytes, a.runtime)
        print(f"\n{'workload':<20} {'target':<10} {'IOPS':>9} {'MB/s':>8} {'p50 us':>8} {'p99 us':>8} {'x qemu-nbd':>10}")
        for wl, *_ in WORKLOADS:
            base = results.get((wl, "qemu-nbd"))
            for name in uris:
                r = results.get((wl, name))
                if not r:
                    continue
                ratio = f"{r['iops'] / base['iops']:.2f}" if base and base["iops"] else "-"
                print(f"{wl:<20} {name:<10} {r['iops']:>9.0f} {r['mbps']:>8.1f} {r['p50_us']:>8.0f} {r['p99_us']:>8.0f} {ratio:>10}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
