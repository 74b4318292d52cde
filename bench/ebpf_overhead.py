#!/usr/bin/env python3
"""What eBPF I/O tracing costs: fio through a 1-replica volume on an agent
with eBPF on (`--ebpf required`) and one with it off (`--ebpf off`), in one
run, on the same disk, alternating rounds so drift on a shared machine hits
both alike. Prints IOPS per workload and the ratio on/off; the target is a
cost under 5 % (ratio >= 0.95).

Usage: bench/ebpf_overhead.py [--size 256MiB] [--runtime 10] [--rounds 3] [--dir DIR]
Needs: root (to load eBPF), a release build (cargo build --release), fio.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIGIL = os.environ.get("VIGIL_BIN", os.path.join(ROOT, "target", "release", "vigil"))

WORKLOADS = [
    ("randread-4k-qd32", "randread", "4k", 32),
    ("randwrite-4k-qd32", "randwrite", "4k", 32),
    ("randwrite-4k-qd1", "randwrite", "4k", 1),
]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not listening after {timeout}s")


class Agent:
    def __init__(self, root, name, ebpf, procs):
        self.port = free_port()
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        log = open(os.path.join(root, f"{name}.log"), "w")
        env = dict(os.environ, VIGIL_CLUSTER_TOKEN="bench", VIGIL_LOG="warn")
        p = subprocess.Popen([VIGIL, "agent", "--node-name", name, "--listen", f"127.0.0.1:{self.port}",
                              "--data-dir", self.dir, "--ebpf", ebpf],
                             stdout=subprocess.DEVNULL, stderr=log, env=env)
        procs.append(p)
        wait_port(self.port)

    def cli(self, *args):
        out = subprocess.run([VIGIL, "--endpoint", f"http://127.0.0.1:{self.port}", "-o", "json", *args],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"vigil {args}: {out.stderr}")
        return json.loads(out.stdout)

    def metric(self, name):
        import urllib.request
        page = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics").read().decode()
        total = 0.0
        for line in page.splitlines():
            if line.startswith(name):
                total += float(line.rsplit(" ", 1)[1])
        return total


def fio(uri, rw, bs, qd, size, runtime):
    args = ["fio", "--name=bench", "--ioengine=nbd", f"--uri={uri}", f"--rw={rw}", f"--bs={bs}",
            f"--iodepth={qd}", f"--size={size}", "--time_based", f"--runtime={runtime}",
            "--ramp_time=2", "--output-format=json", "--randrepeat=0", "--norandommap"]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"fio failed: {out.stderr}")
    j = json.loads(out.stdout[out.stdout.find("{"):])["jobs"][0]
    side = j["read"] if rw in ("read", "randread") else j["write"]
    return side["iops"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="256MiB")
    ap.add_argument("--runtime", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: eBPF needs it")
    if not shutil.which("fio"):
        sys.exit("fio missing: apt-get install fio")
    if not os.path.exists(VIGIL):
        sys.exit(f"{VIGIL} missing: cargo build --release")
    size_bytes = int(subprocess.run(["numfmt", "--from=iec-i", a.size.replace("B", "")],
                                    capture_output=True, text=True, check=True).stdout)
    root = tempfile.mkdtemp(prefix="bench-ebpf-", dir=a.dir or os.path.join(ROOT, "bench"))
    procs = []
    try:
        on = Agent(root, "on", "required", procs)
        off = Agent(root, "off", "off", procs)
        uris = {}
        for name, ag in (("on", on), ("off", off)):
            ag.cli("settings", "set", "storage-minimal-available-percentage", "1")
            ag.cli("volume", "create", "v", "--size", str(size_bytes), "--replicas", "1")
            out = subprocess.run([VIGIL, "--endpoint", f"http://127.0.0.1:{ag.port}", "volume", "attach", "v"],
                                 capture_output=True, text=True, check=True)
            uris[name] = out.stdout.strip()
            subprocess.run(["fio", "--name=fill", "--ioengine=nbd", f"--uri={uris[name]}", "--rw=write",
                            "--bs=1M", "--iodepth=8", f"--size={size_bytes}", "--output-format=terse"],
                           check=True, capture_output=True)
        if on.metric("vigil_ebpf_loaded") != 1:
            sys.exit("eBPF did not load on the 'on' agent")
        print(f"{'workload':<20} {'on IOPS':>10} {'off IOPS':>10} {'on/off':>7}")
        ratios = []
        for wl, rw, bs, qd in WORKLOADS:
            got = {"on": [], "off": []}
            for r in range(a.rounds):
                order = ("on", "off") if r % 2 == 0 else ("off", "on")
                for name in order:
                    got[name].append(fio(uris[name], rw, bs, qd, size_bytes, a.runtime))
            i_on, i_off = statistics.median(got["on"]), statistics.median(got["off"])
            ratio = i_on / i_off if i_off else 0.0
            ratios.append(ratio)
            print(f"{wl:<20} {i_on:>10.0f} {i_off:>10.0f} {ratio:>7.3f}")
        traced = on.metric("vigil_ebpf_syscall_latency_seconds_count")
        print(f"syscalls traced on the 'on' agent: {traced:.0f}")
        g = statistics.geometric_mean(ratios)
        print(f"geometric mean on/off: {g:.3f} (cost {100 * (1 - g):.1f} %; target < 5 %)")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
