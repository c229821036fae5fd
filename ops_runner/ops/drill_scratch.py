"""The drill's scratch workbook: restored from the archive with its paths kept inside it, the
live price data attached by the archived manifests, its config made paper on the simulated
broker with books rebuilt from the restored ledger, and its alerts kept from reaching anyone.

``drill`` runs these as its restore, chain, store and paper steps. A step records itself on the
drill's report (``DrillReport``, seen here as ``StepLog``) through ``check``, which stops the
drill when the step failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from ops_runner.brokers.base import OrderStatus
from ops_runner.brokers.sim import BOOK_VERSION, PERM_ID_BASE
from ops_runner.core.errors import OpsError
from ops_runner.core.events import EventKind as K
from ops_runner.core.hashing import read_sha256
from ops_runner.ledger import open_ledger
from ops_runner.ledger import projections as p
from ops_runner.market.integrity import check_registered
from ops_runner.market.prices import open_store
from ops_runner.ops.backup import restore_backup, verify_archive
from ops_runner.workbook.config import CONFIG_NAME, Config, load_config, load_config_text

_INSIDE_ONLY = ("ledger", "data", "anchor", "kill_switch")  # what a restore writes or locks
_BROUGHT_INSIDE = {"reports": "reports", "broker": "broker", "backups": "backups"}
_SILENCED_ENV = ("OPS_RUNNER_ALERT_WEBHOOK_URL", "OPS_RUNNER_SMTP_PASSWORD")
_SILENCED_PREFIX = "OPS_RUNNER_PUSH_"  # every push channel's URL secret


class StepLog(Protocol):
    """What a step needs of the drill's report: where the scratch is, the archive's head, and
    ``check``, which records the step and stops the drill when it failed."""

    scratch: Path | None
    head_seq: int | None

    def check(self, name: str, ok: bool, detail: str, reasons: Iterable[str] = ()) -> None: ...


# -- pure parts ----------------------------------------------------------------------------------


def compute_sim_books(events: list[Any], account: str) -> dict[str, Any]:
    """Return simulated-broker books (sim.json) equal to the ledger's projection: each order
    submitted (broker id, status, shares filled), each fill and commission, positions, cash.
    Settlement is not replayed: all cash counts as settled."""

    sent = {e.payload["client_ref"]: e for e in events if e.kind == K.ORDER_SUBMITTED}
    fills, orders, final = p.compute_fills(events), [], {s.value for s in OrderStatus}
    for ref, o in p.compute_orders(events).items():
        if not o.broker_order_id or ref not in sent:
            continue
        done = "filled" if o.filled >= o.quantity else "partial"
        status = o.status if o.status in final - {OrderStatus.SUBMITTED} else (
            done if o.filled else "submitted")  # fmt: skip
        oid = o.broker_order_id
        orders.append({"broker_order_id": oid, "client_ref": ref, "symbol": o.symbol,
                       "side": o.side, "quantity": o.quantity, "filled": o.filled,
                       "status": status, "session": str(sent[ref].payload.get("session") or ""),
                       "perm_id": str(PERM_ID_BASE + int(oid)) if oid.isdigit() else oid,
                       "placed_at": sent[ref].recorded_at, "order_type": "MOO", "code": None,
                       "text": "rebuilt from the ledger by the drill"})  # fmt: skip
    execs = [{"exec_id": x, "client_ref": f.get("client_ref") or "", "symbol": f["symbol"],
              "broker_order_id": str(f.get("broker_order_id") or ""), "side": f["side"],
              "quantity": f["quantity"], "price": str(f["price"]), "session": str(f["session"]),
              "time": str(f.get("time") or f"{f['session']}T00:00:00+00:00")}
             for x, f in fills.items()]  # fmt: skip
    fees = [{"exec_id": x, "amount": str(f["commission"])}
            for x, f in fills.items() if f.get("commission") is not None]  # fmt: skip
    ids = [int(o["broker_order_id"]) for o in orders if o["broker_order_id"].isdigit()]
    # Dividends owed and not yet paid stay owed: the rebuilt broker pays them on their date.
    entitled = {(e.payload["symbol"], e.payload["ex_date"]): e.payload
                for e in events if e.kind == K.DIVIDEND_ENTITLED}  # fmt: skip
    accruals = [{"symbol": s, "ex_date": x, "shares": entitled[(s, x)]["shares"],
                 "rate": entitled[(s, x)]["rate"], "gross": entitled[(s, x)]["amount"],
                 "withholding": entitled[(s, x)].get("withholding") or "0",
                 "pay_date": entitled[(s, x)]["pay_date"]}
                for s, x in p.compute_receivables(events)]  # fmt: skip
    return {"version": BOOK_VERSION, "account": account, "cash": str(p.compute_cash(events)),
            "settlements": [], "positions": p.compute_positions(events), "orders": orders,
            "next_order_id": max(ids, default=0), "executions": execs,
            "commissions": fees, "accruals": accruals, "cash_lines": [],
            "action_lines": []}  # fmt: skip


def compute_paper_config(raw: Mapping[str, Any], scratch: Path) -> tuple[dict, list[str]]:
    """Return the restored config made safe to run in ``scratch``, and one line per change."""
    values = json.loads(json.dumps(raw, default=str))
    changes: list[str] = []

    def put(where: dict, name: str, key: str, value: Any) -> None:
        if where.get(key) != value:
            changes.append(f"{name}.{key}: {where.get(key)!r} -> {value!r}")
            where[key] = value

    broker, paths = values.setdefault("broker", {}), values.setdefault("paths", {})
    for key, value in (("kind", "sim"), ("mode", "paper"), ("sim_faults", {})):
        put(broker, "broker", key, value)
    for name, inside in _BROUGHT_INSIDE.items():
        if paths.get(name) and not is_inside(scratch, paths[name]):
            put(paths, "paths", name, inside)
    alerts = values.setdefault("alerts", {})
    if alerts.get("log_file") and not is_inside(scratch, alerts["log_file"]):
        put(alerts, "alerts", "log_file", "ops/alerts.log")
    put(alerts.setdefault("email", {}), "alerts.email", "to", None)
    put(alerts.setdefault("webhook", {}), "alerts.webhook", "url", None)
    if alerts.get("push", {}).get("channels"):
        put(alerts["push"], "alerts.push", "channels", [])
    put(values.setdefault("secrets", {}), "secrets", "file", None)
    return values, changes


def is_inside(root: Path, value: str | Path) -> bool:
    """Return whether ``value`` (relative paths taken from ``root``) resolves inside ``root``."""
    path = Path(value).expanduser()
    return (path if path.is_absolute() else root / path).resolve().is_relative_to(root.resolve())


# -- the steps -----------------------------------------------------------------------------------


def verify_scratch(report: StepLog, scfg: Config, step: str, what: str) -> None:
    """Record ``step``: the scratch ledger's chain and every notebook it registers verify
    (``what`` says when). A failure stops the drill through ``report.check``."""

    with open_ledger(scfg, create=False) as ledger:
        chain = ledger.verify(scfg.path("anchor"))
        problems = check_registered(scfg, ledger.events())
        count = sum(1 for _ in ledger.events(kind=str(K.ARTIFACT_RECORDED)))
    bad = [] if chain.ok else [f"seq {chain.first_bad_seq}: {chain.reason} ({chain.detail})"]
    detail = f"{chain.events_checked} events and {count} notebooks verify {what}"
    report.check(step, chain.ok and not problems, detail, bad + problems)


def restore_scratch(report: StepLog, archive: Path, scratch: Path, say: Callable) -> Config:
    """Verify the archive, restore it into ``scratch``, verify the chain and the notebooks;
    return the scratch config. An archived config that puts a path a restore writes or locks
    outside ``scratch``, or a ``scratch`` not empty, fails the restore before anything is
    written. Records the verify, restore and chain steps; a failure stops the drill through
    ``report.check``."""

    say(f"verifying {archive.name}")
    found = verify_archive(archive)
    report.head_seq, files = found.head_seq, len((found.manifest or {}).get("files", []))
    report.check("verify", found.ok, f"{archive.name}: {files} files and the ledger chain to "
                 f"seq {found.head_seq} verify", found.reasons)  # fmt: skip
    report.scratch = scratch
    try:
        if scratch.exists() and any(scratch.iterdir()):
            raise OpsError(f"the scratch folder {scratch} is not empty")
        with tarfile.open(archive, "r:gz") as tar:
            text = tar.extractfile(CONFIG_NAME).read().decode("utf-8")  # type: ignore[union-attr]
        archived = load_config_text(text, scratch, scratch / CONFIG_NAME)
        if outside := [
            f"paths.{n}" for n in _INSIDE_ONLY if not is_inside(scratch, archived.path(n))
        ]:
            raise OpsError(f"the archived config puts {', '.join(outside)} outside its workbook; "
                           "a drill restores only into its scratch folder")  # fmt: skip
        say(f"restoring into {scratch}")
        restored = restore_backup(archive, scratch)
    except OpsError as exc:
        report.check("restore", False, " ".join(str(exc).split()))
    report.check("restore", True, f"{restored.files} files into {scratch}")
    scfg = load_config(scratch)
    verify_scratch(report, scfg, "chain", "as restored")
    return scfg


def attach_store(live: Config, scfg: Config, report: StepLog, say: Callable) -> None:
    """Copy each bars file the archived manifests name from the live store, by its SHA-256.
    Records the store step; a file with no live copy of that SHA-256 (or no manifest of the
    primary source) fails it and stops the drill through ``report.check``."""
    mine, theirs, copied, problems = open_store(scfg), open_store(live), 0, []
    say("attaching the live price data, checked against the archived manifests")
    for source, symbol in [(s, y) for s in mine.sources() for y in mine.symbols(s)]:
        manifest = mine.read_manifest(source, symbol)
        shas = [
            manifest["stored_sha256"],
            *(h["stored_sha256"] for h in manifest.get("history", [])),
        ]
        for n, sha in enumerate(shas):
            live_file = theirs.bars_path(source, symbol)
            candidates = (live_file, theirs.version_path(source, symbol, sha))
            found = [p for p in candidates if p.is_file() and read_sha256(p) == sha]
            name = f"data/{source}/{symbol}.parquet" + (f" (kept version {sha[:12]})" if n else "")
            if not found:
                now = read_sha256(live_file)[:12] if live_file.is_file() else "none"
                problems.append(f"{name}: no live file has the archived manifest's SHA-256 "
                                f"{sha[:12]} (the live file's: {now})")  # fmt: skip
                continue
            target = mine.version_path(source, symbol, sha) if n else mine.bars_path(source, symbol)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found[0], target)
            copied += 1
    if not mine.symbols(primary := scfg.primary_source):
        problems.append(f"the backup holds no price manifest of the primary source {primary}")
    detail = f"{copied} bars files copied, each with its archived SHA-256"
    report.check("store", not problems, detail, problems)


@contextlib.contextmanager
def silenced_alerts() -> Iterator[None]:
    """The scratch workbook alerts nobody: the webhook, SMTP and push secrets are hidden
    meanwhile."""
    hidden = [n for n in os.environ if n in _SILENCED_ENV or n.startswith(_SILENCED_PREFIX)]
    kept = {name: os.environ.pop(name) for name in hidden}
    try:
        yield
    finally:
        os.environ.update(kept)
