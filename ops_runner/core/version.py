"""The code version a decision or baseline records: the package version, and in a checkout
the git commit and whether the package's files differ from it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from ops_runner import __version__

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def compute_code_version() -> dict[str, Any]:
    """Return the package version always, and the git commit and dirty flag in a checkout."""
    version: dict[str, Any] = {"package": __version__, "git_commit": None, "git_dirty": None}
    try:
        commit = subprocess.run(
            ["git", "-C", str(PACKAGE_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(PACKAGE_ROOT), "status", "--porcelain", "--untracked-files=no",
             "--", "ops_runner"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return version  # not a checkout (an installed package): the version alone must do
    version.update(git_commit=commit, git_dirty=bool(dirty))
    return version
