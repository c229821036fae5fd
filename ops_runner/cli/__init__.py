"""`ops-runner`: the one entry point; maps expected errors to one line and an exit code.

One module per verb group (workbook, data, ledger, jobs, research, recovery), each holding
its verbs' parsers next to their handlers; ``common`` holds what they share. Each handler
imports what its verb needs inside it, so `ops-runner tick` (run every few minutes by the
scheduler) loads the tick alone, not the demo, the drill or the research stack.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence

from ops_runner import __version__
from ops_runner.cli import data, jobs, ledger, recovery, research, workbook
from ops_runner.cli.common import (
    Parser,
    UsageError,
    VerbParser,
    add_progress_option,
    configure_logging,
)
from ops_runner.core.errors import OpsError, describe_os_error

log = logging.getLogger(__name__)

DESCRIPTION = """\
Run and audit a monthly ETF momentum rotation: data, decision, market-on-open orders,
reconciliation, each step an executed notebook beside an append-only ledger.

A workbook is a folder with config.yaml, ledger/, reports/ and data/: --workbook DIR or
$OPS_RUNNER_HOME chooses it, else the current folder."""

EPILOG = """\
start here:
  ops-runner demo                                  three months on a SYNTHETIC sample market
  ops-runner init --workbook ~/rotation            a workbook of your own
  ops-runner --workbook ~/rotation status          state, why, incidents, drawdown
  ops-runner VERB --help                           what a verb does, an example, its exit codes

Read verbs take --json: on failure stdout then holds {"error": ..., "exit_code": ...}.
Exit codes: 0 done, 1 refused or failed, 2 a mistake in the command line or config,
3 a corrupt ledger; some verbs say more (qa, drill, ledger verify, tick)."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ops-runner", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"ops-runner {__version__}")
    parser.add_argument("--workbook", help="workbook folder (default: $OPS_RUNNER_HOME or cwd)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    add_progress_option(parser)
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        parser_class=VerbParser,
        metavar="VERB",
        title="verbs",
        help="one of these (`ops-runner VERB --help`: an example and its exit codes)",
    )
    for group in (workbook, data, ledger, jobs, research, recovery):
        group.add_verbs(sub)
    return parser


def _fail(message: str, code: int, as_json: bool, details: dict | None = None) -> int:
    """Say what failed on stderr, one line per mistake, and as a JSON object on stdout when
    --json was asked: a script never reads an empty stdout."""
    for line in message.splitlines() or ["failed"]:
        print(f"ops-runner: {line}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": message, "exit_code": code, **(details or {})}))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in words  # asked for even when the line does not parse
    try:
        args = build_parser().parse_args(words)
    except UsageError as exc:
        return _fail(str(exc), exc.exit_code, as_json)
    configure_logging(args.verbose)
    if getattr(args, "action", None) == "import" and not args.name:
        args.name = args.layout
    try:
        return int(args.func(args))
    except OpsError as exc:
        return _fail(str(exc) or type(exc).__name__, exc.exit_code, as_json, exc.details)
    except BrokenPipeError:
        # The reader went away (`ops-runner ledger export | head`): not an error of ours.
        # Point stdout at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a read-only or full workbook, a missing folder: one line, no trace
        log.debug("OSError at the command line", exc_info=True)
        return _fail(describe_os_error(exc, "write or read"), 1, as_json)
    except sqlite3.Error as exc:
        log.debug("SQLite error at the command line", exc_info=True)
        message = f"the ledger database: {exc}; run `ops-runner ledger verify`"
        return _fail(message, 1, as_json)
    except KeyboardInterrupt:
        return _fail("interrupted", 130, as_json)
