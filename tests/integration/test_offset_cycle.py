"""A workbook whose signal is taken one session before the month-end (``signal_offset: -1``,
a 10-month trend filter: GTAA-5 on the sample market's symbols), walked through real ticks.

The workbook is one simulated cycle old (2025-09, built by ``simulate_history``, which must
honour the offset), then every tick a scheduler would run from the eve of October's signal
session to November's month-end close: each session's close, and the order session's
submission window and open. Both cycles end on a Friday: 2025-10-31, and 2025-11-28, a half
day after Thanksgiving, so November's signal session is the Wednesday before the holiday.
Every tick runs twice. What is expected is computed here from the calendar alone: the
month-end is the last session of the month, the signal session the one before it, and the
orders go for the month-end session's open.
"""

from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import nbformat
import pytest

from ops_runner.cli import main
from ops_runner.core.events import EventKind, State
from ops_runner.ledger import open_ledger
from ops_runner.ledger.projections import compute_cash, compute_positions
from ops_runner.market.calendar import open_calendar
from ops_runner.market.prices import open_store
from ops_runner.ops.tick import tick
from ops_runner.simulators.history import simulate_history
from ops_runner.workbook.config import Config, load_config

pytestmark = pytest.mark.slow  # a walk of two cycles, about 20 ticks twice

KEY = "0123456789abcdef" * 4
CYCLES = ("2025-10", "2025-11")
RULES = {
    "universe": {"risk": ["SPY", "EFA", "IEF", "VNQ", "GLD"], "defensive": "BIL",
                 "cash_proxy": None},
    "strategy": {"name": "gtaa", "lookback_months": 1, "top_n": 5, "absolute_momentum": False,
                 "benchmark": None, "trend_length": 10, "failed_slot": "defensive",
                 "signal_offset": -1},
    # only the cycle's own jobs; the ticks are a session apart, as the demo's
    "schedule": {"weekly_audit": False, "weekly_backup": False, "investigate_incidents": False,
                 "heartbeat_max_gap_minutes": 20160},
}  # fmt: skip
AFTER_CLOSE = timedelta(minutes=35)  # past decision_delay_minutes (30)
BEFORE_OPEN = timedelta(minutes=90)  # 08:00 New York: inside the 08:00-09:20 window
AFTER_OPEN = timedelta(minutes=40)  # past reconciliation_delay_minutes (30)


def month_end(calendar, cycle: str) -> date:
    """The last session of the cycle's month, from the calendar's list of sessions."""
    year, month = (int(part) for part in cycle.split("-"))
    first = date(year, month, 1)
    days = [t.date() for t in calendar.sessions(first, first + timedelta(days=40))]
    return max(d for d in days if (d.year, d.month) == (year, month))


def signal(calendar, cycle: str) -> date:
    return calendar.previous_session(month_end(calendar, cycle))


def instant(stamp) -> datetime:
    return stamp.to_pydatetime()


