"""`ops-runner` verbs for recovery: backups, restore and the disaster-recovery drill."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ops_runner.cli.common import Progress, add_actions, add_verb, parse_now, print_json
from ops_runner.workbook.config import load_config, resolve_workbook


def cmd_backup(args: argparse.Namespace) -> int:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.ops import backup

    if args.action == "verify":
        report = backup.verify_archive(Path(args.archive))
        code = 0 if report.ok else backup.ArchiveInvalid.exit_code
        if args.json:
            print_json({"archive": str(report.path), "ok": report.ok,
                        "head_seq": report.head_seq, "reasons": list(report.reasons),
                        "exit_code": code})  # fmt: skip
        if report.ok:
            if not args.json:
                print(f"archive ok: {report.path} (ledger seq {report.head_seq})")
            return 0
        print(f"ops-runner: {report.path} does not verify:", file=sys.stderr)
        for reason in report.reasons:
            print(f"  {reason}", file=sys.stderr)
        return code

    made = backup.create_backup(load_config(args.workbook), reason=args.reason, force=args.force)
    print(
        f"backup {made.archive}: ledger seq {made.ledger_seq}, {made.files} files, "
        f"{made.bytes} bytes; {len(made.deleted)} older archive(s) deleted"
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.ops import backup

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


def cmd_drill(args: argparse.Namespace) -> int:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.ops import drill
    from ops_runner.ops.tick import require_simulated_broker

    cfg = load_config(args.workbook)
    now = parse_now(args.now)
    if now is not None:
        require_simulated_broker(cfg)

    result, notebook = drill.execute_drill(cfg, archive=args.archive or "", now=now,
                                           progress=Progress.from_args(args))  # fmt: skip
    code = drill.EXIT_CODES[drill.DrillStatus(result["status"])]
    if args.json:
        print_json({**result, "report": str(notebook), "exit_code": code}, cfg)
        return code
    print(result["summary"])
    if not result["passed"]:
        for reason in result["reasons"]:
            print(f"  {reason}")
    print(f"  report: {notebook}")
    return code


def _drill_exit_codes() -> dict[int, str]:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.ops.drill import EXIT_CODES, DrillStatus

    meaning = {
        DrillStatus.PASS: "PASS",
        DrillStatus.FAIL: "FAIL (one line per reason)",
        DrillStatus.NO_BACKUP: "NO_BACKUP (nothing to drill)",
    }
    return {EXIT_CODES[status]: text for status, text in meaning.items()}


def _archive_exit_codes() -> dict[int, str]:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.ops.backup import ArchiveInvalid, RestoreRefused

    return {
        ArchiveInvalid.exit_code: "the archive does not verify (each reason on stderr)",
        RestoreRefused.exit_code: "the target is a live workbook and --force was not given",
    }


def add_verbs(sub: argparse._SubParsersAction) -> None:
    """Add this group's verbs to the command's subparsers."""
    p = add_verb(
        sub,
        "backup",
        "archive the ledger, notebooks, snapshots, manifests and config",
        'ops-runner backup --reason "before upgrade"\n'
        "ops-runner backup verify backups/ops-runner-backup-....tar.gz --json",
        {
            1: "a notebook, snapshot or price file no longer matches the ledger "
            "(named; --force archives anyway)"
        },
    )
    backup_sub = add_actions(p, required=False)
    p.add_argument("--reason", default="on demand", help="why (recorded with the backup)")
    p.add_argument(
        "--force",
        action="store_true",
        help="archive even when notebooks, snapshots or prices do not match the ledger",
    )
    p.set_defaults(func=cmd_backup, action="create")
    q = add_verb(
        backup_sub,
        "verify",
        "check an archive: manifest, SHA-256s, ledger chain",
        "ops-runner backup verify ARCHIVE --json",
        _archive_exit_codes,
    )
    q.add_argument("archive")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_backup)

    p = add_verb(
        sub,
        "restore",
        "restore a verified backup archive into a workbook",
        "ops-runner restore ARCHIVE --to /new/folder",
        _archive_exit_codes,
    )
    p.add_argument("archive")
    p.add_argument("--to", help="target folder (default: the workbook)")
    p.add_argument(
        "--force", action="store_true", help="replace a live workbook (its files kept aside)"
    )
    p.set_defaults(func=cmd_restore)

    p = add_verb(
        sub,
        "drill",
        "disaster-recovery drill: restore a backup, re-run a cycle twice",
        "ops-runner drill --json",
        _drill_exit_codes,
    )
    p.add_argument("--archive", help="the backup archive (default: the newest in paths.backups)")
    p.add_argument("--now", help="a simulated instant for the record (simulated brokers only)")
    p.add_argument("--json", action="store_true", help="the drill's record as JSON")
    p.set_defaults(func=cmd_drill)
