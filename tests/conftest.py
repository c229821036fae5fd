"""Shared fixtures: price stores, sample workbooks, and a byte-level snapshot of a folder."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from ops_runner.ledger.init import init_workbook
from ops_runner.market.calendar import open_calendar
from ops_runner.market.prices import open_store
from ops_runner.market.sources.sample import write_sample
from ops_runner.workbook.config import load_config

HEAVY_MARKERS = ("notebook", "slow", "subprocess")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the modules that hold a heavy test (a kernel, a child process, a long walk) first,
    each module's tests kept together and in order: the workers start on the long ones and
    the quick ones fill in at the end, instead of one worker finishing a long walk alone
    while the others idle. Only the order changes; every test runs."""
    heavy = {
        item.nodeid.split("::")[0]
        for item in items
        if any(item.get_closest_marker(name) for name in HEAVY_MARKERS)
    }
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in heavy)  # a stable sort


# What `make test-fast` leaves out is what these markers say; the check below keeps them true.
_KERNEL = "ipykernel"
_PROGRAMS = ("python", "ops-runner")


@pytest.fixture(scope="session", autouse=True)
def _jobs_run_their_notebooks_in_process() -> Iterator[None]:
    """A job's notebook runs its cells in the test process (``OPS_RUNNER_IN_PROCESS_NOTEBOOKS``,
    the simulated broker only) unless the test is marked ``notebook``: the tick's tests test
    the tick, and only the notebook tests pay seconds for each kernel."""
    from ops_runner.runtime.notebooks import IN_PROCESS_ENV

    patch = pytest.MonkeyPatch()
    patch.setenv(IN_PROCESS_ENV, "1")
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _markers_say_what_the_test_starts(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that starts a Jupyter kernel without the ``notebook`` marker, or runs Python
    or ``ops-runner`` in a child process without ``subprocess`` (or ``notebook``): the markers
    decide what ``make test-fast`` runs, so they must be complete."""
    import subprocess
    import threading

    started: list[str] = []
    original = subprocess.Popen.__init__
    # A thread an earlier test left behind (a kernel manager restarting a killed kernel) is not
    # this test's doing: only this thread and the threads it starts count.
    earlier = {t.ident for t in threading.enumerate()} - {threading.get_ident()}

    def recording(self, args, *rest, **options):  # type: ignore[no-untyped-def]
        if threading.get_ident() not in earlier:
            words = [str(args)] if isinstance(args, str | bytes | Path) else [str(a) for a in args]
            started.append(" ".join(words))
        original(self, args, *rest, **options)

    patch = pytest.MonkeyPatch()
    patch.setattr(subprocess.Popen, "__init__", recording)
    if request.node.get_closest_marker("notebook"):
        from ops_runner.runtime.notebooks import IN_PROCESS_ENV

        patch.delenv(IN_PROCESS_ENV, raising=False)  # a notebook test: real kernels
    try:
        yield
    finally:
        patch.undo()
    marks = {mark.name for mark in request.node.iter_markers()}
    kernels = [cmd for cmd in started if _KERNEL in cmd]
    programs = [cmd for cmd in started if Path(cmd.split(" ")[0]).name.startswith(_PROGRAMS)]
    if kernels and "notebook" not in marks:
        pytest.fail(f"started a Jupyter kernel without @pytest.mark.notebook: {kernels[0]}")
    if programs and not marks & {"notebook", "subprocess"}:
        pytest.fail(f"ran a child process without @pytest.mark.subprocess: {programs[0][:120]}")


def snapshot_folder(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes); empty when the folder is absent."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, bytes]]:
    return snapshot_folder


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "workbook" / "data"


@pytest.fixture
def store(store_root: Path):
    from ops_runner.market.prices import PriceStore

    return PriceStore(store_root)


def make_sample_workbook(root: Path) -> Path:
    """Initialise a workbook at ``root`` with the SYNTHETIC sample market in its store: a copy
    of one built once per test process (writing the market's Parquet files took 0.2 s a time,
    and a test process makes a few hundred)."""
    import atexit
    import shutil
    import tempfile

    key = ("sample", None)
    if key not in _BUILT or not _BUILT[key].is_dir():
        base = Path(tempfile.mkdtemp(prefix="ops-sample-"))
        atexit.register(shutil.rmtree, base, True)
        _BUILT[key] = _build_sample_workbook(base / "wb")
    shutil.copytree(_BUILT[key], root, dirs_exist_ok=True)
    return root


def _build_sample_workbook(root: Path) -> Path:
    from ops_runner.ledger.init import init_workbook

    init_workbook(root, template="demo")
    cfg = load_config(root)
    write_sample(open_store(cfg), calendar=open_calendar(cfg))
    return root


@pytest.fixture(scope="module")
def sample_workbook(tmp_path_factory) -> Path:
    """A sample workbook shared by one test module (tests must not change its data)."""
    return make_sample_workbook(tmp_path_factory.mktemp("sample-wb"))


NOVEMBER_DECIDED_AT = "2025-11-28T21:30:00Z"  # Friday's 13:00 early close + the decision delay


# Worlds built once per test process, copied for each test that asks (a workbook is a folder:
# the fault matrix's copies show a copy behaves as the original). Keyed by the approval key,
# which the baseline approval signs with.
_BUILT: dict[tuple[str, str | None], Path] = {}


def copy_of_built(name: str, build: Callable[[Path], Path], root: Path) -> Path:
    import atexit
    import os
    import shutil
    import tempfile

    key = (name, os.environ.get("OPS_RUNNER_APPROVAL_KEY"))
    if key not in _BUILT or not _BUILT[key].is_dir():
        base = Path(tempfile.mkdtemp(prefix=f"ops-{name}-"))
        atexit.register(shutil.rmtree, base, True)
        _BUILT[key] = build(base / "wb")
    shutil.copytree(_BUILT[key], root)
    return root


def make_undecided_november(root: Path) -> Path:
    """A workbook one real cycle old (October 2025 holds 1,358 VEU), baseline approved, before
    any tick: the November rebalance (100% AGG) is still to be decided.

    Only the cycle's own jobs run (no weekly audit, backup or investigation notebooks)."""
    return copy_of_built("undecided", _build_undecided_november, root)


def _build_undecided_november(root: Path) -> Path:
    import yaml

    from ops_runner.ops.checks import approve_baseline
    from ops_runner.simulators.history import simulate_history

    result = simulate_history(root, cycles=1, first_cycle="2025-10")
    config = result.workbook / "config.yaml"
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["schedule"].update(weekly_audit=False, weekly_backup=False, investigate_incidents=False)
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    approve_baseline(load_config(result.workbook), "the simulated history as built")
    return result.workbook


def make_decided_november(root: Path) -> Path:
    """``make_undecided_november``, then the tick after the 2025-11-28 close: the checks, data
    QA and decision notebooks ran and are done; the state is RUN."""
    return copy_of_built("decided", _build_decided_november, root)


def _build_decided_november(root: Path) -> Path:
    from datetime import datetime

    from ops_runner.ops.tick import tick

    workbook = _build_undecided_november(root)
    decided_at = datetime.fromisoformat(NOVEMBER_DECIDED_AT.replace("Z", "+00:00"))
    first = tick(load_config(workbook), now=decided_at)
    assert "decision:2025-11" in first.message and str(first.state) == "RUN", first.message
    return workbook


@contextlib.contextmanager
def read_only(*roots: Path) -> Iterator[None]:
    """Make every folder and file under ``roots`` unwritable, for root too (``chattr +i``;
    root ignores permission bits), ``chmod`` otherwise; skip the test where neither works."""
    import os
    import shutil
    import subprocess

    inside = sorted(p for root in roots for p in root.rglob("*"))
    items = [*roots, *[p for p in inside if p.is_dir()], *[p for p in inside if p.is_file()]]
    as_root = os.geteuid() == 0
    if as_root and not shutil.which("chattr"):
        pytest.skip("running as root without chattr: cannot make a folder read-only")
    done: list[Path] = []
    try:
        for item in items:
            if as_root:
                result = subprocess.run(["chattr", "+i", str(item)], capture_output=True)
                if result.returncode != 0:
                    pytest.skip(f"chattr +i refused here: {result.stderr.decode().strip()}")
            else:
                item.chmod(0o555 if item.is_dir() else 0o444)
            done.append(item)
        probe = roots[0] / ".probe"
        with contextlib.suppress(OSError):
            probe.touch()
            probe.unlink()
            pytest.skip("the folder stayed writable")
        yield
    finally:
        for item in reversed(done):
            if as_root:
                subprocess.run(["chattr", "-i", str(item)], capture_output=True)
            else:
                item.chmod(0o755 if item.is_dir() else 0o644)


def ready_to_decide(cfg, session) -> None:
    """What the runbook requires before a decision, done the real way: an approved baseline
    (approved now if there is none or it changed) and a clean data QA of ``session`` recorded
    by the real QA on the data as it is."""
    from ops_runner.ledger import open_ledger
    from ops_runner.market.qa import run_qa
    from ops_runner.ops.checks import approve_baseline, check_baseline, record_data_qa

    with open_ledger(cfg) as ledger:
        approved = check_baseline(cfg, ledger).passed
    if not approved:
        approve_baseline(cfg, "reviewed for this test")
    report = run_qa(cfg, session)
    assert not report.blocking, report.summary()
    record_data_qa(cfg, report)


def run_clean_cycle(cfg, ledger, broker, clock, decided: str, session: str) -> dict:
    """Run one cycle the real way on a simulated clock (``clock.now`` is set as it goes):
    decide after ``decided``'s close, plan at 21:30 UTC, submit at 13:30 UTC on ``session``
    (before its open), reconcile at 15:00 UTC (after it); assert each step ends clean and
    return the Decision Record."""
    from datetime import UTC, datetime

    from ops_runner.execution.plan import read_plan
    from ops_runner.execution.reconcile import ReconciliationStatus, reconcile
    from ops_runner.execution.submission import SubmissionStatus, submit_plan
    from ops_runner.ops.decision import decide

    def utc(day: str, hhmm: str) -> datetime:
        return datetime.fromisoformat(f"{day}T{hhmm}:00+00:00").astimezone(UTC)

    ready_to_decide(cfg, decided)
    record = decide(cfg, decided).record
    clock.now = utc(decided, "21:30")
    plan = read_plan(cfg, broker, record)
    clock.now = utc(session, "13:30")
    assert submit_plan(cfg, ledger, broker, plan, clock.now).status is SubmissionStatus.SUBMITTED
    clock.now = utc(session, "15:00")
    report = reconcile(cfg, ledger, broker, record["cycle_id"], session, clock.now)
    assert report.status is ReconciliationStatus.CLEAN, report.summary()
    return record


# Instants of the sample market's calendar (New York 2025): the eve of a decision, and a holiday.
EVE = datetime(2025, 11, 26, 21, 35, tzinfo=UTC)  # P's close + 35 min: P's checks are due
IDLE = datetime(2025, 11, 27, 15, 0, tzinfo=UTC)  # Thanksgiving: nothing opens


def make_workbook(root: Path, **changes) -> Path:
    init_workbook(root, template="demo")
    config = root / "config.yaml"
    values = yaml.safe_load(config.read_text())
    for dotted, value in changes.items():
        *path, leaf = dotted.split(".")
        node = values
        for part in path:
            node = node[part]
        node[leaf] = value
    config.write_text(yaml.safe_dump(values))
    cfg = load_config(root)
    write_sample(open_store(cfg), calendar=open_calendar(cfg))
    return root


# -- pages in a real browser --------------------------------------------------------------------

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
NO_BROWSER = (
    "no headless Chromium: install the chromium package (apt-get install chromium) "
    "to run the browser test"
)
WINDOW = (1400, 900)

# Runs at the page's load event and writes what a reviewer would see into the DOM, which
# --dump-dom then returns: elements running past the right edge, where the verdict sits,
# every image, every link.
_MEASURE = """<script>window.addEventListener("load", function () {
  var width = document.documentElement.clientWidth, wide = [];
  document.querySelectorAll("body *").forEach(function (el) {
    var box = el.getBoundingClientRect();
    if (box.width > 0 && box.right > width + 1 && wide.length < 20)
      wide.push(el.tagName + "#" + el.id + "." + el.className + " right=" + Math.round(box.right)
                + " " + (el.textContent || "").trim().slice(0, 60));
  });
  var verdict = document.querySelector("[data-verdict]");
  var box = verdict ? verdict.getBoundingClientRect() : null;
  var found = {
    width: width, height: window.innerHeight, wide: wide,
    scroll_width: document.documentElement.scrollWidth,
    verdict: box ? {top: box.top, bottom: box.bottom, text: verdict.textContent} : null,
    images: Array.from(document.images).map(function (i) {
      return {src: i.getAttribute("src").slice(0, 40), ok: i.complete && i.naturalWidth > 0}; }),
    links: Array.from(document.querySelectorAll("a[href]")).map(function (a) {
      var href = a.getAttribute("href");
      return {href: href, anchor: href.charAt(0) === "#" ?
              document.getElementById(decodeURIComponent(href.slice(1))) !== null : null}; })
  };
  var out = document.createElement("pre");
  out.id = "page-check";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});</script>"""


def inspect_in_browser(page: Path, scratch: Path, screenshot: Path | None = None) -> dict:
    """Open a copy of ``page`` in headless Chromium at 1400x900 (one process: the DOM and, when
    asked, a screenshot) and return what the page showed: ``wide`` elements past the right
    edge, the ``verdict`` box (the element marked ``data-verdict``), ``images`` (each loaded or
    not) and ``links`` (each href; an anchor says whether its target exists; files are checked
    by ``broken_links`` against the original page's folder). Skips when no Chromium."""
    import html
    import json
    import re
    import shutil
    import subprocess

    binary = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if binary is None:
        pytest.skip(NO_BROWSER)
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / f"checked-{page.name}"
    text = page.read_text(encoding="utf-8")
    copy.write_text(text.replace("</body>", _MEASURE + "</body>", 1), encoding="utf-8")
    shot = [f"--screenshot={screenshot}"] if screenshot else []
    done = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={scratch / 'chromium-profile'}",
         f"--window-size={WINDOW[0]},{WINDOW[1]}", *shot, "--dump-dom", copy.as_uri()],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    found = re.search(r'<pre id="page-check">(.*?)</pre>', done.stdout, re.S)
    assert done.returncode == 0 and found, done.stderr[-2000:]
    result = json.loads(html.unescape(found.group(1)))
    result["dom"] = done.stdout
    return result


def broken_links(page: Path, seen: dict) -> list[str]:
    """Return the hrefs of ``seen`` that do not resolve from ``page``'s own folder: a relative
    file that is absent, an anchor with no target, or anything absolute (the folder must work
    copied or served)."""
    from urllib.parse import unquote, urlsplit

    broken = []
    for link in seen["links"]:
        href = link["href"]
        if href.startswith("#"):
            if not link["anchor"]:
                broken.append(href)
            continue
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or href.startswith("/"):
            broken.append(href)
        elif not (page.parent / unquote(parts.path)).is_file():
            broken.append(href)
    return broken
