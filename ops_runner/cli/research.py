"""`ops-runner` verbs for reports and research: the runs index, the slippage and performance
pages, backtest, sweep, walk-forward."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import cast

from ops_runner.cli.common import (
    Progress,
    add_actions,
    add_verb,
    find_project_file,
    optional_date,
)
from ops_runner.cli.jobs import run_job
from ops_runner.core.errors import ConfigError
from ops_runner.core.files import write_bytes_atomic
from ops_runner.runtime.notebooks import execute_job, show_cell_progress
from ops_runner.workbook.config import Config, load_config


def cmd_report(args: argparse.Namespace) -> int:
    cfg = load_config(args.workbook)
    if args.action == "index":
        from ops_runner.reports.runs import write_runs_index  # pandas, for this verb only

        print(f"runs index: {write_runs_index(cfg)}")
        return 0
    progress = Progress.from_args(args)
    if args.action == "performance":
        return _run_performance(cfg, args.start or "", args.end or "", progress)
    return run_job(cfg, "slippage_report", cycle=args.cycle, as_of=None, now=None,
                   progress=progress)  # fmt: skip


def _run_performance(cfg: Config, start: str, end: str, progress: Progress) -> int:
    """Run notebooks/performance.ipynb (registered like every run) and render it to
    reports/performance.html: live vs research in one page."""
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.reports.pages import write_html

    for name, text in (("--start", start), ("--end", end)):
        try:
            date.fromisoformat(text) if text else None
        except ValueError:  # one line, before a kernel starts
            raise ConfigError(f"{name}: {text!r} is not a date; write YYYY-MM-DD") from None
    now = datetime.now(UTC)
    day = now.date().isoformat()
    show_cell_progress(progress.enabled)
    progress("running the performance notebook (live vs research: up to a few minutes)")
    run = execute_job(cfg, "performance", "performance",
                      {"workbook": str(cfg.workbook), "start": start, "end": end},
                      slot=f"performance:{day}", session=day, cycle=None, at=now)  # fmt: skip
    if not run.ok:
        print(f"ops-runner: performance report failed: {run.error}", file=sys.stderr)
        return 1
    output = cast(Path, run.output)  # a run that is ok has its executed notebook
    progress("rendering reports/performance.html")
    page = write_html(output, cfg.path("reports") / "performance.html")
    done = run.completion or {}
    print(f"performance {done.get('status')}: {done.get('start')} .. {done.get('end')}, "
          f"{done.get('months')} month(s); report: {page}")  # fmt: skip
    return 0


def _research_inputs(args: argparse.Namespace, progress: Progress, grid: dict | None = None):
    """Return (config, bars) for backtest, sweep and walk-forward: the workbook's data with
    --config's strategy.

    --config is a template name (gem, topn, gtaa5, daa) or a YAML file, relative to the current
    folder, else to the workbook, else to the project (``templates/gem.yaml`` from any folder).
    """
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.strategy import research

    cfg = load_config(args.workbook)
    if args.config:
        chosen = find_project_file(args.config, "--config", cfg.workbook)
        cfg = research.load_research_config(cfg, chosen)
    name = cfg.values["strategy"]["name"]  # as written: load_bars says what is wrong with it
    progress(f"loading the {cfg.primary_source} bars of {name}")
    bars = research.load_bars(cfg, grid)
    progress(f"{len(bars)} symbols loaded")
    return cfg, bars


def cmd_backtest(args: argparse.Namespace) -> int:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.strategy import research

    progress = Progress.from_args(args)
    cfg, bars = _research_inputs(args, progress)
    start, end = optional_date(args.start, "--start"), optional_date(args.end, "--end")
    progress("backtesting (vectorbt; the first run in a fresh environment compiles for ~40 s)")
    result = research.backtest(cfg, bars, start=start, end=end)
    progress("done")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.summary())
    return 0


# How a person reads each metric: fractions as %, the Sharpe ratio with 2 decimals, $ equity.
_SHOWN = {
    "cagr": "{:.2%}".format,
    "volatility": "{:.2%}".format,
    "sharpe": "{:.2f}".format,
    "max_drawdown": "{:.2%}".format,
    "turnover": "{:.2%}".format,
    "final_equity": "{:,.2f}".format,
}


def compute_sweep_lines(table, metric: str, top: int) -> list[str]:
    """Return what ``sweep`` prints: a headline, then the ``top`` best rows by ``metric``,
    formatted for people (``table`` is ranked best first)."""
    shown = table.head(top).copy()
    for name, fmt in _SHOWN.items():
        shown[name] = [("-" if v != v else fmt(v)) for v in shown[name]]  # NaN: a dash
    shown.index = range(1, len(shown) + 1)
    window = f"{table['start'].iloc[0]}..{table['end'].iloc[0]}" if len(table) else "-"
    head = (f"{len(table)} combinations, {window}; the best {len(shown)} by {metric} "
            "(--json: every row):")  # fmt: skip
    body = shown.drop(columns=["start", "end"]).to_string()
    return [head, *body.splitlines()]


def _open_runner(stack: contextlib.ExitStack, placement: str, progress: Progress):
    """Return who computes the sweep chunks at ``placement``: None for this process, else a
    Dask runner whose cluster or connection ``stack`` closes. Raises ClusterError in one line
    when no scheduler answers."""
    if placement == "inprocess":
        return None
    # here, not at the top: dask loads only when a sweep runs on a cluster
    from ops_runner.strategy.distributed import open_dask_runner

    progress(f"starting or reaching the Dask cluster ({placement})")
    return stack.enter_context(open_dask_runner(placement, sys.stderr))


def cmd_sweep(args: argparse.Namespace) -> int:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.strategy import sweep
    from ops_runner.strategy.momentum import StrategySettings

    progress = Progress.from_args(args)
    sweep.require_metric(args.sort)  # before any work
    grid = sweep.load_grid(Path(find_project_file(args.grid, "--grid")))
    cfg, bars = _research_inputs(args, progress, grid)
    start, end = optional_date(args.start, "--start"), optional_date(args.end, "--end")
    combos, _ = sweep.compute_grid_settings(StrategySettings.from_config(cfg), grid)
    work = sweep.compute_sweep_work(cfg, grid, bars, start, end)
    placement = sweep.compute_placement(args.scheduler, work)
    with contextlib.ExitStack() as stack:
        runner = _open_runner(stack, placement, progress)
        progress(f"sweeping {len(combos)} combinations (vectorbt)")
        found = sweep.sweep(cfg, grid, bars, start=start, end=end, chunk=args.chunk,
                            progress=progress.enabled, runner=runner)  # fmt: skip
    table = sweep.compute_ranking(found, args.sort)
    progress("done")
    if args.json:
        print(table.to_json(orient="records", indent=2))
    else:
        print("\n".join(compute_sweep_lines(table, args.sort, args.top)))
    return 0


def compute_walk_forward_lines(result, grid: dict) -> list[str]:
    """Return what ``walk-forward`` prints: the result's summary lines, then one row per
    window (training and test windows, the grid's parameters chosen, the metric in and out
    of sample, formatted as ``sweep`` formats it)."""
    steps = result.steps
    shown = _SHOWN[result.metric]
    table = steps[[k for k in grid if k in steps.columns]].copy()
    table.insert(0, "step", steps["step"])
    table.insert(1, "train", steps["train_start"] + ".." + steps["train_end"])
    table.insert(2, "test", steps["test_start"] + ".." + steps["test_end"])
    for name in ("in_sample", "out_of_sample"):
        table[name] = [("-" if v != v else shown(v)) for v in steps[name]]  # NaN: a dash
    return [*result.summary().splitlines(), "", *table.to_string(index=False).splitlines()]


def cmd_walk_forward(args: argparse.Namespace) -> int:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.strategy import sweep, walk_forward
    from ops_runner.strategy.overfitting import require_blocks

    progress = Progress.from_args(args)
    sweep.require_metric(args.metric)  # before any work
    if not args.no_overfitting:
        require_blocks(args.blocks)
    output = Path(args.output).expanduser() if args.output else None
    if output is not None and output.is_dir():
        raise ConfigError(f"--output {args.output}: a folder; give a file path, e.g. wf.json")
    grid = (sweep.load_grid(Path(find_project_file(args.grid, "--grid"))) if args.grid
            else walk_forward.DEFAULT_GRID)  # fmt: skip
    cfg, bars = _research_inputs(args, progress, grid)
    start, end = optional_date(args.start, "--start"), optional_date(args.end, "--end")
    progress(f"walking forward: {args.train_years} year(s) of training, {args.test_months} "
             "month(s) of test, rolled by the test window (vectorbt)")  # fmt: skip
    options = {
        "test_months": args.test_months, "metric": args.metric, "start": start, "end": end,
        "blocks": args.blocks, "overfitting": not args.no_overfitting, "progress": progress,
    }  # fmt: skip
    work = walk_forward.compute_training_work(cfg, grid, bars, args.train_years, end)
    placement = sweep.compute_placement(args.scheduler, work)
    with contextlib.ExitStack() as stack:
        runner = _open_runner(stack, placement, progress)
        result = walk_forward.walk_forward(
            cfg, grid, bars, train_years=args.train_years, runner=runner, **options
        )
    progress("done")
    found = result.to_dict()
    if output is not None:  # whole or not at all: a failed write leaves no half file
        write_bytes_atomic(output, (json.dumps(found, indent=2) + "\n").encode())
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        print("\n".join(compute_walk_forward_lines(result, grid)))
        if output is not None:
            print(f"written: {output}")
    return 0


_EXIT_CODES = {
    "sweep": {1: "no Dask scheduler at --scheduler's address, or a chunk kept killing its workers"},
    "walk-forward": {
        1: "--output could not be written (a file already there is left as it was), or no Dask "
        "scheduler at --scheduler's address",
        2: "a bad grid, metric, blocks or config, or windows longer than the history",
    },
}


def add_verbs(sub: argparse._SubParsersAction) -> None:
    """Add this group's verbs to the command's subparsers."""
    p = add_verb(
        sub,
        "report",
        "reports: the runs index, a cycle's slippage, performance",
        "ops-runner report index\nops-runner report slippage --cycle 2025-11",
    )
    report_sub = add_actions(p)
    q = add_verb(
        report_sub,
        "index",
        "render executed notebooks; write reports/index.html",
        "ops-runner report index",
    )
    q.set_defaults(func=cmd_report)
    q = add_verb(
        report_sub,
        "slippage",
        "run the slippage report notebook for a cycle",
        "ops-runner report slippage --cycle 2025-11",
        {1: "refused (the tick would not run it now) or the run failed"},
    )
    q.add_argument("--cycle", required=True, help="e.g. 2025-11")
    q.set_defaults(func=cmd_report)
    q = add_verb(
        report_sub,
        "performance",
        "live (ledger) vs research, month by month",
        "ops-runner report performance --start 2025-01-02",
        {1: "the performance notebook failed (its reason; the notebook kept)"},
    )
    q.add_argument("--start", help="first session, YYYY-MM-DD (default: the first funded close)")
    q.add_argument("--end", help="last session, YYYY-MM-DD (default: the last with data)")
    q.set_defaults(func=cmd_report)

    for name, func, text, example in (
        (
            "backtest",
            cmd_backtest,
            "research backtest of the strategy (vectorbt)",
            "ops-runner backtest --config templates/gem.yaml --json",
        ),
        (
            "sweep",
            cmd_sweep,
            "parameter sweep: the best combinations by a metric (vectorbt)",
            "ops-runner sweep --grid templates/grids/example.yaml --config topn",
        ),
        (
            "walk-forward",
            cmd_walk_forward,
            "out-of-sample research: each training window's best, traded on the next (vectorbt)",
            "ops-runner walk-forward --config gem --train-years 2 --output wf.json",
        ),
    ):
        codes = _EXIT_CODES.get(name, {})
        p = add_verb(sub, name, text, example, codes)
        p.add_argument(
            "--config", help="a config file (e.g. templates/gem.yaml); default: workbook"
        )
        p.add_argument("--start", help="first rebalance session considered, YYYY-MM-DD")
        p.add_argument("--end", help="last session, YYYY-MM-DD")
        p.add_argument("--json", action="store_true")
        if name == "sweep":
            p.add_argument(
                "--grid", required=True, help="YAML grid file (e.g. templates/grids/example.yaml)"
            )
            p.add_argument(
                "--sort",
                default="sharpe",
                metavar="METRIC",
                help="rank by cagr, volatility, sharpe, max_drawdown, turnover or final_equity, "
                "best first (default sharpe; lower is better for volatility, drawdown, turnover)",
            )
            p.add_argument("--top", type=int, default=10, help="rows shown (default 10)")
            p.add_argument(
                "--chunk",
                type=int,
                metavar="N",
                help="combinations per simulation (default: what a quarter of the free memory "
                "holds, up to 1000); the results do not depend on it",
            )
        if name in ("sweep", "walk-forward"):
            p.add_argument(
                "--scheduler",
                metavar="WHERE",
                help="where the sweep chunks (of each training window) run: inprocess, local (a "
                "Dask LocalCluster, one worker per core) or a Dask scheduler's address "
                "(tcp://host:8786); default: $DASK_SCHEDULER_ADDRESS if set, else local when "
                "combinations x symbols x months (of one training window) reach 3e7 (README), "
                "inprocess below; the results do not depend on it",
            )
        if name == "walk-forward":
            _add_walk_forward_options(p)
        p.set_defaults(func=func)


def _add_walk_forward_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--grid",
        help="YAML grid file, as sweep takes it (default: the 6 combinations of "
        "strategy.walk_forward.DEFAULT_GRID)",
    )
    p.add_argument(
        "--train-years", type=int, default=3, metavar="N", help="each training window (default 3)"
    )
    p.add_argument(
        "--test-months",
        type=int,
        default=12,
        metavar="N",
        help="each test window; the windows roll by it (default 12)",
    )
    p.add_argument(
        "--metric",
        default="sharpe",
        help="what each training window ranks by: cagr, volatility, sharpe, max_drawdown, "
        "turnover or final_equity (default sharpe)",
    )
    p.add_argument(
        "--blocks", type=int, default=16, help="the PBO's blocks, an even number (default 16)"
    )
    p.add_argument(
        "--no-overfitting",
        action="store_true",
        help="skip the DSR and the PBO (no backtest of every combination over every window)",
    )
    p.add_argument(
        "--output",
        metavar="PATH",
        help="also write the result as JSON (what --json prints) to PATH, whole or not at all; "
        "nothing is written otherwise",
    )
