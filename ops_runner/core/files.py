"""File I/O: atomic replacement of a file, durable renames, and an exclusive lock file."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ops_runner.core.faults import inject


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (fsync the folder itself where the OS allows)."""
    with contextlib.suppress(OSError):  # some platforms cannot open a folder; the file is synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def open_atomic(path: Path) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only when the block ends without an error.

    The file is a temporary one beside ``path`` (``.<name>.*.tmp``); at the end it is flushed,
    fsynced and renamed over ``path`` with ``os.replace``, then the folder is fsynced. An
    exception in the block (or while writing) removes the temporary file and leaves ``path``
    as it was. Raises OSError when the folder cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, os.replace.

    Raises OSError (the old file, if any, is left as it was).
    """
    with open_atomic(path) as handle:
        handle.write(data[: len(data) // 2])
        inject(f"write:{Path(path).name}")  # a disk that fills mid-write (tests)
        handle.write(data[len(data) // 2 :])


@contextlib.contextmanager
def hold_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on the file ``path`` (created if absent) while the block runs.

    Blocks until the lock is free; the OS releases it if the process dies.
    """
    with open(path, "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
