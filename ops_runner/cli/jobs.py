"""`ops-runner` verbs for the jobs: the tick, a job by hand, decide and replay, the broker
check and its keeper, the audit."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from ops_runner.brokers import open_broker
from ops_runner.cli.common import (
    Progress,
    add_actions,
    add_verb,
    parse_date,
    parse_now,
    print_json,
    simulated_now,
)
from ops_runner.core.cycle import Cycle
from ops_runner.core.deadline import EXIT_CODE
from ops_runner.core.errors import ConfigError, OpsError
from ops_runner.ledger import open_ledger
from ops_runner.ledger.store import LedgerMissing
from ops_runner.ops.reachability import Reachability, compute_reachability
from ops_runner.ops.registry import JOBS
from ops_runner.ops.schedule import Job, Slot, compute_session_slots
from ops_runner.runtime.notebooks import show_cell_progress
from ops_runner.workbook.config import Config, load_config, mask_account

NOW_ENV = "OPS_RUNNER_NOW"
# The jobs `ops-runner run` may run by hand (the registry says which).
RUN_JOBS = tuple(str(job) for job, spec in JOBS.items() if spec.by_hand)


def cmd_tick(args: argparse.Namespace) -> int:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.ops.tick import tick

    # OPS_RUNNER_NOW stands for --now where the command line is fixed (the scheduler entries
    # as written, run by their tests at a chosen instant); refused with a real broker alike.
    result = tick(load_config(args.workbook), now=parse_now(args.now or os.environ.get(NOW_ENV)))
    print(result.message)
    return 0


def run_job(
    cfg: Config,
    job: str,
    cycle: str | None,
    as_of: str | None,
    now: str | None,
    progress: Progress | None = None,
    dry_run: bool = False,
    as_json: bool = False,
) -> int:
    """Run one job's notebook by hand, under the tick's rules and recorded as the tick records
    it; a run the tick would not do now is refused in one line (exit 1). ``progress`` says
    what runs on stderr, papermill's cell bar included, when it is enabled. ``dry_run`` (the
    execution only) prints the orders a run now would send and sends and records nothing."""
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.market.calendar import open_calendar
    from ops_runner.ops.decision import require_decision_session
    from ops_runner.ops.manual import run_by_hand

    progress = progress or Progress(False)
    show_cell_progress(progress.enabled)
    if dry_run and job != "execution":
        raise ConfigError(
            f"run {job} --dry-run: only the execution has a dry run (a decision's: "
            "`ops-runner decide --dry-run`)"
        )

    calendar = open_calendar(cfg)
    instant = parse_now(now)
    if JOBS[Job(job)].cycle_job:  # a cycle's job: its slot is the cycle's
        if not cycle:
            raise ConfigError(f"run {job}: --cycle is required (e.g. 2025-11)")
        wanted = Cycle.parse(cycle, what="--cycle")  # CycleError: exit 2, like ConfigError
        session = calendar.rebalance_session(wanted.year, wanted.month, cfg.schedule.signal_offset)
    else:
        clock = instant or datetime.now(UTC)
        session = parse_date(as_of) if as_of else calendar.last_closed_session(clock)
    settings = cfg.schedule
    slots = [s for s in compute_session_slots(calendar, settings, session) if s.job == job]
    if not slots and job == Job.DECISION:
        # never an ad-hoc decision: its notebook would fail on the session (SAFE_MODE)
        require_decision_session(cfg, session)
    if not slots:  # e.g. data QA of a session that is not a month-end: an ad-hoc run
        moment = calendar.session_close(session).to_pydatetime()
        slots = [Slot(Job(job), f"{job}:{session.isoformat()}", session, None, moment, moment,
                      closes=None)]  # fmt: skip
    if dry_run:
        return _dry_run_execution(cfg, slots[0], str(wanted), instant, as_json)
    progress(f"running {job} for {slots[0].key} by hand (a notebook: up to a few minutes)")
    ok, line = run_by_hand(cfg, slots[0], instant or datetime.now(UTC), instant is not None)
    progress("done")
    if as_json:
        print_json({"job": job, "slot": slots[0].key, "ok": ok, "result": line,
                    "exit_code": 0 if ok else 1}, cfg)  # fmt: skip
    else:
        print(line)
    return 0 if ok else 1


def _dry_run_execution(
    cfg: Config, slot: Any, cycle_id: str, instant: datetime | None, as_json: bool
) -> int:
    """Print the orders ``run execution`` would send now and what the rules and the order gate
    say; exit 0 when a run now would go ahead, 1 when it would be refused."""
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.ops.preview import preview_execution

    seen = preview_execution(cfg, slot, cycle_id, instant or datetime.now(UTC), instant is not None)
    plan, code = seen.plan, 0 if seen.refusal is None else 1
    if as_json:
        print_json(
            {
                "dry_run": True,
                "job": "execution",
                "cycle": cycle_id,
                "order_session": plan.order_session,
                "state": str(seen.state),
                "refusal": seen.refusal,
                "would_send": seen.would_send,
                "recorded_intents": seen.recorded,
                "gate": seen.gate,
                "plan": plan.to_payload(),
                "exit_code": code,
            },
            cfg,
        )
        return code
    print(
        f"DRY RUN execution {cycle_id}: market-on-open orders for {plan.order_session}, "
        f"planned on the broker's positions and cash now; nothing sent, nothing recorded"
    )
    print(f"  state {seen.state}; net liquidation {plan.equity:,.2f}")
    for line in plan.lines:
        if line.side is None:
            print(f"  hold  {line.symbol:<6} {line.current:>8} shares")
            continue
        if line.quantity == 0:
            print(f"  skip  {line.symbol:<6} {line.side} {abs(line.delta)}: {line.skipped_reason}")
            continue
        ref = next(i.client_ref for i in plan.intents if i.symbol == line.symbol)
        verdict = seen.gate[ref]
        print(
            f"  {line.side:<5} {line.symbol:<6} {line.quantity:>8} at ~{line.price:,.2f} = "
            f"{line.notional:>12,.2f}  {ref}  gate: {'passes' if verdict is None else verdict}"
        )
        if line.note:
            print(f"        {line.note}")
    for step, amount in plan.cash_walk:
        print(f"  {step:<42} {amount:>12,.2f}")
    if seen.recorded:
        print(
            f"  the ledger holds {seen.recorded} intent(s) of {cycle_id} already: a run sends "
            "those (the plan of record), each looked up at the broker first"
        )
    if seen.refusal is not None:
        print(f"a run now would be refused: {seen.refusal}")
    elif seen.would_send is None:
        print(f"a run now would send those of the {seen.recorded} recorded intent(s) the broker "
              "does not hold yet, not this plan")  # fmt: skip
    else:
        print(f"a run now would send {seen.would_send} order(s)")
    return code


def cmd_run(args: argparse.Namespace) -> int:

    # OPS_RUNNER_NOW stands for --now here too, as for the tick: refused with a real broker.
    now = args.now or os.environ.get(NOW_ENV)
    return run_job(load_config(args.workbook), args.job, args.cycle, args.as_of, now,
                   Progress.from_args(args), dry_run=args.dry_run, as_json=args.json)  # fmt: skip


def cmd_decide(args: argparse.Namespace) -> int:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.market.calendar import open_calendar
    from ops_runner.ops import decision

    cfg = load_config(args.workbook)
    session = args.session or open_calendar(cfg).last_closed_session(datetime.now(UTC)).isoformat()
    if args.dry_run:
        return _dry_run_decision(cfg, session, args.json)
    outcome = decision.decide(cfg, session)
    if args.json:
        print(json.dumps(outcome.record, indent=2, sort_keys=True))
    else:
        state = "recorded" if outcome.created else f"already decided (event {outcome.seq})"
        print(f"{outcome.record['strategy']} {outcome.record['session']}: {state}")
        print(outcome.explanation)
    return 0


def _dry_run_decision(cfg: Config, session: str, as_json: bool) -> int:
    """Print the decision ``decide`` would record now, after the same gates; nothing recorded
    and no snapshot written."""
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.ops.decision import preview_decision

    seen = preview_decision(cfg, session)
    record = seen.record
    if as_json:
        print_json(
            {
                "dry_run": True,
                "record": record,
                "existing_seq": seen.existing_seq,
                "same_as_recorded": seen.same_as_recorded,
            },
            cfg,
        )
        return 0
    if seen.existing_seq is None:
        state = "would be recorded"
    elif seen.same_as_recorded:
        state = f"already decided at event {seen.existing_seq} from the same inputs"
    else:
        state = (
            f"decided at event {seen.existing_seq} from other inputs: deciding now would "
            "open an incident (SAFE_MODE)"
        )
    print(f"DRY RUN {record['strategy']} {record['session']}: {state}; nothing recorded")
    targets = ", ".join(f"{s} {w}" for s, w in record["decision"]["targets"].items())
    print(f"  targets {targets or 'none'}")
    print(seen.explanation)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.ops import decision

    cfg = load_config(args.workbook)
    if bool(args.cycle) == bool(args.all):
        raise ConfigError("replay: name one CYCLE (e.g. 2025-12) or --all")
    results = decision.replay_all(cfg) if args.all else [decision.replay(cfg, args.cycle)]
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for result in results:
            print(result.summary())
            for line in result.differences:
                print(f"    {line}")
        if not results:
            print("no decided cycles to replay")
    return 0 if all(r.identical for r in results) else 1


def cmd_broker(args: argparse.Namespace) -> int:
    cfg = load_config(args.workbook)
    now = simulated_now(cfg, args.now)
    history = _reachability(cfg, now or datetime.now(UTC))
    options = {} if now is None else {"clock": lambda: now}
    broker = open_broker(cfg, role=args.role, **options)
    try:
        health = broker.connect()
        values = broker.account_values()
        positions = broker.positions()
        open_orders = broker.open_orders()
    except OpsError as exc:  # unreachable: what the ledger saw of it, then the one line
        if history is not None and not args.json:
            print("\n".join(history.lines()))
        exc.details = {"history": history.to_payload() if history is not None else None}
        raise
    finally:
        broker.close()
    local = now or datetime.now(UTC)
    skew = (local - health.server_time).total_seconds() if health.server_time else None
    report = {
        "broker": cfg.broker.kind,
        "role": args.role,
        "connected": health.connected,
        "paper": health.paper,
        "account": mask_account(values.account),
        "server_time": health.server_time.isoformat() if health.server_time else None,
        "clock_skew_seconds": skew,
        "net_liquidation": str(values.net_liquidation),
        "cash": str(values.cash),
        "settled_cash": str(values.settled_cash),
        "positions": positions,
        "open_orders": len(open_orders),
    }
    if args.json:
        history_payload = history.to_payload() if history is not None else None
        print(json.dumps({**report, "history": history_payload}, indent=2))
    else:
        for name, value in report.items():
            print(f"{name:<18} {value}")
        if history is not None:
            print("\n".join(history.lines()))
    return 0


def cmd_keep_up(args: argparse.Namespace) -> int:
    cfg = load_config(args.workbook)
    if importlib.util.find_spec("ib_async") is None:
        raise OpsError("broker keep-up runs IBC through ib_async, which is not installed; "
                       "install it (pip install ib_async)")  # fmt: skip
    # here, not at the top: ib_async loads only when this verb runs
    from ops_runner.ops.keeper import keep_gateway_up

    async def keep() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):  # systemd's stop, a person's Ctrl-C
            loop.add_signal_handler(signum, stop.set)
        await keep_gateway_up(cfg, stop)

    asyncio.run(keep())
    return 0


def _reachability(cfg: Config, now: datetime) -> Reachability | None:
    """The broker's reachability from the workbook's ledger (None: no ledger yet)."""
    try:
        with open_ledger(cfg, create=False, readonly=True) as ledger:
            events = list(ledger.events())
    except LedgerMissing:
        return None
    return compute_reachability(events, now, cfg.schedule.timezone)


def cmd_audit(args: argparse.Namespace) -> int:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.ops.audit import audit_job
    from ops_runner.ops.tick import require_simulated_broker

    cfg = load_config(args.workbook)
    if args.now:
        require_simulated_broker(cfg)
    report = audit_job(cfg, now=args.now or "")
    code = 0 if str(report.status) == "CLEAN" else 1
    if args.json:
        print_json({**asdict(report), "summary": report.summary(), "exit_code": code}, cfg)
    else:
        print(report.summary())
    return code


def _tick_exit_codes() -> dict[int, str]:
    return {
        0: "done, idle or busy (another tick holds the lock)",
        EXIT_CODE: "the tick passed its own deadline: what it ran is recorded as failed",
    }


def add_verbs(sub: argparse._SubParsersAction) -> None:
    """Add this group's verbs to the command's subparsers."""
    p = add_verb(
        sub,
        "tick",
        "one scheduler tick: safety checks, then the jobs due now",
        "ops-runner --workbook ~/rotation tick   # what cron runs every 5 minutes",
        _tick_exit_codes,
    )
    p.add_argument(
        "--now",
        help=f"a simulated instant (simulated broker only), e.g. 2025-12-01T13:30Z; ${NOW_ENV} "
        "gives one where the command line is fixed",
    )
    p.set_defaults(func=cmd_tick)

    p = add_verb(
        sub,
        "decide",
        "decide a rebalance session and record the Decision Record once",
        "ops-runner decide --session 2025-12-31\nops-runner decide --session 2025-12-31 --dry-run",
        {1: "refused: not RUN, baseline changed, or no clean data QA of the session"},
    )
    p.add_argument("--session", help="the month-end session YYYY-MM-DD (default: last closed)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="show what would be recorded, after the same gates; record and write nothing",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_decide)

    p = add_verb(
        sub,
        "replay",
        "recompute decided cycles from their snapshots",
        "ops-runner replay 2025-12\nops-runner replay --all --json",
        {1: "a replay differs from its record (each difference shown)"},
    )
    p.add_argument("cycle", nargs="?", help="a cycle id such as 2025-12")
    p.add_argument("--all", action="store_true", help="replay every decided cycle")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_replay)

    p = add_verb(
        sub,
        "run",
        "run one job by hand under the tick's rules (state, lock, windows, order)",
        "ops-runner run decision --as-of 2025-11-28\n"
        "ops-runner run execution --cycle 2025-11 --dry-run",
        {1: "refused (the tick would not run it now) or the run failed: one line"},
    )
    p.add_argument("job", choices=RUN_JOBS)
    p.add_argument(
        "--cycle",
        help="the cycle, e.g. 2025-11 (execution, reconciliation, slippage_report, replay)",
    )
    p.add_argument(
        "--as-of",
        help="the session (checks, data_qa, decision, dependency_scan); default: the last closed",
    )
    p.add_argument(
        "--now",
        help=f"a fixed instant for a simulated broker, e.g. 2025-12-01T13:30:00Z (or ${NOW_ENV})",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="execution: plan on the broker's positions and cash now and print the orders a "
        "run would send, and what the rules and the order gate say; send and record nothing "
        "(exit 1 when a run now would be refused)",
    )
    p.add_argument("--json", action="store_true", help="the run's result (or the dry run) as JSON")
    p.set_defaults(func=cmd_run)

    p = add_verb(
        sub,
        "broker",
        "the broker: check (connect, clock, account; places nothing), keep-up (IB Gateway)",
        "ops-runner broker check --role orders --json",
        {1: "the broker refused or is unreachable (one line says which)"},
    )
    broker_sub = add_actions(p)
    q = add_verb(
        broker_sub,
        "check",
        "connect, server time vs local clock, positions; what the ledger saw of its sessions",
        "ops-runner broker check --json",
    )
    q.add_argument("--json", action="store_true")
    q.add_argument("--now", help="a simulated instant (ISO, UTC; simulated brokers only)")
    q.add_argument(
        "--role",
        choices=("readonly", "orders"),
        default="readonly",
        help="the client id to log in with (default: the read-only one); places nothing",
    )
    q.set_defaults(func=cmd_broker)
    q = add_verb(
        broker_sub,
        "keep-up",
        "keep IB Gateway up (IBC + ib_async's Watchdog, daily restart at "
        "broker.gateway.restart_time); runs until stopped, recording each start and loss",
        "ops-runner --workbook ~/rotation broker keep-up   # as a systemd service",
    )
    q.set_defaults(func=cmd_keep_up)

    p = add_verb(
        sub,
        "audit",
        "every position and the cash at the broker vs the ledger since inception",
        "ops-runner --workbook ~/rotation audit --json",
        {0: "CLEAN", 1: "BREAK (SAFE_MODE, an incident; the first break shown), or no audit"},
    )
    p.add_argument("--now", help="a simulated instant (simulated brokers only)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)
