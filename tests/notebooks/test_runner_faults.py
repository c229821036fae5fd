"""The papermill runner judges a run by its exit and the last cell's completion record.

Each fault from FAULTS.md ("Notebooks") is played by a small fixture notebook: the run must be
recorded as failed with its reason, the partial notebook kept, and (through execute_job) the
ledger must hold JobFailed, a failed ArtifactRecorded matching the file, an incident and SAFE_MODE.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from ops_runner.core.errors import OpsError
from ops_runner.core.events import EventKind, State
from ops_runner.ledger import open_ledger
from ops_runner.ledger.init import init_workbook
from ops_runner.ledger.states import read_state
from ops_runner.market.integrity import check_registered as check_artifacts
from ops_runner.runtime.notebooks import JobRun, NotebookError, execute_job, run_notebook
from ops_runner.workbook.config import Config, load_config

pytestmark = pytest.mark.notebook

AT = datetime(2025, 11, 28, 21, 0, tzinfo=UTC)
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
RAISE = 'raise ValueError("boom")'
KILL = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
AFTER = "after = 2"


def glue(job: str) -> str:
    return (
        "from ops_runner.runtime import notebooks\n"
        f'notebooks.glue("completion", notebooks.completion_record("{job}"))'
    )


def write_notebook(path: Path, *body: str, last: str | None = None) -> Path:
    """A fixture notebook: a parameters cell, ``body``, then ``last`` (the glue of path's stem)."""
    cells = [new_code_cell('workbook = ""', metadata={"tags": ["parameters"]})]
    cells += [new_code_cell(source) for source in body]
    cells.append(new_code_cell(glue(path.stem) if last is None else last))
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = KERNELSPEC  # papermill's inspection needs a kernel name
    nbformat.write(notebook, path)
    return path


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    init_workbook(tmp_path / "wb", template="demo")
    return load_config(tmp_path / "wb")


def with_schedule(cfg: Config, **values: int) -> Config:
    config = cfg.workbook / "config.yaml"
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["schedule"].update(values)
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_config(cfg.workbook)


def run_job(cfg: Config, source: Path, parameters: dict | None = None) -> JobRun:
    job = source.stem
    return execute_job(
        cfg,
        job,
        "testfolder",
        {"workbook": str(cfg.workbook)} if parameters is None else parameters,
        slot=f"{job}:x",
        session="2025-11-28",
        cycle=None,
        at=AT,
        source=source,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_kept(path: Path | None) -> nbformat.NotebookNode:
    """The partial notebook: present, valid nbformat."""
    assert path is not None and path.is_file()
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    return notebook


def code_cell(notebook: nbformat.NotebookNode, source: str) -> nbformat.NotebookNode:
    return next(c for c in notebook.cells if c.cell_type == "code" and c.source == source)


def ran(notebook: nbformat.NotebookNode) -> list[str]:
    """Sources of the code cells the kernel executed."""
    return [c.source for c in notebook.cells if c.cell_type == "code" and c.execution_count]


def require_failure_recorded(cfg: Config, run: JobRun, artifact: bool = True) -> None:
    """JobFailed, ArtifactRecorded (failed, the file's SHA-256), IncidentOpened, SAFE_MODE."""
    assert not run.ok and run.completion is None
    with open_ledger(cfg) as ledger:
        events = [e for e in ledger.events() if e.run_id == run.run_id]
        state = read_state(ledger).state
    kinds = [e.kind for e in events]
    assert str(EventKind.JOB_STARTED) in kinds
    (failed,) = [e for e in events if e.kind == str(EventKind.JOB_FAILED)]
    assert failed.payload["error"] == run.error
    (incident,) = [e for e in events if e.kind == str(EventKind.INCIDENT_OPENED)]
    assert run.error in incident.payload["summary"]
    artifacts = [e for e in events if e.kind == str(EventKind.ARTIFACT_RECORDED)]
    if artifact:
        (recorded,) = artifacts
        assert recorded.payload["outcome"] == "failed"
        assert recorded.payload["reason"] == run.error
        assert cfg.workbook / recorded.payload["path"] == run.output
        assert recorded.payload["sha256"] == sha256(run.output)
    else:
        assert artifacts == []
    assert state is State.SAFE_MODE


def test_job_when_a_cell_raises_fails_naming_the_cell_and_the_error(cfg, tmp_path):
    source = write_notebook(tmp_path / "raising.ipynb", "before = 1", RAISE, AFTER)
    run = run_job(cfg, source)
    assert run.error == "cell 3 raised ValueError: boom"  # index in the executed notebook
    kept = read_kept(run.output)
    assert ran(kept)[-2:] == ["before = 1", RAISE]
    assert code_cell(kept, AFTER).execution_count is None
    # The one fault papermill records truthfully: an ordinary exception.
    assert kept.metadata.papermill.exception is True
    assert code_cell(kept, RAISE).metadata.papermill.status == "failed"
    require_failure_recorded(cfg, run)


def test_job_when_the_kernel_is_killed_fails_saying_the_kernel_died(cfg, tmp_path):
    source = write_notebook(tmp_path / "killed.ipynb", "before = 1", KILL, AFTER)
    run = run_job(cfg, source)
    assert "kernel died" in run.error
    kept = read_kept(run.output)
    # whether the killing cell itself shows as run is a race with the kernel's death
    assert "before = 1" in ran(kept) and AFTER not in ran(kept)
    # papermill's metadata claims a clean, complete run: no exception, every cell "completed",
    # though the cells after the kill never executed and nothing was glued.
    assert not kept.metadata.papermill.exception
    code = [c for c in kept.cells if c.cell_type == "code"]
    assert {c.metadata.papermill.status for c in code} == {"completed"}
    assert code[-1].execution_count is None and code[-1].outputs == []
    assert code_cell(kept, AFTER).execution_count is None
    require_failure_recorded(cfg, run)


def test_job_when_a_cell_passes_the_cell_timeout_fails_naming_the_timeout(cfg, tmp_path):
    cfg = with_schedule(cfg, cell_timeout_seconds=2)
    sleep = "import time; time.sleep(30)"
    source = write_notebook(tmp_path / "slow_cell.ipynb", "before = 1", sleep, AFTER)
    began = time.monotonic()
    run = run_job(cfg, source)
    assert time.monotonic() - began < 60  # hang guard only
    assert run.error == "a cell ran past the 2 s cell timeout"
    kept = read_kept(run.output)
    assert ran(kept)[-2:] == ["before = 1", sleep]
    # Again papermill's metadata shows no exception and every cell "completed".
    assert not kept.metadata.papermill.exception
    assert {c.metadata.papermill.status for c in kept.cells if c.cell_type == "code"} == {
        "completed"
    }
    assert code_cell(kept, AFTER).execution_count is None
    require_failure_recorded(cfg, run)


def test_run_when_the_whole_notebook_deadline_passes_kills_the_kernel_and_fails(tmp_path):
    naps = [f"import time; time.sleep(1.5)  # nap {n}" for n in range(6)]
    source = write_notebook(tmp_path / "naps.ipynb", *naps)
    output = tmp_path / "out" / "naps.ipynb"
    began = time.monotonic()
    with pytest.raises(NotebookError) as caught:
        run_notebook("naps", output, {}, cell_timeout=10, deadline=3, source=source)
    assert time.monotonic() - began < 60  # hang guard only (six naps alone would take 9 s)
    error = caught.value
    assert error.reason == "whole-notebook deadline of 3 s passed; kernel killed"
    assert error.output == output and error.duration >= 2.5
    kept = read_kept(output)
    assert 'workbook = ""' in ran(kept)
    assert not set(ran(kept)) >= set(naps)
    assert kept.cells[-1].execution_count is None  # no completion glued
    assert not kept.metadata.papermill.exception


@pytest.mark.parametrize(
    "last",
    [
        pytest.param("x = 1", id="no-glue"),
        pytest.param(glue("another_job"), id="another-jobs-record"),
    ],
)
def test_job_when_the_last_cell_glues_no_completion_of_its_own_fails(cfg, tmp_path, last):
    source = write_notebook(tmp_path / "quiet.ipynb", "before = 1", last=last)
    run = run_job(cfg, source)
    assert run.error.startswith("no completion record")
    kept = read_kept(run.output)
    assert ran(kept)[-2:] == ["before = 1", last]  # papermill ran it to the end, cleanly
    assert not kept.metadata.papermill.exception
    require_failure_recorded(cfg, run)


def test_job_when_a_middle_cell_calls_sys_exit_0_fails_for_want_of_a_completion(cfg, tmp_path):
    stop = "import sys; sys.exit(0)"
    source = write_notebook(tmp_path / "sys_exit.ipynb", "before = 1", stop, AFTER)
    run = run_job(cfg, source)
    # papermill treats SystemExit(0) as a clean early exit and returns without raising;
    # only the missing completion record tells the run stopped early.
    assert run.error.startswith("no completion record")
    kept = read_kept(run.output)
    assert ran(kept)[-2:] == ["before = 1", stop]
    assert code_cell(kept, AFTER).execution_count is None
    require_failure_recorded(cfg, run)


def test_job_when_a_middle_cell_calls_exit_fails_saying_the_kernel_died(cfg, tmp_path):
    source = write_notebook(tmp_path / "exits.ipynb", "before = 1", "exit()", AFTER)
    run = run_job(cfg, source)
    # IPython's exit() stopped the kernel only after its cell, so whether the later cells (the
    # glue of a completion record among them) still ran was a race; the job kernel's exit()
    # kills it at once (KERNEL_START): as a killed kernel, every time, nothing after it runs.
    assert "kernel died" in run.error
    kept = read_kept(run.output)
    assert "before = 1" in ran(kept) and AFTER not in ran(kept)
    assert [c for c in kept.cells if c.cell_type == "code"][-1].execution_count is None
    assert not kept.metadata.papermill.exception
    require_failure_recorded(cfg, run)


def test_run_when_a_parameter_is_unknown_refuses_before_any_kernel_starts(cfg, tmp_path):
    source = write_notebook(tmp_path / "params.ipynb")
    output = tmp_path / "out" / "params.ipynb"
    with pytest.raises(NotebookError, match="has no parameter workbokk") as caught:
        run_notebook("params", output, {"workbokk": "x"}, source=source)
    assert caught.value.output is None and not output.exists()
    run = run_job(cfg, source, {"workbokk": "x"})
    assert run.output is None and "workbokk" in run.error
    require_failure_recorded(cfg, run, artifact=False)  # nothing ran, so no artifact
    assert list(cfg.workbook.rglob("*.ipynb")) == []


def test_run_when_a_parameter_looks_secret_refuses_and_writes_nothing(cfg, tmp_path):
    source = write_notebook(tmp_path / "secret.ipynb")
    output = tmp_path / "out" / "secret.ipynb"
    value = "sk-live-4f9c2e"
    with pytest.raises(OpsError, match="looks like a secret"):
        run_notebook("secret", output, {"api_key": value}, source=source)
    assert not output.exists()
    run = run_job(cfg, source, {"api_key": value})  # recorded as a failed job, value unsaid
    assert not run.ok and "looks like a secret" in run.error
    assert list(cfg.workbook.rglob("*.ipynb")) == []
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:
        assert value.encode() not in path.read_bytes(), path


def test_job_when_it_completes_records_its_artifact_and_verify_catches_tampering(cfg, tmp_path):
    source = write_notebook(tmp_path / "fine.ipynb", "before = 1")
    run = run_job(cfg, source)
    assert run.ok and run.completion == {"job": "fine"}
    with open_ledger(cfg) as ledger:
        events = [e for e in ledger.events() if e.run_id == run.run_id]
        assert read_state(ledger).state is State.RUN
        assert check_artifacts(cfg, ledger.events()) == []
    assert [e.kind for e in events] == [
        str(EventKind.JOB_STARTED),
        str(EventKind.ARTIFACT_RECORDED),
    ]
    recorded = events[-1].payload
    assert recorded["outcome"] == "completed" and recorded["reason"] == ""
    assert cfg.workbook / recorded["path"] == run.output
    assert recorded["sha256"] == sha256(run.output)

    data = bytearray(run.output.read_bytes())
    data[len(data) // 2] ^= 0x01
    run.output.write_bytes(bytes(data))
    with open_ledger(cfg) as ledger:
        (changed,) = check_artifacts(cfg, ledger.events())
    assert recorded["path"] in changed and "changed since it was recorded" in changed

    run.output.unlink()
    with open_ledger(cfg) as ledger:
        (missing,) = check_artifacts(cfg, ledger.events())
    assert recorded["path"] in missing and "is missing" in missing


def test_run_when_the_deadline_passes_before_the_kernel_starts_still_fails(tmp_path):
    source = write_notebook(tmp_path / "late.ipynb", "import time; time.sleep(3)")
    with pytest.raises(NotebookError, match="deadline"):
        run_notebook("late", tmp_path / "out.ipynb", {}, deadline=0.01, source=source)


def test_job_when_a_parameter_looks_secret_records_the_refusal(cfg, tmp_path):
    run = run_job(cfg, write_notebook(tmp_path / "secret.ipynb"), {"api_key": "x"})
    assert not run.ok and "secret" in run.error
    require_failure_recorded(cfg, run, artifact=False)


def test_job_when_the_notebook_has_no_kernelspec_fails_as_a_notebook_error(cfg, tmp_path):
    path = tmp_path / "bare.ipynb"
    cell = new_code_cell('workbook = ""', metadata={"tags": ["parameters"]})
    nbformat.write(new_notebook(cells=[cell]), path)
    run = run_job(cfg, path)
    assert not run.ok
    require_failure_recorded(cfg, run, artifact=False)


@pytest.mark.parametrize("name", ["db_passwd", "api-key", "auth_header", "SMTP_PASSWORD"])
def test_secret_guard_when_the_name_looks_secret_refuses(name):
    from ops_runner.runtime.notebooks import require_safe_parameters

    with pytest.raises(OpsError):
        require_safe_parameters({name: "x"})


def _deep_folder(root: Path) -> Path:
    """A runtime folder as deep as a test's HOME makes it: past a Unix socket path's limit."""
    folder = root / ("h" * 60) / ".local" / "share" / "jupyter" / "runtime"
    assert len(str(folder)) > 107
    return folder


def _opsr_folders() -> set[str]:
    import tempfile

    roots = {Path(tempfile.gettempdir()), Path("/tmp")}
    return {str(p) for root in roots for p in root.glob("opsr-*")}


def test_run_when_the_runtime_folder_is_too_deep_for_a_socket_uses_a_short_private_one(
    tmp_path, monkeypatch
):
    runtime = _deep_folder(tmp_path)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    before = _opsr_folders()
    source = write_notebook(tmp_path / "deep.ipynb", "import os; pid = os.getpid()")
    run = run_notebook("deep", tmp_path / "out" / "deep.ipynb", {}, deadline=120, source=source)
    assert run.completion == {"job": "deep"}
    # the short 0700 folder held the sockets for the run and went with the kernel
    assert _opsr_folders() == before
    assert not runtime.exists() or not any(runtime.glob("opsr-*"))


KERNEL_CANNOT_START = """
import gc, json, os, sys, time
from pathlib import Path
os.environ["JUPYTER_RUNTIME_DIR"] = sys.argv[1]
import ops_runner.runtime.notebooks as notebooks
notebooks.SOCKET_PATH_LIMIT = 10_000  # as before the fix: the deep folder is used as is
began = time.monotonic()
try:
    notebooks.run_notebook("deep", Path(sys.argv[2]), {}, deadline=60, source=Path(sys.argv[3]))
    reason = None
except notebooks.NotebookError as exc:
    reason = exc.reason
took = time.monotonic() - began
gc.collect()  # where the 2026-12-06 tick blocked for good: a context left with open sockets
children = []
for task in Path("/proc/self/task").iterdir():
    children += (task / "children").read_text().split()
alive = [pid for pid in children if Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]
print(json.dumps({"reason": reason, "took": took, "alive": alive}))
"""


def test_run_when_the_kernel_cannot_start_fails_at_once_leaving_nothing_open(tmp_path):
    import json
    import subprocess
    import sys

    source = write_notebook(tmp_path / "deep.ipynb", "x = 1")
    script = tmp_path / "cannot_start.py"
    script.write_text(KERNEL_CANNOT_START, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), str(_deep_folder(tmp_path)), str(tmp_path / "out.ipynb"),
         str(source)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "File name too long" in result["reason"]
    assert result["took"] < 30  # at once, not after a deadline (60 s here)
    assert result["alive"] == []  # the kernel that did start was killed with its sockets
