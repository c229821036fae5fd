"""The decision job: decide a rebalance session once, snapshot its inputs, and replay it later."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ops_runner.core.canonical import canonical_json
from ops_runner.core.clock import format_instant, parse_instant
from ops_runner.core.cycle import Cycle
from ops_runner.core.errors import DataError, OpsError
from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.core.faults import inject
from ops_runner.core.files import write_bytes_atomic
from ops_runner.core.hashing import compute_sha256
from ops_runner.core.version import compute_code_version
from ops_runner.ledger import Ledger, open_ledger
from ops_runner.ledger.states import apply_trigger, read_state
from ops_runner.market.bars import BAR_COLUMNS
from ops_runner.market.calendar import open_calendar
from ops_runner.market.integrity import compute_data_fingerprint
from ops_runner.market.prices import open_store
from ops_runner.ops.checks import check_baseline
from ops_runner.strategy.momentum import StrategySettings, compute_decision
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)

SNAPSHOTS = "snapshots"
# Parts of a record that say what was decided from what. Provenance is left out: a vendor file
# re-imported with only later bars changed has a new checksum but gives the same inputs, and
# the snapshot's SHA-256 already pins the exact bars used.
COMPARED = ("strategy", "session", "settings", "decision", "snapshot")


class DecisionConflict(OpsError):
    """A session already decided with other inputs: an incident, never a second decision."""


@dataclass(frozen=True)
class DecisionOutcome:
    """The Decision Record of a session and whether this call created it."""

    record: dict[str, Any]
    seq: int
    created: bool

    @property
    def targets(self) -> dict[str, str]:
        return dict(self.record["decision"]["targets"])

    @property
    def explanation(self) -> str:
        return str(self.record["decision"]["explanation"])

    def scores_frame(self) -> pd.DataFrame:
        """Return the recorded scores as a table, one row per symbol."""
        frame = pd.DataFrame.from_dict(self.record["decision"]["scores"], orient="index")
        frame.index.name = "symbol"
        numeric = [c for c in frame.columns if c == "score" or c.startswith("ret_")]
        return frame.astype({c: float for c in numeric})

    def targets_frame(self) -> pd.DataFrame:
        """Return the target weights as a table."""
        rows = [{"symbol": s, "weight": w} for s, w in self.targets.items()]
        return pd.DataFrame(rows).set_index("symbol")


@dataclass(frozen=True)
class ReplayResult:
    """One cycle replayed: identical, or what differs and the likely causes."""

    cycle_id: str
    session: str
    identical: bool
    differences: list[str] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cycle_id": self.cycle_id,
            "session": self.session,
            "identical": self.identical,
            "differences": self.differences,
            "causes": self.causes,
        }

    def summary(self) -> str:
        if self.identical:
            return f"{self.cycle_id} ({self.session}): identical"
        why = "; ".join(self.causes) or "no recorded cause differs: the code's arithmetic did"
        return f"{self.cycle_id} ({self.session}): DIFFERS ({why})"


def _snapshot_bytes(bars: dict[str, pd.DataFrame]) -> bytes:
    frames = []
    for symbol in sorted(bars):
        frame = bars[symbol].reset_index()
        frame.insert(0, "symbol", symbol)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    return buffer.getvalue()


def write_snapshot(cfg: Config, strategy: str, session: date, bars: dict[str, pd.DataFrame]):
    """Write the exact input bars as one Parquet file; return (path relative to ledger/, sha256).

    Content-addressed: the same inputs give the same file, written once.
    """
    data = _snapshot_bytes(bars)
    digest = compute_sha256(data)
    relative = Path(SNAPSHOTS) / strategy / session.isoformat() / f"{digest[:16]}.parquet"
    target = cfg.path("ledger") / relative
    if not target.exists() and not cfg.preview:  # a preview names the file, writes nothing
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, data)
    return relative.as_posix(), digest


def read_snapshot(cfg: Config, relative: str, sha256: str) -> dict[str, pd.DataFrame]:
    """Return the snapshot's bars per symbol. Raises DataError if missing or altered."""

    path = cfg.path("ledger") / relative
    if not path.is_file():
        raise DataError(f"snapshot {path} is missing; restore ledger/ from a backup")
    data = path.read_bytes()
    if compute_sha256(data) != sha256:
        raise DataError(f"snapshot {path} no longer matches its recorded SHA-256")
    table = pd.read_parquet(io.BytesIO(data))
    bars = {}
    for symbol, rows in table.groupby("symbol", sort=True):
        frame = rows.drop(columns="symbol").set_index("date")[BAR_COLUMNS]
        bars[str(symbol)] = frame
    return bars


