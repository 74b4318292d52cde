#!/usr/bin/env python3
"""What eBPF I/O tracing costs: fio through a 1-replica volume served by
one agent, restarted before each run with eBPF on (`--ebpf required`) or
off (`--ebpf off`): the same process setup, data directory and replica
file both ways, so the only difference is the programs (two agents with
a volume each would also compare two files' layouts on disk).

The machine is shared and noisy, so the comparison is made in pairs: each
round runs on and off back to back (alternating which goes first) for a
short fio job. The figure per
workload is the median of the rounds' on/off IOPS ratios, with their spread;
the headline is the geometric mean over workloads. The target is a cost
under 5 % (ratio >= 0.95).

It also reports CPU time of the whole machine per I/O (on/off), and, in a
separate profiling pass with `kernel.bpf_stats_enabled=1` (which itself adds
a little to every program run, so it is not part of the ratios), each
program's runs and nanoseconds per I/O.

Usage: bench/ebpf_overhead.py [--size 256MiB] [--runtime 5] [--rounds 6] [--probes LIST] [--only WL...] [--dir DIR]
Needs: root (to load eBPF), a release build (cargo build --release), fio, qemu-io, bpftool.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, VIGIL, cpu_busy_seconds, fill, fio, free_port, wait_port  # noqa: E402

WORKLOADS = [
    ("randread-4k-qd32", "randread", "4k", 32),
    ("randwrite-4k-qd32", "randwrite", "4k", 32),
    ("randwrite-4k-qd1", "randwrite", "4k", 1),
]

# The programs of the object (ebpf/src/tracer.rs ATTACHMENTS); bpftool
# shows names cut at 15 characters.
PROGRAMS = ["sys_enter", "sys_exit", "block_rq_issue", "block_rq_complete", "tcp_retransmit",
            "tcp_probe", "sched_switch"]


class Agent:
    """The agent, started (eBPF on or off) and stopped around each measurement."""

    def __init__(self, root, name, probes=None):
        self.port = free_port()
        self.name, self.probes = name, probes
        self.ebpf = "off"
        self.dir = os.path.join(root, name)
        self.logpath = os.path.join(root, f"{name}.log")
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.uri = None

    def start(self):
        env = dict(os.environ, VIGIL_CLUSTER_TOKEN="bench", VIGIL_LOG="warn")
        if self.probes:
            env["VIGIL_EBPF_PROBES"] = self.probes
        self.proc = subprocess.Popen([VIGIL, "agent", "--node-name", self.name, "--listen",
                                      f"127.0.0.1:{self.port}", "--data-dir", self.dir, "--ebpf", self.ebpf],
                                     stdout=subprocess.DEVNULL, stderr=open(self.logpath, "a"), env=env)
        wait_port(self.port)
        if self.uri:
            self.wait_serving()

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
        out = subprocess.run([VIGIL, "--endpoint", f"http://127.0.0.1:{self.port}", *args],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"vigil {args}: {out.stderr}")
        return out.stdout

    def create_volume(self, size_bytes):
        self.cli("settings", "set", "storage-minimal-available-percentage", "1")
        self.cli("volume", "create", "v", "--size", str(size_bytes), "--replicas", "1")
        self.uri = self.cli("volume", "attach", "v").strip()
        fill(self.uri, size_bytes)

    def wait_serving(self, timeout=60):
        """After a restart the agent starts the attached volume's engine again."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if subprocess.run(["qemu-io", "-f", "raw", "-r", "-c", "read 0 4k", self.uri],
                              capture_output=True).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.uri} not served {timeout}s after the restart")

    def metric(self, name):
        page = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics").read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines() if line.startswith(name))


def measure(ag, mode, rw, bs, qd, size, runtime):
    """One fio run on the agent freshly started with eBPF `mode` ("on" or
    "off"): IOPS and machine CPU µs per I/O."""
    ag.ebpf = "required" if mode == "on" else "off"
    ag.start()
    try:
        cpu0 = cpu_busy_seconds()
        r = fio(ag.uri, rw, bs, qd, size, runtime, ramp=1)
        cpu = cpu_busy_seconds() - cpu0
        # fio's total_ios excludes the ramp; CPU covers ramp + run, so scale.
        ios = r["iops"] * (runtime + 1)
        return r["iops"], 1e6 * cpu / ios if ios else 0.0
    finally:
        ag.stop()


