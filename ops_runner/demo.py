"""`ops-runner demo`: months of the production run on the SYNTHETIC sample market, in minutes.

A fresh workbook, the sample market and the simulated broker; a simulated clock steps from one
slot opening to the next and every step is a real tick (run twice: the second must change
nothing). The second month carries an incident: the data feed delivers a stale SPY, the tick
goes to DEGRADED_DATA, the QA deadline passes (SAFE_MODE and an alert), an operator repairs the
data, re-runs QA, approves and resumes, and the cycle completes.

``--broker ib-sim`` runs the same walk through the Interactive Brokers adapter against the
loopback TWS API simulator (started in this process, on the simulated clock): every order,
fill and account value crosses a real socket in the TWS protocol.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from ops_runner.core.cycle import Cycle
from ops_runner.core.errors import OpsError
from ops_runner.core.events import EventKind
from ops_runner.ledger import open_ledger, projections
from ops_runner.ledger.approvals import Action, approve, resume
from ops_runner.ledger.init import init_workbook
from ops_runner.ledger.projections import compute_open_incidents
from ops_runner.market.calendar import open_calendar
from ops_runner.market.integrity import check_integrity, record_prices
from ops_runner.market.prices import open_store
from ops_runner.market.sources.sample import SAMPLE_SOURCE, write_sample
from ops_runner.ops.backup import create_backup
from ops_runner.ops.checks import approve_baseline
from ops_runner.ops.drill import execute_drill
from ops_runner.ops.incidents import close_incident
from ops_runner.ops.schedule import (
    Job,
    compute_next_opening,
    compute_session_slots,
)
from ops_runner.ops.tick import run_slot, tick
from ops_runner.reports.runs import write_runs_index
from ops_runner.runtime.notebooks import NOTEBOOKS
from ops_runner.simulators.market import WorkbookMarket
from ops_runner.simulators.tws_sim import TwsSimulator
from ops_runner.workbook.config import Config, load_config

DEFAULT_DEMO = NOTEBOOKS.parent / "demo"
MARKER = ".ops-runner-demo"
LAST_CYCLE = date(2025, 11, 28)  # the sample market ends 2025-12-31: the last full cycle
BROKERS = ("sim", "ib-sim")
IB_SIM_ACCOUNT = "DU1234521"
DEMO_SETTINGS = {
    # The simulated clock jumps between slot openings, so the gap between ticks is days.
    "  heartbeat_max_gap_minutes: 60 ": "  heartbeat_max_gap_minutes: 20160 ",
}
# The weekly dependency scan asks pypi.org, so the demo (offline) leaves it off; a caller with an
# advisory service to ask (the tests' local pypi.org) switches it on.
SCAN_SETTING = ("  weekly_dependency_scan: false ", "  weekly_dependency_scan: true  ")


@dataclass
class DemoResult:
    """What the walk did: ticks run (each twice), jobs run, the incident's states."""

    workbook: Path
    ticks: int = 0
    repeats_identical: int = 0
    jobs: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    broker: str = "sim"
    drills: list[dict] = field(default_factory=list)  # DrillRecorded payloads: good, damaged


class DemoClock:
    """The simulated instant the TWS simulator's server time follows (set before each tick)."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def prepare_workbook(root: Path, account: str | None = None, scan: bool = False) -> None:
    """Make ``root`` a fresh demo workbook (``scan``: with the weekly dependency scan on); an
    earlier demo there is replaced, anything else is refused (never delete a folder the demo did
    not make)."""
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).exists():
            raise OpsError(f"{root} exists and is not a demo workbook; pass another --workbook")
        shutil.rmtree(root)
    init_workbook(root, template="demo")
    (root / MARKER).write_text("made by ops-runner demo; deleted by the next demo\n")
    config = root / "config.yaml"
    text = config.read_text(encoding="utf-8")
    for old, new in [*DEMO_SETTINGS.items(), *([SCAN_SETTING] if scan else [])]:
        if old not in text:
            raise OpsError(f"demo: the config template has no line {old.strip()!r} to change")
        text = text.replace(old, new)
    if account is not None:  # a paper account id of the caller's (tests use a known one)
        text = text.replace("  account: DU0000000 ", f"  account: {account} ")
    config.write_text(text, encoding="utf-8")


def _cycles(calendar: Any, months: int) -> list[date]:
    sessions, cycle = [], Cycle.of(LAST_CYCLE)
    for _ in range(months):
        sessions.append(calendar.rebalance_session(cycle.year, cycle.month))
        cycle = cycle.previous()
    return sorted(sessions)


def _ledger_head(cfg: Config) -> tuple[int, str] | None:

    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return ledger.head()


def _use_ib_simulator(root: Path, port: int) -> None:
    """Point the workbook's config at the loopback TWS simulator listening on ``port``."""
    config = root / "config.yaml"
    text = config.read_text(encoding="utf-8")
    settings = {
        "  kind: sim ": "  kind: ib  ",
        "  port: 4002\n": f"  port: {port}\n",
        "  simulator: false ": "  simulator: true  ",
        "  connect_timeout_seconds: 10 ": "  connect_timeout_seconds: 5  ",
        "    wait_seconds: 2\n": "    wait_seconds: 0.5\n",
    }
    for old, new in settings.items():
        if old not in text:
            raise OpsError(f"demo: the config template has no line {old.strip()!r} to change")
        text = text.replace(old, new, 1)
    config.write_text(text, encoding="utf-8")


