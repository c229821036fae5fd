"""The published slippage report: one stable HTML page per cycle, from its executed notebook."""

from __future__ import annotations

import contextlib
import html
import json
import logging
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ops_runner.core.cycle import Cycle
from ops_runner.core.errors import CycleError, LedgerError
from ops_runner.core.events import EventKind
from ops_runner.core.files import hold_lock, write_bytes_atomic
from ops_runner.core.hashing import read_sha256
from ops_runner.execution.slippage import JOB, SlippageError
from ops_runner.ledger import open_ledger
from ops_runner.reports.pages import write_html
from ops_runner.runtime.notebooks import read_scraps
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)

REPORTS_FOLDER = "slippage"  # <reports>/slippage/<cycle>.html, one stable page per cycle
SOURCE_META = "ops-runner-slippage-source"
_SOURCE = re.compile(rf'<meta name="{SOURCE_META}" content="([^"]*)"')


def compute_report_path(cfg: Config, cycle: str) -> Path:
    """Return <reports>/slippage/<cycle>.html. Raises SlippageError for a cycle not YYYY-MM."""
    try:
        Cycle.parse(cycle)  # also keeps a path out of the file name ("../x")
    except CycleError as error:
        raise SlippageError(str(error)) from None
    return cfg.path("reports") / REPORTS_FOLDER / f"{cycle}.html"


def read_report_source(page: Path) -> dict[str, Any] | None:
    """Return the stamp a published page carries (cycle, notebook, sha256, seq, run_id), or
    None when the page is absent or carries none."""
    try:
        with open(page, "rb") as handle:
            head = handle.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return None
    found = _SOURCE.search(head)
    if found is None:
        return None
    try:
        stamp = json.loads(html.unescape(found.group(1)))
    except ValueError:
        return None
    return stamp if isinstance(stamp, dict) else None


def _registered(cfg: Config, notebook: Path) -> tuple[int | None, str | None]:
    """Return (seq, run id) of the ArtifactRecorded naming ``notebook``, (None, None) if none."""
    try:
        with open_ledger(cfg, create=False, readonly=True) as ledger:
            artifacts = list(ledger.events(kind=str(EventKind.ARTIFACT_RECORDED)))
    except LedgerError:
        return None, None
    for event in reversed(artifacts):
        path = Path(str(event.payload.get("path") or ""))
        if (path if path.is_absolute() else cfg.workbook / path).resolve() == notebook:
            return event.seq, event.payload.get("run_id")
    return None, None


def _require_completed(notebook: Path, cycle: str) -> None:
    if not notebook.is_file():
        raise SlippageError(f"no executed notebook at {notebook}; run `ops-runner report slippage "
                            f"--cycle {cycle}` first")  # fmt: skip
    try:
        completion = read_scraps(notebook).get("completion")
    except Exception as exc:  # nbformat, scrapbook and JSON each raise their own
        raise SlippageError(
            f"{notebook} is not a readable notebook ({type(exc).__name__})"
        ) from None
    if not (isinstance(completion, dict) and completion.get("job") == JOB
            and completion.get("cycle") == cycle):  # fmt: skip
        raise SlippageError(
            f"{notebook} holds no completed slippage report of cycle {cycle} (a failed or partial "
            "run, or another cycle's); the published report stays as it was"
        )


@contextlib.contextmanager
def _publishing(folder: Path) -> Iterator[None]:
    """Hold the folder's publishing lock: compare-and-replace is one step between processes."""
    folder.mkdir(parents=True, exist_ok=True)
    with hold_lock(folder / ".publish.lock"):
        yield


def _superseded(current: dict[str, Any] | None, seq: int | None) -> bool:
    """Whether the published page comes from a run the ledger recorded after ``seq``."""
    newer = (current or {}).get("seq")
    return isinstance(newer, int) and seq is not None and newer > seq


def publish_report(cfg: Config, notebook: Path, cycle: str) -> Path:
    """Render an executed slippage notebook of ``cycle`` to <reports>/slippage/<cycle>.html, the
    cycle's stable page; return its path.

    The page carries a stamp of its source (notebook, SHA-256, ledger seq and run id) and is
    replaced atomically under a lock. Publishing the same notebook again renders nothing; a
    notebook the ledger recorded before the one published does not replace it (the newer run's
    page stays). Raises SlippageError for a bad cycle id or a notebook that is missing or holds
    no completion record of this cycle's report (a failed or partial run: the page stays).
    """
    target = compute_report_path(cfg, cycle)
    notebook = Path(notebook).resolve()
    _require_completed(notebook, cycle)
    sha256 = read_sha256(notebook)
    current = read_report_source(target)
    if current and current.get("sha256") == sha256:
        return target
    seq, run_id = _registered(cfg, notebook)
    if _superseded(current, seq):
        log.info("slippage %s: page from event %s kept over %s", cycle, (current or {}).get("seq"),
                 notebook)  # fmt: skip
        return target
    try:
        relative = notebook.relative_to(cfg.workbook.resolve()).as_posix()
    except ValueError:
        relative = str(notebook)
    stamp = {"cycle": cycle, "notebook": relative, "sha256": sha256, "seq": seq, "run_id": run_id}
    meta = f'<meta name="{SOURCE_META}" content="{html.escape(json.dumps(stamp), quote=True)}">'
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".render-", dir=target.parent) as scratch:
        rendered = write_html(notebook, Path(scratch) / "page.html", located_at=target)
        page = rendered.read_text(encoding="utf-8")
    page, found = re.subn(r"<head[^>]*>", lambda m: m.group(0) + meta, page, count=1)
    page = page if found else meta + page
    with _publishing(target.parent):
        if _superseded(read_report_source(target), seq):  # another process got there first
            return target
        write_bytes_atomic(target, page.encode("utf-8"))
    log.info("slippage %s published: %s -> %s", cycle, relative, target)
    return target
