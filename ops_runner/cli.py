"""`ops-runner`: the one entry point; maps expected errors to one line and an exit code.

Each handler imports what its verb needs inside it, so `ops-runner tick` (run every few
minutes by the scheduler) loads the tick alone, not the demo, the drill or the research stack.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import cast

from ops_runner import __version__
from ops_runner.core.cycle import Cycle
from ops_runner.core.errors import ConfigError, OpsError, describe_os_error
from ops_runner.core.events import EventKind
from ops_runner.market.calendar import open_calendar
from ops_runner.market.prices import open_store
from ops_runner.ops.registry import JOBS
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)

NOW_ENV = "OPS_RUNNER_NOW"
RUN_JOBS = tuple(str(job) for job, spec in JOBS.items() if spec.by_hand)


def _configure_logging(verbose: bool) -> None:
    logging.Formatter.converter = __import__("time").gmtime  # UTC on every line
    handler = logging.StreamHandler()
    if not verbose:  # the IB clients log every API error; the adapter reports what they mean
        handler.addFilter(_quiet_ib_clients)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)sZ %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        handlers=[handler],
    )


def _quiet_ib_clients(record: logging.LogRecord) -> bool:
    return not record.name.startswith(("ib_async", "ib_insync"))


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--as-of: {text!r} is not a date; write YYYY-MM-DD") from None


def _resolve_as_of(cfg: Config, text: str | None) -> date:
    """Return the session to check: the date given, else the last session whose close has passed."""
    if text:
        return _parse_date(text)
    return open_calendar(cfg).last_closed_session(datetime.now(UTC))


def cmd_init(args: argparse.Namespace) -> int:
    from ops_runner.ledger.init import init_workbook
    from ops_runner.workbook.config import load_config

    target = init_workbook(args.workbook, template=args.template)
    print(f"workbook ready: {target} (edit it, then `ops-runner config check`)")
    if load_config(target.parent).values["data"]["primary"] is None:
        print(
            "no data source yet: fetch or import prices under a source name (`ops-runner data "
            "fetch --source NAME`, `ops-runner data import PATH --layout L --name NAME`), then "
            "set data.primary: NAME; `--template demo` makes a SYNTHETIC sample workbook"
        )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from ops_runner.workbook.config import load_config, mask_account

    cfg = load_config(args.workbook)
    if args.action == "hash":
        print(cfg.hash)
    elif args.action == "show":
        values = json.loads(json.dumps(cfg.values, default=str))
        values["broker"]["account"] = mask_account(values["broker"]["account"])
        print(json.dumps(values, indent=2, sort_keys=True))
    else:
        print(f"config ok: {cfg.source_path} (hash {cfg.hash[:12]})")
    return 0


def _record_prices(cfg: Config, source: str, reason: str) -> None:
    """Pin what the store now holds in the ledger: the daily integrity check compares."""
    from ops_runner.ledger import open_ledger
    from ops_runner.market.integrity import record_prices

    with open_ledger(cfg) as ledger:
        record_prices(cfg, ledger, source, reason)


def _fetch(cfg: Config, args: argparse.Namespace) -> list[str]:
    """``data fetch``: the named source, else every source a provider serves (the tick's
    data_fetch job does the same), else the broker's historical bars into ``ib``."""
    from ops_runner.market.sources.providers import compute_fetched_sources
    from ops_runner.ops.fetch import fetch_source

    symbols = [s.strip() for s in args.symbols.split(",")] if args.symbols else None
    start = _optional_date(args.start, "--start")
    end = _optional_date(args.end, "--end")
    sources = [args.source] if args.source else compute_fetched_sources(cfg)
    if not sources and cfg.values["broker"]["kind"] == "ib":
        sources = ["ib"]
    if not sources:
        raise ConfigError(
            "data fetch: no provider serves data.primary or data.secondary; add one under "
            "data.providers (e.g. av: {vendor: alphavantage}) or name it with --source",
            "data.providers",
        )
    if "ib" in sources and "ib" not in cfg.values["data"]["providers"]:  # the broker's bars
        cfg = replace(cfg, values={**cfg.values, "data": {**cfg.values["data"], "providers": {
            **cfg.values["data"]["providers"], "ib": {"vendor": "ib"}}}})  # fmt: skip
    return [fetch_source(cfg, name, symbols, start, end) for name in sources]


