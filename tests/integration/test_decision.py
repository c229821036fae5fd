"""The decision job on a real sample workbook: one record per session, snapshots, replay."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from conftest import (
    NOVEMBER_DECIDED_AT,
    make_decided_november,
    make_sample_workbook,
    ready_to_decide,
)

from ops_runner.core.canonical import canonical_json
from ops_runner.core.events import EventKind, State
from ops_runner.ledger import open_ledger
from ops_runner.ledger.states import read_state
from ops_runner.market.prices import open_store
from ops_runner.ops.decision import (
    DecisionConflict,
    DecisionRefused,
    decide,
    replay,
    replay_all,
)
from ops_runner.workbook.config import load_config

EXE = Path(sys.executable).with_name("ops-runner")
SESSION = "2025-12-31"


@pytest.fixture
def cfg(tmp_path):
    return load_config(make_sample_workbook(tmp_path))


def decisions(cfg) -> list:
    with open_ledger(cfg) as ledger:
        return list(ledger.events(kind=str(EventKind.DECISION_RECORDED)))


def rewrite(cfg, symbol: str, day: str, factor: float) -> None:
    """Change one stored close (and high) as a vendor's corrected file would."""
    store = open_store(cfg)
    bars = store.load_bars("sample", symbol)
    stamp = pd.Timestamp(day)
    bars.loc[stamp, "close"] *= factor
    bars.loc[stamp, "high"] = max(bars.loc[stamp, "high"], bars.loc[stamp, "close"])
    store.write_bars("sample", symbol, bars, {
        "layout": "sample", "source_file": f"test: {symbol} {day} x{factor}",
        "source_sha256": f"{factor}".encode().hex().ljust(64, "0")[:64], "notes": "changed",
    })  # fmt: skip


def test_decide_when_run_records_provenance_snapshot_and_versions(cfg):
    ready_to_decide(cfg, SESSION)
    outcome = decide(cfg, SESSION)
    assert outcome.created
    record = outcome.record
    assert record["cycle_id"] == "2025-12" and record["session"] == SESSION
    assert record["config_hash"] == cfg.hash
    assert record["code_version"]["package"]
    weights = [Decimal(w) for w in record["decision"]["targets"].values()]
    assert sum(weights) == Decimal(1)
    snapshot = cfg.path("ledger") / record["snapshot"]["path"]
    import hashlib

    assert hashlib.sha256(snapshot.read_bytes()).hexdigest() == record["snapshot"]["sha256"]
    manifest = open_store(cfg).read_manifest("sample", "SPY")
    assert record["provenance"]["SPY"]["stored_sha256"] == manifest["stored_sha256"]
    assert record["provenance"]["SPY"]["synthetic"] is True
    # no bar after the session is in the snapshot
    table = pd.read_parquet(snapshot)
    assert table["date"].max() <= pd.Timestamp(SESSION)


def test_decide_when_run_twice_with_same_inputs_returns_the_first_record(cfg):
    ready_to_decide(cfg, SESSION)
    first = decide(cfg, SESSION)
    with open_ledger(cfg) as ledger:
        head = ledger.head()
    ready_to_decide(cfg, SESSION)
    second = decide(cfg, SESSION)
    assert not second.created and second.seq == first.seq
    assert canonical_json(second.record) == canonical_json(first.record)
    with open_ledger(cfg) as ledger:
        assert ledger.head() == head


def test_decide_when_only_future_bars_change_is_still_the_same_decision(cfg):
    ready_to_decide(cfg, "2025-11-28")
    first = decide(cfg, "2025-11-28")
    rewrite(cfg, "SPY", "2025-12-15", 1.3)  # after the session: invisible to it
    ready_to_decide(cfg, "2025-11-28")
    again = decide(cfg, "2025-11-28")
    assert not again.created and again.seq == first.seq


