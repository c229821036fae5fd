"""The tick's rules as pure functions: when a slot may run (whoever asks) and when it is done."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from ops_runner.core.events import State
from ops_runner.ledger.projections import StateView
from ops_runner.ops.registry import judge_completion
from ops_runner.ops.schedule import Job, Slot
from ops_runner.ops.tick import compute_refusal


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# Cycle 2025-11: window 13:00Z..14:20Z on 2025-12-01 (08:00..09:20 New York).
EXECUTION = Slot(Job.EXECUTION, "execution:2025-11", date(2025, 12, 1), "2025-11",
                 utc("2025-12-01 13:00"), deadline=utc("2025-12-01 14:20"),
                 closes=utc("2025-12-01 14:20"), after=("decision:2025-11",))  # fmt: skip
RECONCILIATION = Slot(Job.RECONCILIATION, "reconciliation:2025-11", date(2025, 12, 1), "2025-11",
                      utc("2025-12-01 15:00"), deadline=utc("2025-12-01 16:00"),
                      after=("execution:2025-11",))  # fmt: skip
RUN = StateView(State.RUN)
SAFE = StateView(State.SAFE_MODE, reason="a check failed")


@pytest.mark.parametrize(
    ("slot", "view", "done", "now", "refusal"),
    [
        (EXECUTION, RUN, {"decision:2025-11"}, "2025-12-01 13:00", None),
        (EXECUTION, RUN, {"decision:2025-11", "execution:2025-11"}, "2025-12-01 13:30", None),
        (EXECUTION, SAFE, {"decision:2025-11"}, "2025-12-01 13:30",
         "execution runs only in RUN and the state is SAFE_MODE (a check failed)"),
        (EXECUTION, RUN, {"decision:2025-11"}, "2025-12-01 12:59",
         "execution:2025-11 opens at 2025-12-01T13:00:00Z"),
        (EXECUTION, RUN, {"decision:2025-11"}, "2025-12-01 14:20",
         "the submission window for 2025-12-01 closed at 2025-12-01T14:20:00Z"),
        (EXECUTION, RUN, set(), "2025-12-01 13:30", "decision:2025-11 not done yet"),
        # reconciliation runs in any state, and never closes
        (RECONCILIATION, SAFE, {"execution:2025-11"}, "2025-12-02 15:00", None),
        (RECONCILIATION, StateView(State.HALT), {"execution:2025-11"}, "2025-12-01 15:00", None),
    ],
    ids=["due", "done-may-repeat", "safe-mode", "before", "closed", "not-ready",
         "reconcile-safe", "reconcile-halt"],
)  # fmt: skip
def test_compute_refusal_when_asked_says_what_the_tick_would_say(slot, view, done, now, refusal):
    found = compute_refusal(slot, view, done, utc(now))
    if refusal is None:
        assert found is None
    else:
        assert found is not None and found.startswith(refusal), found


@pytest.mark.parametrize(
    ("job", "completion", "done"),
    [
        ("execution", {"status": "SUBMITTED", "unsettled": []}, True),
        ("execution", {"status": "SUBMITTED"}, True),  # a completion from before the field
        ("execution", {"status": "PARTIAL", "unsettled": []}, True),  # a rejection is an answer
        ("execution", {"status": "PARTIAL", "unsettled": ["mr:2025-11:AGG:BUY"]}, False),
        ("execution", {"status": "STOPPED", "unsettled": ["mr:2025-11:AGG:BUY"]}, False),
        ("execution", {"status": "WAIT", "unsettled": []}, False),
        ("reconciliation", {"status": "WAIT"}, False),
        ("reconciliation", {"status": "BREAKS"}, True),
        ("data_qa", {"blocking": True}, False),
        ("data_qa", {"blocking": False}, True),
    ],
)
def test_judge_completion_when_an_intent_is_unsent_keeps_the_slot_open(job, completion, done):
    assert judge_completion(job, completion)[0] is done
