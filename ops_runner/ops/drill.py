"""The quarterly disaster-recovery drill: restore a backup into a scratch workbook, run its last
cycle again twice in paper mode, prove nothing is ordered or decided twice, record the result.

Steps (one report line each; the first that fails stops the drill and says why):
1. verify: the archive given, else the newest in paths.backups (none: NO_BACKUP, nothing
   done or recorded), through ``backup.verify_archive``.
2. restore: ``backup.restore_backup`` into ``<workbook>/drills/<drill id>/``, a new folder kept
   as evidence (delete old ones by hand). An archived config whose ledger, data, anchor or kill
   switch lies outside that folder is refused first: a drill never writes a live file.
3. chain: the restored ledger and every notebook it registers verify.
4. store: backups hold the price manifests, not the bars. Each bars file (and kept version) an
   ARCHIVED manifest names is copied from the live store, the current file or the kept
   version with the archived SHA-256; other bytes, or no file, fail the drill.
5. cycle: the newest cycle decided and reconciled clean (``Reconciliation:<cycle>``).
6. paper: the config gets broker.kind sim, mode paper, no faults, no email, webhook or secrets
   file, and its outside paths brought in; the simulated broker's books are rebuilt from the
   restored ledger at its head (submitted orders with their broker ids, fills, commissions,
   positions, cash; no pending settlement).
7. passes, twice: at each instant a slot of the cycle opens, a tick on that simulated clock,
   then the cycle's jobs opening then, each through ``tick.run_slot`` (as ``ops-runner
   run`` runs it: a papermill notebook recorded in the scratch ledger).
8. proof: no new order event (OrdersPlanned, OrderIntentRecorded, OrderSubmitted, OrderDenied,
   OrderStatusChanged, FillRecorded), no new DecisionRecorded, no new order at the simulated
   broker, no failed job or new incident, reconciliation CLEAN in both passes, no second-pass
   tick changed the ledger, and the scratch ledger and its notebooks still verify.

While the steps run, the alert secrets (webhook URL, SMTP password) are hidden from the
environment: the scratch workbook alerts nobody. ``drill_scratch`` prepares the scratch workbook
(steps 1 to 4, and step 6's config and books); this module finds the cycle, runs it twice,
proves and records the drill.

A PASS proves: the archive is whole and restores into a workbook that verifies; the live price
data is still what the backup's manifests pin; this code runs the restored cycle's jobs and
ticks again and, from the ledger alone (plan of record, settled intents, keyed decisions and
checks), sends and decides nothing twice; the ledger's orders, fills, positions and cash fold
into a clean reconciliation. It does NOT prove that the live broker agrees with the ledger
(the weekly audit does: books built from the ledger cannot drift from it), that the broker
connection or credentials work, that an order missing from the ledger would be found at a real
broker by its reference, nor anything about other cycles. The live broker's books are never
read: in a disaster they may be gone or ahead of the backup, and in production they are IB's.

``record_drill`` appends ``DrillRecorded:<drill id>`` to the LIVE ledger; a FAIL also sends a
critical alert. A drill never changes the live state: a bad backup does not make trading
unsafe, but the drill is loud about it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from ops_runner.brokers import open_broker
from ops_runner.brokers.sim import BOOK_NAME, DEFAULT_ACCOUNT
from ops_runner.core.clock import format_instant, read_clock
from ops_runner.core.cycle import Cycle
from ops_runner.core.errors import OpsError
from ops_runner.core.events import EventKind as K
from ops_runner.core.hashing import read_sha256
from ops_runner.ledger import open_ledger
from ops_runner.ledger.projections import compute_positions
from ops_runner.market.calendar import open_calendar
from ops_runner.ops.backup import ARCHIVE_PATTERN
from ops_runner.ops.drill_scratch import (
    attach_store,
    is_inside,
    restore_scratch,
    silenced_alerts,
    verify_scratch,
)
from ops_runner.ops.drill_scratch import compute_paper_config as compute_paper_config  # re-export
from ops_runner.ops.drill_scratch import compute_sim_books as compute_sim_books  # re-export
from ops_runner.ops.schedule import compute_session_slots
from ops_runner.ops.tick import run_slot, tick
from ops_runner.runtime.alerts import Alert, send_alert
from ops_runner.runtime.notebooks import (
    NotebookError,
    compute_output_path,
    compute_run_id,
    read_in_process,
    run_notebook,
)
from ops_runner.workbook.config import CONFIG_NAME, Config, load_config, mask_account, parse_yaml

log = logging.getLogger(__name__)

DRILLS_FOLDER = "drills"  # <workbook>/drills/<drill id>/: the scratch workbooks
NOTEBOOK = "dr_drill"
ORDER_KINDS = (K.ORDERS_PLANNED, K.ORDER_INTENT_RECORDED, K.ORDER_SUBMITTED, K.ORDER_DENIED,
               K.ORDER_STATUS_CHANGED, K.FILL_RECORDED)  # fmt: skip
QUIET_KINDS = (K.INCIDENT_OPENED, K.JOB_FAILED)  # a clean re-run opens none, fails none
WATCHED = tuple(map(str, (*ORDER_KINDS, K.DECISION_RECORDED, *QUIET_KINDS, K.STATE_CHANGED,
                          K.JOB_COMPLETED)))  # fmt: skip
BROKER_ORDERS = "orders at the simulated broker"
CYCLE_JOBS = ("data_qa", "decision", "execution", "reconciliation", "slippage_report")
NO_BACKUP_LINE = "no backup to drill: run `ops-runner backup` first"


class DrillStatus(StrEnum):
    """What a drill came to."""

    PASS = "PASS"
    FAIL = "FAIL"
    NO_BACKUP = "NO_BACKUP"  # nothing to drill: nothing done, nothing recorded


EXIT_CODES = {DrillStatus.PASS: 0, DrillStatus.FAIL: 1, DrillStatus.NO_BACKUP: 2}


class NoBackup(OpsError):
    """There is no archive to drill (or none at the path given)."""

    exit_code = 2


class _Stop(Exception):
    """A step failed; its reasons are in the report."""


@dataclass(frozen=True)
class Step:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Rerun:
    """One job run again: pass, slot, clock, outcome, notebook (scratch-relative)."""

    pass_no: int
    slot: str
    at: str
    ok: bool
    done: bool
    outcome: str
    run_id: str | None
    notebook: str | None


@dataclass(frozen=True)
class TickRun:
    """One tick on the cycle's clock: what it ran, the scratch ledger head before and after."""

    pass_no: int
    at: str
    ran: str
    head_before: int
    head_after: int
    message: str


