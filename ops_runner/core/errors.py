"""The workbook's one exception tree: every expected failure is an OpsError that says what to do."""

from __future__ import annotations

import enum


class OpsError(Exception):
    """Root of every expected failure. The CLI prints ``str(error)`` on one line, no traceback.

    ``exit_code`` is what the CLI returns for it; ``details``, when a verb sets them, join the
    JSON error object a --json caller reads (what was known before the failure).
    """

    exit_code = 1
    details: dict[str, object] | None = None


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


class CycleError(OpsError):
    """A text that is not a cycle id such as 2025-11 (year and month, YYYY-MM)."""

    exit_code = 2


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


class VendorProblem(enum.Enum):
    """What went wrong with a data vendor's answer; the value is how a message names it."""

    INVALID_KEY = "invalid API key"
    RATE_LIMITED = "rate limited"
    REFUSED = "request refused"
    UNKNOWN_SYMBOL = "unknown symbol"
    EMPTY_SERIES = "no bars"
    BAD_JSON = "truncated or invalid JSON"
    HTML_PAGE = "an HTML page instead of data"
    SERVER_ERROR = "server error"
    TIMEOUT = "no answer in time"
    UNREACHABLE = "cannot connect"
    BAD_BARS = "bars fail the sanity checks"


_VENDOR_ADVICE = {
    VendorProblem.INVALID_KEY: "check the {vendor} API key in the workbook's secrets",
    VendorProblem.RATE_LIMITED: "wait for the {vendor} limit to reset (or raise min_interval), "
    "then fetch again",
    VendorProblem.REFUSED: "check the {vendor} plan and request",
    VendorProblem.UNKNOWN_SYMBOL: "check the ticker in the universe (config.yaml)",
    VendorProblem.EMPTY_SERIES: "check the dates and that {vendor} carries the ticker for them",
    VendorProblem.BAD_JSON: "the answer was cut off or garbled: fetch again",
    VendorProblem.HTML_PAGE: "{vendor} or a proxy answered with a web page: check the base URL, "
    "then fetch again later",
    VendorProblem.SERVER_ERROR: "{vendor} is failing: fetch again later",
    VendorProblem.TIMEOUT: "fetch again later, or raise the timeout",
    VendorProblem.UNREACHABLE: "check the network and the {vendor} base URL",
    VendorProblem.BAD_BARS: "report it to {vendor} or use the secondary provider",
}


class VendorError(DataError):
    """A data vendor's answer could not be used; nothing was stored.

    Fields: ``vendor``, ``symbol``, ``problem`` (a VendorProblem), ``detail`` (one line, never
    an API key) and ``attempts`` (requests made before giving up).
    """

    def __init__(
        self, vendor: str, symbol: str, problem: VendorProblem, detail: str = "", attempts: int = 1
    ) -> None:
        after = f" after {attempts} attempts" if attempts > 1 else ""
        shown = f" ({detail})" if detail else ""
        advice = _VENDOR_ADVICE[problem].format(vendor=vendor)
        super().__init__(
            f"{vendor} {symbol}: {problem.value}{shown}{after}; {advice}; nothing was stored"
        )
        self.vendor = vendor
        self.symbol = symbol
        self.problem = problem
        self.detail = detail
        self.attempts = attempts


class WorkbookError(OpsError):
    """The workbook folder is missing or not initialised."""

    exit_code = 2


class LedgerError(OpsError):
    """The ledger refused or could not do what was asked; nothing was written."""

    exit_code = 1


class IncidentError(OpsError):
    """An incident request that cannot be honoured as asked (unknown id, closed, no reason)."""


class NotWritable(OpsError):
    """A file the workbook must write cannot be written (read-only, full disk, permissions).

    Fields: ``path`` and ``errno`` (of the OSError behind it).
    """

    def __init__(self, what: str, path: object, exc: OSError, consequence: str = "") -> None:
        super().__init__(describe_os_error(exc, what, path, consequence))
        self.path = str(path)
        self.errno = exc.errno


def describe_os_error(exc: OSError, what: str, path: object = None, consequence: str = "") -> str:
    """Return one line for an OSError: what failed, where, why, and what to do next."""
    import errno as codes

    where = path if path is not None else exc.filename
    reason = exc.strerror or str(exc) or type(exc).__name__
    fixes = {
        codes.ENOSPC: "free space on that disk, then run it again",
        codes.EDQUOT: "free space (the disk quota is used up), then run it again",
        codes.EROFS: "the file system is mounted read-only: remount it read-write",
        codes.EACCES: "give this user write access to that folder",
        codes.EPERM: "the file or folder may not be changed (permissions, or marked immutable)",
        codes.ENOENT: "check the path in config.yaml (paths.*) and that the folder exists",
    }
    fix = fixes.get(exc.errno or -1, "check the disk and the folder's permissions")
    parts = [f"cannot {what} {where}: {reason}" if where else f"cannot {what}: {reason}"]
    return "; ".join([*parts, *([consequence] if consequence else []), fix])
