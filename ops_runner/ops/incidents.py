"""Incident investigation (runbook 4.1): open, snapshot, classify, link failing runs, close.

An incident is an ``IncidentOpened`` event until an ``IncidentClosed`` with the same id. Opening
one by hand moves the system to SAFE_MODE (unless it is already in SAFE_MODE or HALT) in the
same transaction. Closing one in HALT needs the post-mortem reference that the exit-halt
approval must then name (``require_postmortem`` in ``ops_runner.ledger.approvals``). The rule
table that classifies an incident and the failing runs it links live in ``incident_evidence``;
``classify``, ``failing_runs`` and ``compute_run_links`` stay importable from here for the CLI
and the incident notebook.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pandas as pd

from ops_runner.brokers import open_broker
from ops_runner.brokers.base import Broker, BrokerError
from ops_runner.core.clock import format_seconds, format_stamp, parse_instant
from ops_runner.core.errors import IncidentError, OpsError
from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.core.hashing import compute_sha256
from ops_runner.ledger import Ledger, open_ledger, projections
from ops_runner.ledger.projections import StateView
from ops_runner.ledger.states import apply_trigger, incident_event, read_state
from ops_runner.ops.checks import compute_baseline
from ops_runner.ops.incident_evidence import (
    CATEGORY_CAUSE,
    Cause,
    Classification,
    FailingRun,
    classify,
    compute_opened_closed,
    failing_runs,
)
from ops_runner.ops.incident_evidence import compute_run_links as compute_run_links  # re-export
from ops_runner.reports.formats import format_when
from ops_runner.workbook.config import Config, mask_account

log = logging.getLogger(__name__)

LATEST_ENTRIES = 15


@dataclass(frozen=True)
class BrokerView:
    """What the broker said, or why it could not be asked (``unavailable``)."""

    connected: bool
    detail: str
    account: str  # masked
    server_time: str | None = None
    positions: dict[str, int] | None = None
    cash: str | None = None
    net_liquidation: str | None = None
    open_orders: tuple[dict[str, Any], ...] | None = None
    unavailable: str | None = None  # "unavailable: <reason>" when any query failed
    orders: tuple[dict[str, Any], ...] | None = None  # open and completed, with order ids


@dataclass(frozen=True)
class IncidentSnapshot:
    """Runbook 4.1's snapshot: broker and ledger side by side, versions, state, latest entries."""

    incident: dict[str, Any]
    taken_at: str
    state: StateView
    config_hash: str
    code_version: dict[str, Any]
    strategy_version: str
    broker: BrokerView
    ledger_positions: dict[str, int]
    ledger_cash: str
    entries: tuple[dict[str, Any], ...] = field(default=())
    ledger_orders: tuple[dict[str, Any], ...] = field(default=())  # the latest cycle's, by ref

    def facts_frame(self) -> pd.DataFrame:
        code = self.code_version
        commit = code.get("git_commit")
        rows = {
            "incident": self.incident.get("incident_id"),
            "category": self.incident.get("category"),
            "summary": self.incident.get("summary"),
            "state": f"{self.state.state} since {format_when(self.state.since)}",
            "state reason": self.state.reason,
            "snapshot taken at": self.taken_at,
            "config hash": self.config_hash,
            "strategy version": self.strategy_version,
            "code version": f"{code.get('package')} "
            + (f"({commit[:12]}{', dirty' if code.get('git_dirty') else ''})" if commit else ""),
            "broker": ("connected" if self.broker.connected else "NOT connected")
            + f": {self.broker.detail}",
            "account": self.broker.account,
        }
        return pd.DataFrame({"value": rows})

    def positions_frame(self) -> pd.DataFrame:
        """Broker vs ledger shares per symbol; the broker column says why when unavailable."""
        symbols = sorted(set(self.ledger_positions) | set(self.broker.positions or {}))
        rows = []
        for symbol in symbols:
            ledger = self.ledger_positions.get(symbol, 0)
            if self.broker.positions is None:
                broker: Any = self.broker.unavailable
                diff: Any = ""
            else:
                broker = self.broker.positions.get(symbol, 0)
                diff = broker - ledger
            rows.append({"symbol": symbol, "broker": broker, "ledger": ledger, "difference": diff})
        if not rows and self.broker.positions is None:
            rows.append({"symbol": "(none in the ledger)", "broker": self.broker.unavailable,
                         "ledger": 0, "difference": ""})  # fmt: skip
        return pd.DataFrame(rows, columns=["symbol", "broker", "ledger", "difference"])

    def cash_frame(self) -> pd.DataFrame:
        broker = self.broker
        return pd.DataFrame(
            {
                "broker": {
                    "cash": broker.cash or broker.unavailable,
                    "net liquidation": broker.net_liquidation or broker.unavailable,
                },
                "ledger": {"cash": self.ledger_cash, "net liquidation": "(not projected)"},
            }
        )

    def orders_frame(self) -> pd.DataFrame:
        columns = ["client_ref", "symbol", "side", "quantity", "filled", "status", "session"]
        if self.broker.open_orders is None:
            return pd.DataFrame([{"client_ref": self.broker.unavailable}], columns=columns)
        return pd.DataFrame(list(self.broker.open_orders), columns=columns)

    def orders_vs_ledger(self) -> list[dict[str, Any]]:
        """Each client reference of the latest cycle, and any the broker holds that the ledger
        does not know as sent: what the ledger says beside what the broker says, and what it
        means (an order placed by a run that died before recording it shows here)."""
        ledger = {str(o["client_ref"]): o for o in self.ledger_orders}
        broker = {str(o["client_ref"]): o for o in self.broker.orders or () if o["client_ref"]}
        refs = sorted(
            set(ledger)
            | {
                r
                for r in broker
                if not ledger.get(r, {}).get("submitted")
                and (r in ledger or r.startswith(_recent_prefixes(ledger)))
            }
        )
        rows = []
        for ref in refs:
            mine, theirs = ledger.get(ref), broker.get(ref)
            if self.broker.orders is None:
                at_broker: Any = self.broker.unavailable
                note = "the broker could not be asked"
            elif theirs is None:
                at_broker = "not at the broker"
                note = ("recorded as sent, but the broker does not list it" if mine
                        and mine.get("submitted") else "never sent")  # fmt: skip
            else:
                at_broker = (f"{theirs['status']}, {theirs['filled']} of {theirs['quantity']} "
                             f"filled (order {theirs['broker_order_id']})")  # fmt: skip
                note = (
                    ""
                    if mine and mine.get("submitted")
                    else ("placed but not recorded: reconciliation adopts it by its reference")
                )
            what = mine or theirs or {}
            rows.append({"client_ref": ref, "symbol": what.get("symbol"), "side": what.get("side"),
                         "quantity": what.get("quantity"),
                         "ledger": mine["status"] if mine else "not in the ledger",
                         "broker": at_broker, "meaning": note})  # fmt: skip
        return rows

    def orders_vs_ledger_frame(self) -> pd.DataFrame:
        columns = ["client_ref", "symbol", "side", "quantity", "ledger", "broker", "meaning"]
        return pd.DataFrame(self.orders_vs_ledger(), columns=columns)

    def entries_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            list(self.entries), columns=["seq", "recorded_at", "kind", "key", "summary"]
        )

    def to_payload(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident.get("incident_id"),
            "taken_at": self.taken_at,
            "state": str(self.state.state),
            "config_hash": self.config_hash,
            "code_version": dict(self.code_version),
            "broker": {
                "connected": self.broker.connected,
                "account": self.broker.account,
                "unavailable": self.broker.unavailable,
                "positions": self.broker.positions,
                "cash": self.broker.cash,
            },
            "ledger_positions": dict(self.ledger_positions),
            "ledger_cash": self.ledger_cash,
            "orders": self.orders_vs_ledger(),
            "entries": [e["seq"] for e in self.entries],
        }