def _load_inputs(cfg: Config, settings: Any, session: date):
    """Return (bars <= session per symbol, provenance per symbol) from the primary source."""
    store = open_store(cfg)
    source = cfg.primary_source
    end = pd.Timestamp(session)
    bars, provenance = {}, {}
    for symbol in settings.symbols():
        bars[symbol] = store.load_bars(source, symbol).loc[:end]
        manifest = store.read_manifest(source, symbol)
        provenance[symbol] = {
            "source": source,
            "stored_sha256": manifest["stored_sha256"],
            "source_sha256": manifest["source_sha256"],
            "source_file": manifest["source_file"],
            "synthetic": bool(manifest.get("synthetic", False)),
        }
    return bars, provenance


def _comparable(record: dict[str, Any]) -> str:
    return canonical_json({name: record.get(name) for name in COMPARED})


def compute_differences(old: Any, new: Any, where: str = "") -> list[str]:
    """Return one line per leaf that differs between ``old`` and ``new`` ("path: old -> new")."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for name in sorted(set(old) | set(new)):
            found += compute_differences(
                old.get(name), new.get(name), f"{where}.{name}" if where else name
            )
        return found
    if canonical_json(old, where or "value") == canonical_json(new, where or "value"):
        return []
    show = lambda v: json.dumps(v, sort_keys=True)[:120]  # noqa: E731 - a local formatter
    return [f"{where}: {show(old)} -> {show(new)}"]


def decide(
    cfg: Config,
    session: date | str,
    now: datetime | str | None = None,
    run_id: str | None = None,
) -> DecisionOutcome:
    """Decide the rebalance session and record its Decision Record once. Returns the outcome.

    ``now`` stamps the record's ``decided_at``: the tick's instant on a simulated clock (as
    ISO text from a notebook's parameter), None or "" for the real clock. Deciding again with
    the same inputs returns the existing record. Different inputs for a decided session open
    an incident, move to SAFE_MODE and raise DecisionConflict.
    Raises StrategyError for an impossible decision (not a month-end, missing bars).
    """

    if isinstance(now, str):
        now = parse_instant(now) if now else None
    day = session if isinstance(session, date) else _parse_session(session)
    with open_ledger(cfg) as ledger:
        require_decision_gates(cfg, ledger, day)
    settings = StrategySettings.from_config(cfg)
    bars, provenance = _load_inputs(cfg, settings, day)
    decision = compute_decision(settings, day, bars, open_calendar(cfg))
    snapshot_path, snapshot_sha = write_snapshot(cfg, settings.name, day, bars)
    inject("decision:after_snapshot")
    record = _record(cfg, settings, day, decision, provenance,
                     {"path": snapshot_path, "sha256": snapshot_sha}, now)  # fmt: skip
    key = f"DecisionRecorded:{settings.name}:{day.isoformat()}"
    with open_ledger(cfg) as ledger:
        existing = ledger.get(key)
        if existing is not None:
            if _comparable(existing.payload) == _comparable(record):
                return DecisionOutcome(existing.payload, existing.seq, created=False)
            changed = compute_differences(
                {n: existing.payload.get(n) for n in COMPARED}, {n: record.get(n) for n in COMPARED}
            )
            summary = f"{settings.name} {day} was decided at event {existing.seq} from other inputs"
            incident = {
                "incident_id": f"decision-conflict-{settings.name}-{day}-{snapshot_sha[:12]}",
                "category": "strategy",
                "summary": summary,
                "evidence": changed[:20],
            }
            apply_trigger(
                ledger, Trigger.INCIDENT, summary, evidence=changed[:20], run_id=run_id,
                extra_events=[(str(EventKind.INCIDENT_OPENED),
                               f"IncidentOpened:{incident['incident_id']}", incident)],
            )  # fmt: skip
            raise DecisionConflict(
                f"{summary}; an incident is open and the system is in SAFE_MODE "
                f"(first difference: {changed[0] if changed else 'unknown'})"
            )
        event = ledger.append(
            str(EventKind.DECISION_RECORDED),
            key,
            record,
            run_id=run_id,
            cycle_id=record["cycle_id"],
        )
    inject("decision:after_record")
    log.info("decided %s %s: %s", settings.name, day, decision.explanation)
    return DecisionOutcome(event.payload, event.seq, created=True)


def _record(
    cfg: Config,
    settings: StrategySettings,
    day: date,
    decision: Any,
    provenance: dict[str, Any],
    snapshot: dict[str, Any] | None,
    now: datetime | None,
) -> dict[str, Any]:
    return {
        "cycle_id": str(Cycle.of(day)),
        "strategy": settings.name,
        "session": day.isoformat(),
        "settings": settings.to_dict(),
        "decision": decision.to_record(),
        "provenance": provenance,
        "snapshot": snapshot,
        "config_hash": cfg.hash,
        "code_version": compute_code_version(),
        "decided_at": format_instant(now or datetime.now(UTC)),
    }


@dataclass(frozen=True)
class DecisionPreview:
    """What ``decide --dry-run`` shows: the record a decision now would hold (no snapshot is
    written, so none is named), and the recorded decision of the session if there is one
    (``existing_seq``) with whether its inputs were the same."""

    record: dict[str, Any]
    existing_seq: int | None
    same_as_recorded: bool

    @property
    def explanation(self) -> str:
        return str(self.record["decision"]["explanation"])


def preview_decision(cfg: Config, session: date | str) -> DecisionPreview:
    """Return what ``decide`` would record for ``session`` now, after the same gates (raises
    DecisionRefused as ``decide`` does). Opens the ledger read-only and writes no snapshot:
    nothing is recorded or written."""

    day = session if isinstance(session, date) else _parse_session(session)
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        require_decision_gates(cfg, ledger, day)
        settings = StrategySettings.from_config(cfg)
        existing = ledger.get(f"DecisionRecorded:{settings.name}:{day.isoformat()}")
    bars, provenance = _load_inputs(cfg, settings, day)
    decision = compute_decision(settings, day, bars, open_calendar(cfg))
    record = _record(cfg, settings, day, decision, provenance, None, None)
    if existing is None:
        return DecisionPreview(record, None, False)
    names = [n for n in COMPARED if n != "snapshot"]  # no snapshot written: the inputs alone
    same = canonical_json({n: existing.payload.get(n) for n in names}) == canonical_json(
        {n: record.get(n) for n in names}
    )
    return DecisionPreview(record, existing.seq, same)


class DecisionRefused(OpsError):
    """A decision the runbook does not allow now: not in RUN, no approved or a changed
    baseline, or no clean data QA of its session on the data as it is. Nothing was recorded."""


def require_decision_gates(cfg: Config, ledger: Ledger, day: date) -> None:
    """Raise DecisionRefused unless the state is RUN, the baseline is approved and unchanged,
    and the latest data QA of ``day`` recorded in the ledger is clean and read the stored
    data as it still is. Every path to a decision passes here: the tick, ``ops-runner run``,
    ``ops-runner decide``, a notebook and the library."""

    what = f"decision of {day} refused"
    require_decision_session(cfg, day)
    view = read_state(ledger)
    if view.state is not State.RUN:
        raise DecisionRefused(f"{what}: the state is {view.state} ({view.reason}); decisions are "
                              "taken only in RUN")  # fmt: skip
    baseline = check_baseline(cfg, ledger)
    if not baseline.passed:
        raise DecisionRefused(f"{what}: {baseline.detail}")
    checked = [e for e in ledger.events(kind=str(EventKind.QA_RECORDED))
               if e.payload.get("session") == day.isoformat()]  # fmt: skip
    if not checked:
        raise DecisionRefused(f"{what}: no data QA of {day} in the ledger; run it first "
                              f"(`ops-runner run data_qa --as-of {day}`)")  # fmt: skip
    last = checked[-1].payload
    if last["blocking"]:
        raise DecisionRefused(f"{what}: the data QA of {day} (event {checked[-1].seq}) found "
                              "blocking findings; fix the data and run the QA again")  # fmt: skip
    if last["fingerprint"] != compute_data_fingerprint(cfg):
        raise DecisionRefused(f"{what}: the stored data changed since its QA (event "
                              f"{checked[-1].seq}); run the data QA of {day} again")  # fmt: skip


def require_decision_session(cfg: Config, day: date) -> None:
    """Raise DecisionRefused unless ``day`` is a session the schedule decides on: its month's
    last session, or with ``strategy.signal_offset`` -k the signal session k sessions before
    it. Asked first, so a decision by hand on another session (the month-end of an offset
    workbook) is told which session decides, before any gate sends it to run a data QA."""
    calendar = open_calendar(cfg)
    offset = cfg.schedule.signal_offset
    if calendar.is_rebalance_session(day, offset):
        return
    signal = calendar.rebalance_session(day.year, day.month, offset)
    which = "its month-end" if offset == 0 else f"its signal session (signal_offset {offset})"
    raise DecisionRefused(
        f"decision of {day} refused: {day} is not a decision session; the decision of "
        f"{day:%Y-%m} is taken on {signal}, {which}; nothing recorded"
    )


def _parse_session(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise OpsError(f"session: {text!r} is not a date; write YYYY-MM-DD") from None


def read_record(cfg: Config, cycle_id: str) -> dict[str, Any]:
    """Return the cycle's Decision Record. Raises OpsError when the cycle was not decided."""

    with open_ledger(cfg, create=False, readonly=True) as ledger:
        recorded = [e for e in ledger.events(kind=str(EventKind.DECISION_RECORDED))
                    if e.cycle_id == cycle_id]  # fmt: skip
    if not recorded:
        raise OpsError(
            f"no Decision Record for cycle {cycle_id}; run the decision job for its rebalance "
            "session first (`ops-runner run decision --as-of ...`); `ops-runner ledger show "
            "--kind DecisionRecorded` lists the decided cycles"
        )
    return recorded[-1].payload


def replay(cfg: Config, cycle_id: str) -> ReplayResult:
    """Recompute a cycle's decision from its snapshot and recorded settings; compare records.

    Raises OpsError when the cycle has no Decision Record.
    """
    return _replay_record(cfg, read_record(cfg, cycle_id))


def replay_all(cfg: Config) -> list[ReplayResult]:
    """Replay every decided cycle, oldest first."""

    with open_ledger(cfg, create=False, readonly=True) as ledger:
        records = [e.payload for e in ledger.events(kind=str(EventKind.DECISION_RECORDED))]
    return [_replay_record(cfg, record) for record in records]


def compute_code_change(then: dict[str, Any], now: dict[str, Any]) -> str | None:
    """Return "code changed: <package>@<commit> -> ..." when the package version or the git
    commit differs between two code versions, else None."""
    if (now["package"], now["git_commit"]) == (then["package"], then["git_commit"]):
        return None
    return (
        f"code changed: {then['package']}@{(then['git_commit'] or '?')[:10]} -> "
        f"{now['package']}@{(now['git_commit'] or '?')[:10]}"
    )


def recompute_decision(cfg: Config, record: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Return what deciding the record's session gives now, from the stored prices, this
    config and this code: (the record's ``decision`` part, the SHA-256 its snapshot would
    have). No gate, nothing written or recorded.

    The snapshot's bytes depend on the Parquet writer too: when only the writer changed, the
    recorded snapshot read back and written again has the SHA-256 of the bars now, which is
    then returned, so a library upgrade never reads as "prices changed".
    Raises StrategyError or DataError when the session cannot be decided now.
    """
    day = date.fromisoformat(record["session"])
    settings = StrategySettings.from_config(cfg)
    bars, _ = _load_inputs(cfg, settings, day)
    decision = compute_decision(settings, day, bars, open_calendar(cfg)).to_record()
    digest = compute_sha256(_snapshot_bytes(bars))
    recorded = (record.get("snapshot") or {}).get("sha256")
    if recorded and digest != recorded:
        try:
            then = read_snapshot(cfg, record["snapshot"]["path"], recorded)
        except DataError:
            return decision, digest
        if compute_sha256(_snapshot_bytes(then)) == digest:
            digest = recorded  # the same bars, written by another version of the writer
    return decision, digest


def _replay_record(cfg: Config, record: dict[str, Any]) -> ReplayResult:

    session = date.fromisoformat(record["session"])
    causes: list[str] = []
    if cfg.hash != record["config_hash"]:
        causes.append(
            f"config changed since (hash {record['config_hash'][:12]} -> {cfg.hash[:12]})"
        )
    if changed := compute_code_change(record["code_version"], compute_code_version()):
        causes.append(changed)
    try:
        bars = read_snapshot(cfg, record["snapshot"]["path"], record["snapshot"]["sha256"])
    except DataError as exc:
        return ReplayResult(record["cycle_id"], record["session"], False, [str(exc)],
                            [*causes, "data: the snapshot cannot be trusted"])  # fmt: skip
    settings = StrategySettings.from_dict(record["settings"])
    again = compute_decision(settings, session, bars, open_calendar(cfg)).to_record()
    differences = compute_differences(record["decision"], again, "decision")
    if differences and cfg.calendar.extra_closed:
        causes.append("the calendar's extra closed dates may have changed the month-ends")
    return ReplayResult(record["cycle_id"], record["session"], not differences, differences,
                        causes if differences else [])  # fmt: skip
