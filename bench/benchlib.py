"""Helpers the benchmarks share: ports, fio through an NBD URI, filling a
volume, machine CPU time, running one long test of tests/ and catching its
summary line. Imported by the scripts next to it."""
import json
import os
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIGIL = os.environ.get("VIGIL_BIN", os.path.join(ROOT, "target", "release", "vigil"))


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


def target_args(uri):
    """fio's engine arguments for a target: an NBD URI, or file://PATH for
    the file itself (io_uring, O_DIRECT: the disk's own limit)."""
    if uri.startswith("file://"):
        return ["--ioengine=io_uring", "--direct=1", f"--filename={uri[len('file://'):]}"]
    return ["--ioengine=nbd", f"--uri={uri}"]


def fio(uri, rw, bs, qd, size, runtime, ramp=2):
    """One fio job through the nbd engine: IOPS, MB/s and completion
    latency percentiles of the side that ran."""
    args = ["fio", "--name=bench", *target_args(uri), f"--rw={rw}", f"--bs={bs}",
            f"--iodepth={qd}", f"--size={size}", "--time_based", f"--runtime={runtime}",
            f"--ramp_time={ramp}", "--output-format=json", "--randrepeat=0", "--norandommap"]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"fio failed: {out.stderr}")
    j = json.loads(out.stdout[out.stdout.find("{"):])["jobs"][0]
    side = j["read"] if rw in ("read", "randread") else j["write"]
    pct = side["clat_ns"].get("percentile", {})
    return {
        "iops": side["iops"],
        "ios": side["total_ios"],
        "mbps": side["bw_bytes"] / 1e6,
        "p50_us": pct.get("50.000000", 0) / 1000,
        "p99_us": pct.get("99.000000", 0) / 1000,
    }


def fill(uri, size):
    subprocess.run(["fio", "--name=fill", *target_args(uri), "--rw=write", "--bs=1M",
                    "--iodepth=8", f"--size={size}", "--output-format=terse"],
                   check=True, capture_output=True)


def cpu_busy_seconds():
    """CPU time the whole machine spent not idle (all CPUs), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_test(binary, env_vars, prefix):
    """Runs the integration test binary `binary` of vigil-tests with
    `env_vars` added to the environment, echoing its output, and returns
    (exit code, the JSON of its last line starting with `prefix` or None,
    seconds). cargo test, not nextest: the workspace's nextest profile stops
    a test after 5-10 minutes."""
    env = dict(os.environ, **env_vars)
    cmd = ["cargo", "test", "--release", "-p", "vigil-tests", "--test", binary, "--",
           "--nocapture"]
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    summary = None
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.startswith(prefix):
            summary = json.loads(line[len(prefix):])
    code = proc.wait()
    return code, summary, time.time() - started


class Agent:
    """A `vigil agent` on loopback in `root/name`, appended to `procs` (the
    caller stops them); `cli` runs a JSON CLI call against it."""

    def __init__(self, root, name, procs, env=None, binary=None):
        self.port = free_port()
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        log = open(os.path.join(root, f"{name}.log"), "w")
        env = dict(os.environ, VIGIL_CLUSTER_TOKEN="bench", **{"VIGIL_LOG": "warn", **(env or {})})
        self.binary = binary or VIGIL
        p = subprocess.Popen([self.binary, "agent", "--node-name", name, "--listen", f"127.0.0.1:{self.port}",
                              "--data-dir", self.dir], stdout=subprocess.DEVNULL, stderr=log, env=env)
        procs.append(p)
        self.proc = p
        wait_port(self.port)

    def cli(self, *args):
        out = subprocess.run([self.binary, "--endpoint", f"http://127.0.0.1:{self.port}", "-o", "json", *args],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"vigil {args}: {out.stderr}")
        return json.loads(out.stdout)
