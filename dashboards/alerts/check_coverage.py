#!/usr/bin/env python3
"""Fails when an alert of dashboards/alerts/*.rules.yml has no promtool unit
test that makes it fire (non-empty `exp_alerts`) and one where it must not
(`exp_alerts: []` or none), or when a test names an alert that does not
exist. promtool itself only runs the cases that were written.

Usage: python3 dashboards/alerts/check_coverage.py [ALERTS_DIR]
"""

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def main() -> int:
    d = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    alerts = []
    for f in sorted(d.glob("*.rules.yml")):
        for g in yaml.safe_load(f.read_text())["groups"]:
            alerts += [r["alert"] for r in g["rules"] if "alert" in r]
    fires, quiet = set(), set()
    for f in sorted((d / "tests").glob("*.yml")):
        for t in yaml.safe_load(f.read_text()).get("tests", []):
            for c in t.get("alert_rule_test", []):
                (fires if c.get("exp_alerts") else quiet).add(c["alertname"])
    bad = []
    if len(set(alerts)) != len(alerts):
        bad.append(f"duplicate alert names: {sorted(a for a in set(alerts) if alerts.count(a) > 1)}")
    for a in alerts:
        if a not in fires:
            bad.append(f"{a}: no unit test where it fires")
        if a not in quiet:
            bad.append(f"{a}: no unit test where it must not fire")
    for a in sorted((fires | quiet) - set(alerts)):
        bad.append(f"{a}: tested but not defined")
    for b in bad:
        print(b)
    if not bad:
        print(f"{len(alerts)} alerts, each with a firing and a quiet unit test")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
