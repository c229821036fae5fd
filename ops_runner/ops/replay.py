"""The monthly rebalance replay (runbook 6): a cycle's decision again, compared with its record.

After each cycle's reconciliation the tick decides the cycle's rebalance session again from the
ledger's Decision Record, the config and the code as they are now and the prices stored now (no
gate, nothing written but the verdict), and records ``ReplayRecorded``: MATCH when the decision
(scores, selection, targets, explanation) is the recorded one, DIFFERS otherwise, with the
differing fields and the record's config hash, code version and snapshot SHA-256 beside
today's. An input that changed without changing the decision (a bar no lookback reads) is a
MATCH that says what changed. A difference is an incident whose evidence names the fields
and the likely cause, in the same transaction as SAFE_MODE (no next decision until an
operator resumes); the tick's pending alerts send it.

``decision.replay`` (``ops-runner replay``) is the other replay: from the recorded snapshot and
settings, it proves the code still computes the record from the record's own inputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ops_runner.core.canonical import canonical_json
from ops_runner.core.errors import OpsError
from ops_runner.core.events import EventKind, Trigger
from ops_runner.core.hashing import compute_sha256
from ops_runner.core.version import compute_code_version
from ops_runner.ledger import Ledger
from ops_runner.ledger.states import apply_trigger, incident_event
from ops_runner.ops.decision import compute_code_change, compute_differences, recompute_decision
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)

EVIDENCE_LIMIT = 20  # differing fields named in an incident; the count says how many in all


class ReplayVerdict(StrEnum):
    """What a replay found."""

    MATCH = "MATCH"
    DIFFERS = "DIFFERS"


class Cause(StrEnum):
    """The likely cause of a difference, from what changed since the decision."""

    CONFIG = "config changed"
    CODE = "code changed"
    PRICES = "prices changed since the decision"
    BUG = "same inputs, different result (a bug)"


class ReplayError(OpsError):
    """A cycle that cannot be replayed: it has no Decision Record."""


@dataclass(frozen=True)
class ReplayOutcome:
    """The ReplayRecorded payload, its event's sequence number, the incident it opened (None:
    a MATCH, or a difference recorded before) and whether this call recorded it."""

    payload: dict[str, Any]
    seq: int
    incident_id: str | None
    created: bool

    @property
    def line(self) -> str:
        """The job's outcome line."""
        payload = self.payload
        if payload["result"] == ReplayVerdict.MATCH:
            changed = "; ".join(payload["changed"])
            return f"MATCH ({changed}; the same decision)" if changed else "MATCH"
        causes = "; ".join(payload["causes"])
        if self.incident_id is None:
            return f"DIFFERS ({causes}); recorded before at event {self.seq}"
        return f"DIFFERS ({causes}): incident {self.incident_id}, SAFE_MODE"


def read_decision_event(ledger: Ledger, cycle: str) -> Any:
    """Return the cycle's last DecisionRecorded event. Raises ReplayError when there is none."""
    recorded = list(ledger.events(kind=str(EventKind.DECISION_RECORDED), cycle_id=cycle))
    if not recorded:
        raise ReplayError(
            f"replay {cycle}: the ledger holds no Decision Record for the cycle although its "
            "reconciliation is done; open `ops-runner ledger show --kind DecisionRecorded`"
        )
    return recorded[-1]


