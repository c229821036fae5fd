"""A multi-year simulated history: a fresh workbook whose ledger holds N real cycles, fast.

``simulate_history`` drives the same in-process code the cycle notebooks call, without a
kernel: ``decision.decide`` (decision notebook), ``execution.read_plan`` and
``submission.submit_plan`` (execution notebook), ``reconcile.reconcile`` (reconciliation
notebook), against the simulated broker on a simulated clock: decide 30 minutes after the
rebalance close, submit an hour before the next open, reconcile 45 minutes after it. The
ledger ends with, per cycle, a Decision Record, the plan of record and its intents, orders,
fills with commissions and a clean reconciliation check, exactly as a month of production
writes them (minus the executed notebooks and the scheduler's own events).

The market is the SYNTHETIC sample (``ops_runner.market.sources.sample``): sessions from 2010-01-04
to 2025-12-31, so with the default 12-month lookback the first cycle can be 2011-01 and the
last one whose orders can fill is 2025-11 (its orders fill at the 2025-12-01 open). That is up
to 179 cycles. Two things the simulated broker does not model over long spans: dividends
(cash stays as filled) and splits (the sample's QQQ splits 2:1 on 2018-06-18; a position held
across it keeps its share count). Both books agree, so reconciliation stays clean.

Example::

    from ops_runner.simulators.history import simulate_history

    result = simulate_history(tmp_path / "wb", cycles=36)  # 2022-12 .. 2025-11, a few seconds
    result.cycles[-1]  # "2025-11"
    simulate_history(tmp_path / "wide", 36, out_of_band={"2024-03": 25.0})  # fills 25 bps off
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from ops_runner.brokers import open_broker
from ops_runner.core.cycle import Cycle
from ops_runner.core.errors import OpsError
from ops_runner.core.events import EventKind
from ops_runner.execution.plan import read_plan
from ops_runner.execution.reconcile import ReconciliationStatus, reconcile
from ops_runner.execution.submission import SubmissionStatus, submit_plan
from ops_runner.ledger import open_ledger
from ops_runner.ledger.init import init_workbook
from ops_runner.ledger.projections import (
    compute_account_events,
    compute_fills,
    compute_ledger_equity,
)
from ops_runner.ledger.states import record_equity_mark
from ops_runner.market.calendar import open_calendar
from ops_runner.market.importer import import_files
from ops_runner.market.integrity import record_prices
from ops_runner.market.prices import PriceStore, open_store
from ops_runner.market.qa import run_qa
from ops_runner.market.sources.sample import DEFAULT_END, DEFAULT_SEED, DEFAULT_START, write_sample
from ops_runner.ops.audit import run_audit
from ops_runner.ops.checks import approve_baseline, record_data_qa
from ops_runner.ops.decision import decide
from ops_runner.workbook.config import Config, load_config, parse_yaml

log = logging.getLogger(__name__)

SUBMIT_BEFORE_OPEN = timedelta(hours=1)  # 08:30 New York: inside the 08:00-09:20 window
RECONCILE_AFTER_OPEN = timedelta(minutes=45)  # past reconciliation_delay_minutes (30)


class HistoryError(OpsError):
    """A simulated history cannot be built as asked (a used folder, a span the sample lacks)."""


@dataclass(frozen=True)
class HistoryResult:
    """What ``simulate_history`` built.

    ``cycles`` are the cycle ids oldest first ("2022-12" ... "2025-11"); ``sessions`` maps each
    to (decision session, order session) as ISO dates; ``out_of_band`` the cycles whose fills
    were moved by the slippage asked for; ``orders`` and ``fills`` count what the ledger holds.
    """

    workbook: Path
    cycles: tuple[str, ...]
    sessions: Mapping[str, tuple[str, str]]
    out_of_band: Mapping[str, float]
    orders: int
    fills: int
    seconds: float

    def config(self) -> Config:
        """Return the workbook's config, loaded now."""
        return load_config(self.workbook)


