"""`ops-runner`: the one entry point; maps expected errors to one line and an exit code.

One module per verb group (workbook, data, ledger, jobs, research, recovery), each holding
its verbs' parsers next to their handlers; ``common`` holds what they share. Each handler
imports what its verb needs inside it, so `ops-runner tick` (run every few minutes by the
scheduler) loads the tick alone, not the demo, the drill or the research stack.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence

from ops_runner import __version__
from ops_runner.cli import data, jobs, ledger, recovery, research, workbook
from ops_runner.cli.common import Parser, VerbParser, configure_logging
from ops_runner.core.errors import OpsError, describe_os_error

log = logging.getLogger(__name__)

DESCRIPTION = (
    "`ops-runner`: the one entry point; maps expected errors to one line and an exit code."
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ops-runner", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"ops-runner {__version__}")
    parser.add_argument("--workbook", help="workbook folder (default: $OPS_RUNNER_HOME or cwd)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=VerbParser)
    for group in (workbook, data, ledger, jobs, research, recovery):
        group.add_verbs(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
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
