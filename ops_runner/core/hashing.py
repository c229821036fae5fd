"""SHA-256 digests: of bytes, of text (as UTF-8), and of files read in chunks."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def compute_sha256(data: bytes | str) -> str:
    """Return the hex SHA-256 of ``data`` (text is hashed as its UTF-8 bytes).

    Short ids and keys take a prefix: ``compute_sha256(key)[:16]``.
    """
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def read_size_and_sha256(path: Path) -> tuple[int, str]:
    """Return (size in bytes, hex SHA-256) of the file at ``path``, read in 1 MiB chunks.

    Raises OSError when the file cannot be read.
    """
    digest, size = hashlib.sha256(), 0
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def read_sha256(path: Path) -> str:
    """Return the hex SHA-256 of the file at ``path``. Raises OSError when it cannot be read."""
    return read_size_and_sha256(path)[1]
