"""The monthly rebalance replay as a job of the tick (runbook 6, issue 20).

Each case starts from November 2025 decided by a real tick (100% AGG; the account holds VEU),
ticks the execution at 08:00 New York on 2025-12-01 and the reconciliation after the open: the
replay follows it at the same tick. What changes between the decision and the replay (the
stored prices, the config) is changed the way a person or a vendor would, and the replay must
say so: the differing fields, the likely cause, an incident and its alert, SAFE_MODE, and no
next decision until an operator resumes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import make_decided_november

from ops_runner.cli import main
from ops_runner.core.events import EventKind, State
from ops_runner.ledger import open_ledger
from ops_runner.ledger.approvals import Action, approve, resume
from ops_runner.ledger.states import read_state, write_kill_switch
from ops_runner.market.calendar import open_calendar
from ops_runner.market.integrity import check_integrity, record_prices
from ops_runner.market.prices import open_store
from ops_runner.ops.decision import DecisionRefused, require_decision_gates
from ops_runner.ops.manual import RunRefused, run_by_hand
from ops_runner.ops.schedule import Job, ScheduleSettings, Slot, compute_session_slots
from ops_runner.ops.tick import tick
from ops_runner.workbook.config import Config, load_config

pytestmark = pytest.mark.slow  # a decided November, built once per process

KEY = "fedcba9876543210" * 4
WINDOW = datetime(2025, 12, 1, 13, 0, tzinfo=UTC)  # 08:00 New York: the execution
OPENS = datetime(2025, 12, 1, 15, 0, tzinfo=UTC)  # the 09:30 open + 30 min: reconciliation
RECONCILED = datetime(2025, 12, 1, 15, 10, tzinfo=UTC)
DECEMBER = date(2025, 12, 31)  # the next cycle's rebalance session


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch) -> Config:
    monkeypatch.setenv("OPS_RUNNER_APPROVAL_KEY", KEY)
    return load_config(make_decided_november(tmp_path / "wb"))


def executed(cfg: Config) -> None:
    done = tick(cfg, now=WINDOW)
    assert "execution:2025-11 SUBMITTED" in done.message, done.message


def events(cfg: Config, kind: EventKind) -> list:
    with open_ledger(cfg) as ledger:
        return list(ledger.events(kind=str(kind)))


def head(cfg: Config) -> tuple[int, str] | None:
    with open_ledger(cfg) as ledger:
        return ledger.head()


def replay_slot(cfg: Config) -> Slot:
    settings = ScheduleSettings.from_config(cfg.values)
    slots = compute_session_slots(open_calendar(cfg), settings, date(2025, 11, 28))
    (slot,) = [s for s in slots if s.job is Job.REPLAY]
    return slot


def rewrite_close(cfg: Config, symbol: str, day: str, factor: float) -> None:
    """A vendor's corrected file: one stored close (and high) changed, imported through the
    store and recorded as ops-runner records every write to it."""
    source = cfg.primary_source
    store = open_store(cfg)
    bars = store.load_bars(source, symbol)
    stamp = pd.Timestamp(day)
    bars.loc[stamp, "close"] *= factor
    bars.loc[stamp, "high"] = max(bars.loc[stamp, "high"], bars.loc[stamp, "close"])
    store.write_bars(source, symbol, bars, {
        "layout": store.read_manifest(source, symbol)["layout"],
        "source_file": f"test: {symbol} {day} x{factor}",
        "source_sha256": f"{factor}".encode().hex().ljust(64, "0")[:64], "notes": "corrected",
    })  # fmt: skip
    with open_ledger(cfg) as ledger:
        record_prices(cfg, ledger, source, "a vendor's corrected file")


def change_lookback(cfg: Config, months: int) -> Config:
    config = cfg.workbook / "config.yaml"
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["strategy"]["lookback_months"] = months
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_config(cfg.workbook)


def test_replay_job_when_the_cycle_is_reconciled_records_match_once(cfg):
    executed(cfg)
    done = tick(cfg, now=RECONCILED)
    assert "reconciliation:2025-11 CLEAN" in done.message, done.message
    assert "replay:2025-11 MATCH" in done.message and done.state is State.RUN
    (decision,) = [e for e in events(cfg, EventKind.DECISION_RECORDED) if e.cycle_id == "2025-11"]
    (replayed,) = events(cfg, EventKind.REPLAY_RECORDED)
    payload = replayed.payload
    assert (payload["cycle"], payload["session"], payload["result"]) == (
        "2025-11",
        "2025-11-28",
        "MATCH",
    )
    assert (payload["differences"], payload["causes"], payload["changed"]) == ([], [], [])
    assert payload["decision_seq"] == decision.seq
    assert payload["config_hash"] == {"recorded": cfg.hash, "now": cfg.hash}
    sha = decision.payload["snapshot"]["sha256"]
    assert payload["snapshot_sha256"] == {"recorded": sha, "now": sha}
    assert payload["code_version"]["now"] == decision.payload["code_version"]
    (completed,) = [e for e in events(cfg, EventKind.JOB_COMPLETED)
                    if e.payload["slot"] == "replay:2025-11"]  # fmt: skip
    assert completed.payload["outcome"] == "MATCH" and completed.payload["done"] is True
    # the same tick again, and a later one: nothing runs, nothing is recorded
    before = head(cfg)
    assert tick(cfg, now=RECONCILED).ran == ()
    assert tick(cfg, now=datetime(2025, 12, 1, 17, 0, tzinfo=UTC)).ran == ()
    assert head(cfg) == before
    assert events(cfg, EventKind.INCIDENT_OPENED) == []


def test_replay_job_when_prices_changed_since_the_decision_opens_incident_and_safe_mode(cfg):
    executed(cfg)
    rewrite_close(cfg, "SPY", "2024-11-29", 1.05)  # where SPY's 12-month return starts
    done = tick(cfg, now=RECONCILED)
    assert "replay:2025-11 DIFFERS (prices changed since the decision)" in done.message
    assert done.state is State.SAFE_MODE
    (replayed,) = events(cfg, EventKind.REPLAY_RECORDED)
    payload = replayed.payload
    assert payload["result"] == "DIFFERS"
    assert payload["causes"] == ["prices changed since the decision"]
    assert payload["differences"] and all(
        line.startswith("decision.") for line in payload["differences"]
    )
    assert any(line.startswith("decision.scores.SPY.") for line in payload["differences"])
    snapshot = payload["snapshot_sha256"]
    assert snapshot["recorded"] != snapshot["now"]
    assert payload["config_hash"]["recorded"] == payload["config_hash"]["now"]
    # the incident names the fields and the cause, in the transaction that left RUN
    (incident,) = events(cfg, EventKind.INCIDENT_OPENED)
    opened = incident.payload
    assert opened["incident_id"].startswith("replay-2025-11-") and opened["category"] == "data"
    assert "prices changed since the decision" in opened["summary"]
    assert any(line.startswith("decision.scores.SPY.") for line in opened["evidence"])
    assert "likely cause: prices changed since the decision" in opened["evidence"]
    (changed,) = events(cfg, EventKind.STATE_CHANGED)
    assert (changed.payload["from"], changed.payload["to"]) == ("RUN", "SAFE_MODE")
    assert changed.recorded_at == incident.recorded_at == replayed.recorded_at
    # the alert went out with the tick, naming the incident
    (alert,) = events(cfg, EventKind.ALERT_SENT)
    assert alert.payload["subject"].startswith("SAFE_MODE: the replay of 2025-11")
    assert incident.seq in alert.payload["events"] and alert.payload["channels"]["log"] == "sent"
    assert opened["incident_id"] in (cfg.path("kill_switch").parent / "alerts.log").read_text()
    # no next decision until an operator resumes
    with open_ledger(cfg) as ledger, pytest.raises(DecisionRefused, match="the state is SAFE"):
        require_decision_gates(cfg, ledger, DECEMBER)
    assert tick(cfg, now=datetime(2025, 12, 1, 17, 0, tzinfo=UTC)).ran == ()  # not again
    resumed = datetime(2025, 12, 1, 18, 0, tzinfo=UTC)
    token = approve(cfg, Action.EXIT_SAFE_MODE, "the vendor's correction reviewed", now=resumed)
    assert resume(cfg, token, now=resumed, integrity=check_integrity) is State.RUN
    with open_ledger(cfg) as ledger, pytest.raises(DecisionRefused, match="no data QA of"):
        require_decision_gates(cfg, ledger, DECEMBER)  # the state no longer stands in the way


def test_replay_job_when_config_changed_since_the_decision_names_config_as_the_cause(cfg):
    executed(cfg)
    changed = change_lookback(cfg, 3)
    done = tick(changed, now=RECONCILED)
    assert "replay:2025-11 DIFFERS (config changed)" in done.message, done.message
    assert done.state is State.SAFE_MODE
    (replayed,) = events(changed, EventKind.REPLAY_RECORDED)
    payload = replayed.payload
    assert payload["causes"] == ["config changed"] and payload["differences"]
    assert payload["config_hash"]["recorded"] != payload["config_hash"]["now"] == changed.hash
    assert payload["snapshot_sha256"]["recorded"] == payload["snapshot_sha256"]["now"]
    (incident,) = events(changed, EventKind.INCIDENT_OPENED)
    assert incident.payload["category"] == "strategy"
    assert "likely cause: config changed" in incident.payload["evidence"]
    # `ops-runner replay` still replays from the record's own snapshot and settings: identical
    assert main(["--workbook", str(changed.workbook), "replay", "--all"]) == 0


def test_replay_job_when_run_by_hand_obeys_the_tick_s_gates(cfg, capsys):
    executed(cfg)
    slot = replay_slot(cfg)
    assert (slot.key, slot.opens, slot.after) == ("replay:2025-11", OPENS,
                                                  ("reconciliation:2025-11",))  # fmt: skip
    with pytest.raises(RunRefused, match="replay:2025-11 opens at 2025-12-01T15:00:00Z"):
        run_by_hand(cfg, slot, WINDOW, simulated=True)
    with pytest.raises(RunRefused, match="reconciliation:2025-11 not done yet"):
        run_by_hand(cfg, slot, RECONCILED, simulated=True)
    assert events(cfg, EventKind.REPLAY_RECORDED) == []
    reconciliation = next(
        s for s in compute_session_slots(open_calendar(cfg), ScheduleSettings.from_config(
            cfg.values), date(2025, 11, 28)) if s.job is Job.RECONCILIATION
    )  # fmt: skip
    assert run_by_hand(cfg, reconciliation, RECONCILED, simulated=True) == (
        True,
        "reconciliation:2025-11 CLEAN",
    )
    # through the command line, as an operator types it: --cycle names the slot
    wb = ["--workbook", str(cfg.workbook)]
    now = ["--now", "2025-12-01T15:15:00Z"]
    capsys.readouterr()
    assert main([*wb, "run", "replay", "--cycle", "2025-11", *now]) == 0
    assert capsys.readouterr().out.strip() == "replay:2025-11 MATCH"
    # again by hand: the same finding is not recorded twice
    assert main([*wb, "run", "replay", "--cycle", "2025-11", *now]) == 0
    assert len(events(cfg, EventKind.REPLAY_RECORDED)) == 1
    # and the tick, which sees it done, does not run it
    later = tick(cfg, now=datetime(2025, 12, 1, 15, 20, tzinfo=UTC))
    assert later.ran == ("slippage_report:2025-11 WITHIN_BANDS",), later.message
    write_kill_switch(cfg, "an operator stops everything")
    with pytest.raises(RunRefused, match="the kill switch is present"):
        run_by_hand(cfg, slot, datetime(2025, 12, 1, 15, 25, tzinfo=UTC), simulated=True)
    with open_ledger(cfg) as ledger:
        assert read_state(ledger).state is State.HALT
    assert len(events(cfg, EventKind.REPLAY_RECORDED)) == 1