def compute_cycle_months(
    cycles: int, first_cycle: str | None, last: date = DEFAULT_END
) -> list[tuple[int, int]]:
    """Return (year, month) of ``cycles`` consecutive cycles from ``first_cycle`` ("YYYY-MM"),
    or ending with the last month whose orders the sample can fill (the month before ``last``'s)
    when ``first_cycle`` is None. Raises HistoryError for a bad count or cycle id."""
    if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1:
        raise HistoryError(f"cycles: {cycles!r} is not a whole number of cycles >= 1")
    if first_cycle is None:
        end = last.year * 12 + last.month - 2  # months since year 0; the last fillable month
        start = end - cycles + 1
    else:
        year, _, month = str(first_cycle).partition("-")
        if not (year.isdigit() and month.isdigit() and 1 <= int(month) <= 12):
            raise HistoryError(f"first_cycle: {first_cycle!r} is not a cycle such as 2022-12")
        start = int(year) * 12 + int(month) - 1
    return [((start + i) // 12, (start + i) % 12 + 1) for i in range(cycles)]


def _new_workbook(root: Path, overrides: Mapping[str, Mapping[str, Any]]) -> Config:
    """Initialise a demo-template workbook at ``root`` with config sections overridden; refuse
    a folder already in use. Raises HistoryError."""
    import yaml

    if root.exists() and any(root.iterdir()):
        raise HistoryError(
            f"{root} is not empty; simulate a history into a new folder (it never writes into "
            "an existing workbook)"
        )
    config = init_workbook(root, template="demo")
    if overrides:
        values = parse_yaml(config.read_text(encoding="utf-8"))
        for section, changes in overrides.items():
            if not isinstance(changes, Mapping) or not isinstance(values.get(section), dict):
                raise HistoryError(f"config override {section!r}: expected a section's mapping")
            values[section].update(changes)
        config.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    return load_config(root)


def _prepare(workbook: Path, seed: int, overrides: Mapping[str, Mapping[str, Any]]) -> Config:
    """Initialise a fresh workbook with the sample market; refuse a folder already in use."""

    root = Path(workbook)
    cfg = _new_workbook(root, overrides)
    if cfg.broker.kind != "sim" or cfg.data.primary != "sample":
        raise HistoryError("a simulated history needs broker.kind sim and data.primary sample")
    write_sample(open_store(cfg), seed=seed, calendar=open_calendar(cfg))

    with open_ledger(cfg) as ledger:
        record_prices(cfg, ledger, "sample", "simulated history: the SYNTHETIC sample market")
    approve_baseline(cfg, "a simulated history: the config and code it was built with")
    return cfg


def _with_slippage(cfg: Config, bps: float) -> Config:
    """Return ``cfg`` with ``costs.slippage_bps`` replaced: the broker's fills, nothing else."""
    costs = {**cfg.values["costs"], "slippage_bps": float(bps)}
    return Config(cfg.workbook, {**cfg.values, "costs": costs}, cfg.source_path)


def compute_cycle_sessions(cfg: Config, calendar: Any, year: int, month: int) -> tuple[date, date]:
    """Return the cycle's decision session (its month-end, or with ``strategy.signal_offset``
    -k its signal session k sessions before) and its order session, the one after it, as the
    schedule places them. Raises CalendarError for a month the calendar does not cover."""
    decided = calendar.rebalance_session(year, month, cfg.schedule.signal_offset)
    return decided, calendar.next_session(decided)


def run_cycle(cfg: Config, year: int, month: int, fill_slippage_bps: float | None = None) -> str:
    """Run one cycle: decide on its decision session (``compute_cycle_sessions``: the
    month-end, or the signal session of an offset workbook), plan and submit, fill at the next
    open, reconcile. Returns its id.

    ``fill_slippage_bps`` replaces ``costs.slippage_bps`` for this cycle's fills only. Raises
    HistoryError when the submission or the reconciliation does not end clean, and what the
    jobs raise (StrategyError, ExecutionError, ReconciliationError, LedgerError).
    """

    calendar = open_calendar(cfg)
    decided, order_session = compute_cycle_sessions(cfg, calendar, year, month)
    delay = cfg.schedule.decision_delay
    decided_at: datetime = calendar.session_close(decided).to_pydatetime() + delay
    opened: datetime = calendar.session_open(order_session).to_pydatetime()
    submit_at, reconcile_at = opened - SUBMIT_BEFORE_OPEN, opened + RECONCILE_AFTER_OPEN

    record_data_qa(cfg, run_qa(cfg, decided))  # the decision's gate: a clean QA of the session
    record = decide(cfg, decided, now=decided_at).record
    cycle = str(record["cycle_id"])
    broker = open_broker(cfg, clock=lambda: submit_at)
    broker.connect()
    plan = read_plan(cfg, broker, record)
    with open_ledger(cfg) as ledger:
        submitted = submit_plan(cfg, ledger, broker, plan, submit_at)
    if submitted.status is not SubmissionStatus.SUBMITTED:
        raise HistoryError(f"cycle {cycle}: submission {submitted.status}: {submitted.detail}")
    # The first broker call after the open fills the orders: this one, with the cycle's costs.
    fills_cfg = cfg if fill_slippage_bps is None else _with_slippage(cfg, fill_slippage_bps)
    reader = open_broker(fills_cfg, clock=lambda: reconcile_at, role="readonly")
    reader.connect()
    with open_ledger(cfg) as ledger:
        report = reconcile(cfg, ledger, reader, cycle, order_session.isoformat(), reconcile_at)
    if report.status is not ReconciliationStatus.CLEAN:
        raise HistoryError(f"cycle {cycle}: reconciliation {report.status}: {report.summary()}")
    return cycle


def simulate_history(
    workbook: Path,
    cycles: int = 36,
    first_cycle: str | None = None,
    seed: int = DEFAULT_SEED,
    *,
    out_of_band: Mapping[str, float] | None = None,
    config: Mapping[str, Mapping[str, Any]] | None = None,
) -> HistoryResult:
    """Build a fresh workbook at ``workbook`` whose ledger holds ``cycles`` real cycles.

    ``first_cycle`` ("YYYY-MM") is the first cycle; None ends the history at 2025-11, the last
    cycle the sample can fill. ``seed`` is the sample market's (the default is the embedded
    sample every workbook gets). ``out_of_band`` maps cycle ids to the simulated broker's
    slippage in bps for that cycle's fills (the default is ``costs.slippage_bps``, 2 bps),
    e.g. {"2024-03": 25.0} to see orders flagged. ``config`` overrides config sections before
    anything runs, e.g. {"costs": {"slippage_bands": {"EEM": 20.0}}}.

    No notebook, no tick: the ledger holds an approved baseline, the sample's prices, and per
    cycle a clean data QA, the decision, its plan, intents, orders, fills, commissions and a
    reconciliation check; no executed notebooks or slippage checks. Returns
    the HistoryResult. Raises HistoryError for a folder in use, a span outside the sample or a
    cycle that does not reconcile clean.
    """
    began = time.monotonic()
    months = compute_cycle_months(cycles, first_cycle)
    wanted = {str(Cycle(y, m)) for y, m in months}
    wide = {str(k): float(v) for k, v in (out_of_band or {}).items()}
    if stray := sorted(set(wide) - wanted):
        raise HistoryError(f"out_of_band names cycle(s) outside the history: {', '.join(stray)}")
    first, last = months[0], months[-1]
    if (first[0], first[1]) <= (DEFAULT_START.year, DEFAULT_START.month) or (
        last[0] * 12 + last[1] > DEFAULT_END.year * 12 + DEFAULT_END.month - 1
    ):
        raise HistoryError(
            f"cycles {first[0]}-{first[1]:02d} to {last[0]}-{last[1]:02d} are outside the sample "
            f"market ({DEFAULT_START} to {DEFAULT_END}): the last cycle it can fill is 2025-11"
        )
    cfg = _prepare(Path(workbook), seed, config or {})
    done, sessions = [], {}
    calendar = open_calendar(cfg)
    for year, month in months:
        cycle = run_cycle(cfg, year, month, wide.get(str(Cycle(year, month))))
        decided, order_session = compute_cycle_sessions(cfg, calendar, year, month)
        sessions[cycle] = (decided.isoformat(), order_session.isoformat())
        done.append(cycle)
    orders, fills = _count(cfg)
    seconds = time.monotonic() - began
    log.info("simulated %d cycle(s) %s..%s in %.1f s", len(done), done[0], done[-1], seconds)
    return HistoryResult(Path(workbook), tuple(done), sessions, wide, orders, fills, seconds)


def _count(cfg: Config) -> tuple[int, int]:

    with open_ledger(cfg, create=False, readonly=True) as ledger:
        events = list(ledger.events())
    orders = sum(1 for e in events if e.kind == EventKind.ORDER_SUBMITTED)
    return orders, len(compute_fills(events))


# -- a history on real vendor files, with the account's events and weekly audits ------------------


@dataclass(frozen=True)
class WeekEnd:
    """One week's last session: the audit's status, the broker's net liquidation and the
    ledger's equity (cash + positions at the session's closes + dividends owed)."""

    session: str
    audit: str
    broker: Decimal
    ledger: Decimal

    @property
    def difference(self) -> Decimal:
        """Ledger minus broker, the ledger's equity rounded to the cent as the broker's is."""
        return self.ledger.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) - self.broker


@dataclass(frozen=True)
class BooksHistoryResult:
    """What ``simulate_books_history`` built: the cycles, every week-end's audit and marks, and
    the account's events the ledger holds by kind."""

    workbook: Path
    cycles: tuple[str, ...]
    skipped: Mapping[str, str]  # cycle -> the blocking data QA that held it (no decision)
    weeks: tuple[WeekEnd, ...]
    events: Mapping[str, int]
    seconds: float

    def config(self) -> Config:
        return load_config(self.workbook)


def simulate_books_history(
    workbook: Path,
    data: Path,
    layout: str,
    first_cycle: str,
    last_cycle: str,
    *,
    config: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = False,
) -> BooksHistoryResult:
    """Build a fresh workbook on the vendor files in ``data`` (``layout``, also the source's
    name) and run the monthly cycles ``first_cycle``..``last_cycle`` with the simulated broker
    paying dividends and applying splits from the same prices, and at the last session of every
    week: the weekly audit, the equity mark from the broker's net liquidation, and the ledger's
    own equity at that session's closes.

    ``config`` overrides config sections (e.g. the universe, ``broker.sim_account``). Raises
    HistoryError for a folder in use or a cycle that does not reconcile clean.
    """

    began = time.monotonic()
    root = Path(workbook)
    data_section = {"data": {"primary": layout}}
    cfg = _new_workbook(root, {**(config or {}), **data_section})
    store = open_store(cfg)
    assert isinstance(store, PriceStore)
    import_files(store, Path(data), layout, layout)
    with open_ledger(cfg) as ledger:
        record_prices(cfg, ledger, layout, f"a simulated history on the vendor files in {data}")
    approve_baseline(cfg, "a simulated history on real vendor files")

    calendar = open_calendar(cfg)
    first = compute_cycle_months(1, first_cycle)[0]
    last = compute_cycle_months(1, last_cycle)[0]
    months = compute_cycle_months((last[0] - first[0]) * 12 + last[1] - first[1] + 1, first_cycle)
    cycles: list[str] = []
    skipped: dict[str, str] = {}
    weeks: list[WeekEnd] = []
    closes_cache: dict[str, Any] = {}

    def closes_at(day: date) -> dict[str, Decimal]:
        import pandas as pd

        found = {}
        for symbol in store.symbols(layout):
            if symbol not in closes_cache:
                closes_cache[symbol] = store.load_bars(layout, symbol)["close"]
            series = closes_cache[symbol].loc[: pd.Timestamp(day)]
            if len(series):
                found[symbol] = Decimal(str(float(series.iloc[-1])))
        return found

    def week_end(day: date) -> None:
        # Ten minutes after the close: before a month-end's decision (close + 30 minutes).
        at = calendar.session_close(day).to_pydatetime() + timedelta(minutes=10)
        broker = open_broker(cfg, clock=lambda: at, role="readonly")
        broker.connect()
        with open_ledger(cfg) as ledger:
            report = run_audit(cfg, ledger, broker, at, alert=None)
            account = broker.account_values()
            record_equity_mark(ledger, cfg, day, account.net_liquidation, "sim")
            equity = compute_ledger_equity(list(ledger.events()), closes_at(day))
        weeks.append(WeekEnd(day.isoformat(), str(report.status), account.net_liquidation,
                             equity))  # fmt: skip

    # From the first cycle's fills on: before them the ledger has no cash history to compare.
    span = calendar.sessions(compute_cycle_sessions(cfg, calendar, *first)[1],
                             compute_cycle_sessions(cfg, calendar, *last)[0])  # fmt: skip
    week_ends = [d for d in (t.date() for t in span)
                 if calendar.next_session(d).isocalendar()[:2] != d.isocalendar()[:2]]  # fmt: skip
    pending = list(week_ends)
    for i, (year, month) in enumerate(months):
        decided = compute_cycle_sessions(cfg, calendar, year, month)[0]
        while pending and pending[0] <= decided:
            week_end(pending.pop(0))
        qa = run_qa(cfg, decided)
        if qa.blocking:  # a real vendor fault: production holds (DEGRADED_DATA), so do we
            record_data_qa(cfg, qa)
            skipped[str(Cycle(year, month))] = qa.summary()
            continue
        cycles.append(run_cycle(cfg, year, month))
        if progress:
            log.warning("cycle %s (%d of %d)", cycles[-1], i + 1, len(months))
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        counts: dict[str, int] = {}
        for kind, _ in compute_account_events(list(ledger.events())):
            counts[kind] = counts.get(kind, 0) + 1
    seconds = time.monotonic() - began
    return BooksHistoryResult(root, tuple(cycles), skipped, tuple(weeks), counts, seconds)
