"""Text as one line: what a log line, an alert's subject or a ledger record's reason holds."""

from __future__ import annotations


def compute_one_line(text: object, limit: int) -> str:
    """Return ``text`` with its whitespace runs as single spaces, cut to ``limit`` characters
    ("..." marking a cut)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
