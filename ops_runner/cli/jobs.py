"""`ops-runner` verbs for the jobs: the tick, a job by hand, decide and replay, the broker
check, the audit."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from datetime import UTC, datetime

from ops_runner.cli.common import (
    Progress,
    VerbParser,
    add_verb,
    parse_date,
    parse_now,
    print_json,
)
from ops_runner.core.cycle import Cycle
from ops_runner.core.errors import ConfigError
from ops_runner.ops.registry import JOBS
from ops_runner.workbook.config import Config

NOW_ENV = "OPS_RUNNER_NOW"
# The jobs `ops-runner run` may run by hand (the registry says which).
RUN_JOBS = tuple(str(job) for job, spec in JOBS.items() if spec.by_hand)


def cmd_tick(args: argparse.Namespace) -> int:
    from ops_runner.ops.tick import tick
    from ops_runner.workbook.config import load_config

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
) -> int:
    """Run one job's notebook by hand, under the tick's rules and recorded as the tick records
    it; a run the tick would not do now is refused in one line (exit 1). ``progress`` says
    what runs on stderr, papermill's cell bar included, when it is enabled."""
    from ops_runner.market.calendar import open_calendar
    from ops_runner.ops.manual import run_by_hand
    from ops_runner.ops.schedule import Job, ScheduleSettings, Slot, compute_session_slots
    from ops_runner.runtime.notebooks import show_cell_progress

    progress = progress or Progress(False)
    show_cell_progress(progress.enabled)

    calendar = open_calendar(cfg)
    instant = parse_now(now)
    if "cycle" in JOBS[Job(job)].parameters:  # a cycle's job: its slot is the cycle's
        if not cycle:
            raise ConfigError(f"run {job}: --cycle is required (e.g. 2025-11)")
        wanted = Cycle.parse(cycle, what="--cycle")  # CycleError: exit 2, like ConfigError
        session = calendar.rebalance_session(wanted.year, wanted.month)
    else:
        clock = instant or datetime.now(UTC)
        session = parse_date(as_of) if as_of else calendar.last_closed_session(clock)
    settings = ScheduleSettings.from_config(cfg.values)
    slots = [s for s in compute_session_slots(calendar, settings, session) if s.job == job]
    if not slots:  # e.g. data QA of a session that is not a month-end: an ad-hoc run
        moment = calendar.session_close(session).to_pydatetime()
        slots = [Slot(Job(job), f"{job}:{session.isoformat()}", session, None, moment, moment,
                      closes=None)]  # fmt: skip
    progress(f"running {job} for {slots[0].key} by hand (a notebook: up to a few minutes)")
    ok, line = run_by_hand(cfg, slots[0], instant or datetime.now(UTC), instant is not None)
    progress("done")
    print(line)
    return 0 if ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    from ops_runner.workbook.config import load_config

    return run_job(load_config(args.workbook), args.job, args.cycle, args.as_of, args.now,
                   Progress.from_args(args))  # fmt: skip


def cmd_decide(args: argparse.Namespace) -> int:
    from ops_runner.market.calendar import open_calendar
    from ops_runner.ops import decision
    from ops_runner.workbook.config import load_config

    cfg = load_config(args.workbook)
    session = args.session or open_calendar(cfg).last_closed_session(datetime.now(UTC)).isoformat()
    outcome = decision.decide(cfg, session)
    if args.json:
        print(json.dumps(outcome.record, indent=2, sort_keys=True))
    else:
        state = "recorded" if outcome.created else f"already decided (event {outcome.seq})"
        print(f"{outcome.record['strategy']} {outcome.record['session']}: {state}")
        print(outcome.explanation)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from ops_runner.ops import decision
    from ops_runner.workbook.config import load_config

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
    from ops_runner.brokers import open_broker
    from ops_runner.workbook.config import load_config, mask_account

    cfg = load_config(args.workbook)
    broker = open_broker(cfg, role=args.role)
    try:
        health = broker.connect()
        values = broker.account_values()
        positions = broker.positions()
        open_orders = broker.open_orders()
    finally:
        broker.close()
    local = datetime.now(UTC)
    skew = (local - health.server_time).total_seconds() if health.server_time else None
    report = {
        "broker": cfg.values["broker"]["kind"],
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
        print(json.dumps(report, indent=2))
    else:
        for name, value in report.items():
            print(f"{name:<18} {value}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from ops_runner.ops.audit import audit_job
    from ops_runner.ops.tick import require_simulated_broker
    from ops_runner.workbook.config import load_config

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
    from ops_runner.core.deadline import EXIT_CODE

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
        "--cycle", help="the cycle, e.g. 2025-11 (execution, reconciliation, slippage_report)"
    )
    p.add_argument(
        "--as-of", help="the session (checks, data_qa, decision); default: the last closed"
    )
    p.add_argument(
        "--now", help="a fixed instant for the simulated broker, e.g. 2025-12-01T13:30:00Z"
    )
    p.set_defaults(func=cmd_run)

    p = add_verb(
        sub,
        "broker",
        "the broker: check (connect, clock, account; places nothing)",
        "ops-runner broker check --role orders --json",
        {1: "the broker refused or is unreachable (one line says which)"},
    )
    broker_sub = p.add_subparsers(
        dest="action", required=True, parser_class=VerbParser, metavar="ACTION"
    )
    q = add_verb(
        broker_sub,
        "check",
        "connect, server time vs local clock, positions",
        "ops-runner broker check --json",
    )
    q.add_argument("--json", action="store_true")
    q.add_argument(
        "--role",
        choices=("readonly", "orders"),
        default="readonly",
        help="the client id to log in with (default: the read-only one); places nothing",
    )
    q.set_defaults(func=cmd_broker)

    p = add_verb(
        sub,
        "audit",
        "every position and the cash at the broker vs the ledger since inception",
        "ops-runner --workbook ~/rotation audit --json",
        {0: "CLEAN", 1: "BREAK: SAFE_MODE and an incident (the first break shown)"},
    )
    p.add_argument("--now", help="a simulated instant (simulated brokers only)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)