def compute_replay(cfg: Config, record: dict[str, Any], seq: int) -> dict[str, Any]:
    """Return the ReplayRecorded payload of the Decision Record ``record`` (event ``seq``),
    decided again now. A session that cannot be decided now DIFFERS, the reason its one
    difference. Reads the price store and the snapshot; writes nothing."""
    code_now = compute_code_version()
    recorded_sha = (record.get("snapshot") or {}).get("sha256")
    try:
        decision, sha_now = recompute_decision(cfg, record)
        differences = compute_differences(record["decision"], decision, "decision")
    except OpsError as exc:
        sha_now = None
        differences = [f"decision: cannot be decided now: {' '.join(str(exc).split())}"]
    changed = []
    if cfg.hash != record["config_hash"]:
        changed.append(Cause.CONFIG)
    if compute_code_change(record["code_version"], code_now):
        changed.append(Cause.CODE)
    if sha_now != recorded_sha:
        changed.append(Cause.PRICES)
    causes = (changed or [Cause.BUG]) if differences else []  # an unchanged decision is a MATCH
    return {
        "cycle": record["cycle_id"],
        "session": record["session"],
        "strategy": record["strategy"],
        "decision_seq": seq,
        "result": str(ReplayVerdict.DIFFERS if differences else ReplayVerdict.MATCH),
        "differences": differences,
        "causes": [str(c) for c in causes],
        "changed": [str(c) for c in changed],  # what changed since, whatever the result
        "config_hash": {"recorded": record["config_hash"], "now": cfg.hash},
        "code_version": {"recorded": record["code_version"], "now": code_now},
        "snapshot_sha256": {"recorded": recorded_sha, "now": sha_now},
    }


def _evidence(payload: dict[str, Any]) -> list[str]:
    """The differing fields, then each input then and now."""
    differences = payload["differences"]
    lines = list(differences[:EVIDENCE_LIMIT])
    if len(differences) > EVIDENCE_LIMIT:
        lines.append(f"(+{len(differences) - EVIDENCE_LIMIT} more differing fields)")
    config, code, snap = payload["config_hash"], payload["code_version"], payload["snapshot_sha256"]
    short = lambda text: str(text or "none")[:12]  # noqa: E731 - a local formatter
    lines += [
        f"likely cause: {'; '.join(payload['causes'])}",
        f"config hash: recorded {short(config['recorded'])}, now {short(config['now'])}",
        "code version: "
        + (compute_code_change(code["recorded"], code["now"]) or "unchanged since the decision"),
        f"price snapshot SHA-256: recorded {short(snap['recorded'])}, now {short(snap['now'])}",
    ]
    return lines


def record_replay(
    cfg: Config, ledger: Ledger, cycle: str, run_id: str | None = None
) -> ReplayOutcome:
    """Replay ``cycle`` and record its ReplayRecorded once; return the outcome.

    The same finding again (a run by hand) records nothing. A new DIFFERS opens an incident
    ("replay-<cycle>-<digest>") and moves to SAFE_MODE, all in one transaction.
    Raises ReplayError when the cycle has no Decision Record.
    """
    event = read_decision_event(ledger, cycle)
    payload = compute_replay(cfg, event.payload, event.seq)
    digest = compute_sha256(canonical_json(payload))[:12]
    key = f"{EventKind.REPLAY_RECORDED}:{cycle}:{digest}"
    if (existing := ledger.get(key)) is not None:
        return ReplayOutcome(existing.payload, existing.seq, None, created=False)
    recorded = (str(EventKind.REPLAY_RECORDED), key, payload)
    if payload["result"] == ReplayVerdict.MATCH:
        appended = ledger.append(*recorded, run_id=run_id, cycle_id=cycle)
        return ReplayOutcome(appended.payload, appended.seq, None, created=True)
    incident_id = f"replay-{cycle}-{digest}"
    summary = (
        f"the replay of {cycle} ({payload['session']}) differs from its Decision Record (event "
        f"{event.seq}) in {len(payload['differences'])} field(s): {'; '.join(payload['causes'])}"
    )
    category = "data" if payload["causes"] == [str(Cause.PRICES)] else "strategy"
    opened = incident_event(incident_id, category, summary, _evidence(payload))
    why = [f"incident {incident_id}", f"likely cause: {'; '.join(payload['causes'])}"]
    apply_trigger(ledger, Trigger.INCIDENT, summary, why, run_id=run_id,
                  extra_events=[recorded, opened], cycle_id=cycle)  # fmt: skip
    log.warning("%s", summary)
    written = ledger.get(key)
    if written is None:  # apply_trigger writes the extras or raises: never reached
        raise ReplayError(f"replay {cycle}: {key} was not recorded; run the replay again")
    return ReplayOutcome(written.payload, written.seq, incident_id, created=True)
