"""HTTP vendor fetches into a fresh store: 20 symbols x 20 years from the loopback vendor server.

For each vendor (Alpha Vantage, Tiingo): a first fetch of everything through 2020-11-30, then,
the server moved on to 2020-12-11, an incremental fetch (overlap + new sessions). Rows come from
the shared Alpha Vantage files when ../shared/data is present (14 ETFs, 6 of them served again
under a second name to make 20; histories shorter than 20 years stay as they are), else from the
SYNTHETIC sample market (20 symbols, exactly 20 years); the output says which. Pacing is off
(min_interval 0): against the real vendors it dominates (see the last lines). Prints a table and,
last, the `RESULT {json}` line that run_all.py collects. A missed target is printed, not a failure.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops_runner.market.calendar import MarketCalendar  # noqa: E402
from ops_runner.market.prices import PriceStore  # noqa: E402
from ops_runner.market.sources.alphavantage import AV_MIN_INTERVAL, AlphaVantageClient  # noqa: E402
from ops_runner.market.sources.fetch import fetch_into_store  # noqa: E402
from ops_runner.market.sources.sample import generate_sample_market  # noqa: E402
from ops_runner.market.sources.tiingo import TIINGO_MIN_INTERVAL, TiingoClient  # noqa: E402
from ops_runner.simulators.vendor_feed import (  # noqa: E402
    SHARED_ALPHAVANTAGE,
    compute_rows_from_bars,
    load_alphavantage_folder,
)
from ops_runner.simulators.vendor_server import VendorServer  # noqa: E402

KEY = "benchmark-key"
START, FIRST_END, SECOND_END = date(2000, 12, 11), date(2020, 11, 30), date(2020, 12, 11)
ALIASES = {"SPY2": "SPY", "QQQ2": "QQQ", "IWM2": "IWM", "EFA2": "EFA", "IEF2": "IEF", "TLT2": "TLT"}
SYNTHETIC = [f"S{i:03d}" for i in range(20)]
CLIENTS = {"alphavantage": AlphaVantageClient, "tiingo": TiingoClient}
PACING = {"alphavantage": AV_MIN_INTERVAL, "tiingo": TIINGO_MIN_INTERVAL}


def rows() -> tuple[dict, str]:
    if SHARED_ALPHAVANTAGE.is_dir():
        served = load_alphavantage_folder(SHARED_ALPHAVANTAGE, aliases=ALIASES)
        return served, "shared Alpha Vantage files (14 ETFs + 6 served under a second name)"
    market = generate_sample_market(SYNTHETIC, START, SECOND_END)
    served = {symbol: compute_rows_from_bars(bars) for symbol, bars in market.items()}
    return served, "SYNTHETIC sample market (../shared/data absent)"


def megabytes(folder: Path, pattern: str = "**/*") -> float:
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file()) / 2**20


def measure(vendor: str, server: VendorServer, root: Path, calendar: MarketCalendar) -> dict:
    store = PriceStore(root)
    symbols = server.symbols()
    figures: dict = {}
    for phase, end in (("first", FIRST_END), ("incremental", SECOND_END)):
        server.end = end
        server.clear_requests()
        now = datetime(end.year, end.month, end.day, 22, tzinfo=UTC)
        with CLIENTS[vendor](KEY, server.base_url, min_interval=0.0, timeout=60.0) as client:
            started = time.perf_counter()
            report = fetch_into_store(
                store, vendor, client, symbols, START, end, calendar=calendar, now=now
            )
            seconds = time.perf_counter() - started
        figures[phase] = {
            "seconds": seconds,
            "requests": len(server.requests),
            "new_sessions": sum(report.new_sessions.values()),
            "stored_mb": megabytes(root / vendor),
            "raw_mb": megabytes(root / vendor, "raw/*"),
        }
    figures["symbols"] = len(symbols)
    return figures


def main() -> int:
    logging.disable(logging.INFO)  # httpx logs every request
    served, origin = rows()
    calendar = MarketCalendar()
    print(f"rows from: {origin}")
    print(f"symbols: {len(served)}, sessions served: {sum(len(r) for r in served.values()):,}")
    results = {}
    with VendorServer(served, api_key=KEY) as server, tempfile.TemporaryDirectory() as tmp:
        for vendor in CLIENTS:
            results[vendor] = measure(vendor, server, Path(tmp) / vendor, calendar)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print()
    header = ("vendor", "phase", "seconds", "requests", "new sessions", "stored MB", "raw MB")
    lines = [header]
    for vendor, figures in results.items():
        for phase in ("first", "incremental"):
            f = figures[phase]
            lines.append(
                (
                    vendor,
                    phase,
                    f"{f['seconds']:.2f}",
                    str(f["requests"]),
                    f"{f['new_sessions']:,}",
                    f"{f['stored_mb']:.1f}",
                    f"{f['raw_mb']:.1f}",
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))
    print(f"process peak RSS MB: {peak_mb:.0f} (server and client in one process)")
    for vendor, pace in PACING.items():
        count = results[vendor]["symbols"]
        print(
            f"{vendor}: at its default min_interval of {pace:g} s, {count} requests take at "
            f"least {count * pace / 60:.0f} min"
        )
    result = []
    for vendor, figures in results.items():
        for phase in ("first", "incremental"):
            result.append(
                {
                    "metric": f"{vendor} {phase} fetch wall",
                    "value": figures[phase]["seconds"],
                    "unit": "s",
                    "target": "",
                }
            )
        result.append(
            {
                "metric": f"{vendor} stored",
                "value": figures["incremental"]["stored_mb"],
                "unit": "MB",
                "target": "",
            }
        )
    result.append({"metric": "process peak RSS", "value": peak_mb, "unit": "MB", "target": ""})
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
