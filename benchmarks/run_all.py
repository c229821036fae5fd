"""Run the benchmark scripts in this folder and print one table of the figures they report.

Each script prints its own details and, as its last line, `RESULT {json}`: a non-empty list of
{"metric", "value", "unit", "target"} rows with finite numbers. A missed target is a figure to
read, not a failure. A script that crashes (non-zero exit) or prints no figure is a failure:
it is named in the table and on stderr, and this exits 1, so `make bench` fails. A script whose
input is absent (the real data of ../shared/data) says so as its last line, `benchmark skipped:
<why>`, and exits 0: a skip, shown with its reason, not a failure.

Usage: run_all.py [NAME ...]  (names of scripts without .py; default: all of them)
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = ("benchmark", "metric", "value", "target")
SKIPPED = "benchmark skipped:"


def read_figures(stdout: str) -> list[dict]:
    """Return the rows of the script's last `RESULT` line; raise ValueError when it has none."""
    results = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if not results:
        raise ValueError("printed no RESULT line")
    rows = json.loads(results[-1].removeprefix("RESULT "))
    if not isinstance(rows, list) or not rows:
        raise ValueError("its RESULT line holds no figure")
    for row in rows:
        value = row.get("value") if isinstance(row, dict) else None
        if not isinstance(value, int | float) or not math.isfinite(value) or "metric" not in row:
            raise ValueError(f"its RESULT line holds a row without a finite value: {row!r}")
    return rows


def main(argv: list[str]) -> int:
    scripts = sorted(  # _name.py: a helper of the scripts, not a benchmark
        p for p in HERE.glob("*.py") if p.name != "run_all.py" and not p.name.startswith("_")
    )
    if argv:
        unknown = sorted(set(argv) - {p.stem for p in scripts})
        if unknown:
            print(f"no such benchmark: {', '.join(unknown)}", file=sys.stderr)
            return 2
        scripts = [p for p in scripts if p.stem in argv]
    rows: list[tuple[str, str, str, str]] = []
    failed: list[str] = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, check=False
        )
        took = time.perf_counter() - started
        print(done.stdout, end="")
        print(done.stderr, end="", file=sys.stderr)
        said_last = (done.stdout.strip().splitlines() or [""])[-1]
        if done.returncode == 0 and said_last.startswith(SKIPPED):
            rows.append((script.stem, "skipped", said_last.removeprefix(SKIPPED).strip(), ""))
            continue
        if done.returncode != 0:
            why = f"exit {done.returncode}"
        else:
            try:
                figures = read_figures(done.stdout)
            except ValueError as error:  # json.JSONDecodeError is a ValueError too
                why = str(error)
            else:
                why = ""
        if why:
            said = done.stderr if done.returncode != 0 else done.stdout
            last = (said.strip().splitlines() or [""])[-1]
            failed.append(
                f"{script.stem}: {why} after {took:.1f} s" + (f" ({last})" if last else "")
            )
            rows.append((script.stem, "FAILED", why, ""))
            continue
        for item in figures:
            number = item["value"]
            shown = f"{number:.0f}" if abs(number) >= 100 else f"{number:.3g}"
            value = f"{shown} {item.get('unit', '')}".strip()
            rows.append((script.stem, item["metric"], value, item.get("target", "")))
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(4)]
    print()
    for row in [HEADER, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    if failed:
        print(f"\n{len(failed)} benchmark(s) FAILED:", file=sys.stderr)
        for line in failed:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
