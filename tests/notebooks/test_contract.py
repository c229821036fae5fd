"""The notebook contract: a py:percent pair, no outputs, literal parameters, thin, honest end."""

from __future__ import annotations

import ast
from pathlib import Path

import jupytext
import nbformat
import pytest
from conftest import make_sample_workbook
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = [
    p for p in sorted((ROOT / "notebooks").rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts
]
TEXTS = [
    p for p in sorted((ROOT / "notebooks").rglob("*.py")) if ".ipynb_checkpoints" not in p.parts
]
FORBIDDEN_IMPORTS = ("ib_async", "ib_insync", "ops_runner.brokers")
# Cell metadata about outputs that jupytext keeps in the .ipynb only, never in the text.
OUTPUT_METADATA = ("autoscroll", "collapsed", "scrolled", "trusted", "execution", "ExecuteTime")
SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey", "credential")


def _ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _cells(nb):
    """Return (type, source, metadata) per cell: what a py:percent text holds of a cell."""
    return [
        (c.cell_type, c.source, {k: v for k, v in c.metadata.items() if k not in OUTPUT_METADATA})
        for c in nb.cells
    ]


def _check_pair(path: Path) -> list[str]:
    """Return how the notebook at path and its py:percent text disagree; none when in sync."""
    text = path.with_suffix(".py")
    if not text.is_file():
        return [f"{path.name} has no {text.name} beside it"]
    nb, paired = nbformat.read(str(path), as_version=4), jupytext.read(text)
    ours, theirs = _cells(nb), _cells(paired)
    problems = [
        f"cell {i}: {_brief(a)} in {path.name}, {_brief(b)} in {text.name}"
        for i, (a, b) in enumerate(zip(ours, theirs, strict=False))  # a missing cell: below
        if a != b
    ]
    if len(ours) != len(theirs):
        problems.append(f"{len(ours)} cells in {path.name}, {len(theirs)} in {text.name}")
    if nb.metadata.get("kernelspec") != paired.metadata.get("kernelspec"):
        problems.append(f"the kernelspecs of {path.name} and {text.name} differ")
    return problems


def _brief(cell: tuple) -> tuple:
    kind, source, metadata = cell
    return kind, source[:60], metadata


def test_notebooks_when_listed_include_data_qa():
    assert ROOT / "notebooks" / "data_qa.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_when_committed_agrees_with_its_py_percent_text(path):
    assert _check_pair(path) == [], "run `make notebooks` (jupytext --sync), commit both files"


@pytest.mark.parametrize("text", TEXTS, ids=_ids(TEXTS))
def test_notebook_text_when_committed_has_its_ipynb(text):
    # papermill runs the .ipynb: a text alone is a notebook that never runs.
    assert text.with_suffix(".ipynb").is_file(), "run `make notebooks` (jupytext --sync)"


def test_check_pair_when_text_is_missing_or_differs_says_so(tmp_path):
    cells = [
        new_markdown_cell("# Title"),
        new_code_cell('as_of = "2025-11-28"', metadata={"tags": ["parameters"]}),
        new_code_cell("import scrapbook as sb"),
    ]
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = new_notebook(cells=cells, metadata={"kernelspec": kernel})
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    assert _check_pair(path) == ["nb.ipynb has no nb.py beside it"]
    jupytext.write(nb, path.with_suffix(".py"), fmt="py:percent")
    assert _check_pair(path) == []
    nb.cells[1].metadata["tags"] = []  # the parameters tag lost on one side
    nb.cells[2].source = "import os"
    nb.cells.append(new_markdown_cell("## One more"))
    nb.metadata["kernelspec"]["name"] = "python2"
    nbformat.write(nb, str(path))
    found = [p.split(":")[0] for p in _check_pair(path)]
    assert found == [
        "cell 1",
        "cell 2",
        "4 cells in nb.ipynb, 3 in nb.py",
        "the kernelspecs of nb.ipynb and nb.py differ",
    ]


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
    assert 'notebooks.glue("completion"' in last and "completion_record(" in last


@pytest.mark.notebook
def test_run_notebook_when_kernels_follow_each_other_leave_no_sockets_beside_notebooks(tmp_path):
    from ops_runner.runtime.notebooks import _ipc_kernel_manager, run_notebook

    manager = _ipc_kernel_manager()
    first, second = manager(kernel_name="python3").ip, manager(kernel_name="python3").ip
    assert first != second and Path(first).is_absolute()  # never a shared relative path
    before = sorted(p.name for p in (ROOT / "notebooks").iterdir())
    workbook = make_sample_workbook(tmp_path / "wb")
    for n in range(2):  # back to back, as a job chain runs them
        run_notebook("data_qa", tmp_path / f"qa{n}.ipynb",
                     {"workbook": str(workbook), "as_of": "2025-12-31"})  # fmt: skip
    assert sorted(p.name for p in (ROOT / "notebooks").iterdir()) == before
