"""`ops-runner` verbs for recovery: backups, restore and the disaster-recovery drill."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ops_runner.cli.common import (
    VerbParser,
    parse_now,
)


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


def cmd_drill(args: argparse.Namespace) -> int:
    from ops_runner.ops import drill
    from ops_runner.ops.tick import require_simulated_broker
    from ops_runner.workbook.config import load_config

    cfg = load_config(args.workbook)
    now = parse_now(args.now)
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


def add_verbs(sub: argparse._SubParsersAction) -> None:
    """Add this group's verbs to the command's subparsers."""
    p = sub.add_parser("backup", help="archive the ledger, notebooks, snapshots, manifests, config")
    backup_sub = p.add_subparsers(dest="action", parser_class=VerbParser)
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

    p = sub.add_parser("drill", help="disaster-recovery drill: restore a backup, re-run a cycle")
    p.add_argument("--archive", help="the backup archive (default: the newest in paths.backups)")
    p.add_argument("--now", help="a simulated instant for the record (simulated brokers only)")
    p.set_defaults(func=cmd_drill)
