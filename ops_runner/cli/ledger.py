"""`ops-runner` verbs for the record and the states: the ledger, the baseline, approvals, the
kill switch, incidents."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from ops_runner.cli.common import (
    add_actions,
    add_verb,
    print_json,
    simulated_now,
)
from ops_runner.core.events import EventKind
from ops_runner.ledger import open_ledger
from ops_runner.ledger.approvals import Action, approve, parse_ttl, resume
from ops_runner.ledger.states import read_state, remove_kill_switch
from ops_runner.workbook.config import load_config


def cmd_ledger(args: argparse.Namespace) -> int:
    cfg = load_config(args.workbook)
    if args.action == "verify":
        from ops_runner.market.integrity import check_prices, check_registered  # pandas

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


def cmd_baseline(args: argparse.Namespace) -> int:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.ops.checks import approve_baseline, compute_baseline

    cfg = load_config(args.workbook)
    if args.action == "show" and args.json:  # what is approved, and whether it still holds
        with open_ledger(cfg, create=False, readonly=True) as ledger:
            approved = ledger.last(str(EventKind.BASELINE_APPROVED))
        current = compute_baseline(cfg)
        pinned = {name: approved.payload.get(name) for name in current} if approved else None
        print_json({"current": current, "approved": approved.payload if approved else None,
                    "unchanged": pinned == current}, cfg, sort_keys=True)  # fmt: skip
        return 0
    if args.action == "show":  # JSON either way: what a decision is compared with
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


def cmd_approve(args: argparse.Namespace) -> int:
    cfg = load_config(args.workbook)
    ttl = parse_ttl(args.ttl) if args.ttl else None
    token = approve(cfg, Action(args.action), args.reason, args.review, ttl,
                    now=simulated_now(cfg, args.now))  # fmt: skip
    print(token)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.market.integrity import check_integrity

    cfg = load_config(args.workbook)
    state = resume(cfg, args.token, now=simulated_now(cfg, args.now), integrity=check_integrity)
    print(f"approval used: the system is now in {state}")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.ops.manual import engage_kill_switch

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


def cmd_incident(args: argparse.Namespace) -> int:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.ops import incidents

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
            if args.json:
                print_json(shown, cfg)
                return 0
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
            runs = incidents.failing_runs(cfg, ledger, incident)
            if args.json:
                print_json({**incident, "classification": classified.to_payload(),
                            "failing_runs": [asdict(run) for run in runs]}, cfg)  # fmt: skip
                return 0
            print(f"{incident['incident_id']}: {incident.get('summary', '')}")
            print(f"cause      {classified.cause or 'undetermined'}")
            for line in classified.lines():
                print(f"  evidence {line}")
            for run in runs:
                print(f"  run      {run.path}{'' if run.exists else ' (missing)'}")
    return 0


def add_verbs(sub: argparse._SubParsersAction) -> None:
    """Add this group's verbs to the command's subparsers."""
    broken = {1: "the chain, a registered notebook, a snapshot or the price store is broken"}
    p = add_verb(
        sub,
        "ledger",
        "the append-only ledger: verify, show, export",
        "ops-runner ledger verify\nops-runner ledger show --kind StateChanged",
        broken,
    )
    ledger_sub = add_actions(p)
    q = add_verb(
        ledger_sub,
        "verify",
        "recompute the hash chain, the notebooks' and prices' SHA-256s",
        "ops-runner ledger verify --json",
        broken,
    )
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_ledger)
    q = add_verb(
        ledger_sub,
        "show",
        "list events",
        "ops-runner ledger show --kind StateChanged --cycle 2025-11",
    )
    q.add_argument("--kind", help="only events of this kind, e.g. StateChanged")
    q.add_argument("--cycle", help="only events of this cycle")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.set_defaults(func=cmd_ledger)
    q = add_verb(
        ledger_sub,
        "export",
        "every event as JSON lines",
        "ops-runner ledger export --jsonl > ledger.jsonl",
    )
    q.add_argument("--jsonl", action="store_true", help="(the only format; accepted for clarity)")
    q.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    q.set_defaults(func=cmd_ledger)

    p = add_verb(
        sub,
        "baseline",
        "the approved baseline (config, strategy, code) a decision must match",
        'ops-runner baseline approve --reason "reviewed config abc123"\n'
        "ops-runner baseline show --json",
    )
    p.add_argument("action", choices=("approve", "show"))
    p.add_argument("--reason", help="what was reviewed (approve)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_baseline)

    p = add_verb(
        sub,
        "approve",
        "print a signed approval token to leave SAFE_MODE or HALT",
        'ops-runner approve --action exit-halt --reason "reviewed" --review PM-2026-03 --ttl 1h',
        {1: "refused: the state, the review or the key does not allow it"},
    )
    p.add_argument("--action", required=True, choices=("exit-safe-mode", "exit-halt"))
    p.add_argument("--reason", required=True)
    p.add_argument("--review", help="the review / post-mortem reference (needed to leave HALT)")
    p.add_argument("--ttl", help="lifetime, e.g. 30m, 1h, 2d (default from config)")
    p.add_argument("--now", help="a simulated instant to issue it at (simulated brokers only)")
    p.set_defaults(func=cmd_approve)

    p = add_verb(
        sub,
        "resume",
        "use an approval token: HALT -> SAFE_MODE, SAFE_MODE -> RUN",
        "ops-runner resume --token opsr1....",
        {1: "refused: expired, used, for another state, or checks failing"},
    )
    p.add_argument("--token", required=True)
    p.add_argument(
        "--now", help="a simulated instant (simulated brokers only: demo and drill workbooks)"
    )
    p.set_defaults(func=cmd_resume)

    p = add_verb(
        sub,
        "kill",
        "write the kill switch file: the next tick cancels and HALTs",
        'ops-runner kill --reason "why"',
        {
            1: "the file could not be written: HALT recorded in the ledger instead, or "
            "the line says how to stop trading by hand"
        },
    )
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_kill)

    p = add_verb(
        sub, "unkill", "remove the kill switch file (HALT stays until resume)", "ops-runner unkill"
    )
    p.set_defaults(func=cmd_kill)

    p = add_verb(
        sub,
        "incident",
        "incidents: open, show (list or one, classified), close",
        "ops-runner incident show --json\n"
        'ops-runner incident close ID --resolution "what was fixed"',
    )
    incident_sub = add_actions(p)
    q = add_verb(
        incident_sub,
        "open",
        "open an incident by hand (SAFE_MODE)",
        'ops-runner incident open --summary "fills look odd" --category broker',
    )
    q.add_argument("--summary", required=True)
    q.add_argument("--category")
    q.add_argument("--evidence", action="append")
    q.set_defaults(func=cmd_incident)
    q = add_verb(
        incident_sub,
        "show",
        "list open incidents, or classify one with its evidence",
        "ops-runner incident show INC-... --json",
        {1: "no such incident"},
    )
    q.add_argument("id", nargs="?", default="")
    q.add_argument("--all", action="store_true", help="closed ones too")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_incident)
    q = add_verb(
        incident_sub,
        "close",
        "record the resolution (HALT: the post-mortem)",
        'ops-runner incident close ID --resolution "..." --postmortem PM-2026-03',
    )
    q.add_argument("id")
    q.add_argument("--resolution", required=True)
    q.add_argument("--postmortem", help="the post-mortem reference (required in HALT)")
    q.set_defaults(func=cmd_incident)