# --- helpers ------------------------------------------------------------------------------------


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def compute_masked(text: str, accounts: Iterable[str | None]) -> str:
    """Return ``text`` with every given account id replaced by its masked form."""
    for account in sorted({a for a in accounts if a}, key=len, reverse=True):
        text = text.replace(account, mask_account(account))
    return text


def _accounts(cfg: Config, *more: str | None) -> list[str | None]:
    return [cfg.broker.account, *more]


# --- open, list, close --------------------------------------------------------------------------


def compute_incident_id(summary: str, now: datetime) -> str:
    """Return a hand-opened incident's id: ``manual-<UTC instant>-<digest of the summary>``."""
    return f"manual-{format_stamp(now)}-{compute_sha256(_one_line(summary))[:6]}"


def open_incident(
    cfg: Config,
    ledger: Ledger,
    summary: str,
    category: str | None = None,
    evidence: Iterable[object] = (),
    now: datetime | None = None,
    incident_id: str | None = None,
) -> str:
    """Open an incident by hand and return its id; SAFE_MODE unless already SAFE_MODE or HALT.

    IncidentOpened and the state change are one transaction. The same id again records nothing
    (a retry); ``incident_id`` defaults to one derived from ``now`` and the summary. Raises
    IncidentError for an empty summary, an unknown category, or an id already used for another
    incident.
    """

    summary = compute_masked(_one_line(summary), _accounts(cfg))
    if not summary:
        raise IncidentError("incident summary: say what happened (one line)")
    kind = (category or "manual").strip().lower()
    known = {str(c).lower(): c for c in Cause}
    if kind in known:  # "Broker/API" -> broker, "Strategy logic" -> strategy
        kind = {Cause.BROKER: "broker", Cause.STRATEGY: "strategy", Cause.MARKET: "market",
                Cause.DATA: "data", Cause.SCHEDULER: "scheduler"}[known[kind]]  # fmt: skip
    if kind != "manual" and kind not in CATEGORY_CAUSE:
        raise IncidentError(
            f"incident category {category!r} is unknown; use one of "
            f"{', '.join(sorted(CATEGORY_CAUSE))} (or none)"
        )
    moment = now or datetime.now(UTC)
    incident_id = (incident_id or "").strip() or compute_incident_id(summary, moment)
    lines = [compute_masked(str(e), _accounts(cfg)) for e in evidence]
    opened = f"opened by hand at {format_seconds(moment)}"
    item = incident_event(incident_id, kind, summary, [opened, *lines])
    existing = ledger.get(item[1])
    if existing is not None:
        if existing.payload.get("summary") != summary:
            raise IncidentError(
                f"incident {incident_id} already exists with another summary "
                f"({existing.payload.get('summary')!r}); choose another id"
            )
        return incident_id  # a retry: opened already, the state was moved then
    apply_trigger(ledger, Trigger.INCIDENT, f"incident opened by hand: {summary}",
                  [f"incident {incident_id}"], extra_events=[item])  # fmt: skip
    log.warning("incident %s opened: %s", incident_id, summary)
    return incident_id


