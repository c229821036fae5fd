"""What every verb group shares: argument parsers that fail in one line and teach their verb
(purpose, example, exit codes), dates, instants and logging."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

from ops_runner.core.clock import read_clock
from ops_runner.core.errors import ConfigError, OpsError
from ops_runner.ledger.store import LedgerCorrupt
from ops_runner.workbook.config import TEMPLATES, Config, mask_account


def configure_logging(verbose: bool) -> None:
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


def print_json(value: object, cfg: Config | None = None, sort_keys: bool = False) -> None:
    """Print ``value`` as JSON on stdout, the workbook's account id masked wherever it appears
    (a payload or a reason may quote it)."""
    text = json.dumps(value, indent=2, default=str, sort_keys=sort_keys)
    account = cfg.broker.account if cfg else None
    if account:
        text = text.replace(str(account), mask_account(str(account)))
    print(text)


def find_project_file(text: str, option: str, workbook: Path | None = None) -> str:
    """Return the file an option such as ``--config templates/gem.yaml`` names: the path as
    given from the working folder (or the workbook), else the same path in the project's
    templates folder, so the README's command lines work from any folder. A fallback is said
    on stderr, naming the file used; anything else is returned as given (a template name)."""
    given = Path(text).expanduser()
    if given.is_file() or given.is_absolute() or (workbook and (workbook / given).is_file()):
        return str(given.resolve()) if given.is_file() else text
    parts = given.parts[1:] if given.parts[:1] == (TEMPLATES.name,) else given.parts
    found = TEMPLATES.joinpath(*parts) if parts else None
    if found is None or not found.is_file():
        return text
    print(f"ops-runner: {option} {text}: not found from {Path.cwd()}; using the project's "
          f"{found}", file=sys.stderr)  # fmt: skip
    return str(found)


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--as-of: {text!r} is not a date; write YYYY-MM-DD") from None


def resolve_as_of(cfg: Config, text: str | None) -> date:
    """Return the session to check: the date given, else the last session whose close has passed."""
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.market.calendar import open_calendar

    if text:
        return parse_date(text)
    return open_calendar(cfg).last_closed_session(datetime.now(UTC))


def simulated_now(cfg: Config, text: str | None) -> datetime | None:
    """Return --now as an instant, refused unless the broker is a simulated one."""
    now = parse_now(text)
    if now is not None:
        from ops_runner.ops.tick import require_simulated_broker  # the tick: pandas, only here

        require_simulated_broker(cfg)
    return now


def parse_now(text: str | None) -> datetime | None:
    if not text:
        return None
    return read_clock(text)()


class UsageError(ConfigError):
    """The command line itself is wrong (unknown verb or option, a missing argument)."""


_INVALID_CHOICE = re.compile(r"invalid choice: '?([^'\s]*)'? \(choose from (.*)\)")

# A verb's exit codes beyond the ones every verb shares (code -> meaning), or a function that
# reads them from their home when help is shown (the drill's, from ops.drill).
ExitCodes = dict[int, str] | Callable[[], dict[int, str]]


def compute_exit_codes(own: ExitCodes) -> dict[int, str]:
    """Return a verb's exit codes: its own meanings over the ones every verb shares, read from
    the errors that carry them (``OpsError.exit_code`` and its subclasses)."""

    shared = {
        0: "done",
        OpsError.exit_code: "refused or failed (one line on stderr says why)",
        UsageError.exit_code: "a mistake in the command line or the config",
        LedgerCorrupt.exit_code: "the ledger is corrupt or cut: nothing written, HALT",
    }
    mine = own() if callable(own) else own
    merged = {**shared, **mine}
    usage = UsageError.exit_code  # a mistake in the line is possible whatever else 2 means
    if usage in mine and "command line" not in mine[usage]:
        merged[usage] = f"{mine[usage]}; or {shared[usage]}"
    return dict(sorted(merged.items()))


class Parser(argparse.ArgumentParser):
    """argparse that fails in one line (UsageError, exit 2, with a "did you mean" for a
    misspelled verb) and keeps the layout of its description and epilog."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        found = _INVALID_CHOICE.search(message)
        if found:
            choices = [c.strip(" '") for c in found.group(2).split(",")]
            close = difflib.get_close_matches(found.group(1), choices, n=1, cutoff=0.6)
            if close:
                message = f"unknown {found.group(1)!r}: did you mean `{close[0]}`?"
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def add_progress_option(parser: argparse.ArgumentParser, default: object = None) -> None:
    """Add --progress/--no-progress: shown at the top level (default None: a terminal
    decides), hidden after a verb (``argparse.SUPPRESS``: given there, it still counts)."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=default,
        help="lines about long work on stderr (default: only when stderr is a terminal)"
        if default is None
        else argparse.SUPPRESS,
    )


class Progress:
    """Lines about long work (a sweep, a backtest, a notebook run by hand) on stderr, each with
    the seconds since the command began; only when stderr is a terminal or --progress asked,
    so scheduled runs, pipes and tests read clean output."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._began = time.monotonic()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Progress:
        asked = getattr(args, "progress", None)
        return cls(sys.stderr.isatty() if asked is None else bool(asked))

    def __call__(self, line: str) -> None:
        if self.enabled:
            took = time.monotonic() - self._began
            print(f"[{took:6.1f} s] {line}", file=sys.stderr, flush=True)


class VerbParser(Parser):
    """A verb's parser: takes --workbook and --progress after the verb too (`ops-runner init
    --workbook DIR`); its help ends with an example and the verb's exit codes."""

    def __init__(self, *args, **kwargs) -> None:
        self.example: str = kwargs.pop("example", "")
        self.exit_codes: ExitCodes = kwargs.pop("exit_codes", {})
        super().__init__(*args, **kwargs)
        self.add_argument("--workbook", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        add_progress_option(self, default=argparse.SUPPRESS)

    def format_help(self) -> str:
        # The exit codes are read from their errors only when help is asked for: building the
        # parser (every tick) imports none of them.
        lines = []
        if self.example:
            lines += ["example:", *(f"  {line}" for line in self.example.splitlines()), ""]
        lines.append("exit codes:")
        lines += [f"  {code}  {text}" for code, text in compute_exit_codes(self.exit_codes).items()]
        self.epilog = "\n".join(lines)
        return super().format_help()


def add_actions(verb: argparse.ArgumentParser, required: bool = True) -> argparse._SubParsersAction:
    """Add the actions of a verb that has them (`ops-runner ledger verify`), each a VerbParser."""
    return verb.add_subparsers(
        dest="action", required=required, parser_class=VerbParser, metavar="ACTION"
    )


def add_verb(
    sub: argparse._SubParsersAction,
    name: str,
    purpose: str,
    example: str,
    exit_codes: ExitCodes | None = None,
    aliases: Sequence[str] = (),
) -> VerbParser:
    """Add one verb (or a verb's action): ``purpose`` is its one line in the list and the first
    line of its help, ``example`` a command line as a user types it, ``exit_codes`` what its
    codes mean beyond the shared ones."""
    return sub.add_parser(name, help=purpose, description=purpose, example=example,
                          exit_codes=exit_codes or {}, aliases=list(aliases))  # fmt: skip


def optional_date(text: str | None, name: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a date; write YYYY-MM-DD") from None
