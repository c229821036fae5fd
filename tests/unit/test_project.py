"""Standing promises a file can show: pins in one place, runtime output ignored."""

from __future__ import annotations

import ast
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[=<>!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_pyproject_when_read_pins_every_dependency_exactly():
    project = _pyproject()["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    loose = [r for r in requirements if "==" not in r]
    assert not loose, f"unpinned: {loose}"
    names = {_name(r) for r in requirements}
    # The field's chosen tools, including six which scrapbook imports without declaring.
    for needed in (
        "pandas",
        "papermill",
        "nbclient",
        "scrapbook",
        "six",
        "jupyterlab",
        "vectorbt",
        "pandas-market-calendars",
        "ib-async",
        "ib-insync",
        "pytest",
        "jupytext",
        "hypothesis",
    ):
        assert needed in names, needed


def test_environment_yml_when_compared_mirrors_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert pip_sections == [['-e ".[dev]"']] or pip_sections == [["-e .[dev]"]]
    conda_names = {
        _name(d): d for d in deps if isinstance(d, str) and not d.startswith(("python", "pip"))
    }
    pinned = {_name(r): r for r in _pyproject()["project"]["dependencies"]}
    for name, spec in conda_names.items():
        # Anything conda installs itself must carry the same pin as pyproject.toml.
        assert name in pinned and pinned[name].split("==")[1] in spec, spec
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python"))
    low = _pyproject()["project"]["requires-python"].removeprefix(">=")
    assert python.split("=")[-1].startswith(low.split(".")[0])
    assert tuple(map(int, python.split("=")[-1].split("."))) >= tuple(map(int, low.split(".")))


def test_readme_conda_lines_when_compared_run_what_make_runs_after_its_install():
    """The README's lines for a conda user are the environment's name and the Makefile's own
    recipes (the kernel, the Numba cache, demo, test) without .venv: they cannot drift."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("Conda users:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line.split("#")[0].strip() for line in block.splitlines()]
    make = (ROOT / "Makefile").read_text(encoding="utf-8").replace("$(BIN)/", "")
    recipes = {line.strip().removesuffix(" >/dev/null") for line in make.splitlines()
               if line.startswith("\t")}  # fmt: skip
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    create, activate, kernel, warm, demo, test = lines
    assert create == "conda env create -f environment.yml"
    assert activate == f"conda activate {env['name']}"
    assert {kernel, warm, demo} <= recipes, {kernel, warm, demo} - recipes
    workers = re.sub(r"-n \d+", "-n $(WORKERS)", test)  # cores + 1: 3 on the 2 cores it names
    assert workers in recipes and "-n 3 " in test


def test_pyproject_when_installed_exposes_ops_runner_console_script():
    assert _pyproject()["project"]["scripts"]["ops-runner"] == "ops_runner.cli:main"


def test_ci_run_when_read_calls_make_test_and_fails_fast():
    text = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in text and "make test" in text


def test_gitignore_when_runtime_output_written_ignores_it_but_readmes():
    probes = [
        "ledger/ledger.sqlite",
        "ledger/runs/2025-12-31/data_qa.ipynb",
        "reports/index.html",
        "demo/config.yaml",
        ".venv/bin/python",
        "config.yaml",
        "data/sample/SPY.parquet",
        "broker/sim.json",
    ]
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", *probes, "ledger/README.md", "reports/README.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    ignored = set(result.stdout.split())
    assert set(probes) <= ignored
    assert "ledger/README.md" not in ignored and "reports/README.md" not in ignored


@pytest.mark.slow
def test_mypy_when_run_on_the_package_finds_nothing(monkeypatch):
    from mypy import api

    monkeypatch.chdir(ROOT)  # [tool.mypy] names the package relative to the project
    out, err, status = api.run(["--config-file", str(ROOT / "pyproject.toml")])
    assert status == 0, (out + err)[-3000:]


@pytest.mark.subprocess
def test_ruff_when_run_on_the_project_finds_nothing():
    import sys

    for args in (
        ["check", "ops_runner", "tests", "benchmarks", "notebooks"],
        ["format", "--check", "ops_runner", "tests", "benchmarks"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:]


def _readme_layers() -> list[tuple[list[str], list[str]]]:
    """The README's layer table: (the layer's folders or modules, the modules the row names)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| layer | what it holds |") :].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        layer, what = line.strip("|").split("|", 1)
        rows.append((re.findall(r"`([\w./]+)`", layer), re.findall(r"`(\w+)`", what)))
    return rows


def test_readme_layer_table_when_read_lists_the_contract_layers_in_order():
    contract = next(
        c for c in _pyproject()["tool"]["importlinter"]["contracts"] if c["type"] == "layers"
    )
    layers = [[m.strip() for m in row.split("|")] for row in contract["layers"]]
    readme = [
        ["ops_runner." + name.removesuffix("/").removesuffix(".py") for name in names]
        for names, _ in _readme_layers()
    ]
    assert readme == layers


def test_readme_layer_table_when_read_names_every_module_of_the_package_and_no_other():
    package = ROOT / "ops_runner"
    actual = {
        p.relative_to(package).with_suffix("").as_posix()
        for p in package.rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    }
    named = set()
    for folders, modules in _readme_layers():
        for folder in folders:
            if folder.endswith(".py"):
                named.add(folder.removesuffix(".py"))
                continue
            inside = {m for m in actual if m.startswith(folder)}
            assert inside, f"README names {folder}, which the package does not have"
            for module in modules:
                found = {m for m in inside if m.split("/")[1] == module or m.startswith(
                    f"{folder}{module}")}  # fmt: skip
                named |= found
    # Folders the README describes as a whole (core/, simulators/, brokers' ib*, sources/).
    wholes = ("core/", "simulators/", "brokers/ib", "market/sources/")
    assert {m for m in actual - named if not m.startswith(wholes)} == set()
    assert all(any(m.startswith(f) for f in actual) for m in named)


def test_test_modules_when_read_import_no_other_test_module():
    """Shared worlds live in conftest.py or a *_world.py module, never in another test file."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*(from test_\w+ import|import test_\w+)", line) or re.search(
                r"spec_from_file_location\([^)]*test_", line
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def _is_comment_or_import(line: str) -> bool:
    text = line.strip()
    return text.startswith(("#", "from ", "import ", ")")) or text.endswith(("(", ","))


def test_package_when_read_imports_project_modules_in_a_function_only_with_a_why():
    """Imports sit at the top of each module; one inside a function keeps a heavy dependency
    (pandas, papermill, vectorbt) out of the commands that do not need it, and a comment on
    it, or on the import block it belongs to, says so."""
    offenders = []
    for path in sorted((ROOT / "ops_runner").rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in node.body:
                for found in ast.walk(inner):
                    if not isinstance(found, ast.Import | ast.ImportFrom):
                        continue
                    module = found.module if isinstance(found, ast.ImportFrom) else None
                    module = module or found.names[0].name
                    if not module.startswith("ops_runner"):
                        continue
                    above = found.lineno - 1
                    while above > 0 and _is_comment_or_import(lines[above - 1]):
                        above -= 1
                    block = lines[above : found.end_lineno]
                    if not any("#" in line for line in block):
                        offenders.append(f"{path.relative_to(ROOT)}:{found.lineno}")
    assert sorted(set(offenders)) == []
