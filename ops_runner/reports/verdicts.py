"""The result of a run in its job's own words (PASS/FAIL, CLEAN/BLOCKED, ...), and its colour.

The runs index and each rendered page say the same verdict, read from the same place: the
completion record the notebook's last cell glued (also kept in the ledger's ``JobCompleted``)
and the job's other scraps for the why. A run the runner recorded as failed is FAILED whatever
its notebook holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ops_runner.reports.formats import format_percent


class Tone(StrEnum):
    """A verdict's colour: GOOD green, BAD red (never to be missed), WARN amber, INFO grey."""

    GOOD = "good"
    BAD = "bad"
    WARN = "warn"
    INFO = "info"


@dataclass(frozen=True)
class Verdict:
    """A run's result: the word (PASS, BLOCKED, ...), its tone and one line saying why."""

    word: str
    tone: Tone
    why: str = ""

    @property
    def line(self) -> str:
        return f"{self.word}: {self.why}" if self.why else self.word


# Each job's status words and their tone; a word not listed is WARN (unknown is never green).
STATUS_TONES: dict[str, dict[str, Tone]] = {
    "audit": {"CLEAN": Tone.GOOD, "BREAK": Tone.BAD},
    "reconciliation": {
        "CLEAN": Tone.GOOD,
        "BREAKS": Tone.BAD,
        "UNRESOLVED": Tone.BAD,
        "WAIT": Tone.INFO,
    },  # fmt: skip
    "execution": {
        "SUBMITTED": Tone.GOOD,
        "PARTIAL": Tone.BAD,
        "STOPPED": Tone.BAD,
        "WAIT": Tone.INFO,
        "PREVIEW": Tone.INFO,
    },  # fmt: skip
    "slippage_report": {
        "WITHIN_BANDS": Tone.GOOD,
        "OUT_OF_BAND": Tone.BAD,
        "NO_FILLS": Tone.INFO,
        "INCOMPLETE": Tone.WARN,
    },  # fmt: skip
    "dr_drill": {"PASS": Tone.GOOD, "FAIL": Tone.BAD, "NO_BACKUP": Tone.BAD},
    "performance": {
        "TRACKING": Tone.GOOD,
        "DIVERGING": Tone.BAD,
        "NO_HISTORY": Tone.INFO,
        "NO_DATA": Tone.INFO,
        "NO_OPENING_BALANCE": Tone.WARN,
    },  # fmt: skip
}


def _summary(scraps: Mapping[str, Any]) -> str:
    """The first scrap's own summary line (reconciliation, audit, slippage, drill, ...)."""
    for name, data in scraps.items():
        if name != "completion" and isinstance(data, Mapping) and data.get("summary"):
            return str(data["summary"])
    return ""


def _targets(targets: Any) -> str:
    if not isinstance(targets, Mapping) or not targets:
        return "hold nothing"
    return "hold " + ", ".join(f"{s} {format_percent(w, 0)}" for s, w in targets.items())


def _data_qa(completion: Mapping[str, Any], scraps: Mapping[str, Any]) -> Verdict:
    count = completion.get("findings", 0)
    listed = scraps.get("findings")
    findings: list[Any] = listed if isinstance(listed, list) else []
    blocking = [f for f in findings if isinstance(f, Mapping) and f.get("severity") == "blocking"]
    said = "; ".join(f"{f.get('symbol')} {f.get('check')}: {f.get('detail')}" for f in blocking)
    if completion.get("blocking"):
        why = f"{count} finding(s), blocking: no decision" + (f" ({said})" if said else "")
        return Verdict("BLOCKED", Tone.BAD, why)
    return Verdict("CLEAN", Tone.GOOD, f"{count} finding(s), none blocking")


def compute_verdict(
    job: str,
    completion: Mapping[str, Any] | None,
    scraps: Mapping[str, Any] | None = None,
    *,
    failed: str | None = None,
) -> Verdict:
    """Return the verdict of one run of ``job``.

    ``completion`` is its completion record (None: the notebook never wrote one), ``scraps``
    the notebook's other scraps (for the why), ``failed`` the runner's reason when it recorded
    the run as failed. Pure: the same inputs always say the same.
    """
    scraps = scraps or {}
    if failed is not None:
        return Verdict("FAILED", Tone.BAD, failed or "the run failed")
    if not isinstance(completion, Mapping):
        return Verdict("INCOMPLETE", Tone.BAD, "no completion record: the run stopped early")
    if job == "data_qa":
        return _data_qa(completion, scraps)
    if job == "decision":
        again = "" if completion.get("created", True) else " (already decided)"
        return Verdict("DECIDED", Tone.GOOD, _targets(completion.get("targets")) + again)
    if job == "incident":
        label = completion.get("classification")
        if not label:
            return Verdict("NO_INCIDENT", Tone.INFO, "no incident open: nothing to investigate")
        why = f"{completion.get('incident')}: classified {label}, state {completion.get('state')}"
        return Verdict("INVESTIGATED", Tone.WARN, why)
    status = str(completion.get("status") or "")
    if not status:
        return Verdict("COMPLETED", Tone.INFO, _summary(scraps))
    tone = STATUS_TONES.get(job, {}).get(status, Tone.WARN)
    why = _summary(scraps)
    if job == "dr_drill":
        drill = scraps.get("drill") if isinstance(scraps.get("drill"), Mapping) else {}
        reasons = [str(r) for r in (drill or {}).get("reasons") or []]
        why = "; ".join(reasons) or why
    if job == "slippage_report" and status == "OUT_OF_BAND":
        return Verdict("FLAGGED", Tone.BAD, why or f"{completion.get('flagged')} order(s) flagged")
    return Verdict(status, tone, why)