def cmd_data(args: argparse.Namespace) -> int:
    from ops_runner.workbook.config import load_config

    cfg = load_config(args.workbook)
    store = open_store(cfg)
    if args.action == "import":
        report = store.import_files(Path(args.path), layout=args.layout, source=args.name)
        print(
            f"{report.source}: imported {len(report.imported)}, replaced {len(report.replaced)}, "
            f"unchanged {len(report.unchanged)} ({report.layout})"
        )
    elif args.action == "fetch":
        for line in _fetch(cfg, args):
            print(line)
        return 0
    elif args.action == "sample":
        from ops_runner.market.sources.sample import SAMPLE_SOURCE, write_sample

        if cfg.values["data"]["primary"] != SAMPLE_SOURCE:  # a production workbook: never
            raise ConfigError(
                "data sample: the SYNTHETIC sample market goes only into a demo workbook "
                f"(data.primary: {SAMPLE_SOURCE}; `ops-runner init --template demo`); this "
                "workbook's data.primary is "
                f"{cfg.values['data']['primary'] or 'not set'}; nothing was written",
                "data.primary",
            )
        report = write_sample(store, calendar=open_calendar(cfg))
        print(
            f"sample (SYNTHETIC): imported {len(report.imported)}, "
            f"unchanged {len(report.unchanged)}"
        )
    if args.action in ("import", "fetch", "sample"):
        _record_prices(cfg, report.source, f"data {args.action}")
        return 0
    if args.action == "list":
        rows = store.list_rows()
        if args.json:
            print(json.dumps(rows, indent=2, default=str))
        elif not rows:
            print("the price store is empty; run `ops-runner data sample` or `data import`")
        else:
            import pandas as pd

            frame = pd.DataFrame(rows)
            columns = [
                c
                for c in (
                    "source",
                    "symbol",
                    "first_date",
                    "last_date",
                    "rows",
                    "layout",
                    "synthetic",
                )
                if c in frame.columns
            ]
            print(frame[columns].to_string(index=False))
    return 0


def cmd_qa(args: argparse.Namespace) -> int:
    from ops_runner.market import qa
    from ops_runner.workbook.config import load_config

    cfg = load_config(args.workbook)
    as_of = _resolve_as_of(cfg, args.as_of)
    report = qa.run_qa(cfg, as_of)
    frame = qa.findings_frame(report.findings)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report.summary())
        if len(frame):
            print(frame.drop(columns=["finding_id"]).to_string(index=False, max_colwidth=90))
    return 1 if report.blocking else 0


