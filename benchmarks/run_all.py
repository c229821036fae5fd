"""Run every benchmark script in this folder and print one table of the figures they report.

Each script prints its own details and, as its last line, `RESULT {json}` with a list of
{"metric", "value", "unit", "target"} rows. Benchmarks print; they never fail a build.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in {"run_all.py", "__init__.py"})
    rows: list[tuple[str, str, str, str]] = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, check=False
        )
        print(done.stdout, end="")
        if done.returncode != 0:
            print(done.stderr, end="", file=sys.stderr)
            rows.append((script.stem, "FAILED", f"exit {done.returncode}", ""))
            continue
        results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if not results:
            took = time.perf_counter() - started
            rows.append((script.stem, "script wall time", f"{took:.2f} s", ""))
            continue
        for item in json.loads(results[-1].removeprefix("RESULT ")):
            number = item["value"]
            shown = f"{number:.0f}" if abs(number) >= 100 else f"{number:.3g}"
            value = f"{shown} {item.get('unit', '')}".strip()
            rows.append((script.stem, item["metric"], value, item.get("target", "")))
    widths = [
        max(len(r[i]) for r in [("benchmark", "metric", "value", "target"), *rows])
        for i in range(4)
    ]
    print()
    for row in [("benchmark", "metric", "value", "target"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
