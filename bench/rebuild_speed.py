#!/usr/bin/env python3
"""A rebuild's speed against the copies it competes with (issue 20, item 6).

One run, on one disk, alternated over --rounds:
  vigil rebuild   a 2-agent setup; an engine over one replica (n1) holding
                  --data of data in a --size volume (written in 4 MiB runs
                  with holes between, so the volume is part sparse); a new
                  replica on n2 is added and timed until it is RW
  cp --sparse     `cp --reflink=never --sparse=always` of the source
                  replica's layer files (the same allocated data, copied by
                  the filesystem)
  nbdcopy         `nbdcopy` from the engine's export to a raw file (reads
                  the whole volume over NBD, holes as zeros)
Prints each time, the MiB/s of allocated data, and the rebuild's ratio to
each peer (a ratio > 1 means the rebuild is faster), median with min-max.

Usage: bench/rebuild_speed.py [--size 1GiB] [--data 512MiB] [--rounds 3]
Needs: a release build, qemu-io, nbdcopy (libnbd-bin). Run on a quiet
machine only: nothing else running.
"""
import argparse
import glob
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, VIGIL, Agent  # noqa: E402


def size_of(text):
    return int(subprocess.run(["numfmt", "--from=iec-i", text.replace("B", "")],
                              capture_output=True, text=True, check=True).stdout)


def drop_caches():
    subprocess.run(["sync"], check=False)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass  # not root: the copies may read from the page cache


def one_round(root, size, data, r):
    procs = []
    try:
        n1, n2 = Agent(root, f"r{r}-n1", procs), Agent(root, f"r{r}-n2", procs)
        src = n1.cli("replica", "create", "src", "--size", str(size))["url"]
        uri = n1.cli("engine", "create", "vol", "--size", str(size), "--replica", src)["nbd_uri"]
        # data in 4 MiB runs, a 4 MiB hole after each, until --data is written
        cmds, off, written = [], 0, 0
        while written < data and off + (4 << 20) <= size:
            cmds += ["-c", f"write -P 0x{(off >> 22) % 250 + 1:02x} {off} 4M"]
            off += 8 << 20
            written += 4 << 20
        for i in range(0, len(cmds), 64):
            subprocess.run(["qemu-io", "-f", "raw", *cmds[i:i + 64], uri], check=True, capture_output=True)
        subprocess.run(["qemu-io", "-f", "raw", "-c", "flush", uri], check=True, capture_output=True)

        # vigil: add a replica on n2, time until it is RW
        dst = n2.cli("replica", "create", "dst", "--size", str(size))["url"]
        drop_caches()
        t = time.monotonic()
        n1.cli("engine", "add-replica", "vol", dst)
        while True:
            modes = [s["mode"] for s in n1.cli("engine", "show", "vol")["replicas"]]
            if len(modes) == 2 and all(m == "RW" for m in modes):
                break
            if any(m == "ERR" for m in modes):
                raise RuntimeError(f"rebuild failed: {modes}")
            time.sleep(0.01)
        rebuild = time.monotonic() - t

        # cp --sparse of the source's layer files (the chain the rebuild
        # copies: its allocated data)
        layers = glob.glob(os.path.join(n1.dir, "**", "replicas", "src", "*.img"), recursive=True)
        allocated = sum(os.stat(p).st_blocks * 512 for p in layers)
        if allocated < written:
            raise RuntimeError(f"the source's layers {layers} hold {allocated} bytes, {written} written")
        drop_caches()
        t = time.monotonic()
        outs = []
        for i, layer in enumerate(layers):
            out = os.path.join(root, f"r{r}-cp-{i}.img")
            subprocess.run(["cp", "--reflink=never", "--sparse=always", layer, out], check=True)
            outs.append(out)
        subprocess.run(["sync", *outs], check=True)
        cp = time.monotonic() - t
        for out in outs:
            os.remove(out)

        # nbdcopy from the export
        drop_caches()
        out = os.path.join(root, f"r{r}-nbdcopy.raw")
        t = time.monotonic()
        subprocess.run(["nbdcopy", uri, out], check=True, capture_output=True)
        subprocess.run(["sync", out], check=True)
        nbdcopy = time.monotonic() - t
        os.remove(out)
        return written, rebuild, cp, nbdcopy
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--data", default="512MiB")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    for tool in ("qemu-io", "nbdcopy", "cp", "numfmt"):
        if not shutil.which(tool):
            sys.exit(f"{tool} missing: apt-get install qemu-utils libnbd-bin")
    if not os.path.exists(VIGIL):
        sys.exit(f"{VIGIL} missing: cargo build --release")
    size, data = size_of(a.size), size_of(a.data)
    root = tempfile.mkdtemp(prefix="rebuild-", dir=a.dir or os.path.join(ROOT, "bench"))
    rows = []
    try:
        for r in range(a.rounds):
            print(f"round {r + 1} ...", file=sys.stderr)
            rows.append(one_round(root, size, data, r))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mib = rows[0][0] / (1 << 20)
    print(f"\n{mib:.0f} MiB of data in a {a.size} volume, {a.rounds} rounds "
          f"(load {os.getloadavg()[0]:.2f} at the end)")
    print(f"{'round':>5} {'rebuild s':>10} {'cp s':>8} {'nbdcopy s':>10} {'rebuild MiB/s':>14}")
    for i, (_, rb, cp, nc) in enumerate(rows):
        print(f"{i + 1:>5} {rb:>10.2f} {cp:>8.2f} {nc:>10.2f} {mib / rb:>14.0f}")

    def show(name, xs):
        print(f"rebuild speed / {name}: median {statistics.median(xs):.2f} (min {min(xs):.2f}, max {max(xs):.2f})")
    show("cp --sparse", [cp / rb for _, rb, cp, _ in rows])
    show("nbdcopy", [nc / rb for _, rb, _, nc in rows])


if __name__ == "__main__":
    main()