def cmd_ledger(args: argparse.Namespace) -> int:
    from ops_runner.ledger import open_ledger
    from ops_runner.workbook.config import load_config

    cfg = load_config(args.workbook)
    if args.action == "verify":
        from ops_runner.market.integrity import check_prices, check_registered

        with open_ledger(cfg, create=False, readonly=True) as ledger:
            report = ledger.verify(cfg.path("anchor"))
            artifacts = check_registered(cfg, ledger.events()) if report.ok else []
            prices, unrecorded = check_prices(cfg, ledger, adopt=False) if report.ok else ([], [])
        registered = snapshots = 0
        if report.ok:
            with open_ledger(cfg, create=False, readonly=True) as ledger:
                registered = sum(1 for _ in ledger.events(kind=str(EventKind.ARTIFACT_RECORDED)))
                snapshots = sum(1 for e in ledger.events(kind=str(EventKind.DECISION_RECORDED))
                                if e.payload.get("snapshot"))  # fmt: skip
        if args.json:
            print(json.dumps({**report.to_dict(), "artifact_problems": artifacts,
                              "price_problems": prices}, indent=2))  # fmt: skip
        elif report.ok:
            head = (
                f"head {report.head_seq} {report.head_hash[:16]}; anchor updated"
                if report.head_hash
                else "empty"
            )
            print(f"ledger ok: {report.events_checked} events, {head}")
            files = f"{registered} registered notebooks and {snapshots} decision snapshots"
            if artifacts:
                print(f"artifacts BROKEN: {len(artifacts)} of {files}")
                for line in artifacts:
                    print(f"    {line}")
            else:
                print(f"artifacts ok: {files} still have their SHA-256")
            if prices:
                print(f"prices BROKEN: {len(prices)} problem(s) in the price store")
                for line in prices:
                    print(f"    {line}")
            elif unrecorded:
                print(f"prices not yet recorded: {', '.join(unrecorded)} (the next daily check "
                      "records them)")  # fmt: skip
            else:
                print("prices ok: the price store is what ops-runner recorded writing")
        else:
            print(
                f"ledger BROKEN at event {report.first_bad_seq}: {report.reason}"
                + (f" ({report.detail})" if report.detail else "")
            )
        return 0 if report.ok and not artifacts and not prices else 1
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        events = ledger.events(
            kind=getattr(args, "kind", None), cycle_id=getattr(args, "cycle", None)
        )
        if args.action == "export" or args.json:
            for event in events:
                print(json.dumps(event.to_dict(), sort_keys=True))
            return 0
        for event in events:
            payload = json.dumps(event.payload, sort_keys=True)
            if len(payload) > 100:
                payload = payload[:97] + "..."
            print(f"{event.seq:>7} {event.recorded_at} {event.kind:<22} {payload}")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from ops_runner.ledger.approvals import Action, approve, parse_ttl
    from ops_runner.workbook.config import load_config

    cfg = load_config(args.workbook)
    ttl = parse_ttl(args.ttl) if args.ttl else None
    token = approve(cfg, Action(args.action), args.reason, args.review, ttl,
                    now=_simulated_now(cfg, args.now))  # fmt: skip
    print(token)
    return 0


def _simulated_now(cfg: Config, text: str | None) -> datetime | None:
    """Return --now as an instant, refused unless the broker is a simulated one."""
    now = _parse_now(text)
    if now is not None:
        from ops_runner.ops.tick import require_simulated_broker

        require_simulated_broker(cfg)
    return now


def cmd_resume(args: argparse.Namespace) -> int:
    from ops_runner.ledger.approvals import resume
    from ops_runner.market.integrity import check_integrity
    from ops_runner.workbook.config import load_config

    cfg = load_config(args.workbook)
    state = resume(cfg, args.token, now=_simulated_now(cfg, args.now), integrity=check_integrity)
    print(f"approval used: the system is now in {state}")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    from ops_runner.ledger.states import remove_kill_switch
    from ops_runner.ops.manual import engage_kill_switch
    from ops_runner.workbook.config import load_config

    cfg = load_config(args.workbook)
    if args.command == "kill":
        engage_kill_switch(cfg, args.reason)
        print(
            f"kill switch written: {cfg.path('kill_switch')}; the next tick cancels pending "
            "orders and moves to HALT"
        )
    else:
        remove_kill_switch(cfg)
        print("kill switch removed; HALT stays until `ops-runner resume` with an approval token")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ops_runner.ops import status
    from ops_runner.workbook.config import load_config

    report = status.read_status(load_config(args.workbook))
    print(json.dumps(report, indent=2, default=str) if args.json else status.format_status(report))
    return 0


def _parse_now(text: str | None) -> datetime | None:
    if not text:
        return None
    from ops_runner.ops.jobs import read_clock

    return read_clock(text)()


