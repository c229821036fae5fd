"""`ops-runner` verbs for prices: import, fetch, the sample, the store's list, and data QA."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from ops_runner.cli.common import (
    add_actions,
    add_verb,
    optional_date,
    resolve_as_of,
)
from ops_runner.core.errors import ConfigError
from ops_runner.ledger import open_ledger
from ops_runner.workbook.config import Config, load_config


def _record_prices(cfg: Config, source: str, reason: str) -> None:
    """Pin what the store now holds in the ledger: the daily integrity check compares."""
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.market.integrity import record_prices

    with open_ledger(cfg) as ledger:
        record_prices(cfg, ledger, source, reason)


def _fetch(cfg: Config, args: argparse.Namespace) -> list[str]:
    """``data fetch``: the named source, else every source a provider serves (the tick's
    data_fetch job does the same), else the broker's historical bars into ``ib``."""
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.market.sources.providers import compute_fetched_sources
    from ops_runner.ops.fetch import fetch_source

    symbols = [s.strip() for s in args.symbols.split(",")] if args.symbols else None
    start = optional_date(args.start, "--start")
    end = optional_date(args.end, "--end")
    sources = [args.source] if args.source else compute_fetched_sources(cfg)
    if not sources and cfg.broker.kind == "ib":
        sources = ["ib"]
    if not sources:
        raise ConfigError(
            "data fetch: no provider serves data.primary or data.secondary; add one under "
            "data.providers (e.g. av: {vendor: alphavantage}) or name it with --source",
            "data.providers",
        )
    if "ib" in sources and "ib" not in cfg.data.providers:  # the broker's bars
        cfg = replace(cfg, values={**cfg.values, "data": {**cfg.values["data"], "providers": {
            **cfg.values["data"]["providers"], "ib": {"vendor": "ib"}}}})  # fmt: skip
    return [fetch_source(cfg, name, symbols, start, end) for name in sources]


def cmd_data(args: argparse.Namespace) -> int:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.market.calendar import open_calendar
    from ops_runner.market.importer import import_files
    from ops_runner.market.prices import open_store

    cfg = load_config(args.workbook)
    store = open_store(cfg)
    if args.action == "import":
        report = import_files(store, Path(args.path), layout=args.layout, source=args.name)
        print(
            f"{report.source}: imported {len(report.imported)}, replaced {len(report.replaced)}, "
            f"unchanged {len(report.unchanged)} ({report.layout})"
        )
    elif args.action == "fetch":
        for line in _fetch(cfg, args):
            print(line)
        return 0
    elif args.action == "sample":
        from ops_runner.market.sources.sample import SAMPLE_SOURCE, write_sample  # pandas

        if cfg.data.primary != SAMPLE_SOURCE:  # a production workbook: never
            raise ConfigError(
                "data sample: the SYNTHETIC sample market goes only into a demo workbook "
                f"(data.primary: {SAMPLE_SOURCE}; `ops-runner init --template demo`); this "
                "workbook's data.primary is "
                f"{cfg.data.primary or 'not set'}; nothing was written",
                "data.primary",
            )
        report = write_sample(store, calendar=open_calendar(cfg))
        print(
            f"sample (SYNTHETIC): imported {len(report.imported)}, "
            f"unchanged {len(report.unchanged)}"
        )
    if args.action in ("import", "fetch", "sample"):
        _record_prices(cfg, report.source, f"data {args.action}")
        return 0
    if args.action == "list":
        rows = store.list_rows()
        if args.json:
            print(json.dumps(rows, indent=2, default=str))
        elif not rows:
            print("the price store is empty; run `ops-runner data sample` or `data import`")
        else:
            import pandas as pd

            frame = pd.DataFrame(rows)
            columns = [
                c
                for c in (
                    "source",
                    "symbol",
                    "first_date",
                    "last_date",
                    "rows",
                    "layout",
                    "synthetic",
                )
                if c in frame.columns
            ]
            print(frame[columns].to_string(index=False))
    return 0


def cmd_qa(args: argparse.Namespace) -> int:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.market import qa

    cfg = load_config(args.workbook)
    as_of = resolve_as_of(cfg, args.as_of)
    report = qa.run_qa(cfg, as_of)
    frame = qa.findings_frame(report.findings)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report.summary())
        if len(frame):
            print(frame.drop(columns=["finding_id"]).to_string(index=False, max_colwidth=90))
    return 1 if report.blocking else 0


def add_verbs(sub: argparse._SubParsersAction) -> None:
    """Add this group's verbs to the command's subparsers."""
    p = add_verb(
        sub,
        "data",
        "the price store: fetch, import, sample, list",
        "ops-runner --workbook ~/rotation data fetch\n"
        "ops-runner --workbook ~/rotation data list --json",
        {2: "a file refused on import (its name, line and problem); nothing imported"},
    )
    data_sub = add_actions(p)
    q = add_verb(
        data_sub,
        "import",
        "import vendor CSV files (a file or a folder)",
        "ops-runner --workbook ~/rotation data import ~/prices/av --layout alphavantage --name av",
        {2: "a file refused (name, line, problem); nothing imported"},
    )
    q.add_argument("path")
    q.add_argument("--layout", required=True, choices=("alphavantage", "yahoo", "generic"))
    q.add_argument("--name", help="source name in the store (default: the layout)")
    q.set_defaults(func=cmd_data)
    q = add_verb(
        data_sub,
        "fetch",
        "fetch what the store lacks from the providers (as the tick does daily)",
        "ops-runner --workbook ~/rotation data fetch --source av --symbols SPY,AGG",
        {1: "a vendor refused or answered garbage (one line names it); nothing stored"},
    )
    q.add_argument(
        "--source",
        "--name",
        help="a source in data.providers (default: the primary and secondary it serves; "
        "`ib`: the broker's historical bars)",
    )
    q.add_argument(
        "--symbols", help="comma-separated tickers (default: the universe and QA's references)"
    )
    q.add_argument("--start", help="first date for a symbol not stored yet (data.fetch_start)")
    q.add_argument("--end", help="last date YYYY-MM-DD (default: the last session closed)")
    q.set_defaults(func=cmd_data)
    q = add_verb(
        data_sub,
        "sample",
        "write the SYNTHETIC sample market (demo workbooks only)",
        "ops-runner --workbook ~/demo data sample",
    )
    q.set_defaults(func=cmd_data)
    q = add_verb(
        data_sub,
        "list",
        "list stored sources and symbols",
        "ops-runner --workbook ~/rotation data list --json",
    )
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_data)

    p = add_verb(
        sub,
        "qa",
        "data QA of a session: freshness, completeness, sanity, providers",
        "ops-runner --workbook ~/rotation qa --as-of 2020-11-30 --json",
        {
            0: "clean (warnings allowed)",
            1: "blocking findings (no decision on this data), or QA could not run",
        },
    )
    p.add_argument("--as-of", help="session date YYYY-MM-DD (default: last closed session)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_qa)
