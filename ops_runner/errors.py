"""The workbook's one exception tree: every expected failure is an OpsError that says what to do."""

from __future__ import annotations


class OpsError(Exception):
    """Root of every expected failure. The CLI prints ``str(error)`` on one line, no traceback.

    ``exit_code`` is what the CLI returns for it.
    """

    exit_code = 1


class ConfigError(OpsError):
    """config.yaml is missing, malformed or impossible. Carries the offending ``key``."""

    exit_code = 2

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class SecretError(OpsError):
    """A secret is missing, or stored where secrets must not be."""

    exit_code = 2


class CalendarError(OpsError):
    """A calendar question with no honest answer (not a session, bad time)."""

    exit_code = 2


class CalendarCoverageError(CalendarError):
    """A date past the span the installed calendar is trusted to know."""


class DataError(OpsError):
    """The price store cannot give what was asked (unknown source or symbol, corrupt file)."""


class ImportRefused(DataError):
    """A file was refused on import; nothing was written.

    Fields: ``path`` (file), ``line`` (1-based line in that file, or None), ``problem``.
    """

    exit_code = 2

    def __init__(self, path: object, problem: str, line: int | None = None) -> None:
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"import refused: {where}: {problem}; nothing was imported")
        self.path = str(path)
        self.line = line
        self.problem = problem


class WorkbookError(OpsError):
    """The workbook folder is missing or not initialised."""

    exit_code = 2


class LedgerError(OpsError):
    """The ledger refused or could not do what was asked; nothing was written."""

    exit_code = 1
