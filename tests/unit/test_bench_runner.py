"""`make bench` (benchmarks/run_all.py): a benchmark that crashes or prints no figure fails the
run by name; one whose input is absent says so and is a skip, never a silent pass."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess  # each benchmark script is a child process, as in make bench

ROOT = Path(__file__).resolve().parents[2]

SCRIPTS = {
    "good": 'print("RESULT [{\\"metric\\": \\"speed\\", \\"value\\": 2.5, \\"unit\\": \\"x\\"}]")',
    "crash": 'raise SystemExit("no such kind")',
    "silent": 'print("measured nothing")',
    "nan": 'print("RESULT [{\\"metric\\": \\"speed\\", \\"value\\": NaN}]")',
    "absent": 'print("benchmark skipped: no real data at ../shared/data")',
}


@pytest.fixture
def run_all(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, body in SCRIPTS.items():
        (tmp_path / f"{name}.py").write_text(body + "\n")
    monkeypatch.setattr(module, "HERE", tmp_path)
    return module


@pytest.mark.parametrize(
    ("names", "code", "failed"),
    [
        (["good"], 0, []),
        (["absent"], 0, []),
        (["good", "absent"], 0, []),
        (["crash"], 1, ["crash: exit 1"]),
        (["silent"], 1, ["silent: printed no RESULT line"]),
        (["nan", "good"], 1, ["nan: its RESULT line holds a row without a finite value"]),
    ],
)
def test_bench_when_a_script_crashes_or_prints_no_figure_fails_naming_it(
    run_all, capsys, names, code, failed
):
    assert run_all.main(names) == code
    out, err = capsys.readouterr()
    for line in failed:
        assert line in err
    if not failed:
        assert "FAILED" not in err + out
    if "good" in names:
        assert any(r.split()[:3] == ["good", "speed", "2.5"] for r in out.splitlines())
    if "absent" in names:
        assert any(r.split()[:2] == ["absent", "skipped"] and "no real data" in r
                   for r in out.splitlines())  # fmt: skip


def test_bench_when_asked_for_an_unknown_script_says_so(run_all, capsys):
    assert run_all.main(["nope"]) == 2
    assert "no such benchmark: nope" in capsys.readouterr().err
