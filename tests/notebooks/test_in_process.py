"""In-process notebook runs (the tests' engine) against kernel runs, and the scrap format.

The tick's tests run each job's notebook cells in the test process (``OPS_RUNNER_IN_PROCESS_
NOTEBOOKS=1``, set for every test not marked ``notebook``). They stand for kernel runs only if
both engines record the same thing: the same scraps, the same failure line, the same partial
notebook, and never for a real account.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from ops_runner.core.events import State
from ops_runner.ledger import open_ledger
from ops_runner.ledger.init import init_workbook
from ops_runner.ledger.states import read_state
from ops_runner.runtime.notebooks import (
    IN_PROCESS_ENV,
    NotebookError,
    execute_job,
    glue,
    read_scraps,
    run_notebook,
)
from ops_runner.workbook.config import Config, load_config

AT = datetime(2025, 11, 28, 21, 0, tzinfo=UTC)
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def write_notebook(path: Path, *body: str) -> Path:
    """A parameters cell, ``body``, then the glue of a completion record named after the file."""
    cells = [new_code_cell('workbook = ""\nword = "x"', metadata={"tags": ["parameters"]})]
    cells += [new_code_cell(source) for source in body]
    cells.append(
        new_code_cell(
            "from ops_runner.runtime import notebooks\n"
            f'notebooks.glue("completion", notebooks.completion_record("{path.stem}", word=word))'
        )
    )
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = KERNELSPEC
    nbformat.write(notebook, path)
    return path


def both_ways(source: Path, tmp_path: Path, parameters: dict) -> list[tuple[object, Path]]:
    """Run ``source`` in a kernel, then in process; return (run or NotebookError, output) each."""
    results = []
    for in_process in (False, True):
        output = tmp_path / f"{'in' if in_process else 'kernel'}-{source.name}"
        try:
            result: object = run_notebook(source.stem, output, parameters, source=source,
                                          in_process=in_process)  # fmt: skip
        except NotebookError as exc:
            result = exc
        results.append((result, output))
    return results


@pytest.mark.notebook
def test_in_process_when_cells_run_glues_the_same_scraps_as_a_kernel(tmp_path):
    source = write_notebook(tmp_path / "echo.ipynb", "print('hello')", "n = len(word)")
    (kernel, _), (local, output) = both_ways(source, tmp_path, {"word": "abc"})
    assert kernel.scraps == local.scraps == {"completion": {"job": "echo", "word": "abc"}}
    printed = [o for cell in nbformat.read(output, as_version=4).cells
               for o in cell.get("outputs", []) if o.get("name") == "stdout"]  # fmt: skip
    assert [o["text"] for o in printed] == ["hello\n"]


@pytest.mark.notebook
def test_in_process_when_a_cell_raises_fails_with_the_kernel_s_line_and_keeps_the_partial(tmp_path):
    source = write_notebook(tmp_path / "boom.ipynb", "before = 1", 'raise ValueError("boom")')
    (kernel, _), (local, output) = both_ways(source, tmp_path, {})
    assert isinstance(kernel, NotebookError) and isinstance(local, NotebookError)
    assert local.reason == kernel.reason == "cell 2 raised ValueError: boom"
    assert local.output == output and output.is_file()
    cells = nbformat.read(output, as_version=4).cells
    assert cells[2].outputs[-1]["output_type"] == "error" and not cells[3].get("outputs")


@pytest.mark.notebook
def test_in_process_data_qa_when_run_on_the_sample_glues_what_a_kernel_glues(sample_workbook,
                                                                             tmp_path):  # fmt: skip
    source = Path(__file__).resolve().parents[2] / "notebooks" / "data_qa.ipynb"
    params = {"workbook": str(sample_workbook), "as_of": "2025-12-31"}
    (kernel, _), (local, _) = both_ways(source, tmp_path, params)
    assert kernel.scraps["completion"]["job"] == "data_qa" and "findings" in kernel.scraps
    assert local.scraps == kernel.scraps


def test_in_process_when_the_broker_is_a_real_account_is_refused_and_nothing_runs(tmp_path):
    assert os.environ.get(IN_PROCESS_ENV) == "1"  # every test not marked notebook runs so
    init_workbook(tmp_path / "wb", template="demo")
    config = tmp_path / "wb" / "config.yaml"
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["broker"].update(kind="ib", mode="paper", simulator=False)
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    cfg: Config = load_config(tmp_path / "wb")
    assert not cfg.simulated
    source = write_notebook(tmp_path / "side.ipynb", "open('touched', 'w').close()")
    run = execute_job(cfg, "side", "f", {"workbook": str(cfg.workbook)}, slot="side:x",
                      session="2025-11-28", cycle=None, at=AT, source=source)  # fmt: skip
    assert run.error and IN_PROCESS_ENV in run.error and run.output is None
    with open_ledger(cfg) as ledger:
        assert read_state(ledger).state is State.SAFE_MODE


@pytest.mark.filterwarnings("ignore:No kernel detected:UserWarning")  # sb.glue outside a kernel
def test_glue_when_read_back_by_scrapbook_gives_what_was_glued(tmp_path, monkeypatch):
    import scrapbook as sb
    from IPython import display as ipd

    shown = []
    monkeypatch.setattr(ipd, "display", lambda *a, **k: shown.append((a, k)))
    data = {"targets": {"AGG": 1.0}, "n": 3, "flags": [True, None], "word": "é"}
    sb.glue("theirs", data)
    glue("ours", data)
    (theirs, their_kw), (ours, our_kw) = shown
    their_bundle = {k: {**v, "name": "ours"} for k, v in theirs[0].items()}
    assert ours[0] == their_bundle
    assert our_kw["metadata"] == {**their_kw["metadata"], "scrapbook": {
        **their_kw["metadata"]["scrapbook"], "name": "ours"}}  # fmt: skip
    shown_output = nbformat.v4.new_output("display_data", data=ours[0], metadata=our_kw["metadata"])
    cell = new_code_cell("x", outputs=[shown_output])
    notebook = new_notebook(cells=[cell])
    nbformat.write(notebook, tmp_path / "glued.ipynb")
    assert read_scraps(tmp_path / "glued.ipynb") == {"ours": data}
