#!/usr/bin/env python3
"""What a live migration costs a client, measured in one run.

Two agents on a real etcd, a 2-replica volume attached on n1, then
`vigil volume migrate v --to n2` (phase ready: n2 forwards to n1's engine).
  1. Forwarding: the same fio workloads through the source's export (n1)
     and through the target's (n2, every request forwarded over NBD to n1),
     side by side, with the ratio target / source.
  2. The switch: fio writes through the target for --switch-runtime s; the
     confirm runs in the middle. Reports the confirm's duration, fio's
     errors (must be 0: the connection is kept across the switch) and the
     worst write latency, next to the same run without a switch.

Usage: bench/migration.py [--size 256MiB] [--runtime 10]
Needs: a release build with the etcd feature
(cargo build --release --features etcd), etcd, fio.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import VIGIL, fill, fio, free_port, wait_port  # noqa: E402

WORKLOADS = [
    ("randread-4k-qd32", "randread", "4k", 32),
    ("randwrite-4k-qd32", "randwrite", "4k", 32),
    ("randwrite-4k-qd1", "randwrite", "4k", 1),
    ("seqwrite-1m-qd8", "write", "1M", 8),
]


def start_agent(root, name, store, procs):
    port = free_port()
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    log = open(os.path.join(root, f"{name}.log"), "w")
    env = dict(os.environ, VIGIL_CLUSTER_TOKEN="bench", VIGIL_LOG="warn")
    procs.append(subprocess.Popen([VIGIL, "agent", "--node-name", name, "--listen", f"127.0.0.1:{port}",
                                   "--data-dir", d, "--store", store],
                                  stdout=subprocess.DEVNULL, stderr=log, env=env))
    wait_port(port)
    return port


def cli(port, *args):
    out = subprocess.run([VIGIL, "--endpoint", f"http://127.0.0.1:{port}", "-o", "json", *args],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"vigil {args}: {out.stderr}")
    return json.loads(out.stdout) if out.stdout.strip() else None


def fio_switch(uri, size, runtime):
    """fio randwrite 4k qd8 with its errors and worst latency."""
    args = ["fio", "--name=switch", "--ioengine=nbd", f"--uri={uri}", "--rw=randwrite", "--bs=4k",
            "--iodepth=8", f"--size={size}", "--time_based", f"--runtime={runtime}",
            "--output-format=json", "--randrepeat=0", "--norandommap"]
    out = subprocess.run(args, capture_output=True, text=True)
    text = out.stdout[out.stdout.find("{"):] if "{" in out.stdout else "{}"
    try:
        j = json.loads(text)["jobs"][0]
    except (ValueError, KeyError, IndexError):
        return {"ok": False, "error": out.stderr.strip()[-300:]}
    w = j["write"]
    return {"ok": out.returncode == 0 and j.get("error", 0) == 0, "error": j.get("error", 0),
            "iops": w["iops"], "max_ms": w["clat_ns"]["max"] / 1e6}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="256MiB")
    ap.add_argument("--runtime", type=int, default=10)
    ap.add_argument("--switch-runtime", type=int, default=8)
    a = ap.parse_args()
    for tool in ("fio", "etcd"):
        if not shutil.which(tool):
            sys.exit(f"{tool} missing: apt-get install fio etcd-server")
    size_bytes = int(subprocess.run(["numfmt", "--from=iec-i", a.size.replace("B", "")],
                                    capture_output=True, text=True, check=True).stdout)
    root = tempfile.mkdtemp(prefix="bench-migration-")
    procs = []
    try:
        client, peer = free_port(), free_port()
        procs.append(subprocess.Popen(
            ["etcd", "--data-dir", os.path.join(root, "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(client)
        store = f"etcd://127.0.0.1:{client}"
        n1 = start_agent(root, "n1", store, procs)
        n2 = start_agent(root, "n2", store, procs)
        time.sleep(1)
        cli(n1, "settings", "set", "storage-minimal-available-percentage", "1")
        cli(n1, "volume", "create", "v", "--size", str(size_bytes), "--replicas", "2")
        cli(n1, "volume", "attach", "v", "--node", "n1")
        source = cli(n1, "volume", "get", "v")["endpoint"]
        fill(source, size_bytes)
        target = cli(n1, "volume", "migrate", "v", "--to", "n2")["migration"]["target_endpoint"]

        print("1. forwarding (phase ready): the target's export forwards to the source's engine")
        print(f"{'workload':<20} {'source IOPS':>12} {'target IOPS':>12} {'target p99 us':>14} {'target/source':>14}")
        for wl, rw, bs, qd in WORKLOADS:
            s = fio(source, rw, bs, qd, size_bytes, a.runtime)
            t = fio(target, rw, bs, qd, size_bytes, a.runtime)
            print(f"{wl:<20} {s['iops']:>12.0f} {t['iops']:>12.0f} {t['p99_us']:>14.0f} {t['iops'] / s['iops']:>14.2f}")

        print("\n2. the switch: fio randwrite 4k qd8 through the target while --confirm runs")
        base = fio_switch(target, size_bytes, a.switch_runtime)
        took = {}

        def confirm():
            time.sleep(a.switch_runtime / 2)
            t0 = time.time()
            cli(n2, "volume", "migrate", "v", "--confirm")
            took["s"] = time.time() - t0

        th = threading.Thread(target=confirm)
        th.start()
        sw = fio_switch(target, size_bytes, a.switch_runtime)
        th.join()
        after = cli(n1, "volume", "get", "v")
        print(f"{'run':<28} {'fio errors':>10} {'IOPS':>8} {'worst write ms':>15}")
        print(f"{'forwarding, no switch':<28} {base.get('error', '-'):>10} {base.get('iops', 0):>8.0f} {base.get('max_ms', 0):>15.1f}")
        print(f"{'across the confirm':<28} {sw.get('error', '-'):>10} {sw.get('iops', 0):>8.0f} {sw.get('max_ms', 0):>15.1f}")
        print(f"confirm took {took.get('s', float('nan')):.2f} s; volume now attached to {after['attached_node']}")
        if not sw.get("ok"):
            print(f"fio across the switch failed: {sw}")
            sys.exit(1)
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