def list_incidents(ledger: Ledger, open_only: bool = True) -> list[dict[str, Any]]:
    """Return incidents oldest first: each IncidentOpened payload with seq, opened_at, closed
    (bool), closed_at, resolution and postmortem. ``open_only`` leaves out the closed ones."""
    rows: dict[str, dict[str, Any]] = {}
    for event in ledger.events():
        if event.kind == EventKind.INCIDENT_OPENED:
            rows.setdefault(
                str(event.payload["incident_id"]),
                {**event.payload, "seq": event.seq, "opened_at": event.recorded_at,
                 "closed": False, "closed_at": None, "resolution": None, "postmortem": None},
            )  # fmt: skip
        elif event.kind == EventKind.INCIDENT_CLOSED:
            row = rows.get(str(event.payload["incident_id"]))
            if row is not None:
                row.update(closed=True, closed_at=event.recorded_at,
                           resolution=event.payload.get("resolution"),
                           postmortem=event.payload.get("postmortem"))  # fmt: skip
    found = sorted(rows.values(), key=lambda row: row["seq"])
    return [row for row in found if not row["closed"]] if open_only else found


def read_incident(ledger: Ledger, incident_id: str = "") -> dict[str, Any] | None:
    """Return one incident as ``list_incidents`` shows it; "" means the latest open one (None
    when none is open). Raises IncidentError for an unknown id."""
    if not incident_id:
        still_open = list_incidents(ledger, open_only=True)
        return still_open[-1] if still_open else None
    for row in list_incidents(ledger, open_only=False):
        if row["incident_id"] == incident_id:
            return row
    raise IncidentError(
        f"no incident {incident_id!r} in the ledger; `ops-runner status` lists them"
    )


