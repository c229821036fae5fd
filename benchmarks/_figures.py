"""What every benchmark ends with: its figures as a table, then the `RESULT {json}` line that
run_all.py reads (a helper for the scripts beside it, not a benchmark itself)."""

from __future__ import annotations

import json


def print_figures(rows: list[dict]) -> None:
    """Print ``rows`` ({"metric", "value", "unit", "target"}) as a table, then as RESULT."""
    width = max(len(r["metric"]) for r in rows)
    print(f"{'metric'.ljust(width)}  {'value':>10}  unit  target")
    for r in rows:
        print(f"{r['metric'].ljust(width)}  {r['value']:>10.3f}  {r['unit']:<4}  {r['target']}")
    print("RESULT " + json.dumps(rows))
