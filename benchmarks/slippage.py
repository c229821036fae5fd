"""The slippage report on a 36-cycle simulated history: building it, reading it, checking it.

Prints the figures and, last, the `RESULT {json}` line that run_all.py collects. A missed
target is printed, not a failure. Targets on a 2-core machine: the 36-cycle history well under
a minute (no notebook kernel), read_slippage of the last cycle (12 trailing cycles) under 1 s.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

CYCLES = 36
WIDE = {"2024-03": 25.0, "2025-09": 30.0}  # two cycles filled wide of the open: flagged
TARGET_HISTORY_S, TARGET_READ_S = 60.0, 1.0


def main() -> int:
    from ops_runner.execution.slippage import read_slippage, write_slippage_check
    from ops_runner.simulators.history import simulate_history

    with tempfile.TemporaryDirectory(prefix="bench-slippage-") as scratch:
        result = simulate_history(Path(scratch) / "wb", CYCLES, out_of_band=WIDE)
        cfg = result.config()
        last = result.cycles[-1]
        read_slippage(cfg, last)  # warm: imports, the calendar
        reads = []
        for _ in range(5):
            started = time.perf_counter()
            report = read_slippage(cfg, last)
            reads.append(time.perf_counter() - started)
        started = time.perf_counter()
        flagged = sum(
            1 for c in result.cycles if write_slippage_check(cfg, read_slippage(cfg, c))["alert"]
        )
        check_all_s = time.perf_counter() - started
        per_cycle_s = result.seconds / len(result.cycles)

    read_s = statistics.median(reads)
    print(f"history: {len(result.cycles)} cycles {result.cycles[0]}..{last}, {result.orders} "
          f"orders and {result.fills} fills in {result.seconds:.2f} s "
          f"({per_cycle_s:.3f} s/cycle)")  # fmt: skip
    print(f"read_slippage {last}: {len(report.cycles)} trailing cycles, "
          f"{report.trailing.orders} orders, median {read_s * 1000:.0f} ms of 5")  # fmt: skip
    print(f"check all {len(result.cycles)} cycles (read + record + alert): {check_all_s:.2f} s, "
          f"{flagged} cycle(s) alerted")  # fmt: skip
    print(report.trailing_summary())
    rows = [
        {"metric": f"history of {CYCLES} cycles", "value": result.seconds, "unit": "s",
         "target": f"< {TARGET_HISTORY_S:g} s"},
        {"metric": "history per cycle", "value": per_cycle_s, "unit": "s", "target": ""},
        {"metric": "read_slippage, 12 trailing", "value": read_s, "unit": "s",
         "target": f"< {TARGET_READ_S:g} s"},
        {"metric": f"check all {CYCLES} cycles", "value": check_all_s, "unit": "s", "target": ""},
    ]  # fmt: skip
    print("RESULT " + json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
