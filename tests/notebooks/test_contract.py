"""The notebook contract: no outputs committed, one literal parameters cell, thin, honest end."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import make_sample_workbook

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = [
    p for p in sorted((ROOT / "notebooks").rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts
]
FORBIDDEN_IMPORTS = ("ib_async", "ib_insync", "ops_runner.brokers")
SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey", "credential")


def _ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_notebooks_when_listed_include_data_qa():
    assert ROOT / "notebooks" / "data_qa.ipynb" in NOTEBOOKS


def test_notebooks_when_regenerated_match_committed_sources(tmp_path):
    tool = ROOT / "tools" / "make_notebooks.py"
    subprocess.run([sys.executable, str(tool), str(tmp_path)], check=True)
    made = sorted(tmp_path.glob("*.ipynb"))
    assert made
    for path in made:
        committed = ROOT / "notebooks" / path.name
        assert committed.read_bytes() == path.read_bytes(), (
            f"re-run {tool.name}, commit {path.name}"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_when_committed_has_no_outputs(path):
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    for cell in _code(nb):
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:40]
    assert "papermill" not in nb.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_when_read_has_one_literal_parameters_cell_first(path):
    nb = nbformat.read(str(path), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert _code(nb)[0] is tagged[0], "the parameters cell must be the first code cell"
    tree = ast.parse(tagged[0].source)
    for node in tree.body:
        assert isinstance(node, ast.Assign), ast.dump(node)
        ast.literal_eval(node.value)  # a literal, so papermill can override it safely
        for target in node.targets:
            assert isinstance(target, ast.Name)
            assert not any(w in target.id.lower() for w in SECRET_WORDS), target.id


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_when_read_is_thin_and_has_no_broker_imports(path):
    nb = nbformat.read(str(path), as_version=4)
    assert nb.cells[0].cell_type == "markdown"
    header = nb.cells[0].source
    for word in ("Purpose", "Inputs", "Outputs"):
        assert word in header, word
    for cell in _code(nb):
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            assert not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.startswith(FORBIDDEN_IMPORTS) for n in names), names
        assert len(cell.source.splitlines()) <= 12, "keep cells short; logic lives in ops_runner"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_when_read_last_cell_glues_completion_record(path):
    nb = nbformat.read(str(path), as_version=4)
    last = _code(nb)[-1].source
    assert 'sb.glue("completion"' in last and "completion_record(" in last


def test_run_notebook_when_kernels_follow_each_other_leave_no_sockets_beside_notebooks(tmp_path):
    from ops_runner.notebooks import _ipc_kernel_manager, run_notebook

    manager = _ipc_kernel_manager()
    first, second = manager(kernel_name="python3").ip, manager(kernel_name="python3").ip
    assert first != second and Path(first).is_absolute()  # never a shared relative path
    before = sorted(p.name for p in (ROOT / "notebooks").iterdir())
    workbook = make_sample_workbook(tmp_path / "wb")
    for n in range(2):  # back to back, as a job chain runs them
        run_notebook("data_qa", tmp_path / f"qa{n}.ipynb",
                     {"workbook": str(workbook), "as_of": "2025-12-31"})  # fmt: skip
    assert sorted(p.name for p in (ROOT / "notebooks").iterdir()) == before
