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
