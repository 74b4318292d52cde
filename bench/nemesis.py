#!/usr/bin/env python3
"""The nemesis suite, long: many rounds of tests/tests/nemesis.rs.

The CI run of tests/tests/nemesis.rs applies each of its 11 nemeses once
(kills, long and short freezes, partitions from the store, from the
replicas and full isolation in network namespaces, detach while writing,
live migration, eviction) and checks the volume after each.
This script runs the same test binary with many rounds, once or several
times with different seeds, and prints each run's report: rounds, nemeses
applied, writes acknowledged / failed, violations. Exit status 1 if any run
had a violation or failed; each failing run prints its seed (replay it with
--seed).

Usage: bench/nemesis.py [--rounds 200] [--runs 1] [--seed S]
Needs: a release build with the etcd feature
(cargo build --release --features vigil/etcd -p vigil --bin vigil; the test
finds it under $CARGO_TARGET_DIR or target/, or takes $VIGIL_BIN), etcd,
qemu-io, nbdcopy, ip and nft (root: the test makes network namespaces).
One round takes 2-30 s (a takeover waits out the 10 s liveness lease and
the 15 s node-down-timeout): 200 rounds is about 40 minutes.
"""
import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import run_test  # noqa: E402

PREFIX = "nemesis summary: "


def run_once(rounds, seed):
    return run_test("nemesis", {"VIGIL_NEMESIS_ROUNDS": str(rounds), "VIGIL_SEED": str(seed)},
                    PREFIX)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--seed", type=int, help="seed of the first run (the next ones are random)")
    args = ap.parse_args()
    results = []
    for i in range(args.runs):
        seed = args.seed if (i == 0 and args.seed is not None) else random.getrandbits(63)
        print(f"== run {i + 1}/{args.runs}: {args.rounds} rounds, seed {seed}", flush=True)
        code, summary, secs = run_once(args.rounds, seed)
        results.append((seed, code, summary, secs))
    print()
    print(f"{'seed':>20} {'rounds':>6} {'acked':>8} {'failed':>7} {'violations':>10} {'s':>6}  nemeses")
    bad = False
    for seed, code, s, secs in results:
        if s is None:
            bad = True
            print(f"{seed:>20} {'-':>6} {'-':>8} {'-':>7} {'-':>10} {secs:>6.0f}  "
                  f"test failed before its report (exit {code}); replay with --seed {seed}")
            continue
        bad |= code != 0 or s["violations"] != 0
        nemeses = " ".join(f"{k}={v}" for k, v in sorted(s["nemeses"].items()))
        print(f"{seed:>20} {s['rounds']:>6} {s['writes_acked']:>8} {s['writes_failed']:>7} "
              f"{s['violations']:>10} {secs:>6.0f}  {nemeses}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
