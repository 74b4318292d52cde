#!/usr/bin/env python3
"""How long a support bundle takes and how big it is.

Three agents on a real etcd, N volumes (3 replicas each, so every node
holds N replicas) all attached (round robin over the nodes, so every node
runs engines and has their I/O series), a little I/O on each. Then
`vigil support-bundle` through n1, several times:
  * wall time of the CLI (target: < 10 s for 3 nodes and 50 volumes);
  * the archive's size, and each node's part (uncompressed bytes from the
    manifest; target: < 5 MiB per node);
  * the same with one node killed (kill -9): its failure must not hold the
    rest up.

Usage: bench/support_bundle.py [--volumes 50] [--runs 3] [--dir DIR]
Needs: a release build with etcd (cargo build --release --features
vigil/etcd), etcd, qemu-io.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIGIL = os.environ.get("VIGIL_BIN", os.path.join(ROOT, "target", "release", "vigil"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    sys.exit(f"{url} did not answer in {timeout} s")


def cli(endpoint, *args, check=True):
    r = subprocess.run([VIGIL, "--endpoint", endpoint, *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"vigil {' '.join(args)}: {r.stderr}")
    return r


def bundle(endpoint, path):
    t = time.monotonic()
    r = cli(endpoint, "support-bundle", "-o", path)
    took = time.monotonic() - t
    with tarfile.open(path, "r:gz") as tf:
        manifest = json.load(tf.extractfile("vigil-bundle/manifest.json"))
    return took, os.path.getsize(path), manifest, r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--volumes", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir")
    a = ap.parse_args()
    work = a.dir or tempfile.mkdtemp(prefix="vigil-bench-bundle-")
    procs = []
    try:
        cport, pport = free_port(), free_port()
        etcd = subprocess.Popen(
            ["etcd", "--name=default", f"--data-dir={work}/etcd",
             f"--listen-client-urls=http://127.0.0.1:{cport}",
             f"--advertise-client-urls=http://127.0.0.1:{cport}",
             f"--listen-peer-urls=http://127.0.0.1:{pport}",
             f"--initial-advertise-peer-urls=http://127.0.0.1:{pport}",
             f"--initial-cluster=default=http://127.0.0.1:{pport}"],
            stdout=subprocess.DEVNULL, stderr=open(f"{work}/etcd.log", "w"))
        procs.append(etcd)
        eps = []
        agents = {}
        for n in ["n1", "n2", "n3"]:
            port = free_port()
            p = subprocess.Popen(
                [VIGIL, "agent", "--node-name", n, "--listen", f"127.0.0.1:{port}",
                 "--data-dir", f"{work}/{n}", "--store", f"etcd://127.0.0.1:{cport}"],
                env={**os.environ, "VIGIL_CLUSTER_TOKEN": "bench-token"},
                stdout=subprocess.DEVNULL, stderr=open(f"{work}/{n}.log", "w"))
            procs.append(p)
            agents[n] = p
            ep = f"http://127.0.0.1:{port}"
            wait_http(ep + "/healthz")
            eps.append(ep)
        cli(eps[0], "settings", "set", "storage-minimal-available-percentage", "1")
        time.sleep(3)
        t = time.monotonic()
        for i in range(a.volumes):
            cli(eps[0], "volume", "create", f"v{i}", "--size", "16MiB", "--replicas", "3")
        uris = []
        for i in range(a.volumes):
            node = f"n{i % 3 + 1}"
            uris.append(cli(eps[0], "volume", "attach", f"v{i}", "--node", node).stdout.strip())
        for u in uris:
            subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 7 0 1M", "-c", "read 0 64k", u],
                           capture_output=True, check=True)
        print(f"{a.volumes} volumes created, attached and written in {time.monotonic() - t:.1f} s")
        time.sleep(3)

        def report(label, runs):
            for took, size, m, _ in runs:
                parts = {n["node"]: (n["status"], n["bytes"], n.get("reason")) for n in m["nodes"]}
                print(f"  {label}: {took:.2f} s wall (collection {m['duration_secs']:.2f} s), "
                      f"archive {size / 1024:.0f} KiB, {len(m['files'])} files")
                for node, (status, b, why) in sorted(parts.items()):
                    print(f"    {node}: {status}, {b / 1024:.0f} KiB uncompressed"
                          + (f" ({why})" if why else ""))

        runs = [bundle(eps[0], f"{work}/b{i}.tgz") for i in range(a.runs)]
        print(f"3 nodes up, {a.volumes} volumes:")
        report("bundle", runs)
        worst = max(r[0] for r in runs)
        per_node = max(n["bytes"] for r in runs for n in r[2]["nodes"])
        agents["n3"].send_signal(signal.SIGKILL)
        agents["n3"].wait()
        dead = [bundle(eps[0], f"{work}/dead{i}.tgz") for i in range(a.runs)]
        print("n3 killed (kill -9):")
        report("bundle", dead)
        print(f"RESULT worst time {worst:.2f} s (target < 10 s), worst with a dead node "
              f"{max(r[0] for r in dead):.2f} s, largest node part {per_node / 1048576:.2f} MiB "
              f"uncompressed (target < 5 MiB), archive {max(r[1] for r in runs) / 1048576:.2f} MiB "
              f"for {len(runs[0][2]['nodes'])} nodes")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