def _start_ib_simulator(cfg: Config, clock: DemoClock) -> Any:
    """Start the TWS simulator on the workbook's market and a fresh paper account."""
    from decimal import Decimal

    cash = Decimal(str(cfg.research.initial_cash))
    account = str(cfg.broker.account)  # broker.kind ib: the config check requires one
    sim = TwsSimulator(WorkbookMarket(cfg), clock, account=account, cash=cash)
    sim.start()
    return sim


def run_demo(
    workbook: Path | None = None,
    months: int = 3,
    quiet: bool = False,
    account: str | None = None,
    broker: str = "sim",
    drill: bool = True,
    scan: bool = False,
) -> DemoResult:
    """Walk ``months`` rebalance cycles (ending with 2025-11) through real ticks, then (unless
    ``drill`` is False) drill a backup and a damaged copy of it; returns the result. ``scan``
    switches the weekly dependency scan on (it asks pypi.org, or the ``HTTPS_PROXY`` set).
    Raises OpsError when a tick run twice changed the ledger, or the demo went wrong."""
    from tqdm import tqdm

    if not 1 <= months <= 12:
        raise OpsError("demo: --months must be between 1 and 12")
    if broker not in BROKERS:
        raise OpsError(f"demo: --broker must be one of {', '.join(BROKERS)}, not {broker!r}")
    os.environ.setdefault("OPS_RUNNER_APPROVAL_KEY", secrets.token_hex(32))  # never printed
    root = (workbook or DEFAULT_DEMO).resolve()
    prepare_workbook(root, account or (IB_SIM_ACCOUNT if broker == "ib-sim" else None), scan)
    cfg = load_config(root)
    calendar = open_calendar(cfg)
    cycles = _cycles(calendar, months)
    faulty = cycles[1] if len(cycles) > 1 else None
    settings = cfg.schedule
    start = calendar.session_close(calendar.previous_session(cycles[0])).to_pydatetime()
    start += settings.decision_delay
    last_next = calendar.next_session(cycles[-1])
    end = calendar.session_open(last_next).to_pydatetime() + timedelta(hours=3)
    # One clock: the walk's ledger is stamped with its simulated instants from the first event
    # (each tick stamps its own; the operator's steps between ticks say theirs).
    cfg = at(cfg, start)
    write_sample(open_store(cfg), calendar=calendar)
    _record_prices(cfg, "demo: the SYNTHETIC sample market")
    steps, moment = [start], start
    while (moment := compute_next_opening(calendar, settings, moment)) and moment <= end:
        steps.append(moment)
    result = DemoResult(root, broker=broker)
    say = (lambda text: None) if quiet else tqdm.write
    clock = DemoClock(start)
    simulator = _start_ib_simulator(cfg, clock) if broker == "ib-sim" else None
    try:
        if simulator is not None:
            _use_ib_simulator(root, simulator.port)
            cfg = at(load_config(root), start)
        _baseline(cfg)  # the config as it will run, broker settings included
        where = (
            f"the IB adapter on the TWS simulator at 127.0.0.1:{simulator.port}"
            if simulator is not None
            else "simulated broker"
        )
        say(
            f"workbook {root}: SYNTHETIC sample market (not real prices), {where}, "
            f"{months} rebalance(s) {cycles[0]} .. {cycles[-1]}"
        )
        _walk(cfg, calendar, settings, steps, faulty, result, clock, quiet, say)
        if drill:
            _drill(cfg, steps[-1], result, say)
    finally:
        if simulator is not None:
            simulator.stop()
    _finish(cfg, result, quiet, steps[-1])
    return result


