#!/usr/bin/env python3
"""Checks the dashboards in a directory (default dashboards/grafana) the way
Grafana will read them, with the pinned Grafana foundation SDK (its models
are generated from Grafana's own schema, schemaVersion 41 / Grafana 11.6):

* each file loads into the SDK's `Dashboard` model (panels with their
  panel-type options and field config, Prometheus queries, variables) and
  encodes back to JSON that still holds every field and value of the file
  (the model may add its defaults) — a field the schema does not know, or
  of the wrong type, does not survive the round trip and fails here;
* vigil's own rules: a stable uid from the list below, the `datasource`
  variable and every panel and query on it, a unit on every data panel,
  a refId and an expression on every query, unique panel ids.

Usage: python3 dashboards/validate.py [DIR]; exit 1 with the reasons.
"""

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

HERE = Path(__file__).resolve().parent

# uids are how links, provisioning and bookmarks find a dashboard: never change them.
UIDS = {
    "vigil-cluster.json": "vigil-cluster",
    "vigil-volume.json": "vigil-volume",
    "vigil-node-disk.json": "vigil-node-disk",
    "vigil-ebpf.json": "vigil-ebpf",
}
DS_UID = "${datasource}"


def lost(raw, again, where: str) -> list[str]:
    """Where `raw` has something the re-encoded model does not (the model
    may add defaults it leaves out, such as an empty field-config `custom`)."""
    if isinstance(raw, dict):
        if not isinstance(again, dict):
            return [where or "."]
        out = []
        for k, v in raw.items():
            if k not in again:
                out.append(f"{where}.{k}")
            else:
                out.extend(lost(v, again[k], f"{where}.{k}"))
        return out
    if isinstance(raw, list):
        if not isinstance(again, list) or len(raw) != len(again):
            return [where]
        return [w for i, (a, b) in enumerate(zip(raw, again)) for w in lost(a, b, f"{where}[{i}]")]
    return [] if raw == again else [where]


def check(path: Path) -> list[str]:
    errs = []
    text = path.read_text()
    raw = json.loads(text)
    model = Dashboard.from_json(raw)
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    for where in lost(raw, again, ""):
        errs.append(f"{where}: not kept by the SDK's Dashboard model (unknown field or wrong type)")
    if raw.get("uid") != UIDS.get(path.name):
        errs.append(f"uid {raw.get('uid')!r}, expected {UIDS.get(path.name)!r}")
    names = [v.get("name") for v in raw.get("templating", {}).get("list", [])]
    if "datasource" not in names:
        errs.append("no datasource variable")
    ids = set()
    for p in raw.get("panels", []):
        title = p.get("title")
        if p.get("id") in ids:
            errs.append(f"panel {title!r}: duplicate id {p.get('id')}")
        ids.add(p.get("id"))
        if p.get("type") == "row":
            continue
        if p.get("datasource", {}).get("uid") != DS_UID:
            errs.append(f"panel {title!r}: not on the datasource variable")
        if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            errs.append(f"panel {title!r}: no unit")
        targets = p.get("targets", [])
        if not targets:
            errs.append(f"panel {title!r}: no query")
        for t in targets:
            if not t.get("refId") or not t.get("expr"):
                errs.append(f"panel {title!r}: query without refId or expr")
            if t.get("datasource", {}).get("uid") != DS_UID:
                errs.append(f"panel {title!r}: query not on the datasource variable")
    return errs


def main() -> int:
    register_default_plugins()
    d = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "grafana"
    files = sorted(d.glob("*.json"))
    bad = 0
    if sorted(f.name for f in files) != sorted(UIDS):
        print(f"{d}: dashboards {[f.name for f in files]}, expected {sorted(UIDS)}")
        bad += 1
    for f in files:
        for e in check(f):
            print(f"{f.name}: {e}")
            bad += 1
    if bad == 0:
        print(f"{len(files)} dashboards valid")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
