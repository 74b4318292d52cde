#!/usr/bin/env python3
"""What eBPF I/O tracing costs: fio through a 1-replica volume on an agent
with eBPF on (`--ebpf required`) and one with it off (`--ebpf off`), in one
run, on the same disk, alternating rounds so drift on a shared machine hits
both alike; only the agent being measured runs (the other is stopped). Prints IOPS per workload and the ratio on/off; the target is a
cost under 5 % (ratio >= 0.95).

Usage: bench/ebpf_overhead.py [--size 256MiB] [--runtime 10] [--rounds 3] [--dir DIR]
Needs: root (to load eBPF), a release build (cargo build --release), fio, qemu-io.
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
    """One agent, started and stopped between rounds so that only the agent
    being measured runs: the sched and block programs of an agent with eBPF
    fire on every context switch and request of the machine, so they would
    also slow the other agent's runs if both ran at once."""

    def __init__(self, root, name, ebpf):
        self.port = free_port()
        self.name, self.ebpf = name, ebpf
        self.dir = os.path.join(root, name)
        self.logpath = os.path.join(root, f"{name}.log")
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None

    def start(self):
        env = dict(os.environ, VIGIL_CLUSTER_TOKEN="bench", VIGIL_LOG="warn")
        self.proc = subprocess.Popen([VIGIL, "agent", "--node-name", self.name, "--listen",
                                      f"127.0.0.1:{self.port}", "--data-dir", self.dir, "--ebpf", self.ebpf],
                                     stdout=subprocess.DEVNULL, stderr=open(self.logpath, "a"), env=env)
        wait_port(self.port)

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def cli(self, *args):
        out = subprocess.run([VIGIL, "--endpoint", f"http://127.0.0.1:{self.port}", "-o", "json", *args],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"vigil {args}: {out.stderr}")
        return json.loads(out.stdout)

    def wait_serving(self, uri, timeout=60):
        """After a restart the agent starts the attached volume's engine again."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if subprocess.run(["qemu-io", "-f", "raw", "-r", "-c", "read 0 4k", uri],
                              capture_output=True).returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError(f"{uri} not served {timeout}s after the restart")

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
    agents = {"on": Agent(root, "on", "required"), "off": Agent(root, "off", "off")}
    try:
        uris = {}
        for name, ag in agents.items():
            ag.start()
            ag.cli("settings", "set", "storage-minimal-available-percentage", "1")
            ag.cli("volume", "create", "v", "--size", str(size_bytes), "--replicas", "1")
            out = subprocess.run([VIGIL, "--endpoint", f"http://127.0.0.1:{ag.port}", "volume", "attach", "v"],
                                 capture_output=True, text=True, check=True)
            uris[name] = out.stdout.strip()
            subprocess.run(["fio", "--name=fill", "--ioengine=nbd", f"--uri={uris[name]}", "--rw=write",
                            "--bs=1M", "--iodepth=8", f"--size={size_bytes}", "--output-format=terse"],
                           check=True, capture_output=True)
            if name == "on" and ag.metric("vigil_ebpf_loaded") != 1:
                sys.exit("eBPF did not load on the 'on' agent (run as root)")
            ag.stop()
        print(f"{'workload':<20} {'on IOPS':>10} {'off IOPS':>10} {'on/off':>7}")
        ratios = []
        traced = 0.0
        for wl, rw, bs, qd in WORKLOADS:
            got = {"on": [], "off": []}
            for r in range(a.rounds):
                order = ("on", "off") if r % 2 == 0 else ("off", "on")
                for name in order:
                    ag = agents[name]
                    ag.start()
                    ag.wait_serving(uris[name])
                    got[name].append(fio(uris[name], rw, bs, qd, size_bytes, a.runtime))
                    if name == "on":
                        traced += ag.metric("vigil_ebpf_syscall_latency_seconds_count")
                    ag.stop()
            i_on, i_off = statistics.median(got["on"]), statistics.median(got["off"])
            ratio = i_on / i_off if i_off else 0.0
            ratios.append(ratio)
            print(f"{wl:<20} {i_on:>10.0f} {i_off:>10.0f} {ratio:>7.3f}   "
                  f"(on: {' '.join(f'{x:.0f}' for x in got['on'])}; off: {' '.join(f'{x:.0f}' for x in got['off'])})",
                  flush=True)
        print(f"replica syscalls traced by the 'on' agent during the runs: {traced:.0f}")
        g = statistics.geometric_mean(ratios)
        print(f"geometric mean on/off: {g:.3f} (cost {100 * (1 - g):.1f} %; target < 5 %)")
    finally:
        for ag in agents.values():
            ag.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