def test_decide_when_inputs_changed_for_decided_session_opens_incident_safe_mode(cfg):
    ready_to_decide(cfg, SESSION)
    decide(cfg, SESSION)
    rewrite(cfg, "SPY", "2025-12-15", 1.05)
    ready_to_decide(cfg, SESSION)  # the new data passes QA: the conflict is the decision's
    with pytest.raises(DecisionConflict, match="SAFE_MODE"):
        decide(cfg, SESSION)
    assert len(decisions(cfg)) == 1  # never a second decision
    with open_ledger(cfg) as ledger:
        assert read_state(ledger).state is State.SAFE_MODE
        incidents = list(ledger.events(kind=str(EventKind.INCIDENT_OPENED)))
    assert incidents and incidents[0].payload["category"] == "strategy"
    assert any(
        "snapshot" in line or "provenance" in line for line in incidents[0].payload["evidence"]
    )


def test_replay_when_nothing_changed_is_identical_byte_for_byte(cfg):
    ready_to_decide(cfg, "2025-10-31")
    decide(cfg, "2025-10-31")
    ready_to_decide(cfg, "2025-11-28")
    decide(cfg, "2025-11-28")
    ready_to_decide(cfg, SESSION)
    decide(cfg, SESSION)
    results = replay_all(cfg)
    assert [r.cycle_id for r in results] == ["2025-10", "2025-11", "2025-12"]
    assert all(r.identical and not r.differences for r in results)


def test_replay_when_config_changed_since_still_uses_recorded_settings(cfg):
    ready_to_decide(cfg, SESSION)
    decide(cfg, SESSION)
    config = cfg.workbook / "config.yaml"
    config.write_text(config.read_text().replace("  lookback_months: 12", "  lookback_months: 3"))
    result = replay(load_config(cfg.workbook), "2025-12")
    assert result.identical


def test_replay_when_snapshot_altered_reports_data_cause(cfg):
    ready_to_decide(cfg, SESSION)
    outcome = decide(cfg, SESSION)
    snapshot = cfg.path("ledger") / outcome.record["snapshot"]["path"]
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    result = replay(cfg, "2025-12")
    assert not result.identical
    assert any("data" in cause for cause in result.causes)


@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_replay_when_identical_exits_0_and_json_lists_cycles(cfg):
    ready_to_decide(cfg, SESSION)
    decide(cfg, SESSION)
    wb = ["--workbook", str(cfg.workbook)]
    done = subprocess.run([str(EXE), *wb, "replay", "--all", "--json"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["identical"] is True
    missing = subprocess.run([str(EXE), *wb, "replay", "1999-01"], capture_output=True, text=True)
    assert missing.returncode == 1 and "no Decision Record" in missing.stderr


@pytest.mark.subprocess
@pytest.mark.slow
def test_decide_when_session_not_month_end_refuses_with_one_line(cfg):
    done = subprocess.run(
        [str(EXE), "--workbook", str(cfg.workbook), "decide", "--session", "2025-12-15"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "2025-12-15" in done.stderr
    assert decisions(cfg) == []
    assert date.fromisoformat(SESSION)


def test_decision_when_the_tick_runs_on_a_simulated_clock_is_stamped_with_its_instant(tmp_path):
    """One clock in a simulated walk (the demo): the record says when the tick decided, not when
    the machine ran it."""
    cfg = load_config(make_decided_november(tmp_path / "wb"))
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        (record,) = [e.payload for e in ledger.events(kind=str(EventKind.DECISION_RECORDED))
                     if e.payload["cycle_id"] == "2025-11"]  # fmt: skip
    assert record["decided_at"] == NOVEMBER_DECIDED_AT.replace("Z", ".000000Z")


@pytest.mark.parametrize("day", ["2025-12-30", "2025-12-24", "2025-12-25"])
def test_decide_when_session_is_not_the_month_end_refuses_before_the_gates(cfg, day):
    # 2025-12-31 is the month's last session (the 30th and the Christmas Eve half day are not;
    # the 25th is a holiday): the refusal names it, not the data QA the gates would ask for
    with pytest.raises(DecisionRefused) as refused:
        decide(cfg, day)
    assert f"{day} is not a decision session" in str(refused.value)
    assert "taken on 2025-12-31, its month-end" in str(refused.value)
    assert "data QA" not in str(refused.value)
    assert decisions(cfg) == []
