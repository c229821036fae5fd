"""The books over years of real history: dividends, tax, interest, fees and splits, audited weekly.

Runs ``simulate_books_history`` on Alpha Vantage's files in ``../shared/data`` (skipped when
absent) in two spans, with the simulated broker paying real dividends (15% withheld), applying
real splits, crediting 2% interest and charging a $10 monthly fee:

- 2004-06..2008-05, six equity and bond ETFs: EEM, EFA and IWM split on 2005-06-09;
- 2008-06..2020-11, eight ETFs with BIL: EEM's 2008-07-24 split, BIL's 2017-11-30 1-for-2.

Every risk asset is held (top N = all), so every distribution and split is met. A month whose
data QA blocks (Alpha Vantage's own faults: zero-volume bars) is held as production would hold
it (no decision), and counted. Prints per span: cycles, weeks audited and clean, the largest
difference between the ledger's equity and the broker's net liquidation, the account's events,
the live-vs-research tracking difference from the performance report (monthly, in bps) and
its parts. Last line: ``RESULT {json}`` for run_all.py. A missed target is a figure, not
a failure; without the data it says ``benchmark skipped: ...``, which run_all.py shows as a skip.
The simulated decisions check the code version against the baseline: a commit during the run
refuses the next decision (run it on a tree nobody changes meanwhile).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "alphavantage"
ACCOUNT = {"withholding_rate": 0.15, "interest_rate": 0.02, "monthly_fee": 10.0}
SPANS = (
    ("2004-06", "2008-05", ["SPY", "QQQ", "EFA", "EEM", "IWM", "TLT"]),
    ("2008-06", "2020-11", ["SPY", "EFA", "EEM", "IWM", "TLT", "GLD", "VNQ", "BIL"]),
)


def run_span(scratch: Path, first: str, last: str, risk: list[str]) -> dict:
    from ops_runner.simulators.history import simulate_books_history
    from ops_runner.strategy.performance import read_performance

    config = {
        "universe": {"risk": risk, "defensive": "IEF", "cash_proxy": "SHY"},
        "strategy": {"top_n": len(risk), "absolute_momentum": False},
        "risk": {"max_drawdown": 0.95},  # the proof is the books, not the drawdown policy
        "broker": {"sim_account": ACCOUNT},
        "books": {"withholding_rate": ACCOUNT["withholding_rate"]},
    }
    started = time.perf_counter()
    result = simulate_books_history(scratch / f"wb-{first}", DATA, "alphavantage", first, last,
                                    config=config)  # fmt: skip
    seconds = time.perf_counter() - started
    weeks = result.weeks
    worst = max((abs(w.difference) for w in weeks), default=0)
    # Up to the last week the books were kept (audited): the history stops there.
    report = read_performance(result.config(), end=weeks[-1].session if weeks else None)
    months = report.months or []
    tracking = [m.tracking_bps for m in months]
    parts = {}
    for name in ("slippage", "commissions", "interest_fees", "cash_drag", "rounding", "other"):
        values = [getattr(m, f"{name}_bps") for m in months if hasattr(m, f"{name}_bps")]
        if values:
            parts[name] = statistics.fmean(values)
    print(f"{first}..{last} ({', '.join(risk)}): {len(result.cycles)} cycles run, "
          f"{len(result.skipped)} held by a blocking data QA, {seconds:.0f} s")  # fmt: skip
    print(f"  weeks audited {len(weeks)}, clean {sum(w.audit == 'CLEAN' for w in weeks)}, "
          f"largest |ledger equity - broker net liquidation| {worst}")  # fmt: skip
    print(f"  account events: {json.dumps(dict(sorted(result.events.items())))}")
    print(f"  performance: {report.status}, {len(months)} months")
    if tracking:
        print(f"  tracking bps/month: mean {statistics.fmean(tracking):+.2f}, worst "
              f"{min(tracking):+.2f} / {max(tracking):+.2f}; parts (mean bps/month): "
              + ", ".join(f"{k} {v:+.2f}" for k, v in parts.items()))  # fmt: skip
    for note in (report.notes or ())[:5]:
        print(f"  note: {note[:300]}{'...' if len(note) > 300 else ''}")
    mean = statistics.fmean(tracking) if tracking else 0.0
    return {"first": first, "last": last, "cycles": len(result.cycles),
            "skipped": len(result.skipped), "weeks": len(weeks),
            "clean": sum(w.audit == "CLEAN" for w in weeks), "worst": float(worst),
            "seconds": seconds, "tracking": mean}  # fmt: skip


def main() -> int:
    if not DATA.is_dir():
        print(f"benchmark skipped: no real data at {DATA}")
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-books-") as scratch:
        for first, last, risk in SPANS:
            span = run_span(Path(scratch), first, last, risk)
            label = f"{first}..{last}"
            rows += [
                {"metric": f"books {label}: weeks clean", "value": span["clean"], "unit":
                 f"of {span['weeks']}", "target": "all"},
                {"metric": f"books {label}: worst equity difference", "value": span["worst"],
                 "unit": "$", "target": "0"},
                {"metric": f"books {label}: history", "value": span["seconds"], "unit": "s",
                 "target": ""},
                {"metric": f"books {label}: mean tracking", "value": span["tracking"],
                 "unit": "bps/month", "target": "within the cost model"},
            ]  # fmt: skip
    print("RESULT " + json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
