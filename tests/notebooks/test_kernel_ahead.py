"""The tick's next notebook starts its kernel while the current one runs (issue 21): the night
pays one kernel start less per notebook, and every job still runs in a kernel of its own.

Witnesses independent of the code under test: the operating system's process table (the
kernels this process started, alive or gone), the executed notebooks' execution counts (a
kernel that ran anything before would not start at 1) and the runtime folder's socket files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pytest
from conftest import EVE, make_workbook
from jupyter_core.paths import jupyter_runtime_dir

from ops_runner.core.events import EventKind
from ops_runner.ledger import open_ledger
from ops_runner.ops.checks import approve_baseline
from ops_runner.ops.tick import tick
from ops_runner.runtime import notebooks
from ops_runner.workbook.config import load_config

pytestmark = pytest.mark.notebook

# 2025-11-28 closes early at 13:00 ET (18:00Z): its data QA and decision are due at 18:35Z, and
# as the week's last session its audit too. Three notebooks, back to back, in one tick.
NIGHT = datetime(2025, 11, 28, 18, 35, tzinfo=UTC)


def kernels_alive() -> set[int]:
    """Pids of this process's children running ipykernel, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        parent = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid"))
        if int(parent) == os.getpid() and b"ipykernel" in command:
            found.add(int(entry.name))
    return found


def state_of(pid: int) -> str | None:
    """The process's state letter from /proc (Z: a zombie), None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next(line.split()[1] for line in status.splitlines() if line.startswith("State"))


def sockets() -> set[str]:
    runtime = Path(jupyter_runtime_dir())
    return {p.name for p in runtime.glob("opsr-*")} if runtime.is_dir() else set()


@pytest.fixture
def started(monkeypatch) -> Iterator[list[bool]]:
    """Each run's answer to "was a kernel started ahead for me?", in order. The kernels' socket
    files go to a runtime folder of this test's own (other tests' kernels run beside it)."""
    runtime = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: a socket path fits in it
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", runtime)
    answers: list[bool] = []
    take = notebooks._take_spare

    def spy():
        manager = take()
        answers.append(manager is not None)
        return manager

    monkeypatch.setattr(notebooks, "_take_spare", spy)
    yield answers
    shutil.rmtree(runtime, ignore_errors=True)


def test_tick_when_three_notebooks_are_due_each_finds_its_kernel_started(tmp_path, started):
    cfg = load_config(make_workbook(tmp_path / "wb"))
    approve_baseline(cfg, "reviewed", now=EVE)
    tick(cfg, now=EVE)
    before, kept = kernels_alive(), sockets()

    result = tick(cfg, now=NIGHT)

    jobs = [line.split(":")[0] for line in result.ran]
    assert [j for j in jobs if j in ("data_qa", "decision", "audit")] == [
        "data_qa", "decision", "audit"]  # fmt: skip
    # The first found its kernel started as the tick saw it due; the others, during the one
    # before them.
    assert started == [True, True, True]
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        artifacts = [e.payload for e in ledger.events(kind=str(EventKind.ARTIFACT_RECORDED))]
    for artifact in artifacts:  # a fresh kernel each: its first cell is the kernel's first
        cells = nbformat.read(cfg.workbook / artifact["path"], 4).cells
        counts = [c.execution_count for c in cells if c.cell_type == "code"]
        assert counts == list(range(1, len(counts) + 1)), artifact["path"]
    assert len(artifacts) == 3
    assert kernels_alive() == before and sockets() == kept  # none left running, none left over


def test_kernel_started_ahead_when_no_notebook_takes_it_is_shut_down_with_its_sockets(
    tmp_path, started
):
    workbook = make_workbook(tmp_path / "wb")
    before, kept = kernels_alive(), sockets()
    notebooks.keep_next_kernel_ready(True)
    try:
        parameters = {"workbook": str(workbook), "as_of": "2025-11-28"}
        run = notebooks.run_notebook("data_qa", tmp_path / "qa.ipynb", parameters)
    finally:
        notebooks.keep_next_kernel_ready(False)
    assert run.completion["job"] == "data_qa" and started == [False]
    waiting = kernels_alive() - before
    assert len(waiting) == 1  # the next notebook's kernel, started during this one
    notebooks.discard_spare_kernel()
    assert kernels_alive() == before and sockets() == kept
    notebooks.discard_spare_kernel()  # nothing left to discard: a no-op


def test_kernel_started_ahead_when_the_tick_s_deadline_passes_is_killed_with_the_rest(
    tmp_path, started
):
    workbook = make_workbook(tmp_path / "wb")
    before = kernels_alive()
    notebooks.keep_next_kernel_ready(True)
    try:
        notebooks.run_notebook("data_qa", tmp_path / "qa.ipynb",
                               {"workbook": str(workbook), "as_of": "2025-11-28"})  # fmt: skip
    finally:
        notebooks.keep_next_kernel_ready(False)
    (waiting,) = kernels_alive() - before
    notebooks.kill_running_kernels()  # what the tick's deadline does
    for _ in range(500):  # SIGKILL: dead at once, a zombie until its manager reaps it
        if state_of(waiting) in ("Z", None):
            break
        time.sleep(0.01)
    assert state_of(waiting) in ("Z", None)
    notebooks.discard_spare_kernel()  # the tick's end: the dead kernel's sockets go too
    assert kernels_alive() == before


def test_kernel_log_when_a_shutdown_races_the_last_message_drops_only_that_line(tmp_path, capfd):
    # The kernel writes its log to the stderr it inherited from this process (capfd sees it).
    source = tmp_path / "probe.ipynb"
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "from ops_runner.runtime import notebooks\n"
            "log = get_ipython().kernel.log\n"
            'log.error("KeyboardInterrupt caught in kernel.")  # as ipykernel says it\n'
            'log.error("a kernel error worth reading")\n'
            'notebooks.glue("completion", notebooks.completion_record("probe"))'
        )
    ]
    nbformat.write(notebook, source)
    capfd.readouterr()
    run = notebooks.run_notebook("probe", tmp_path / "out.ipynb", {}, source=source)
    assert run.completion["job"] == "probe"
    err = capfd.readouterr().err
    assert "a kernel error worth reading" in err
    assert "KeyboardInterrupt caught in kernel" not in err
