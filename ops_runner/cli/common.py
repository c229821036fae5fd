"""What every verb group shares: argument parsers that fail in one line, dates, instants and
logging."""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, date, datetime

from ops_runner.core.clock import read_clock
from ops_runner.core.errors import ConfigError
from ops_runner.workbook.config import Config


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


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--as-of: {text!r} is not a date; write YYYY-MM-DD") from None


def resolve_as_of(cfg: Config, text: str | None) -> date:
    """Return the session to check: the date given, else the last session whose close has passed."""
    from ops_runner.market.calendar import open_calendar

    if text:
        return parse_date(text)
    return open_calendar(cfg).last_closed_session(datetime.now(UTC))


def simulated_now(cfg: Config, text: str | None) -> datetime | None:
    """Return --now as an instant, refused unless the broker is a simulated one."""
    now = parse_now(text)
    if now is not None:
        from ops_runner.ops.tick import require_simulated_broker

        require_simulated_broker(cfg)
    return now


def parse_now(text: str | None) -> datetime | None:
    if not text:
        return None
    return read_clock(text)()


class Parser(argparse.ArgumentParser):
    """argparse with exit code 2 and one line for usage errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"ops-runner: {message} (see `{self.prog} --help`)\n")


class VerbParser(Parser):
    """A verb's parser: takes --workbook after the verb too (`ops-runner init --workbook DIR`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--workbook", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def optional_date(text: str | None, name: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a date; write YYYY-MM-DD") from None
