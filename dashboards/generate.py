#!/usr/bin/env python3
"""Writes the vigil Grafana dashboards (dashboards/grafana/*.json) from
their source in dashboards/src/vigil_dashboards.

Usage: python3 dashboards/generate.py [OUT_DIR]   (default: dashboards/grafana)
Needs the pinned SDK: python3 -m pip install -r dashboards/requirements.txt
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "src"))

from vigil_dashboards import DASHBOARDS  # noqa: E402


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "grafana"
    out.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        (out / f"{name}.json").write_text(build().json())
        print(f"wrote {out / (name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