def _walk(
    cfg: Config,
    calendar: Any,
    settings: Any,
    steps: list[datetime],
    faulty: date | None,
    result: DemoResult,
    clock: DemoClock,
    quiet: bool,
    say: Any,
) -> None:
    """Tick at every step (twice); the faulty cycle's incident after its close."""
    from tqdm import tqdm

    bar = tqdm(total=len(steps), unit="tick", disable=quiet, dynamic_ncols=True)
    try:
        for moment in steps:
            clock.moment = moment
            if faulty is not None and moment == _after_close(calendar, settings, faulty):
                _deliver_stale_data(at(cfg, moment), faulty, say)
            _tick_twice(cfg, moment, result, bar, clock)
            if faulty is not None and moment == _after_close(calendar, settings, faulty):
                _incident(cfg, calendar, settings, faulty, result, bar, say, clock)
            bar.update(1)
    finally:
        bar.close()


def at(cfg: Config, moment: datetime) -> Config:
    """Return ``cfg`` on the walk's simulated clock at ``moment`` (the ledger's stamps)."""
    return replace(cfg, simulated_now=moment)


def _after_close(calendar: Any, settings: Any, session: date) -> datetime:
    return calendar.session_close(session).to_pydatetime() + settings.decision_delay


def _baseline(cfg: Config) -> None:

    reason = "demo: the sample config and this code, reviewed by the demo"
    approve_baseline(cfg, reason, now=cfg.simulated_now)


def _tick_twice(
    cfg: Config, moment: datetime, result: DemoResult, bar: Any, clock: DemoClock | None = None
) -> None:
    """One tick, then the same tick again: the second must leave the ledger as it was."""

    if clock is not None:
        clock.moment = moment

    def on_job(slot: Any) -> None:
        bar.set_description(f"{moment:%Y-%m-%d %H:%M}Z {slot.job}")

    bar.set_description(f"{moment:%Y-%m-%d %H:%M}Z tick")
    first = tick(cfg, now=moment, on_job=on_job)
    result.ticks += 1
    result.jobs.extend(first.ran)
    result.states.append(str(first.state))
    head = _ledger_head(cfg)
    again = tick(cfg, now=moment)
    if again.ran or _ledger_head(cfg) != head:
        raise OpsError(f"the tick at {moment:%Y-%m-%dT%H:%MZ} was not idempotent: {again.ran}")
    result.repeats_identical += 1


def _deliver_stale_data(cfg: Config, session: date, say: Any) -> None:
    """The feed's fault: SPY arrives without its bar for ``session`` (the rebalance close)."""

    store = open_store(cfg)
    bars = store.load_bars(SAMPLE_SOURCE, "SPY")
    manifest = store.read_manifest(SAMPLE_SOURCE, "SPY")
    stale = bars[bars.index < str(session)]
    provenance = {
        "layout": manifest["layout"],
        "source_file": "demo: a stale SPY delivery",
        "source_sha256": "stale-" + manifest["source_sha256"][:32],
        "synthetic": True,
    }
    store.write_bars(SAMPLE_SOURCE, "SPY", stale, provenance)
    _record_prices(cfg, "a stale SPY delivery")  # delivered through the import path, recorded
    say(f"  fault: the data feed delivered SPY without its {session} bar")


def _record_prices(cfg: Config, reason: str) -> None:

    with open_ledger(cfg) as ledger:
        record_prices(cfg, ledger, SAMPLE_SOURCE, reason)


def _incident(
    cfg: Config,
    calendar: Any,
    settings: Any,
    session: date,
    result: DemoResult,
    bar: Any,
    say: Any,
    clock: DemoClock,
) -> None:
    """Past the QA deadline (SAFE_MODE), an operator repairs, re-runs QA, approves, resumes."""

    late = _after_close(calendar, settings, session) + settings.deadlines["data_qa"]
    late += timedelta(minutes=5)
    _tick_twice(cfg, late, result, bar, clock)
    say(
        f"  {late:%H:%M}Z: data QA missed its deadline: state {result.states[-1]}; alert in "
        f"{cfg.path('kill_switch').parent / 'alerts.log'}"
    )
    report = write_sample(open_store(cfg), calendar=calendar)
    _record_prices(at(cfg, late + timedelta(minutes=1)), "re-imported by the operator")
    say(f"  operator: re-imported the sample market ({', '.join(report.replaced)} replaced)")
    clock.moment = late + timedelta(minutes=5)
    line = _rerun_qa(cfg, session, clock.moment)
    say(f"  operator: ops-runner run data_qa --as-of {session}: {line}")
    approved = late + timedelta(minutes=6)  # after the QA re-run it rests on
    token = approve(at(cfg, approved), Action.EXIT_SAFE_MODE, "stale SPY re-imported; QA clean",
                    now=approved)  # fmt: skip
    resumed = late + timedelta(minutes=10)
    state = resume(at(cfg, resumed), token, now=resumed, integrity=check_integrity)
    say(f"  operator: ops-runner approve --action exit-safe-mode; resume: state {state}")
    closed = _close_incidents(at(cfg, resumed), "stale SPY delivery re-imported; QA clean; "
                              "resumed", resumed)  # fmt: skip
    say(f"  operator: ops-runner incident close {' '.join(closed)} (executed investigations in "
        "ledger/runs)")  # fmt: skip
    _tick_twice(cfg, late + timedelta(minutes=15), result, bar, clock)