def close_incident(
    cfg: Config,
    ledger: Ledger,
    incident_id: str,
    resolution: str,
    postmortem: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Record IncidentClosed and return its payload.

    Raises IncidentError for an unknown or already-closed id, an empty resolution, or (in HALT)
    a missing post-mortem reference: leaving HALT needs an approval naming that reference.
    Closing changes no state; leaving SAFE_MODE or HALT stays the approvals' business.
    """

    resolution = _one_line(resolution)
    postmortem = _one_line(postmortem) or None
    opened, done = compute_opened_closed(list(ledger.events()), incident_id)
    if opened is None:
        raise IncidentError(f"no incident {incident_id!r} to close; `ops-runner status` lists them")
    if done is not None:
        raise IncidentError(
            f"incident {incident_id} was already closed at event {done.seq} "
            f"({done.payload.get('resolution')}); nothing was written"
        )
    if not resolution:
        raise IncidentError(f"closing {incident_id}: say how it was resolved (--resolution)")
    view = read_state(ledger)
    if view.state is State.HALT and postmortem is None:
        raise IncidentError(
            f"closing {incident_id} in HALT needs the post-mortem reference (--postmortem); "
            "the exit-halt approval must name it as its review"
        )
    payload = {
        "incident_id": incident_id,
        "resolution": resolution,
        "postmortem": postmortem,
        "state": str(view.state),
        "closed_at": format_seconds(now or datetime.now(UTC)),
    }
    ledger.append(str(EventKind.INCIDENT_CLOSED), f"IncidentClosed:{incident_id}", payload)
    log.info("incident %s closed: %s", incident_id, resolution)
    return payload


# --- the snapshot -------------------------------------------------------------------------------


def _ask(call: Any) -> tuple[Any, str | None]:

    try:
        return call(), None
    except BrokerError as exc:  # BrokerUnavailable is one: the snapshot still completes
        return None, f"unavailable: {_one_line(str(exc)) or type(exc).__name__}"


def _broker_view(cfg: Config, broker: Broker) -> tuple[BrokerView, str | None]:
    """Return what the broker said and the raw account it named (for masking, never shown)."""
    health, why = _ask(broker.connect)
    if health is None:
        try:
            health = broker.health()
        except OpsError:
            health = None
    account = (health.account if health is not None else None) or cfg.broker.account
    accounts = _accounts(cfg, account)
    detail = compute_masked(health.detail if health is not None else (why or ""), accounts)
    connected = bool(health is not None and health.connected and why is None)
    server = health.server_time if health is not None else None
    base: dict[str, Any] = {
        "connected": connected,
        "detail": detail,
        "account": mask_account(account),
        "server_time": format_seconds(server) if server is not None else None,
    }
    if why is not None:
        return BrokerView(**base, unavailable=compute_masked(why, accounts)), account
    values, why_values = _ask(broker.account_values)
    positions, why_positions = _ask(broker.positions)
    orders, why_orders = _ask(broker.open_orders)
    completed, why_completed = _ask(broker.completed_orders)
    reason = why_values or why_positions or why_orders or why_completed
    every = None if orders is None or completed is None else (*orders, *completed)
    view = BrokerView(
        **base,
        positions=dict(positions) if positions is not None else None,
        cash=str(values.cash) if values is not None else None,
        net_liquidation=str(values.net_liquidation) if values is not None else None,
        open_orders=None
        if orders is None
        else tuple(
            {
                "client_ref": o.client_ref,
                "symbol": o.symbol,
                "side": o.side,
                "quantity": o.quantity,
                "filled": o.filled,
                "status": str(o.status),
                "session": o.session,
            }
            for o in orders
        ),  # fmt: skip
        unavailable=compute_masked(reason, accounts) if reason else None,
        orders=None if every is None else tuple(
            {"client_ref": o.client_ref, "broker_order_id": o.broker_order_id,
             "symbol": o.symbol, "side": o.side, "quantity": o.quantity, "filled": o.filled,
             "status": str(o.status), "session": o.session}
            for o in every
        ),
    )  # fmt: skip
    return view, account


def _entry(event: Any, accounts: list[str | None]) -> dict[str, Any]:
    p = event.payload
    words = [f"{k}={p[k]}" for k in list(p)[:6] if not isinstance(p[k], dict | list)]
    text = compute_masked(_one_line("; ".join(words))[:200], accounts)
    return {"seq": event.seq, "recorded_at": event.recorded_at, "kind": event.kind,
            "key": compute_masked(event.key, accounts), "summary": text}  # fmt: skip


def snapshot(
    cfg: Config,
    ledger: Ledger,
    incident_id: str,
    broker: Broker | None = None,
    now: datetime | None = None,
    entries: int = LATEST_ENTRIES,
) -> IncidentSnapshot:
    """Return the runbook's snapshot for ``incident_id``: broker positions, cash and open
    orders where reachable (else "unavailable: <reason>"), the ledger's projections beside
    them, the latest ``entries`` ledger events, config hash, code version, connectivity, state.

    ``broker`` None opens the configured one (read-only role) and closes it after. Account
    ids are masked everywhere. Raises IncidentError for an unknown id.
    """

    events = list(ledger.events())
    opened, _ = compute_opened_closed(events, incident_id)
    if opened is None:
        raise IncidentError(f"no incident {incident_id!r} in the ledger")
    moment = now or datetime.now(UTC)
    own, account = broker is None, None
    if own:
        options = {"clock": lambda: moment} if now is not None and cfg.broker.kind == "sim" else {}
        try:
            broker = open_broker(cfg, role="readonly", **options)
        except BrokerError as exc:
            broker = None
            view = BrokerView(False, str(exc), mask_account(cfg.broker.account),
                              unavailable=f"unavailable: {_one_line(str(exc))}")  # fmt: skip
    try:
        if broker is not None:
            view, account = _broker_view(cfg, broker)
    finally:
        if own and broker is not None:
            broker.close()
    accounts = _accounts(cfg, account)
    baseline = compute_baseline(cfg)  # what a validated baseline pins, as it is now
    incident = {**opened.payload, "seq": opened.seq, "opened_at": opened.recorded_at}
    incident["evidence"] = [compute_masked(str(e), accounts) for e in incident.get("evidence", [])]
    incident["summary"] = compute_masked(str(incident.get("summary") or ""), accounts)
    state = read_state(ledger)
    masked = tuple(compute_masked(line, accounts) for line in state.evidence)
    state = replace(state, reason=compute_masked(state.reason, accounts), evidence=masked)
    return IncidentSnapshot(
        incident=incident,
        taken_at=format_seconds(moment),
        state=state,
        config_hash=baseline["config_hash"],
        code_version=baseline["code_version"],
        strategy_version=baseline["strategy_version"],
        broker=view,
        ledger_positions=projections.compute_positions(events),
        ledger_cash=str(projections.compute_cash(events).quantize(Decimal("0.01"))),
        entries=tuple(_entry(e, accounts) for e in events[-entries:][::-1]),
        ledger_orders=_latest_cycle_orders(events),
    )


def _latest_cycle_orders(events: list[Any]) -> tuple[dict[str, Any], ...]:
    """The ledger's view of every order of the latest cycle that recorded intents."""

    latest = next((e.cycle_id for e in reversed(events)
                   if e.kind == EventKind.ORDER_INTENT_RECORDED and e.cycle_id), None)  # fmt: skip
    if latest is None:
        return ()
    mine = {str(e.payload["client_ref"]) for e in events
            if e.kind == EventKind.ORDER_INTENT_RECORDED and e.cycle_id == latest}  # fmt: skip
    orders = projections.compute_orders(events)
    return tuple(vars(orders[ref]) for ref in sorted(mine) if ref in orders)


def _recent_prefixes(ledger: Mapping[str, Any]) -> tuple[str, ...]:
    """The client-reference prefixes of the cycles the ledger's orders belong to."""
    return tuple(sorted({ref.rsplit(":", 2)[0] + ":" for ref in ledger})) or ("\0",)


# --- the investigation (what the notebook shows) ------------------------------------------------


@dataclass(frozen=True)
class Investigation:
    """Runbook 4.1 for one incident: snapshot, classification and failing runs."""

    incident: dict[str, Any]
    snapshot: IncidentSnapshot
    classification: Classification
    runs: tuple[FailingRun, ...]
    entered_safe_mode: bool

    def to_payload(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident["incident_id"],
            "closed": bool(self.incident.get("closed")),
            "entered_safe_mode": self.entered_safe_mode,
            "classification": self.classification.to_payload(),
            "snapshot": self.snapshot.to_payload(),
            "runs": [{"job": r.job, "slot": r.slot, "run_id": r.run_id, "outcome": r.outcome,
                      "path": r.path, "exists": r.exists} for r in self.runs],
        }  # fmt: skip


def require_safe_mode(ledger: Ledger, incident: Mapping[str, Any]) -> bool:
    """Move to SAFE_MODE for an open incident unless already in SAFE_MODE or HALT; True if moved."""

    if incident.get("closed") or read_state(ledger).state in (State.SAFE_MODE, State.HALT):
        return False
    incident_id = incident["incident_id"]
    apply_trigger(ledger, Trigger.INCIDENT, f"investigating incident {incident_id}",
                  [f"incident {incident_id}"])  # fmt: skip
    return True


def investigate(
    cfg: Config,
    incident_id: str = "",
    now: str | datetime | None = None,
    broker: Broker | None = None,
) -> Investigation | None:
    """Return the investigation of ``incident_id`` ("" = the latest open one; None when no
    incident is open). An open incident outside SAFE_MODE/HALT moves the system to SAFE_MODE.
    ``now`` is an ISO instant ("" or None: the real clock). Raises IncidentError."""

    moment = now if isinstance(now, datetime) else None
    if isinstance(now, str) and now:
        moment = parse_instant(now)
    with open_ledger(cfg) as ledger:
        incident = read_incident(ledger, incident_id)
        if incident is None:
            return None
        moved = require_safe_mode(ledger, incident)
        shot = snapshot(cfg, ledger, incident["incident_id"], broker=broker, now=moment)
        verdict = classify(ledger, incident)
        runs = failing_runs(cfg, ledger, incident)
    accounts = _accounts(cfg)  # ledger payloads may quote the configured account: mask it
    verdict = replace(verdict, evidence=tuple((c, compute_masked(line, accounts))
                                              for c, line in verdict.evidence))  # fmt: skip
    runs = [replace(r, detail=compute_masked(r.detail, accounts)) for r in runs]
    return Investigation(
        incident={**incident, **shot.incident},
        snapshot=shot,
        classification=verdict,
        runs=tuple(runs),
        entered_safe_mode=moved,
    )
