"""Incidents: the classification rule table against known cases, close rules, masking."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ops_runner.brokers.base import AccountValues, BrokerUnavailable, Health
from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.ledger import open_ledger
from ops_runner.ledger.approvals import require_postmortem
from ops_runner.ledger.init import init_workbook
from ops_runner.ledger.states import apply_trigger, read_state
from ops_runner.ops.incident_evidence import Cause, compute_classification
from ops_runner.ops.incidents import (
    IncidentError,
    close_incident,
    compute_masked,
    list_incidents,
    open_incident,
    snapshot,
)
from ops_runner.workbook.config import load_config

NOW = datetime(2025, 12, 1, 15, 30, tzinfo=UTC)
RAW = "DU7654321"


@dataclass(frozen=True)
class Ev:
    seq: int
    recorded_at: str
    kind: str
    payload: dict
    run_id: str | None = None
    key: str = field(default="")


def world(*steps):
    """Events from (tx, kind, payload): the same tx number is one transaction (one instant)."""
    return [
        Ev(seq, f"2025-11-26T21:{tx:02d}:00.000000Z", str(kind), payload)
        for seq, (tx, kind, payload) in enumerate(steps, start=1)
    ]


K = EventKind


def opened(incident_id, category, summary="what happened", evidence=()):
    return (K.INCIDENT_OPENED, {"incident_id": incident_id, "category": category,
                                "summary": summary, "evidence": list(evidence)})  # fmt: skip


def changed(frm, to, trigger, reason="why"):
    return (K.STATE_CHANGED, {"from": frm, "to": to, "trigger": trigger, "reason": reason,
                              "evidence": []})  # fmt: skip


def check(name, passed=False):
    return (K.CHECK_RECORDED, {"check": name, "slot": "s", "passed": passed, "detail": "d",
                               "evidence": []})  # fmt: skip


def failed(job, run_id="r1"):
    return (K.JOB_FAILED, {"job": job, "slot": f"{job}:2025-11-26", "run_id": run_id,
                           "error": "cell 3 raised"})  # fmt: skip


def missed(job):
    return (K.JOB_MISSED, {"job": job, "slot": f"{job}:2025-11-26", "deadline": "x"})


def rejected(ref):
    return (K.ORDER_STATUS_CHANGED, {"client_ref": ref, "status": "rejected", "detail": "201"})


def qa_blocking():
    return (K.JOB_COMPLETED, {"job": "data_qa", "outcome": "blocking", "session": "2025-11-26",
                              "outputs": {"as_of": "2025-11-26", "findings": 3}})  # fmt: skip


def tx(n, item):
    return (n, *item)


# (case, events, incident id, expected cause): answers written by hand from the runbook.
CASES = [
    ("drawdown breach opened with the HALT",
     world(tx(1, (K.EQUITY_MARKED, {"session": "2025-11-26"})), tx(1, opened("dd", "risk")),
           tx(1, changed("RUN", "HALT", "drawdown_breach"))),
     "dd", Cause.MARKET),
    ("data QA notebook failed",
     world(tx(1, failed("data_qa")), tx(1, opened("job-qa", "data")),
           tx(1, changed("RUN", "SAFE_MODE", "incident"))),
     "job-qa", Cause.DATA),
    ("decision notebook failed",
     world(tx(1, failed("decision")), tx(1, opened("job-dec", "strategy")),
           tx(1, changed("RUN", "SAFE_MODE", "incident"))),
     "job-dec", Cause.STRATEGY),
    ("execution notebook failed after rejections",
     world(tx(1, rejected("a")), tx(2, rejected("b")), tx(3, failed("execution")),
           tx(3, opened("job-ex", "broker")), tx(3, changed("RUN", "SAFE_MODE", "incident"))),
     "job-ex", Cause.BROKER),
    ("job missed its deadline",
     world(tx(1, missed("decision")), tx(1, opened("missed", "scheduler")),
           tx(1, changed("RUN", "SAFE_MODE", "incident"))),
     "missed", Cause.SCHEDULER),
    ("clock skew check failed",
     world(tx(1, check("clock")), tx(1, opened("check-clock", "scheduler")),
           tx(1, changed("RUN", "SAFE_MODE", "incident"))),
     "check-clock", Cause.SCHEDULER),
    ("baseline failed while the broker was also down: the baseline opened it",
     world(tx(1, check("broker")), tx(1, changed("RUN", "BROKER_DOWN", "broker_fault")),
           tx(2, check("broker")), tx(2, check("clock")), tx(3, check("baseline")),
           tx(3, opened("check-baseline", "scheduler")),
           tx(3, changed("BROKER_DOWN", "SAFE_MODE", "incident"))),
     "check-baseline", Cause.STRATEGY),
    ("opened by hand after the broker went down and orders were rejected",
     world(tx(1, rejected("a")), tx(1, rejected("b")),
           tx(1, changed("RUN", "BROKER_DOWN", "broker_fault")),
           tx(2, opened("manual-1", "manual")),
           tx(2, changed("BROKER_DOWN", "SAFE_MODE", "incident"))),
     "manual-1", Cause.BROKER),
    ("opened by hand after a blocking data QA",
     world(tx(1, qa_blocking()), tx(1, changed("RUN", "DEGRADED_DATA", "data_fault")),
           tx(2, opened("manual-2", "manual"))),
     "manual-2", Cause.DATA),
    ("reconciliation break",
     world(tx(1, check("reconciliation")), tx(1, opened("recon-2025-11", "reconciliation")),
           tx(1, changed("RUN", "SAFE_MODE", "incident"))),
     "recon-2025-11", Cause.BROKER),
    ("slippage outside its bands, opened by hand as market",
     world(tx(1, check("slippage_bands")), tx(2, opened("manual-3", "market"))),
     "manual-3", Cause.MARKET),
    ("opened by hand with nothing observed",
     world(tx(1, opened("manual-4", "manual"))), "manual-4", None),
    ("trouble before the last return to RUN does not count",
     world(tx(1, check("broker")), tx(1, changed("RUN", "BROKER_DOWN", "broker_fault")),
           tx(2, changed("BROKER_DOWN", "RUN", "broker_restored")), tx(3, opened("m5", "manual"))),
     "m5", None),
    ("trouble after the incident was closed does not count",
     world(tx(1, opened("m6", "data")),
           tx(2, (K.INCIDENT_CLOSED, {"incident_id": "m6", "resolution": "ok"})),
           tx(3, check("broker")), tx(3, check("clock"))),
     "m6", Cause.DATA),
]  # fmt: skip


@pytest.mark.parametrize(("case", "events", "incident_id", "cause"), CASES,
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_classify_when_known_case_points_at_the_runbook_cause(case, events, incident_id, cause):
    result = compute_classification(events, incident_id)
    assert result.cause == cause, (result.scores, result.evidence)
    if cause is not None:
        assert result.lines(), "a classification names the evidence that points there"


def test_classify_when_same_check_fails_again_counts_it_once():
    events = world(tx(1, check("clock")), tx(2, check("clock")), tx(3, check("clock")),
                   tx(4, check("broker")), tx(5, opened("m", "manual")))  # fmt: skip
    result = compute_classification(events, "m")
    assert result.scores["Scheduler"] == result.scores["Broker/API"] == 2
    assert result.cause is Cause.BROKER  # a tie goes to the cause listed first


def test_classify_when_id_unknown_raises():
    with pytest.raises(IncidentError, match="no incident"):
        compute_classification(world(tx(1, check("clock"))), "nope")


# --- open and close on a real ledger ------------------------------------------------------------


@pytest.fixture
def cfg(tmp_path):
    init_workbook(tmp_path, template="demo")
    return load_config(tmp_path)


def test_open_incident_when_run_moves_to_safe_mode_once_and_is_idempotent(cfg):
    with open_ledger(cfg) as ledger:
        first = open_incident(cfg, ledger, "odd fills", "broker", ["seen at the open"], now=NOW)
        head = ledger.head()
        again = open_incident(cfg, ledger, "odd fills", "broker", ["seen at the open"], now=NOW)
        assert first == again and ledger.head() == head
        assert read_state(ledger).state is State.SAFE_MODE
        assert [i["incident_id"] for i in list_incidents(ledger)] == [first]
        with pytest.raises(IncidentError, match="another summary"):
            open_incident(cfg, ledger, "something else", now=NOW, incident_id=first)


def test_open_incident_when_halted_stays_in_halt(cfg):
    with open_ledger(cfg) as ledger:
        apply_trigger(ledger, Trigger.KILL_SWITCH, "stop")
        open_incident(cfg, ledger, "why we stopped", now=NOW)
        assert read_state(ledger).state is State.HALT


@pytest.mark.parametrize(("summary", "category"), [("  ", None), ("ok", "weather")])
def test_open_incident_when_summary_empty_or_category_unknown_refuses(cfg, summary, category):
    with open_ledger(cfg) as ledger, pytest.raises(IncidentError):
        open_incident(cfg, ledger, summary, category, now=NOW)


def test_close_incident_when_safe_mode_records_resolution_and_refuses_a_second_close(cfg):
    with open_ledger(cfg) as ledger:
        incident_id = open_incident(cfg, ledger, "odd fills", now=NOW)
        with pytest.raises(IncidentError, match="resolved"):
            close_incident(cfg, ledger, incident_id, "   ")
        payload = close_incident(cfg, ledger, incident_id, "fills matched after restart", now=NOW)
        assert payload["postmortem"] is None and payload["state"] == "SAFE_MODE"
        assert list_incidents(ledger) == []
        assert list_incidents(ledger, open_only=False)[0]["resolution"] == payload["resolution"]
        with pytest.raises(IncidentError, match="already closed"):
            close_incident(cfg, ledger, incident_id, "again")
        with pytest.raises(IncidentError, match="no incident"):
            close_incident(cfg, ledger, "unknown-id", "resolved")
        assert "\n" not in str(IncidentError("x"))


def test_close_incident_when_halt_needs_postmortem_that_the_exit_must_name(cfg):
    with open_ledger(cfg) as ledger:
        incident_id = open_incident(cfg, ledger, "drawdown", "market", now=NOW)
        apply_trigger(ledger, Trigger.DRAWDOWN_BREACH, "breach")
        with pytest.raises(IncidentError, match="post-mortem"):
            close_incident(cfg, ledger, incident_id, "risk-off done")
        with pytest.raises(IncidentError, match="not the post-mortem"):
            require_postmortem(ledger, "PM-2025-12")
        close_incident(cfg, ledger, incident_id, "risk-off done", postmortem="PM-2025-12")
        require_postmortem(ledger, "PM-2025-12")
        with pytest.raises(IncidentError, match="not the post-mortem"):
            require_postmortem(ledger, "PM-other")


def test_require_postmortem_when_closed_before_this_halt_refuses(cfg):
    with open_ledger(cfg) as ledger:
        apply_trigger(ledger, Trigger.KILL_SWITCH, "first halt")
        incident_id = open_incident(cfg, ledger, "first", now=NOW)
        close_incident(cfg, ledger, incident_id, "done", postmortem="PM-1")
        apply_trigger(ledger, Trigger.APPROVED_EXIT_HALT, "reviewed")
        apply_trigger(ledger, Trigger.KILL_SWITCH, "second halt")
        with pytest.raises(IncidentError, match="since HALT began"):
            require_postmortem(ledger, "PM-1")


# --- masking ------------------------------------------------------------------------------------


class FakeBroker:
    """Answers like a broker whose every answer carries the raw account id."""

    def __init__(self, down: bool = False) -> None:
        self.down = down

    def connect(self):
        if self.down:
            raise BrokerUnavailable(f"login refused for {RAW}")
        return Health(True, NOW, RAW, True, detail=f"session for {RAW}")

    def health(self):
        return Health(False, None, RAW, True, detail=f"no session for {RAW}")

    def account_values(self):
        return AccountValues(RAW, Decimal("1000.00"), Decimal("10.00"), Decimal("10.00"))

    def positions(self):
        return {"SPY": 2}

    def open_orders(self):
        return []

    def completed_orders(self):
        return []

    def close(self):
        pass


def test_compute_masked_when_account_in_text_keeps_first_and_last_two():
    assert compute_masked(f"account {RAW} ok", [RAW, None]) == "account DU*****21 ok"


@pytest.mark.parametrize("down", [False, True])
def test_snapshot_when_broker_names_raw_account_masks_it_everywhere(cfg, down):
    with open_ledger(cfg) as ledger:
        incident_id = open_incident(cfg, ledger, f"odd answer from {RAW}", evidence=[RAW], now=NOW)
        shot = snapshot(cfg, ledger, incident_id, broker=FakeBroker(down), now=NOW)
    text = " ".join(
        frame.to_string()
        for frame in (shot.facts_frame(), shot.positions_frame(), shot.cash_frame(),
                      shot.orders_frame(), shot.entries_frame())
    ) + str(shot.to_payload()) + str(shot.incident)  # fmt: skip
    assert RAW not in text and "DU*****21" in text
    assert (shot.broker.unavailable is not None) is down
    if down:
        assert shot.broker.unavailable.startswith("unavailable: login refused")
    else:
        assert shot.broker.positions == {"SPY": 2} and shot.broker.cash == "10.00"