def cmd_tick(args: argparse.Namespace) -> int:
    from ops_runner.ops.tick import tick
    from ops_runner.workbook.config import load_config

    # OPS_RUNNER_NOW stands for --now where the command line is fixed (the scheduler entries
    # as written, run by their tests at a chosen instant); refused with a real broker alike.
    result = tick(load_config(args.workbook), now=_parse_now(args.now or os.environ.get(NOW_ENV)))
    print(result.message)
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from ops_runner.ops.checks import approve_baseline, compute_baseline
    from ops_runner.workbook.config import load_config

    cfg = load_config(args.workbook)
    if args.action == "show":
        print(json.dumps(compute_baseline(cfg), indent=2, sort_keys=True))
        return 0
    baseline = approve_baseline(cfg, args.reason or "")
    code = baseline["code_version"]
    print(
        f"baseline approved: config {baseline['config_hash'][:12]}, strategy "
        f"{baseline['strategy_version']}, code {code.get('package')} "
        f"{(code.get('git_commit') or 'no git')[:12]}{' (dirty)' if code.get('git_dirty') else ''}"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ops_runner.workbook.config import load_config

    cfg = load_config(args.workbook)
    if args.action == "index":
        from ops_runner.reports.runs import write_runs_index

        print(f"runs index: {write_runs_index(cfg)}")
        return 0
    if args.action == "performance":
        return _run_performance(cfg, args.start or "", args.end or "")
    return _run_job(cfg, "slippage_report", cycle=args.cycle, as_of=None, now=None)


def _run_performance(cfg: Config, start: str, end: str) -> int:
    """Run notebooks/performance.ipynb (registered like every run) and render it to
    reports/performance.html: live vs research in one page."""
    from ops_runner.reports.pages import write_html
    from ops_runner.runtime.notebooks import execute_job

    for name, text in (("--start", start), ("--end", end)):
        try:
            date.fromisoformat(text) if text else None
        except ValueError:  # one line, before a kernel starts
            raise ConfigError(f"{name}: {text!r} is not a date; write YYYY-MM-DD") from None
    now = datetime.now(UTC)
    day = now.date().isoformat()
    run = execute_job(cfg, "performance", "performance",
                      {"workbook": str(cfg.workbook), "start": start, "end": end},
                      slot=f"performance:{day}", session=day, cycle=None, at=now)  # fmt: skip
    if not run.ok:
        print(f"ops-runner: performance report failed: {run.error}", file=sys.stderr)
        return 1
    output = cast(Path, run.output)  # a run that is ok has its executed notebook
    page = write_html(output, cfg.path("reports") / "performance.html")
    done = run.completion or {}
    print(f"performance {done.get('status')}: {done.get('start')} .. {done.get('end')}, "
          f"{done.get('months')} month(s); report: {page}")  # fmt: skip
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
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


def _research_inputs(args: argparse.Namespace, grid: dict | None = None):
    """Return (config, bars) for backtest/sweep: the workbook's data with --config's strategy.

    --config is a template name (gem, topn) or a YAML file, relative to the current folder.
    """
    from ops_runner.strategy import research
    from ops_runner.workbook.config import load_config

    cfg = load_config(args.workbook)
    if args.config:
        chosen = Path(args.config).expanduser()
        cfg = research.load_research_config(
            cfg, str(chosen.resolve()) if chosen.is_file() else args.config
        )
    return cfg, research.load_bars(cfg, grid)


def _optional_date(text: str | None, name: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a date; write YYYY-MM-DD") from None


def cmd_backtest(args: argparse.Namespace) -> int:
    from ops_runner.strategy import research

    cfg, bars = _research_inputs(args)
    start, end = _optional_date(args.start, "--start"), _optional_date(args.end, "--end")
    result = research.backtest(cfg, bars, start=start, end=end)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.summary())
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from ops_runner.strategy import sweep

    grid = sweep.load_grid(Path(args.grid))
    cfg, bars = _research_inputs(args, grid)
    start, end = _optional_date(args.start, "--start"), _optional_date(args.end, "--end")
    table = sweep.sweep(cfg, grid, bars, start=start, end=end)
    if args.json:
        print(table.to_json(orient="records", indent=2))
    else:
        print(table.to_string(index=False))
    return 0


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


def _run_job(cfg: Config, job: str, cycle: str | None, as_of: str | None, now: str | None) -> int:
    """Run one job's notebook by hand, under the tick's rules and recorded as the tick records
    it; a run the tick would not do now is refused in one line (exit 1)."""
    from ops_runner.ops.manual import run_by_hand
    from ops_runner.ops.schedule import Job, ScheduleSettings, Slot, compute_session_slots

    calendar = open_calendar(cfg)
    instant = _parse_now(now)
    if "cycle" in JOBS[Job(job)].parameters:  # a cycle's job: its slot is the cycle's
        if not cycle:
            raise ConfigError(f"run {job}: --cycle is required (e.g. 2025-11)")
        wanted = Cycle.parse(cycle, what="--cycle")  # CycleError: exit 2, like ConfigError
        session = calendar.rebalance_session(wanted.year, wanted.month)
    else:
        clock = instant or datetime.now(UTC)
        session = _parse_date(as_of) if as_of else calendar.last_closed_session(clock)
    settings = ScheduleSettings.from_config(cfg.values)
    slots = [s for s in compute_session_slots(calendar, settings, session) if s.job == job]
    if not slots:  # e.g. data QA of a session that is not a month-end: an ad-hoc run
        moment = calendar.session_close(session).to_pydatetime()
        slots = [Slot(Job(job), f"{job}:{session.isoformat()}", session, None, moment, moment,
                      closes=None)]  # fmt: skip
    ok, line = run_by_hand(cfg, slots[0], instant or datetime.now(UTC), instant is not None)
    print(line)
    return 0 if ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    from ops_runner.workbook.config import load_config

    return _run_job(load_config(args.workbook), args.job, args.cycle, args.as_of, args.now)


def cmd_backup(args: argparse.Namespace) -> int:
    from ops_runner.ops import backup

    if args.action == "verify":
        report = backup.verify_archive(Path(args.archive))
        if report.ok:
            print(f"archive ok: {report.path} (ledger seq {report.head_seq})")
            return 0
        print(f"ops-runner: {report.path} does not verify:", file=sys.stderr)
        for reason in report.reasons:
            print(f"  {reason}", file=sys.stderr)
        return backup.ArchiveInvalid.exit_code
    from ops_runner.workbook.config import load_config

    made = backup.create_backup(load_config(args.workbook), reason=args.reason, force=args.force)
    print(
        f"backup {made.archive}: ledger seq {made.ledger_seq}, {made.files} files, "
        f"{made.bytes} bytes; {len(made.deleted)} older archive(s) deleted"
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from ops_runner.ops import backup
    from ops_runner.workbook.config import resolve_workbook

    target = Path(args.to) if args.to else resolve_workbook(args.workbook)
    try:
        done = backup.restore_backup(Path(args.archive), target, force=args.force)
    except backup.ArchiveInvalid as exc:
        print(f"ops-runner: {exc}", file=sys.stderr)
        for reason in exc.reasons:
            print(f"  {reason}", file=sys.stderr)
        return exc.exit_code
    print(f"restored {done.archive} into {done.target}: ledger seq {done.head_seq} verifies, "
          f"{done.files} files")  # fmt: skip
    if done.moved_aside:
        print(f"  the workbook's earlier files are kept in {done.moved_aside}")
    for note in done.notes:
        print(f"  {note}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from ops_runner.ops.audit import audit_job
    from ops_runner.ops.tick import require_simulated_broker
    from ops_runner.workbook.config import load_config

    cfg = load_config(args.workbook)
    if args.now:
        require_simulated_broker(cfg)
    report = audit_job(cfg, now=args.now or "")
    print(report.summary())
    return 0 if str(report.status) == "CLEAN" else 1


def cmd_drill(args: argparse.Namespace) -> int:
    from ops_runner.ops import drill
    from ops_runner.ops.tick import require_simulated_broker
    from ops_runner.workbook.config import load_config

    cfg = load_config(args.workbook)
    now = _parse_now(args.now)
    if now is not None:
        require_simulated_broker(cfg)

    def say(line: str) -> None:
        print(line, file=sys.stderr)

    result, notebook = drill.execute_drill(cfg, archive=args.archive or "", now=now, progress=say)
    print(result["summary"])
    if not result["passed"]:
        for reason in result["reasons"]:
            print(f"  {reason}")
    print(f"  report: {notebook}")
    return drill.EXIT_CODES[drill.DrillStatus(result["status"])]


def cmd_incident(args: argparse.Namespace) -> int:
    from ops_runner.ledger import open_ledger
    from ops_runner.ledger.states import read_state
    from ops_runner.ops import incidents
    from ops_runner.workbook.config import load_config

    cfg = load_config(args.workbook)
    with open_ledger(cfg) as ledger:
        if args.action == "open":
            found = incidents.open_incident(cfg, ledger, args.summary, category=args.category,
                                            evidence=args.evidence or ())  # fmt: skip
            print(f"incident {found} open; state {read_state(ledger).state}")
        elif args.action == "close":
            incidents.close_incident(cfg, ledger, args.id, args.resolution, args.postmortem)
            print(f"incident {args.id} closed")
        elif not args.id:
            shown = incidents.list_incidents(ledger, open_only=not args.all)
            if not shown:
                print("no incident open" if not args.all else "no incident recorded")
            for item in shown:
                status = "closed" if item.get("closed") else "open"
                print(f"{item['incident_id']}  {status}  {item.get('summary', '')}")
        else:
            incident = incidents.read_incident(ledger, args.id)
            if incident is None:
                raise incidents.IncidentError(f"no incident {args.id!r}; `incident show` lists")
            classified = incidents.classify(ledger, incident)
            print(f"{incident['incident_id']}: {incident.get('summary', '')}")
            print(f"cause      {classified.cause or 'undetermined'}")
            for line in classified.evidence:
                print(f"  evidence {line}")
            for run in incidents.failing_runs(cfg, ledger, incident):
                print(f"  run      {run.path}{'' if run.exists else ' (missing)'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ops_runner import demo

    if not args.verbose:  # the demo tells the story itself; state warnings would break the bar
        logging.getLogger("ops_runner").setLevel(logging.ERROR)
    return demo.run_demo_cli(args.workbook, args.months, args.broker)


def cmd_lab(args: argparse.Namespace) -> int:
    from ops_runner.runtime.notebooks import NOTEBOOKS

    if args.workbook:
        os.environ["OPS_RUNNER_HOME"] = str(Path(args.workbook).resolve())
    os.execvp(sys.executable, [sys.executable, "-m", "jupyterlab", str(NOTEBOOKS.parent)])
    return 0  # pragma: no cover - exec does not return


class _Parser(argparse.ArgumentParser):
    """argparse with exit code 2 and one line for usage errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"ops-runner: {message} (see `{self.prog} --help`)\n")


class _VerbParser(_Parser):
    """A verb's parser: takes --workbook after the verb too (`ops-runner init --workbook DIR`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--workbook", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ops-runner", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ops-runner {__version__}")
    parser.add_argument("--workbook", help="workbook folder (default: $OPS_RUNNER_HOME or cwd)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_VerbParser)

    p = sub.add_parser("init", help="create config.yaml from a template")
    p.add_argument(
        "--template",
        default="config",
        help="templates/<name>.yaml (default config: no data source yet); demo: the SYNTHETIC "
        "sample market",
    )
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("config", help="check, show or hash the config")
    p.add_argument("action", choices=("check", "show", "hash"), nargs="?", default="check")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("data", help="the price store: import, sample, list")
    data_sub = p.add_subparsers(dest="action", required=True, parser_class=_VerbParser)
    q = data_sub.add_parser("import", help="import CSV files (a file or a folder)")
    q.add_argument("path")
    q.add_argument("--layout", required=True, choices=("alphavantage", "yahoo", "generic"))
    q.add_argument("--name", help="source name in the store (default: the layout)")
    q.set_defaults(func=cmd_data)
    q = data_sub.add_parser(
        "fetch", help="fetch what the store lacks from the providers (as the tick does daily)"
    )
    q.add_argument(
        "--source",
        "--name",
        help="a source in data.providers (default: the primary and secondary it serves; "
        "`ib`: the broker's historical bars)",
    )
    q.add_argument(
        "--symbols", help="comma-separated tickers (default: the universe and QA's references)"
    )
    q.add_argument("--start", help="first date for a symbol not stored yet (data.fetch_start)")
    q.add_argument("--end", help="last date YYYY-MM-DD (default: the last session closed)")
    q.set_defaults(func=cmd_data)
    q = data_sub.add_parser("sample", help="write the SYNTHETIC sample market into the store")
    q.set_defaults(func=cmd_data)
    q = data_sub.add_parser("list", help="list stored sources and symbols")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_data)

    p = sub.add_parser("qa", help="data QA for a session; exit 1 on blocking findings")
    p.add_argument("--as-of", help="session date YYYY-MM-DD (default: last closed session)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_qa)

    p = sub.add_parser("ledger", help="the append-only ledger: verify, show, export")
    ledger_sub = p.add_subparsers(dest="action", required=True, parser_class=_VerbParser)
    q = ledger_sub.add_parser("verify", help="recompute the hash chain; exit 1 when broken")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_ledger)
    q = ledger_sub.add_parser("show", help="list events")
    q.add_argument("--kind", help="only events of this kind, e.g. StateChanged")
    q.add_argument("--cycle", help="only events of this cycle")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.set_defaults(func=cmd_ledger)
    q = ledger_sub.add_parser("export", help="every event as JSON lines")
    q.add_argument("--jsonl", action="store_true", help="(the only format; accepted for clarity)")
    q.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    q.set_defaults(func=cmd_ledger)

    p = sub.add_parser("tick", help="one scheduler tick: safety checks, then the jobs due now")
    p.add_argument(
        "--now",
        help=f"a simulated instant (simulated broker only), e.g. 2025-12-01T13:30Z; ${NOW_ENV} "
        "gives one where the command line is fixed",
    )
    p.set_defaults(func=cmd_tick)

    p = sub.add_parser("baseline", help="the validated baseline the decision must match")
    p.add_argument("action", choices=("approve", "show"))
    p.add_argument("--reason", help="what was reviewed (approve)")
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("report", help="reports: the runs index, slippage, performance")
    report_sub = p.add_subparsers(dest="action", required=True, parser_class=_VerbParser)
    q = report_sub.add_parser("index", help="render executed notebooks; write reports/index.html")
    q.set_defaults(func=cmd_report)
    q = report_sub.add_parser("slippage", help="run the slippage report notebook for a cycle")
    q.add_argument("--cycle", required=True, help="e.g. 2025-11")
    q.set_defaults(func=cmd_report)
    q = report_sub.add_parser("performance", help="live (ledger) vs research, month by month")
    q.add_argument("--start", help="first session, YYYY-MM-DD (default: the first funded close)")
    q.add_argument("--end", help="last session, YYYY-MM-DD (default: the last with data)")
    q.set_defaults(func=cmd_report)

    p = sub.add_parser("decide", help="decide a rebalance session and record it once")
    p.add_argument("--session", help="the month-end session YYYY-MM-DD (default: last closed)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_decide)

    p = sub.add_parser("replay", help="recompute decided cycles from their snapshots")
    p.add_argument("cycle", nargs="?", help="a cycle id such as 2025-12")
    p.add_argument("--all", action="store_true", help="replay every decided cycle")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_replay)

    for name, func, text in (
        ("backtest", cmd_backtest, "research backtest of the strategy (vectorbt)"),
        ("sweep", cmd_sweep, "parameter sweep (vectorbt broadcasting)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "--config", help="a config file (e.g. templates/gem.yaml); default: workbook"
        )
        p.add_argument("--start", help="first rebalance session considered, YYYY-MM-DD")
        p.add_argument("--end", help="last session, YYYY-MM-DD")
        p.add_argument("--json", action="store_true")
        if name == "sweep":
            p.add_argument("--grid", required=True, help="YAML grid file")
        p.set_defaults(func=func)

    p = sub.add_parser(
        "run", help="run one job by hand under the tick's rules (state, lock, windows, order)"
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

    p = sub.add_parser("broker", help="the broker: check (connect, clock, account; places nothing)")
    broker_sub = p.add_subparsers(dest="action", required=True, parser_class=_VerbParser)
    q = broker_sub.add_parser("check", help="connect, server time vs local clock, positions")
    q.add_argument("--json", action="store_true")
    q.add_argument(
        "--role",
        choices=("readonly", "orders"),
        default="readonly",
        help="the client id to log in with (default: the read-only one); places nothing",
    )
    q.set_defaults(func=cmd_broker)

    p = sub.add_parser("status", help="state, incidents, kill switch, ledger head (read only)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("approve", help="print an approval token to leave SAFE_MODE or HALT")
    p.add_argument("--action", required=True, choices=("exit-safe-mode", "exit-halt"))
    p.add_argument("--reason", required=True)
    p.add_argument("--review", help="the review / post-mortem reference (needed to leave HALT)")
    p.add_argument("--ttl", help="lifetime, e.g. 30m, 1h, 2d (default from config)")
    p.add_argument("--now", help="a simulated instant to issue it at (simulated brokers only)")
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser("resume", help="use an approval token")
    p.add_argument("--token", required=True)
    p.add_argument(
        "--now", help="a simulated instant (simulated brokers only: demo and drill workbooks)"
    )
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("kill", help="write the kill switch file: HALT at the next tick")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_kill)

    p = sub.add_parser("unkill", help="remove the kill switch file (HALT stays)")
    p.set_defaults(func=cmd_kill)

    p = sub.add_parser("backup", help="archive the ledger, notebooks, snapshots, manifests, config")
    backup_sub = p.add_subparsers(dest="action", parser_class=_VerbParser)
    p.add_argument("--reason", default="on demand", help="why (recorded with the backup)")
    p.add_argument(
        "--force",
        action="store_true",
        help="archive even when notebooks, snapshots or prices do not match the ledger",
    )
    p.set_defaults(func=cmd_backup, action="create")
    q = backup_sub.add_parser("verify", help="check an archive: manifest, SHA-256s, ledger chain")
    q.add_argument("archive")
    q.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="restore a verified backup archive into a workbook")
    p.add_argument("archive")
    p.add_argument("--to", help="target folder (default: the workbook)")
    p.add_argument(
        "--force", action="store_true", help="replace a live workbook (its files kept aside)"
    )
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("audit", help="broker positions and cash vs the ledger since inception")
    p.add_argument("--now", help="a simulated instant (simulated brokers only)")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("drill", help="disaster-recovery drill: restore a backup, re-run a cycle")
    p.add_argument("--archive", help="the backup archive (default: the newest in paths.backups)")
    p.add_argument("--now", help="a simulated instant for the record (simulated brokers only)")
    p.set_defaults(func=cmd_drill)

    p = sub.add_parser("incident", help="incidents: open, show (list or one), close")
    incident_sub = p.add_subparsers(dest="action", required=True, parser_class=_VerbParser)
    q = incident_sub.add_parser("open", help="open an incident by hand (SAFE_MODE)")
    q.add_argument("--summary", required=True)
    q.add_argument("--category")
    q.add_argument("--evidence", action="append")
    q.set_defaults(func=cmd_incident)
    q = incident_sub.add_parser("show", help="list open incidents, or classify one")
    q.add_argument("id", nargs="?", default="")
    q.add_argument("--all", action="store_true", help="closed ones too")
    q.set_defaults(func=cmd_incident)
    q = incident_sub.add_parser("close", help="record the resolution (HALT: the post-mortem)")
    q.add_argument("id")
    q.add_argument("--resolution", required=True)
    q.add_argument("--postmortem", help="the post-mortem reference (required in HALT)")
    q.set_defaults(func=cmd_incident)

    p = sub.add_parser("demo", help="months of ticks on the sample data (workbook: ./demo)")
    p.add_argument("--months", type=int, default=3, help="rebalance cycles to walk (default 3)")
    p.add_argument(
        "--broker",
        choices=("sim", "ib-sim"),
        default="sim",
        help="sim: the file-backed simulated broker; ib-sim: the IB adapter against the loopback "
        "TWS API simulator",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("lab", help="open JupyterLab on the notebooks")
    p.set_defaults(func=cmd_lab)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    if getattr(args, "action", None) == "import" and not args.name:
        args.name = args.layout
    try:
        return int(args.func(args))
    except OpsError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:  # one line per mistake
            print(f"ops-runner: {line}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (`ops-runner ledger export | head`): not an error of ours.
        # Point stdout at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a read-only or full workbook, a missing folder: one line, no trace
        log.debug("OSError at the command line", exc_info=True)
        print(f"ops-runner: {describe_os_error(exc, 'write or read')}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        log.debug("SQLite error at the command line", exc_info=True)
        print(f"ops-runner: the ledger database: {exc}; run `ops-runner ledger verify`",
              file=sys.stderr)  # fmt: skip
        return 1
    except KeyboardInterrupt:
        print("ops-runner: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
