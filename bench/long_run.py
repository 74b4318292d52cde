#!/usr/bin/env python3
"""The long data-safety run (issue 18, item 5): nemesis rounds with the
power-cut and filesystem variants mixed in.

Three suites check what vigil acknowledged against what it kept:
- tests/tests/nemesis.rs: 4 agents in network namespaces, 11 nemeses
  (kills, freezes, partitions, isolation, detach, migration, eviction),
  a history of acknowledged writes checked after every round;
- tests/tests/power_cut.rs: an agent on a disk that loses everything not
  fsynced, cut during writes, snapshots, merges, reverts and expansions;
- tests/tests/filesystem_nemesis.rs: ext4 and SQLite on a volume through
  nbdfuse + a loop device, under replica kills, engine freezes and node
  isolation with takeovers; e2fsck, file contents and PRAGMA
  integrity_check after each;
- tests/tests/replica_power_cut.rs: the replica store alone on the
  power-cut disk (writes, flushes, snapshots, merges, reverts, rebuild
  installs, expansions, epochs, generations), about a second a round; its
  rounds come on top and do not count towards --rounds.

Each suite builds its cluster once per batch, so the run interleaves
batches: NEMESIS nemesis rounds, POWER power-cut rounds, FS filesystem
rounds, STORE replica-store power-cut rounds, again and again (each batch with its own seed drawn from the run's
seed) until at least --rounds rounds ran. Prints every batch's summary
and a table at the end; exit 1 on any violation or failed batch, with the
batch's seed to replay (VIGIL_SEED=S and the suite's rounds variable).

Usage: bench/long_run.py [--rounds 200] [--seed S] [--nemesis 22]
                         [--power 8] [--fs 3] [--store 40]
Needs what the suites need (root, etcd, qemu-io, nbdcopy, nbdfuse,
losetup, e2fsprogs, sqlite3, ip, nft, python3-fusepy) and a release build:
cargo build --release --features vigil/etcd --workspace --bins --tests
(or $VIGIL_BIN). About 12 s a round on average: 200 rounds, 40-50 minutes.
"""
import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import run_test  # noqa: E402

# name: (test binary, rounds variable, summary prefix)
SUITES = {
    "nemesis": ("nemesis", "VIGIL_NEMESIS_ROUNDS", "nemesis summary: "),
    "power-cut": ("power_cut", "VIGIL_POWER_CUT_ROUNDS", "power cut summary: "),
    "filesystem": ("filesystem_nemesis", "VIGIL_FS_NEMESIS_ROUNDS",
                   "filesystem nemesis summary: "),
    "store": ("replica_power_cut", "VIGIL_REPLICA_POWER_CUT_ROUNDS",
              "replica power cut summary: "),
}
# Suites whose rounds count towards --rounds.
COUNTED = {"nemesis", "power-cut", "filesystem"}


def run_batch(suite, rounds, seed):
    binary, var, prefix = SUITES[suite]
    return run_test(binary, {var: str(rounds), "VIGIL_SEED": str(seed)}, prefix)


def kinds(suite, s):
    """The nemeses or operations a batch applied, as k=v."""
    d = s.get("nemeses") or s.get("operations") or s.get("completed") or {}
    return " ".join(f"{k}={v}" for k, v in sorted(d.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=200, help="at least this many rounds in all")
    ap.add_argument("--seed", type=int, help="the run's seed (batch seeds derive from it)")
    ap.add_argument("--nemesis", type=int, default=22, help="nemesis rounds per batch")
    ap.add_argument("--power", type=int, default=8, help="power-cut rounds per batch")
    ap.add_argument("--fs", type=int, default=3, help="filesystem rounds per batch")
    ap.add_argument("--store", type=int, default=40,
                    help="replica-store power-cut rounds per batch (not counted)")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.getrandbits(63)
    rng = random.Random(seed)
    print(f"== long run: at least {args.rounds} rounds, seed {seed}", flush=True)
    plan = [("nemesis", args.nemesis), ("power-cut", args.power), ("filesystem", args.fs),
            ("store", args.store)]
    results = []
    total = 0
    started = time.time()
    while total < args.rounds:
        for suite, n in plan:
            if total >= args.rounds or n <= 0:
                continue
            n = min(n, args.rounds - total) if suite == "nemesis" else n
            bseed = rng.getrandbits(63)
            print(f"== batch {len(results) + 1}: {suite}, {n} rounds, seed {bseed} "
                  f"({total} rounds so far, {time.time() - started:.0f} s)", flush=True)
            code, s, secs = run_batch(suite, n, bseed)
            results.append((suite, n, bseed, code, s, secs))
            if suite in COUNTED:
                total += n
    print()
    print(f"long run seed {seed}: {total} rounds (replica-store rounds not counted) "
          f"in {time.time() - started:.0f} s")
    print(f"{'suite':>10} {'seed':>20} {'rounds':>6} {'checked':>9} {'violations':>10} {'s':>6}  applied")
    bad = False
    per_suite = {}
    for suite, n, bseed, code, s, secs in results:
        agg = per_suite.setdefault(suite, {"rounds": 0, "violations": 0, "batches": 0})
        agg["batches"] += 1
        if s is None:
            bad = True
            print(f"{suite:>10} {bseed:>20} {n:>6} {'-':>9} {'-':>10} {secs:>6.0f}  "
                  f"failed before its report (exit {code}); replay: VIGIL_SEED={bseed}")
            continue
        bad |= code != 0 or s["violations"] != 0
        agg["rounds"] += s["rounds"]
        agg["violations"] += s["violations"]
        checked = (s.get("writes_acked") or s.get("file_ops_durable") or 0)
        print(f"{suite:>10} {bseed:>20} {s['rounds']:>6} {checked:>9} {s['violations']:>10} "
              f"{secs:>6.0f}  {kinds(suite, s)}")
    print("totals: " + json.dumps(per_suite))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