def bpf_stats():
    """run_cnt and run_time_ns of vigil's programs loaded now, by name."""
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True, check=True)
    stats = {}
    for p in json.loads(out.stdout):
        name = p.get("name", "")
        if any(prog.startswith(name) for prog in PROGRAMS) and name:
            full = next(prog for prog in PROGRAMS if prog.startswith(name))
            c, t = stats.get(full, (0, 0))
            stats[full] = (c + p.get("run_cnt", 0), t + p.get("run_time_ns", 0))
    return stats


def profile(ag, rw, bs, qd, size, runtime):
    """Program runs and run time per I/O, with kernel BPF statistics on."""
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        was = f.read().strip()
    ag.ebpf = "required"
    ag.start()
    try:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write("1")
        before = bpf_stats()
        r = fio(ag.uri, rw, bs, qd, size, runtime, ramp=0)
        after = bpf_stats()
    finally:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(was)
        ag.stop()
    ios = r["ios"] or 1
    rows = []
    for prog in PROGRAMS:
        c0, t0 = before.get(prog, (0, 0))
        c1, t1 = after.get(prog, (0, 0))
        runs, ns = c1 - c0, t1 - t0
        rows.append((prog, runs / ios, (ns / runs) if runs else 0.0, ns / ios))
    return r["iops"], rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="256MiB")
    ap.add_argument("--runtime", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--only", nargs="*", default=None, help="workload names to run")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--probes", default=None,
                    help="probes when on (--ebpf-probes), default all: syscalls,block,tcp,runqueue")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: eBPF needs it")
    for tool in ("fio", "qemu-io", "bpftool"):
        if not shutil.which(tool):
            sys.exit(f"{tool} missing")
    if not os.path.exists(VIGIL):
        sys.exit(f"{VIGIL} missing: cargo build --release")
    size_bytes = int(subprocess.run(["numfmt", "--from=iec-i", a.size.replace("B", "")],
                                    capture_output=True, text=True, check=True).stdout)
    workloads = [w for w in WORKLOADS if not a.only or w[0] in a.only]
    root = tempfile.mkdtemp(prefix="bench-ebpf-", dir=a.dir or os.path.join(ROOT, "bench"))
    ag = Agent(root, "bench", a.probes)
    try:
        ag.ebpf = "required"
        ag.start()
        ag.create_volume(size_bytes)
        if ag.metric("vigil_ebpf_loaded") != 1:
            sys.exit("eBPF did not load")
        ag.stop()
        print(f"{a.rounds} rounds of {a.runtime} s per agent and workload, on/off alternating; "
              f"probes: {a.probes or 'all'}\n")
        print(f"{'workload':<18} {'on IOPS':>9} {'off IOPS':>9} {'on/off':>7} {'min':>6} {'max':>6}"
              f" {'CPU µs/IO on':>13} {'off':>6}")
        medians = []
        for wl, rw, bs, qd in workloads:
            got = {"on": [], "off": []}
            cpu = {"on": [], "off": []}
            for r in range(a.rounds):
                order = ("on", "off") if r % 2 == 0 else ("off", "on")
                for name in order:
                    iops, cpu_per_io = measure(ag, name, rw, bs, qd, size_bytes, a.runtime)
                    got[name].append(iops)
                    cpu[name].append(cpu_per_io)
            ratios = [on / off for on, off in zip(got["on"], got["off"]) if off]
            med = statistics.median(ratios)
            medians.append(med)
            print(f"{wl:<18} {statistics.median(got['on']):>9.0f} {statistics.median(got['off']):>9.0f}"
                  f" {med:>7.3f} {min(ratios):>6.3f} {max(ratios):>6.3f}"
                  f" {statistics.median(cpu['on']):>13.1f} {statistics.median(cpu['off']):>6.1f}", flush=True)
            print(f"{'':<18} pairs on/off: {' '.join(f'{x:.3f}' for x in ratios)}", flush=True)
        g = statistics.geometric_mean(medians)
        print(f"\ngeometric mean of the median on/off ratios: {g:.3f} "
              f"(cost {100 * (1 - g):.1f} %; target < 5 %)")
        if not a.no_profile:
            wl, rw, bs, qd = workloads[0]
            iops, rows = profile(ag, rw, bs, qd, size_bytes, a.runtime)
            print(f"\nprogram cost, {wl} with kernel.bpf_stats_enabled=1 ({iops:.0f} IOPS):")
            print(f"{'program':<18} {'runs/IO':>8} {'ns/run':>7} {'ns/IO':>7}")
            total = 0.0
            for prog, runs, ns_run, ns_io in rows:
                total += ns_io
                print(f"{prog:<18} {runs:>8.2f} {ns_run:>7.0f} {ns_io:>7.0f}")
            print(f"{'total':<18} {'':>8} {'':>7} {total:>7.0f}")
    finally:
        ag.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
