#!/usr/bin/env python3
"""How /metrics and the agent's memory scale with the number of volumes.

One agent on the embedded store. Measures, in one run:
  * idle RSS of the agent with no volume (target: < 64 MiB);
  * N volumes created (1 replica each) and ATTACHED, so every volume has an
    engine with its frontend I/O series and histograms (the worst case for
    a scrape: a detached volume has far fewer series);
  * /metrics render time over repeated scrapes (client-side wall time of a
    full GET, p50 and max; target: < 100 ms at 1,000 volumes), the page's
    size and sample count, `promtool check metrics` on it — twice: with I/O
    on 10 volumes (per-op series appear on first use), then with reads and
    writes on every volume (the worst case: every volume has read and write
    histograms and a per-replica write histogram);
  * idle RSS after all that (target: < 64 MiB).

Usage: bench/metrics_scale.py [--volumes 1000] [--scrapes 20] [--dir DIR]
Needs: a release build (cargo build --release), qemu-io, promtool.
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
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIGIL = os.environ.get("VIGIL_BIN", os.path.join(ROOT, "target", "release", "vigil"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None, timeout=120):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def settle(pid, seconds=6):
    """Idle RSS: wait for background work to settle, report the last value."""
    time.sleep(seconds)
    return rss_mib(pid)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--volumes", type=int, default=1000)
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="vigil-metrics-", dir=args.dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(os.path.join(work, "agent.log"), "w")
    agent = subprocess.Popen([VIGIL, "agent", "--data-dir", os.path.join(work, "n1"),
                              "--listen", f"127.0.0.1:{port}", "--node-name", "n1"],
                             stdout=log, stderr=log)
    try:
        for _ in range(200):
            try:
                call(base, "GET", "/healthz")
                break
            except OSError:
                time.sleep(0.05)
        # The host's own disk fill is not ours to measure (see tests/src/agent.rs).
        call(base, "PUT", "/v1/settings/storage-minimal-available-percentage", {"value": "1"})
        rss0 = settle(agent.pid)
        t0 = time.monotonic()
        for i in range(args.volumes):
            call(base, "POST", "/v1/volumes", {"name": f"v{i:04}", "size": "4MiB", "replicas": 1})
        created = time.monotonic() - t0
        t0 = time.monotonic()
        endpoints = []
        for i in range(args.volumes):
            out = json.loads(call(base, "POST", f"/v1/volumes/v{i:04}/attach", {}))
            endpoints.append(out.get("endpoint", ""))
        attached = time.monotonic() - t0
        def io(eps):
            for ep in eps:
                subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 7 0 64k", "-c", "read 0 64k", ep],
                               check=True, capture_output=True)

        def scrapes():
            times = []
            page = b""
            for _ in range(args.scrapes):
                t = time.monotonic()
                page = call(base, "GET", "/metrics")
                times.append((time.monotonic() - t) * 1000)
            samples = sum(1 for l in page.splitlines() if l and not l.startswith(b"#"))
            check = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True)
            ok = check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip()
            promtool = "clean" if ok else (check.stdout + check.stderr).decode()[:500]
            p50 = statistics.median(times)
            return (f"{len(page) / 1024:.0f} KiB, {samples} samples, promtool {promtool}; render (full GET, "
                    f"{args.scrapes} scrapes) p50 {p50:.1f} ms, max {max(times):.1f} ms "
                    f"-> {p50 / 100:.2f}x the 100 ms target")

        io(endpoints[:10])
        phase1 = scrapes()
        t0 = time.monotonic()
        io(endpoints[10:])
        io_time = time.monotonic() - t0
        phase2 = scrapes()
        rss1 = settle(agent.pid)
        print(f"volumes created+attached: {args.volumes} (create {created:.1f} s, attach {attached:.1f} s)")
        print(f"/metrics, 10 volumes with I/O: {phase1}")
        print(f"/metrics, all {args.volumes} with reads and writes ({io_time:.0f} s of qemu-io): {phase2}")
        print(f"idle RSS: no volume {rss0:.1f} MiB ({rss0 / 64:.2f}x the 64 MiB target); "
              f"{args.volumes} attached volumes {rss1:.1f} MiB ({rss1 / 64:.2f}x)")
    finally:
        agent.terminate()
        try:
            agent.wait(timeout=60)
        except subprocess.TimeoutExpired:
            agent.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
