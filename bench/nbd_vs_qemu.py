#!/usr/bin/env python3
"""Benchmark vigil volumes against qemu-nbd, side by side, in one run.

Targets (all on the same disk, all filled with data first so reads hit
real blocks, all O_DIRECT: qemu-nbd --cache=none --aio=io_uring):
  direct        the raw file itself, fio io_uring O_DIRECT: the disk's limit
                (a replicated write can do at most a third of its write IOPS)
  qemu-nbd      a raw file served by qemu-nbd over TCP
  quorum        the replicated peer: qemu's quorum driver (vote-threshold 2,
                reads from the first child) served by qemu-nbd over three
                qemu-nbd children (--cache=none --aio=io_uring) reached over TCP
  vigil-1r      a 1-replica vigil volume (replica in-process with the engine)
  vigil-1r-blk  the same on an agent started with --io-engine blocking
                (replica I/O on tokio's blocking pool: the fallback path)
  vigil-3r      a 3-replica vigil volume on three agents on this host
Workloads (fio, nbd engine): 4k random read/write at QD1 and QD32,
1M sequential read/write at QD8. Every round runs each workload on every
target, the targets' order rotating from round to round; each target's
ratio to qemu-nbd is taken within its round and reported as the median
with min-max, beside the median IOPS, p50/p99 latency and CPU
microseconds per I/O (whole machine, from /proc/stat: includes fio's).
Run it on a quiet machine only; it prints the load average before and after.

Usage: bench/nbd_vs_qemu.py [--size 1GiB] [--runtime 15] [--rounds 3] [--dir DIR]
                            [--only WORKLOAD...] [--targets TARGET...] [--alt-bin PATH]
--alt-bin adds `alt-1r` (and, with vigil-3r, `alt-3r`): the same volumes on
agents of another build, to compare two builds in the same rounds.
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
from benchlib import ROOT, VIGIL, Agent, cpu_busy_seconds, fill, fio, free_port, wait_port  # noqa: E402

WORKLOADS = [
    ("randread-4k-qd1", "randread", "4k", 1),
    ("randread-4k-qd32", "randread", "4k", 32),
    ("randwrite-4k-qd1", "randwrite", "4k", 1),
    ("randwrite-4k-qd32", "randwrite", "4k", 32),
    ("seqread-1m-qd8", "read", "1M", 8),
    ("seqwrite-1m-qd8", "write", "1M", 8),
]


def qemu_nbd(raw, size_bytes, procs):
    """A raw file of `size_bytes` served by qemu-nbd over TCP as export
    `bench` (O_DIRECT, io_uring); returns its port."""
    subprocess.run(["qemu-img", "create", "-f", "raw", raw, str(size_bytes)], check=True, capture_output=True)
    port = free_port()
    procs.append(subprocess.Popen(["qemu-nbd", "-f", "raw", "--cache=none", "--aio=io_uring", "-x", "bench",
                                   "-b", "127.0.0.1", "-p", str(port), "-t", "-e", "8", raw],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_port(port)
    return port


def three_replica_engine(agents, name, size_bytes):
    """An engine on agents[0] over one replica on each of three agents;
    returns its NBD URI."""
    rs = [ag.cli("replica", "create", f"{name}-r{i}", "--size", str(size_bytes))["url"] for i, ag in enumerate(agents)]
    args = ["engine", "create", name, "--size", str(size_bytes)]
    for r in rs:
        args += ["--replica", r]
    return agents[0].cli(*args)["nbd_uri"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1GiB", help="volume size (fio uses all of it)")
    ap.add_argument("--runtime", type=int, default=15)
    ap.add_argument("--dir", default=None, help="where files live (default: a temp dir under bench/)")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--alt-bin", default=None,
                    help="another vigil build: adds targets alt-1r and alt-3r (the same volumes on agents of that build)")
    ap.add_argument("--targets", nargs="*",
                    default=["direct", "qemu-nbd", "quorum", "vigil-1r", "vigil-1r-blk", "vigil-3r"])
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
            port = qemu_nbd(os.path.join(root, "qemu.raw"), size_bytes, procs)
            uris["qemu-nbd"] = f"nbd://127.0.0.1:{port}/bench"
        if "direct" in a.targets:
            raw = os.path.join(root, "direct.raw")
            subprocess.run(["qemu-img", "create", "-f", "raw", raw, str(size_bytes)], check=True, capture_output=True)
            uris["direct"] = f"file://{raw}"
        if "quorum" in a.targets:
            opts = "driver=quorum,vote-threshold=2,read-pattern=fifo"
            for i in range(3):
                port = qemu_nbd(os.path.join(root, f"quorum{i}.raw"), size_bytes, procs)
                opts += (f",children.{i}.driver=nbd,children.{i}.server.type=inet,children.{i}.server.host=127.0.0.1"
                         f",children.{i}.server.port={port},children.{i}.export=bench")
            port = free_port()
            procs.append(subprocess.Popen(["qemu-nbd", "--image-opts", opts, "-x", "bench", "-b", "127.0.0.1",
                                           "-p", str(port), "-t", "-e", "8"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(port)
            uris["quorum"] = f"nbd://127.0.0.1:{port}/bench"
        agents = []
        if "vigil-1r" in a.targets or "vigil-3r" in a.targets:
            agents = [Agent(root, f"n{i}", procs) for i in (1, 2, 3)]
        if "vigil-1r" in a.targets:
            r = agents[0].cli("replica", "create", "one-r", "--size", str(size_bytes))["url"]
            uris["vigil-1r"] = agents[0].cli("engine", "create", "one", "--size", str(size_bytes), "--replica", r)["nbd_uri"]
        if "vigil-1r-blk" in a.targets:
            blk = Agent(root, "blk", procs, env={"VIGIL_IO_ENGINE": "blocking"})
            r = blk.cli("replica", "create", "blk-r", "--size", str(size_bytes))["url"]
            uris["vigil-1r-blk"] = blk.cli("engine", "create", "blk", "--size", str(size_bytes), "--replica", r)["nbd_uri"]
        if a.alt_bin:
            alts = [Agent(root, f"alt{i}", procs, binary=a.alt_bin) for i in (1, 2, 3)]
            r = alts[0].cli("replica", "create", "alt-r", "--size", str(size_bytes))["url"]
            uris["alt-1r"] = alts[0].cli("engine", "create", "alt", "--size", str(size_bytes), "--replica", r)["nbd_uri"]
            if "vigil-3r" in a.targets:
                uris["alt-3r"] = three_replica_engine(alts, "alt3", size_bytes)
        if "vigil-3r" in a.targets:
            uris["vigil-3r"] = three_replica_engine(agents, "three", size_bytes)
        for name, uri in uris.items():
            print(f"filling {name} ({a.size}) ...", file=sys.stderr)
            fill(uri, size_bytes)
        print(f"load average before: {os.getloadavg()}", file=sys.stderr)
        names = list(uris)
        runs = {}  # (workload, target) -> [result per round]
        for rnd in range(a.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for wl, rw, bs, qd in WORKLOADS:
                if a.only and wl not in a.only:
                    continue
                for name in order:
                    print(f"round {rnd + 1}: {wl} on {name} ...", file=sys.stderr)
                    cpu0 = cpu_busy_seconds()
                    r = fio(uris[name], rw, bs, qd, size_bytes, a.runtime)
                    ios = r["iops"] * a.runtime
                    r["cpu_us"] = (cpu_busy_seconds() - cpu0) * 1e6 / ios if ios else 0
                    runs.setdefault((wl, name), []).append(r)
        print(f"load average after: {os.getloadavg()}", file=sys.stderr)
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        print(f"\n{a.rounds} rounds of {a.runtime} s; medians, ratio to qemu-nbd within each round: median (min-max)")
        print(f"{'workload':<18} {'target':<12} {'IOPS':>8} {'MB/s':>7} {'p50 us':>7} {'p99 us':>7} {'CPU us/IO':>9} {'x qemu-nbd':>18}")
        for wl, *_ in WORKLOADS:
            base = runs.get((wl, "qemu-nbd"))
            for name in names:
                rs = runs.get((wl, name))
                if not rs:
                    continue
                ratio = "-"
                if base and name != "qemu-nbd":
                    xs = [r["iops"] / b["iops"] for r, b in zip(rs, base) if b["iops"]]
                    if xs:
                        ratio = f"{med(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"
                print(f"{wl:<18} {name:<12} {med([r['iops'] for r in rs]):>8.0f} {med([r['mbps'] for r in rs]):>7.1f} "
                      f"{med([r['p50_us'] for r in rs]):>7.0f} {med([r['p99_us'] for r in rs]):>7.0f} "
                      f"{med([r['cpu_us'] for r in rs]):>9.1f} {ratio:>18}")
        # The 3-replica targets, each ratio taken within its round.
        def per_round(num, den, scale=1.0):
            xs = [n["iops"] / (d["iops"] * scale) for n, d in zip(runs.get(num, []), runs.get(den, [])) if d["iops"]]
            return f"{med(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})" if xs else "-"
        print("\n3 replicas, per round: median (min-max)")
        for wl, rw, *_ in WORKLOADS:
            if (wl, "vigil-3r") not in runs:
                continue
            cells = [f"÷ 1 replica {per_round((wl, 'vigil-3r'), (wl, 'vigil-1r'))}",
                     f"÷ quorum {per_round((wl, 'vigil-3r'), (wl, 'quorum'))}"]
            if "write" in rw:
                cells.append(f"÷ three-copy limit (direct ÷ 3) {per_round((wl, 'vigil-3r'), (wl, 'direct'), 1 / 3)}")
            print(f"{wl:<18} " + "; ".join(cells))
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