def _drill(cfg: Config, now: datetime, result: DemoResult, say: Any) -> None:
    """The quarterly drill on a backup taken after the last reconciliation (it passes), then on
    a truncated copy of it (it fails loudly, with the reason; the live state is untouched)."""

    cfg = at(cfg, now)
    archive = create_backup(cfg, now=now, reason="before the demo's drill").archive
    say(f"  drill: restoring {archive.name} into drills/ and re-running the last cycle twice")
    payload, _ = execute_drill(cfg, archive, now=now)
    result.drills.append(payload)
    say(f"  drill: {payload['summary']}")
    damaged = cfg.workbook / "drills" / f"damaged-{archive.name}"
    damaged.parent.mkdir(parents=True, exist_ok=True)
    data = archive.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])  # a copy cut short, as by a full disk
    payload, _ = execute_drill(cfg, damaged, now=now)
    result.drills.append(payload)
    say(f"  drill of a truncated copy: {payload['summary']}")


def _close_incidents(cfg: Config, resolution: str, now: datetime) -> list[str]:
    """The operator records the resolution of every incident still open (runbook 4.1)."""

    with open_ledger(cfg) as ledger:
        ids = [str(i["incident_id"]) for i in compute_open_incidents(ledger.events())]
        for incident_id in ids:
            close_incident(cfg, ledger, incident_id, resolution, now=now)
    return ids


def _rerun_qa(cfg: Config, session: date, now: datetime) -> str:

    settings = cfg.schedule
    slot = next(
        s
        for s in compute_session_slots(open_calendar(cfg), settings, session)
        if s.job is Job.DATA_QA
    )
    cfg = at(cfg, now)
    with open_ledger(cfg) as ledger:
        return run_slot(cfg, ledger, None, slot, now, True)[1]


def _finish(cfg: Config, result: DemoResult, quiet: bool, now: datetime) -> None:

    with open_ledger(cfg, create=False, readonly=True) as ledger:
        report = ledger.verify(cfg.path("anchor"))
        events = list(ledger.events())
    index = write_runs_index(cfg, now=now)  # the page speaks the walk's clock
    if quiet:
        return
    runs = [e for e in events if e.kind == "ArtifactRecorded"]
    replays = [e.payload for e in events if e.kind == EventKind.REPLAY_RECORDED]
    matched = sum(r["result"] == "MATCH" for r in replays)
    state = projections.compute_state(events)
    fills = projections.compute_fills(events)
    root = cfg.workbook
    print(
        f"\nDone: {result.ticks} ticks (each run twice, the repeat changed nothing), "
        f"{len(runs)} executed notebooks, {len(fills)} fills; state {state.state}.\n"
        f"  ledger     {root / 'ledger' / 'ledger.sqlite'}: {report.events_checked} events, "
        f"{'verifies' if report.ok else 'BROKEN: ' + str(report.reason)}\n"
        f"  runs       {root / 'ledger' / 'runs'}\n"
        f"  backups    {cfg.path('backups')}: {len(list(cfg.path('backups').glob('*.tar.gz')))} "
        "archives (weekly, and one before the drill)\n"
        + "".join(f"  drill      {d['summary']}\n" for d in result.drills)
        + f"  replays    {len(replays)} cycles decided again after their reconciliation: "
        f"{matched} MATCH their Decision Record\n"
        + f"  reports    {index}  (open it in a browser)\n"
        f"  alerts     {cfg.path('kill_switch').parent / 'alerts.log'}\n"
        f"Next: `ops-runner --workbook {root} status`, `... ledger verify`, `... replay --all`, "
        "`make lab` to open the executed notebooks."
    )
    if result.broker == "ib-sim":
        print(
            "  broker     the TWS simulator's paper account lived only for this walk: it stopped "
            "with the demo, so `broker check` on this workbook finds nothing listening."
        )


def run_demo_cli(workbook: str | None, months: int, broker: str = "sim") -> int:
    """The CLI's entry: 0 when the walk finished and the ledger verifies."""
    result = run_demo(Path(workbook) if workbook else None, months=months, broker=broker)

    cfg = load_config(result.workbook)
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return 0 if ledger.verify(cfg.path("anchor")).ok else 1
