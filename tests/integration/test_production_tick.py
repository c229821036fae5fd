"""The tick's safety rails without kernels: clock skew, baseline, missed decisions, idle cost.

Each test builds a sample workbook, then ticks at literal instants of the 2025-11 cycle
(R = 2025-11-28, a 13:00 early close; P = 2025-11-26; N = 2025-12-01, window 13:00Z-14:20Z).
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import EVE, IDLE, make_workbook

from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.ledger import open_ledger
from ops_runner.ledger.states import read_state
from ops_runner.ops.checks import approve_baseline
from ops_runner.ops.tick import tick
from ops_runner.workbook.config import load_config

EXE = Path(sys.executable).with_name("ops-runner")
TOO_LATE = datetime(2025, 12, 1, 14, 25, tzinfo=UTC)  # N 09:25 ET: the window closed at 09:20


def events_of(cfg, kind):
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return [e.payload for e in ledger.events(kind=str(kind))]


def state_of(cfg):
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return read_state(ledger)


def test_tick_when_eve_of_rebalance_runs_checks_in_process_and_records_each(tmp_path):
    cfg = load_config(make_workbook(tmp_path))
    approve_baseline(cfg, "reviewed")
    result = tick(cfg, now=EVE)
    assert result.ran == (
        "daily_checks:2025-11-26 passed",
        "pre_rebalance_checks:2025-11-26 passed",
    )
    checks = {(c["check"], c["slot"]): c["passed"] for c in events_of(cfg, "CheckRecorded")}
    for name in ("clock", "timezone", "calendar", "data_fresh", "broker", "baseline"):
        assert checks[(name, "pre_rebalance_checks:2025-11-26")] is True
    assert checks[("heartbeat", "daily_checks:2025-11-26")] is True
    marks = events_of(cfg, EventKind.EQUITY_MARKED)
    assert [m["session"] for m in marks] == ["2025-11-26"]  # the daily equity mark
    assert tick(cfg, now=EVE).ran == ()  # done is never done again


def test_tick_when_no_baseline_approved_blocks_the_rebalance_in_safe_mode(tmp_path):
    cfg = load_config(make_workbook(tmp_path))
    tick(cfg, now=EVE)
    view = state_of(cfg)
    assert view.state is State.SAFE_MODE and "baseline" in view.reason
    incidents = events_of(cfg, EventKind.INCIDENT_OPENED)
    ids = [i["incident_id"] for i in incidents]
    assert ids == ["check-baseline-pre_rebalance_checks-2025-11-26"]


def test_tick_when_config_changed_after_baseline_blocks_until_new_baseline(tmp_path):
    root = make_workbook(tmp_path)
    approve_baseline(load_config(root), "reviewed")
    text = (root / "config.yaml").read_text().replace("top_n: 1", "top_n: 2")
    (root / "config.yaml").write_text(text)
    cfg = load_config(root)
    tick(cfg, now=EVE)
    baseline = [c for c in events_of(cfg, "CheckRecorded") if c["check"] == "baseline"]
    assert baseline[0]["passed"] is False
    assert any(line.startswith("config_hash: approved") for line in baseline[0]["evidence"])
    assert state_of(cfg).state is State.SAFE_MODE
    approve_baseline(cfg, "reviewed top_n 2")  # a new baseline: the next check passes
    from ops_runner.ops.checks import check_baseline

    with open_ledger(cfg) as ledger:
        assert check_baseline(cfg, ledger).passed


def test_tick_when_broker_clock_is_skewed_moves_to_safe_mode_once(tmp_path):
    cfg = load_config(make_workbook(tmp_path, **{"broker.sim_faults": {"clock_skew_seconds": 42}}))
    approve_baseline(cfg, "reviewed")
    tick(cfg, now=IDLE)
    view = state_of(cfg)
    assert view.state is State.SAFE_MODE and "+42.0 s" not in view.reason
    assert "-42.0 s" in view.reason  # local is 42 s behind the broker
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        head = ledger.head()
    tick(cfg, now=IDLE)
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        assert ledger.head() == head  # the same day's skew is recorded once


def test_tick_when_decision_found_after_its_window_halts(tmp_path):
    cfg = load_config(make_workbook(tmp_path))
    approve_baseline(cfg, "reviewed")
    tick(cfg, now=EVE)  # the schedule starts on the eve
    tick(cfg, now=TOO_LATE)  # nobody ticked from R's close to after N's window
    view = state_of(cfg)
    assert view.state is State.HALT and view.trigger is Trigger.DECISION_WINDOW_MISSED
    missed = events_of(cfg, EventKind.JOB_MISSED)
    assert [(m["slot"], m.get("expired")) for m in missed] == [
        ("decision:2025-11", True),  # the expired decision first: HALT before anything else
        ("pre_rebalance_checks:2025-11-28", None),
    ]
    assert events_of(cfg, EventKind.ORDER_SUBMITTED) == []
    assert events_of(cfg, EventKind.DECISION_RECORDED) == []


def test_tick_when_decision_missed_and_policy_skip_cycle_holds_positions_in_safe_mode(tmp_path):
    cfg = load_config(make_workbook(tmp_path, **{"schedule.missed_decision": "skip_cycle"}))
    approve_baseline(cfg, "reviewed")
    tick(cfg, now=EVE)
    tick(cfg, now=TOO_LATE)
    assert state_of(cfg).state is State.SAFE_MODE
    skipped = events_of(cfg, EventKind.CYCLE_SKIPPED)
    assert [s["cycle"] for s in skipped] == ["2025-11"]
    later = tick(cfg, now=datetime(2025, 12, 1, 16, 0, tzinfo=UTC))
    assert not any("execution" in line or "reconciliation" in line for line in later.ran)


@pytest.mark.subprocess
@pytest.mark.slow
def test_tick_now_when_broker_is_not_simulated_is_refused_in_one_line(tmp_path):
    root = make_workbook(tmp_path, **{"broker.kind": "ib", "broker.account": "DU1234567"})
    done = subprocess.run(
        [str(EXE), "--workbook", str(root), "tick", "--now", "2025-11-26T21:35:00Z"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("ops-runner: --now (a simulated clock) is only accepted with")


@pytest.mark.parametrize(
    ("settings", "accepted"),
    [
        ({"broker.simulator": True}, True),
        ({"broker.simulator": False}, False),
        ({"broker.simulator": True, "broker.host": "10.0.0.5"}, False),
        ({"broker.simulator": True, "broker.mode": "live", "broker.account": "U1234567"}, False),
    ],
)
def test_a_simulated_clock_with_ib_needs_the_loopback_paper_simulator(tmp_path, settings, accepted):
    from ops_runner.core.errors import OpsError
    from ops_runner.ops.tick import require_simulated_broker

    values = {"broker.kind": "ib", "broker.account": "DU1234567", **settings}
    cfg = load_config(make_workbook(tmp_path, **values))
    if accepted:
        require_simulated_broker(cfg)
    else:
        with pytest.raises(OpsError, match="only accepted with"):
            require_simulated_broker(cfg)


@pytest.mark.subprocess
@pytest.mark.slow
def test_tick_when_idle_starts_no_kernel_and_imports_neither_papermill_nor_vectorbt(tmp_path):
    """Nor apprise: a push channel's library loads only when a push goes out; nor dask: it
    loads only when a sweep runs on a cluster."""
    cfg = load_config(make_workbook(tmp_path))
    approve_baseline(cfg, "reviewed")
    tick(cfg, now=EVE)  # the schedule is in this machine's cache from here on
    code = (
        "import sys\nfrom ops_runner.cli import main\n"
        f"main(['--workbook', {str(tmp_path)!r}, 'tick', '--now', '2025-11-26T23:00:00Z'])\n"
        "print(sorted(m for m in ('papermill', 'vectorbt', 'nbclient', 'jupyter_client', "
        "'pandas_market_calendars', 'exchange_calendars', 'apprise', 'dask', 'distributed') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "state RUN" and lines[-1] == "[]"
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        assert not list(ledger.events(kind=str(EventKind.JOB_STARTED)))


@pytest.mark.subprocess
@pytest.mark.parametrize("verb", [["status"], ["config", "check"], ["--help"]])
def test_a_read_verb_when_run_loads_neither_pandas_nor_the_calendar(tmp_path, verb):
    """`ops-runner status` and the like answer in a fraction of a second: the command imports
    what a verb needs inside its handler, and these need no prices."""
    root = make_workbook(tmp_path)
    code = (
        "import sys\nfrom ops_runner.cli import main\n"
        f"try:\n    main(['--workbook', {str(root)!r}, *{verb!r}])\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in ('pandas', 'numpy', 'pandas_market_calendars', 'apprise') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("when", [EVE, IDLE])
def test_tick_when_run_twice_writes_the_same_ledger(tmp_path, when):
    cfg = load_config(make_workbook(tmp_path))
    approve_baseline(cfg, "reviewed")
    tick(cfg, now=when)
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        first = [(e.kind, e.key, e.payload) for e in ledger.events()]
    tick(cfg, now=when)
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        assert [(e.kind, e.key, e.payload) for e in ledger.events()] == first