class Walk:
    """The walked workbook and what each tick (and its repeat) did."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.calendar = open_calendar(cfg)
        self.ticks: list[tuple[datetime, tuple[str, ...], State]] = []
        self.repeats: list[tuple[datetime, tuple[str, ...], bool]] = []

    def events(self, kind: EventKind | None = None) -> list:
        with open_ledger(self.cfg, create=False, readonly=True) as ledger:
            return list(ledger.events(kind=str(kind) if kind else None))

    def head(self):
        with open_ledger(self.cfg, create=False, readonly=True) as ledger:
            return ledger.head()

    def ran_at(self, moment: datetime) -> tuple[str, ...]:
        (ran,) = [ran for at, ran, _ in self.ticks if at == moment]
        return ran


@pytest.fixture(scope="module")
def walk(tmp_path_factory) -> Walk:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPS_RUNNER_APPROVAL_KEY", KEY)
        root = tmp_path_factory.mktemp("offset") / "wb"
        built = simulate_history(root, cycles=1, first_cycle="2025-09", config=RULES)
        result = Walk(built.config())
        calendar = result.calendar
        first = calendar.previous_session(signal(calendar, CYCLES[0]))  # the eve's checks
        last = month_end(calendar, CYCLES[-1])
        order_sessions = {month_end(calendar, cycle) for cycle in CYCLES}
        moments = []
        for day in (t.date() for t in calendar.sessions(first, last)):
            if day in order_sessions:
                opened = instant(calendar.session_open(day))
                moments += [opened - BEFORE_OPEN, opened + AFTER_OPEN]
            moments.append(instant(calendar.session_close(day)) + AFTER_CLOSE)
        for moment in moments:
            done = tick(result.cfg, now=moment)
            result.ticks.append((moment, done.ran, done.state))
            before = result.head()
            again = tick(result.cfg, now=moment)
            result.repeats.append((moment, again.ran, result.head() == before))
        yield result


def completed(walk: Walk, slot: str) -> dict:
    (event,) = [e for e in walk.events(EventKind.JOB_COMPLETED) if e.payload["slot"] == slot]
    return event.payload


def test_offset_walk_when_ticked_stays_in_run_with_nothing_missed_or_repeated(walk):
    assert walk.ticks and all(state is State.RUN for _, _, state in walk.ticks), walk.ticks
    assert walk.events(EventKind.JOB_MISSED) == []
    assert walk.events(EventKind.JOB_FAILED) == []
    assert walk.events(EventKind.INCIDENT_OPENED) == []
    # every tick run twice: the repeat runs nothing and records nothing
    assert [(at, ran) for at, ran, same in walk.repeats if ran or not same] == []


@pytest.mark.parametrize("cycle", CYCLES)
def test_offset_walk_when_signal_session_closes_decides_there_not_at_month_end(walk, cycle):
    calendar = walk.calendar
    signalled, ending = signal(calendar, cycle), month_end(calendar, cycle)
    assert ending.weekday() == 4  # both cycles end on a Friday
    ran = walk.ran_at(instant(calendar.session_close(signalled)) + AFTER_CLOSE)
    assert f"data_qa:{cycle} clean" in ran and f"decision:{cycle} completed" in ran, ran
    (record,) = [e.payload for e in walk.events(EventKind.DECISION_RECORDED)
                 if e.cycle_id == cycle]  # fmt: skip
    assert record["session"] == signalled.isoformat()
    assert record["settings"]["signal_offset"] == -1
    block = record["decision"]["signal"]
    assert block["session"] == signalled.isoformat()
    assert block["month_end_session"] == ending.isoformat()
    assert block["offset_sessions"] == -1
    assert (
        "market-on-open" in block["execution"] and "after the signal session" in block["execution"]
    )
    # bars cut at the signal session's close: nothing from the month-end itself
    assert max(d for d, _ in record["decision"]["prices_used"]["SPY"]) == signalled.isoformat()
    # the QA and the decision ran for the signal session, and their notebooks say so
    assert completed(walk, f"data_qa:{cycle}")["session"] == signalled.isoformat()
    decided = completed(walk, f"decision:{cycle}")
    assert decided["session"] == signalled.isoformat() and decided["outputs"]["created"] is True
    (artifact,) = [e.payload for e in walk.events(EventKind.ARTIFACT_RECORDED)
                   if e.payload.get("run_id") == decided["run_id"]]  # fmt: skip
    notebook = nbformat.read(walk.cfg.workbook / artifact["path"], as_version=4)
    assert notebook.metadata["papermill"]["parameters"]["session"] == signalled.isoformat()
    assert (walk.cfg.workbook / artifact["path"]).parent.name == cycle


@pytest.mark.parametrize("cycle", CYCLES)
def test_offset_walk_when_month_end_closes_runs_only_its_daily_checks(walk, cycle):
    ending = month_end(walk.calendar, cycle)
    ran = walk.ran_at(instant(walk.calendar.session_close(ending)) + AFTER_CLOSE)
    assert ran == (f"daily_checks:{ending} passed",), ran
    sessions = {e.payload["session"] for e in walk.events(EventKind.QA_RECORDED)}
    assert ending.isoformat() not in sessions
    decided = [e.payload["session"] for e in walk.events(EventKind.DECISION_RECORDED)]
    assert ending.isoformat() not in decided


@pytest.mark.parametrize("cycle", CYCLES)
def test_offset_walk_when_month_end_opens_fills_orders_there_and_ends_on_target(walk, cycle):
    calendar = walk.calendar
    ending = month_end(calendar, cycle)
    opened = instant(calendar.session_open(ending))
    assert walk.ran_at(opened - BEFORE_OPEN) == (f"execution:{cycle} SUBMITTED",)
    after = walk.ran_at(opened + AFTER_OPEN)
    assert f"reconciliation:{cycle} CLEAN" in after, after
    assert any(line.startswith(f"slippage_report:{cycle} ") for line in after), after
    assert f"replay:{cycle} MATCH" in after, after
    orders = [e.payload for e in walk.events(EventKind.ORDER_SUBMITTED) if e.cycle_id == cycle]
    fills = [e.payload for e in walk.events(EventKind.FILL_RECORDED) if e.cycle_id == cycle]
    assert orders and {o["session"] for o in orders} == {ending.isoformat()}
    assert {f["client_ref"] for f in fills} == {o["client_ref"] for o in orders}
    assert {f["session"] for f in fills} == {ending.isoformat()}
    assert {datetime.fromisoformat(f["time"].replace("Z", "+00:00")) for f in fills} == {opened}
    (replayed,) = [e.payload for e in walk.events(EventKind.REPLAY_RECORDED)
                   if e.payload["cycle"] == cycle]  # fmt: skip
    assert replayed["result"] == "MATCH"
    assert replayed["session"] == signal(calendar, cycle).isoformat()
    (check,) = [e.payload for e in walk.events(EventKind.CHECK_RECORDED)
                if e.payload.get("check") == "reconciliation"
                and e.payload.get("cycle_id") == cycle]  # fmt: skip
    assert check["passed"] is True and check["breaks"] == []
    # the holdings after the reconciliation, valued at the month-end session's opens
    until = max(e.seq for e in walk.events(EventKind.JOB_COMPLETED)
                if e.payload["slot"] == f"reconciliation:{cycle}")  # fmt: skip
    history = [e for e in walk.events() if e.seq <= until]
    held = {s: q for s, q in compute_positions(history).items() if q}
    (record,) = [e.payload for e in walk.events(EventKind.DECISION_RECORDED)
                 if e.cycle_id == cycle]  # fmt: skip
    targets = {s: float(w) for s, w in record["decision"]["targets"].items() if float(w) > 0}
    assert set(held) == set(targets)
    store, source = open_store(walk.cfg), walk.cfg.primary_source
    opens = {s: float(store.load_bars(source, s).loc[str(ending), "open"]) for s in held}
    values = {s: q * opens[s] for s, q in held.items()}
    equity = sum(values.values()) + float(compute_cash(history))
    for symbol, weight in targets.items():
        assert values[symbol] / equity == pytest.approx(weight, abs=0.02), symbol


@pytest.mark.parametrize("cycle", CYCLES)
def test_offset_walk_pre_rebalance_checks_name_the_signal_session_and_the_orders_open(walk, cycle):
    calendar = walk.calendar
    signalled, ending = signal(calendar, cycle), month_end(calendar, cycle)
    for day in (calendar.previous_session(signalled), signalled):
        (check,) = [e.payload for e in walk.events(EventKind.CHECK_RECORDED)
                    if e.payload.get("check") == "calendar"
                    and e.payload.get("slot") == f"pre_rebalance_checks:{day}"]  # fmt: skip
        assert check["passed"] is True
        assert f"signal session {signalled}" in check["detail"], check["detail"]
        assert f"month-end {ending}" in check["detail"]
        assert f"orders for the {ending} open" in check["detail"]


@pytest.mark.parametrize("verb", ["run", "decide"])
def test_decision_by_hand_when_session_is_the_month_end_of_an_offset_workbook_is_refused(
    walk, verb, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("OPS_RUNNER_APPROVAL_KEY", KEY)
    root = shutil.copytree(walk.cfg.workbook, tmp_path / "wb")
    cfg = load_config(root)
    ending = month_end(walk.calendar, CYCLES[-1])
    signalled = signal(walk.calendar, CYCLES[-1])
    later = instant(walk.calendar.session_close(ending)) + AFTER_CLOSE + timedelta(minutes=5)
    before = Walk(cfg).head()
    if verb == "run":
        args = ["run", "decision", "--workbook", str(root), "--as-of", str(ending),
                "--now", later.isoformat().replace("+00:00", "Z")]  # fmt: skip
    else:
        args = ["decide", "--workbook", str(root), "--session", str(ending)]
    code = main(args)
    out = capsys.readouterr()
    assert code == 1
    (line,) = out.err.strip().splitlines()
    assert f"{ending} is not a decision session" in line
    assert f"taken on {signalled}" in line and "Traceback" not in out.err
    assert Walk(cfg).head() == before  # nothing recorded: no decision, no failure, no SAFE_MODE
    assert not (Path(root) / "ledger" / "runs" / str(ending)).exists()