@dataclass
class DrillReport:
    """The outcome of one drill; ``reasons`` are one line each (none on PASS)."""

    drill_id: str
    at: datetime
    archive: Path | None
    status: DrillStatus = DrillStatus.PASS
    reasons: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    scratch: Path | None = None
    head_seq: int | None = None  # the archive's ledger head
    cycle: str | None = None
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    reruns: list[Rerun] = field(default_factory=list)
    ticks: list[TickRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fixed_clock: bool = False

    @property
    def passed(self) -> bool:
        return self.status is DrillStatus.PASS

    def summary(self) -> str:
        """Return one line: the status, then the first reason or what was proven."""
        head = f"drill {self.drill_id}: {self.status}"
        if self.reasons:
            more = f" (+{len(self.reasons) - 1} more)" if len(self.reasons) > 1 else ""
            return f"{head}: {self.reasons[0]}{more}"
        name = self.archive.name if self.archive else "?"
        return (f"{head}: {name} (ledger seq {self.head_seq}) restored and verified; cycle "
                f"{self.cycle} run twice ({len(self.reruns)} jobs, {len(self.ticks)} ticks): "
                "no new order or decision, reconciliation CLEAN")  # fmt: skip

    def to_payload(self, notebook: str | None = None) -> dict[str, Any]:
        """Return the DrillRecorded payload (JSON-ready, no floats)."""
        return {
            "drill_id": self.drill_id, "at": format_instant(self.at), "status": str(self.status),
            "passed": self.passed, "archive": str(self.archive) if self.archive else None,
            "head_seq": self.head_seq, "reason": self.reasons[0] if self.reasons else "",
            "reasons": list(self.reasons), "summary": self.summary(), "cycle": self.cycle,
            "scratch": str(self.scratch) if self.scratch else None, "notebook": notebook,
            "steps": [{"step": s.name, "ok": s.ok, "detail": s.detail} for s in self.steps],
            "counts": {"before": dict(self.before), "after": dict(self.after)},
            "reruns": [{"pass": r.pass_no, "slot": r.slot, "outcome": r.outcome,
                        "run_id": r.run_id} for r in self.reruns],
            "ticks": len(self.ticks), "notes": list(self.notes),
        }  # fmt: skip

    def steps_frame(self) -> Any:
        return _frame(self.steps, Step)

    def counts_frame(self) -> Any:
        """Return each watched event kind (and the broker's orders): before, after, new."""
        import pandas as pd

        rows = [(k, n, self.after.get(k, n)) for k, n in self.before.items()]
        frame = pd.DataFrame(rows, columns=["kind", "before", "after"]).set_index("kind")
        return frame.assign(new=frame["after"] - frame["before"])

    def reruns_frame(self) -> Any:
        return _frame(self.reruns, Rerun)

    def ticks_frame(self) -> Any:
        return _frame(self.ticks, TickRun)

    def check(self, name: str, ok: bool, detail: str, reasons: Iterable[str] = ()) -> None:
        """Record a step; a failed one adds its reasons (else its detail) and stops the drill."""
        self.steps.append(Step(name, ok, detail))
        if not ok:
            self.status = DrillStatus.FAIL
            self.reasons += [f"{name}: {r}" for r in (list(reasons) or [detail])]
            raise _Stop(name)


def _frame(rows: list[Any], kind: type) -> Any:
    import pandas as pd

    return pd.DataFrame([asdict(r) for r in rows], columns=[f.name for f in fields(kind)])


# -- pure parts ----------------------------------------------------------------------------------


def compute_counts(events: Iterable[Any]) -> dict[str, int]:
    """Return how many events of each watched kind ``events`` hold (every kind present)."""
    counts = dict.fromkeys(WATCHED, 0)
    for event in events:
        if event.kind in counts:
            counts[event.kind] += 1
    return counts


def compute_last_cycle(events: Iterable[Any]) -> tuple[str | None, list[str]]:
    """Return the newest cycle decided and reconciled clean (``Reconciliation:<cycle>``
    passed), and the newer cycles decided but not reconciled (in flight at the backup)."""
    decided, clean = set(), set()
    for e in events:
        if e.kind == K.DECISION_RECORDED:
            decided.add(str(e.payload.get("cycle_id") or e.cycle_id))
        elif e.kind == K.CHECK_RECORDED and e.key.startswith("Reconciliation:"):
            if e.key.count(":") == 1 and e.payload.get("passed"):
                clean.add(e.key.split(":", 1)[1])
    last = max(decided & clean, default=None)
    return last, sorted(c for c in decided - clean if last is None or c > last)


def _relative(path: Path, root: Path) -> str:
    path = path.resolve()
    return path.relative_to(root.resolve()).as_posix() if is_inside(root, path) else str(path)


def _short(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%MZ}"


def _masked(text: str, accounts: Iterable[str | None]) -> str:
    for account in sorted({a for a in accounts if a}, key=len, reverse=True):
        text = text.replace(account, mask_account(account))
    return text


# -- reading -------------------------------------------------------------------------------------


def read_now(text: str) -> datetime | None:
    """Return the instant of an ISO text (a notebook parameter), None for "". Raises OpsError."""

    return read_clock(text)() if text else None


def find_latest_backup(cfg: Config) -> Path | None:
    """Return the newest archive in paths.backups by the stamp and ledger seq in its name (the
    names create_backup writes and BackupRecorded records), or None when there is none."""

    folder = cfg.path("backups")
    found = {(m.group(1), int(m.group(2))): p for p in folder.glob("*.tar.gz")
             if p.is_file() and (m := ARCHIVE_PATTERN.fullmatch(p.name))}  # fmt: skip
    return found[max(found)] if found else None


def _read_events(cfg: Config) -> list[Any]:

    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return list(ledger.events())


def _head(cfg: Config) -> int:
    events = _read_events(cfg)
    return events[-1].seq if events else 0


def _broker_orders(cfg: Config) -> int:

    path = cfg.path("broker") / BOOK_NAME
    return len(json.loads(path.read_text(encoding="utf-8"))["orders"]) if path.is_file() else 0


# -- the steps -----------------------------------------------------------------------------------


def _go_paper(scfg: Config, report: DrillReport) -> tuple[Config, list[Any], list[Any]]:
    """Rewrite the scratch config for paper on the simulated broker and rebuild its books from
    the restored ledger; find the cycle to run again; check the books read back at its first
    instant (a working order of a later cycle stays working then). Returns the new config,
    the restored events and the cycle's plan."""

    source = scfg.workbook / CONFIG_NAME
    values, changes = compute_paper_config(parse_yaml(source.read_text("utf-8")), scfg.workbook)
    head = f"# The restored config, rewritten by drill {report.drill_id}: paper, simulated broker\n"
    source.write_text(head + yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    scfg = load_config(scfg.workbook)
    events = _read_events(scfg)
    books = scfg.path("broker") / BOOK_NAME
    books.parent.mkdir(parents=True, exist_ok=True)
    account = str(scfg.broker.account or DEFAULT_ACCOUNT)
    books.write_text(json.dumps(compute_sim_books(events, account), indent=1, sort_keys=True))
    report.cycle, later = compute_last_cycle(events)
    report.notes += [f"cycle {c}: decided, not reconciled in the backup" for c in later]
    detail = f"{report.cycle}: the newest cycle decided and reconciled clean"
    report.check("cycle", report.cycle is not None, detail, ["none in the backup"])
    plan = _cycle_plan(scfg, str(report.cycle))
    held = open_broker(scfg, role="readonly", clock=lambda: plan[0][0]).positions()
    want = compute_positions(events)
    report.check("paper", held == want, f"{'; '.join(changes) or 'already paper on sim'}; "
                 f"simulated books rebuilt from the ledger ({len(held)} positions)",
                 [f"the rebuilt books hold {held}, the ledger {want}"])  # fmt: skip
    return scfg, events, plan


def _cycle_plan(scfg: Config, cycle: str) -> list[tuple[datetime, list[Any]]]:
    """Return each instant a slot of ``cycle`` opens, with the cycle's jobs opening then."""

    calendar, settings = open_calendar(scfg), scfg.schedule
    wanted = Cycle.parse(cycle)
    session = calendar.rebalance_session(wanted.year, wanted.month, settings.signal_offset)
    days = (calendar.previous_session(session), session)
    slots = [s for d in days for s in compute_session_slots(calendar, settings, d)]
    slots = [s for s in slots if s.cycle == cycle]
    return [(t, [s for s in slots if s.opens == t and str(s.job) in CYCLE_JOBS])
            for t in sorted({s.opens for s in slots})]  # fmt: skip


def _rerun(scfg: Config, slot: Any, pass_no: int) -> Rerun:

    with open_ledger(scfg) as ledger:
        head = (ledger.head() or (0, ""))[0]
        ok, line = run_slot(scfg, ledger, None, slot, slot.opens, True)
        new = list(ledger.events(after_seq=head))
    done = [e.payload for e in new if e.kind == K.JOB_COMPLETED and e.payload["slot"] == slot.key]
    art = [e.payload["path"] for e in new if e.kind == K.ARTIFACT_RECORDED]
    last = done[-1] if done else {}
    outcome, notebook = str(last.get("outcome") or line), art[-1] if art else None
    return Rerun(pass_no, slot.key, _short(slot.opens), ok, bool(last.get("done")), outcome,
                 last.get("run_id"), notebook)  # fmt: skip


def _passes(scfg: Config, report: DrillReport, plan: list, say: Callable[[str], None]) -> None:

    for pass_no in (1, 2):
        for instant, slots in plan:
            head = _head(scfg)
            done = tick(scfg, now=instant)
            ran = "; ".join(done.ran) or ("busy" if done.busy else "nothing")
            report.ticks.append(TickRun(pass_no, _short(instant), ran, head, _head(scfg),
                                        done.message))  # fmt: skip
            say(f"pass {pass_no}/2, tick at {_short(instant)}: ran {ran}")
            for slot in slots:
                report.reruns.append(_rerun(scfg, slot, pass_no))
                say(f"pass {pass_no}/2, {slot.key}: {report.reruns[-1].outcome}")


def _prove(scfg: Config, report: DrillReport) -> None:
    new = {k: report.after[k] - n for k, n in report.before.items()}
    orders = [f"{n} new {k}" for k in (*map(str, ORDER_KINDS), BROKER_ORDERS) if (n := new[k])]
    report.check("no new orders", not orders, "no order event, no order at the broker", orders)
    decided = new[K.DECISION_RECORDED]
    report.check("no new decisions", not decided, "no DecisionRecorded",
                 [f"{decided} new DecisionRecorded"])  # fmt: skip
    bad = [
        f"pass {r.pass_no} {r.slot}: {r.outcome}" for r in report.reruns if not (r.ok and r.done)
    ]
    bad += [f"{n} new {k}" for k in map(str, QUIET_KINDS) if (n := new[k])]
    report.check("jobs", not bad, f"{len(report.reruns)} job runs done, none failed", bad)
    recon = [r for r in report.reruns if r.slot.startswith("reconciliation:")]
    unclean = [f"pass {r.pass_no}: {r.outcome}" for r in recon if r.outcome != "CLEAN"]
    report.check("reconciliation", len(recon) == 2 and not unclean, "CLEAN in both passes",
                 unclean or ["it did not run in both passes"])  # fmt: skip
    moved = [f"tick at {t.at} in pass 2: {t.ran}, head {t.head_before} -> {t.head_after}"
             for t in report.ticks if t.pass_no == 2 and t.head_after != t.head_before]  # fmt: skip
    report.check("ticks", not moved, f"{len(report.ticks)} ticks; pass 2 changed nothing", moved)
    verify_scratch(report, scfg, "scratch ledger", "after the re-runs")


def run_drill(
    cfg: Config,
    archive: str | Path = "",
    now: datetime | None = None,
    scratch: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> DrillReport:
    """Drill ``archive`` ("" = the latest backup) in a scratch workbook; return the report.

    ``scratch`` defaults to ``<workbook>/drills/<drill id>``; ``now`` stamps the drill (None:
    the real clock); ``progress`` gets a line per step (default: the log). Never raises for
    what the drill finds (FAIL, a reason a line) nor for no archive (NO_BACKUP); a step that
    crashes is a FAIL naming the exception. Nothing of the live workbook is changed.
    """

    at = (now or datetime.now(UTC)).astimezone(UTC)
    chosen = Path(archive).expanduser().resolve() if archive else find_latest_backup(cfg)
    report = DrillReport(compute_run_id(at), at, chosen, fixed_clock=now is not None)
    say = progress or log.info
    if chosen is None or not chosen.is_file():
        report.status = DrillStatus.NO_BACKUP
        report.reasons = [NO_BACKUP_LINE if chosen is None else f"no backup archive at {chosen}"]
        say(report.summary())
        return report
    if scratch is None and cfg.preview:  # run by hand: the scratch lives outside the workbook
        import tempfile

        with tempfile.TemporaryDirectory(prefix="opsr-drill-") as folder:
            return run_drill(cfg, archive, now, Path(folder) / report.drill_id, progress)
    where = (scratch or cfg.workbook / DRILLS_FOLDER / report.drill_id).resolve()
    step = "restore"
    try:
        with silenced_alerts():
            scfg = restore_scratch(report, chosen, where, say)
            step = "store"
            attach_store(cfg, scfg, report, say)
            step = "paper"
            scfg, events, plan = _go_paper(scfg, report)
            report.before = {**compute_counts(events), BROKER_ORDERS: _broker_orders(scfg)}
            step = "passes"
            _passes(scfg, report, plan, say)
            after = compute_counts(_read_events(scfg))
            report.after = {**after, BROKER_ORDERS: _broker_orders(scfg)}
            _prove(scfg, report)
    except _Stop:
        pass
    except Exception as exc:  # boundary: a step that crashes fails the drill, naming the cause
        log.exception("drill %s: step %s crashed", report.drill_id, step)
        report.status = DrillStatus.FAIL
        report.reasons.append(f"{step}: {type(exc).__name__}: {' '.join(str(exc).split())}")
        report.steps.append(Step(step, False, report.reasons[-1]))
    accounts = (cfg.broker.account,)
    report.reasons = [_masked(r, accounts) for r in report.reasons]
    report.steps = [Step(s.name, s.ok, _masked(s.detail, accounts)) for s in report.steps]
    (log.info if report.passed else log.error)("%s", report.summary())
    say(report.summary())
    return report


# -- recording, and the notebook that is the report ------------------------------------------------


def record_drill(
    cfg: Config, report: DrillReport, run_id: str | None = None, notebook: str | None = None
) -> Any:
    """Append ``DrillRecorded:<drill id>`` to the live ledger and return the event; a FAIL
    also sends a critical alert (recorded as AlertSent). NO_BACKUP records nothing (None).
    Never changes the live state. Raises LedgerError when the ledger cannot record it."""

    if report.status is DrillStatus.NO_BACKUP:
        return None
    options: dict[str, Any] = {"clock": lambda: report.at} if report.fixed_clock else {}
    with open_ledger(cfg, create=False, **options) as ledger:
        key = f"{K.DRILL_RECORDED}:{report.drill_id}"
        payload = report.to_payload(notebook)
        event = ledger.append(str(K.DRILL_RECORDED), key, payload, run_id=run_id)
        if not report.passed:
            body = [*report.reasons, f"archive: {report.archive}", f"scratch: {report.scratch}",
                    f"report: {notebook}", "the live state is unchanged; fix the backups, then "
                    "`ops-runner backup` and `ops-runner drill` again"]  # fmt: skip
            alert = Alert(f"disaster-recovery drill FAILED: {report.reasons[0]}", "\n".join(body))
            send_alert(cfg, alert, ledger=ledger, key=f"drill:{report.drill_id}",
                       events=[event.seq])  # fmt: skip
    return event


def execute_drill(
    cfg: Config,
    archive: str | Path = "",
    now: datetime | None = None,
    progress: Callable[[str], None] | None = None,
    in_kernel: bool = False,
) -> tuple[dict[str, Any], Path]:
    """Run notebooks/dr_drill.ipynb (it drills and records) into
    ``ledger/runs/drills/dr_drill-<run id>.ipynb``, register it (ArtifactRecorded) and return
    (the DrillRecorded payload, the executed notebook). A notebook that fails is registered as
    failed and, unless it recorded its drill, recorded as a FAIL drill with its alert.
    ``progress`` is told where the report goes. The notebook runs in a kernel, or in this
    process where the tests ask it of a simulated workbook (``read_in_process``) and
    ``in_kernel`` is False. Raises NoBackup, before running anything, when there is no archive
    to drill."""

    chosen = Path(archive).expanduser().resolve() if archive else find_latest_backup(cfg)
    if chosen is None or not chosen.is_file():
        raise NoBackup(NO_BACKUP_LINE if chosen is None else f"no backup archive at {chosen}")
    at = (now or datetime.now(UTC)).astimezone(UTC)
    run_id = compute_run_id(at)
    output = compute_output_path(cfg, DRILLS_FOLDER, NOTEBOOK, run_id)
    relative = _relative(output, cfg.workbook)
    params = {"workbook": str(cfg.workbook), "archive": str(chosen), "run_id": run_id,
              "now": format_instant(now) if now else "", "notebook": relative}  # fmt: skip
    # Each inner notebook keeps its own deadline; the drill's cell waits for ten of them.
    budget = 60 * float(cfg.schedule.notebook_deadline_minutes) * 12
    (progress or log.info)(f"drill of {chosen.name}: the report is {relative} (a few minutes)")
    payload: dict[str, Any] | None = None
    try:
        run = run_notebook(NOTEBOOK, output, params, cell_timeout=budget, deadline=budget + 600,
                           in_process=not in_kernel and read_in_process(cfg))  # fmt: skip
        payload, outcome, reason, took = run.scraps["drill"], "completed", "", run.duration
    except NotebookError as exc:
        log.error("%s", exc)
        outcome, reason, took = "failed", exc.reason, exc.duration
    if payload is None:
        with open_ledger(cfg, create=False, readonly=True) as ledger:
            mine = [e.payload for e in ledger.events(kind=str(K.DRILL_RECORDED))
                    if e.run_id == run_id]  # fmt: skip
        if not mine:
            failed = DrillReport(run_id, at, chosen, DrillStatus.FAIL, [f"notebook: {reason}"],
                                 fixed_clock=now is not None)  # fmt: skip
            mine = [record_drill(cfg, failed, run_id, relative).payload]
        payload = mine[-1]
    if output.is_file():
        about = {"job": NOTEBOOK, "slot": f"{NOTEBOOK}:{payload['drill_id']}", "cycle": None,
                 "session": at.date().isoformat(), "run_id": run_id, "path": relative,
                 "sha256": read_sha256(output), "duration_seconds": f"{took:.1f}",
                 "outcome": outcome, "reason": reason}  # fmt: skip
        with open_ledger(cfg, create=False) as ledger:
            ledger.append(str(K.ARTIFACT_RECORDED), f"ArtifactRecorded:{run_id}", about,
                          run_id=run_id)  # fmt: skip
    return payload, output
