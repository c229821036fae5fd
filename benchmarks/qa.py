"""Data QA at scale: 500 symbols x 30 years of daily bars, with a perturbed secondary provider.

Prints a table (symbols, rows, findings, wall seconds, peak MB, target) and, last, the
`RESULT {json}` line that run_all.py collects. A missed target is printed, not a failure.
Target: check_universe under 5 s and under 2 GB on a 2-core machine.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import tracemalloc
from datetime import date

SYMBOLS = [f"S{i:03d}" for i in range(500)]
START, END = date(1995, 1, 3), date(2024, 12, 31)
# (symbol, row from the end, factor): closes the secondary provider gets wrong.
PERTURBED = [("S007", 10, 1.05), ("S123", 200, 0.97), ("S250", 4000, 1.02), ("S499", 1, 1.10)]
TARGET_SECONDS, TARGET_MB = 5.0, 2048.0


def main() -> int:
    import pandas as pd

    from ops_runner.market.calendar import MarketCalendar
    from ops_runner.market.qa import check_universe, findings_frame, has_blocking
    from ops_runner.market.sources.sample import generate_sample_market

    started = time.perf_counter()
    primary = generate_sample_market(symbols=SYMBOLS, start=START, end=END)
    generate_s = time.perf_counter() - started
    secondary = {symbol: frame.copy() for symbol, frame in primary.items()}
    for symbol, back, factor in PERTURBED:
        frame = secondary[symbol]
        frame.iloc[-back, frame.columns.get_loc("close")] *= factor
    sessions = pd.DatetimeIndex(MarketCalendar().sessions(START, END))
    rows = sum(len(frame) for frame in primary.values())

    started = time.perf_counter()
    findings = check_universe(primary, sessions, END, secondary=secondary)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    check_universe(primary, sessions, END, secondary=secondary)
    repeat_s = time.perf_counter() - started
    # tracemalloc slows allocation, so memory is measured on a separate, untimed run.
    tracemalloc.start()
    check_universe(primary, sessions, END, secondary=secondary)
    qa_peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    process_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    print(findings_frame(findings).drop(columns="finding_id").to_string(index=False))
    print(f"blocking: {has_blocking(findings)}; generation of the market took {generate_s:.2f} s")
    print()
    table = [
        ("symbols", f"{len(primary)}", ""),
        ("rows (primary)", f"{rows:,}", ""),
        ("findings", f"{len(findings)}", f"{len(PERTURBED)} planted"),
        ("check_universe wall s (first call)", f"{first_s:.2f}", f"< {TARGET_SECONDS:g}"),
        ("check_universe wall s (repeat)", f"{repeat_s:.2f}", f"< {TARGET_SECONDS:g}"),
        ("check_universe peak MB (tracemalloc)", f"{qa_peak_mb:.0f}", f"< {TARGET_MB:g}"),
        ("process peak RSS MB (all of it)", f"{process_peak_mb:.0f}", f"< {TARGET_MB:g}"),
        ("generate_sample_market wall s", f"{generate_s:.2f}", ""),
    ]
    width = max(len(name) for name, _, _ in table)
    for name, value, target in table:
        print(f"{name.ljust(width)}  {value:>10}  {target}")
    verdict = first_s < TARGET_SECONDS and max(qa_peak_mb, process_peak_mb) < TARGET_MB
    print(f"target {'met' if verdict else 'NOT met'}")
    result = [
        {"metric": "check_universe wall", "value": first_s, "unit": "s", "target": "< 5 s"},
        {"metric": "check_universe wall (repeat)", "value": repeat_s, "unit": "s", "target": ""},
        {
            "metric": "first call / repeat",
            "value": first_s / repeat_s,
            "unit": "x",
            "target": "about 1",
        },
        {"metric": "check_universe peak", "value": qa_peak_mb, "unit": "MB", "target": "< 2 GB"},
        {"metric": "process peak RSS", "value": process_peak_mb, "unit": "MB", "target": "< 2 GB"},
        {"metric": "generate_sample_market wall", "value": generate_s, "unit": "s", "target": ""},
    ]
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
