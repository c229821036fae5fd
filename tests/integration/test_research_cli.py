"""`ops-runner backtest` and `ops-runner sweep` on the sample workbook, as a user runs them."""

from __future__ import annotations

import contextlib
import json
import math
import os
import pty
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ready_to_decide

from ops_runner.market.calendar import open_calendar
from ops_runner.ops.decision import decide
from ops_runner.strategy import research
from ops_runner.workbook.config import load_config

EXE = Path(sys.executable).with_name("ops-runner")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workbook(sample_workbook) -> Path:
    return sample_workbook


def cli(workbook: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), "--workbook", str(workbook), *args], capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.mark.subprocess
@pytest.mark.slow
def test_backtest_when_run_lists_the_decisions_production_would_record(workbook):
    done = cli(workbook, "backtest", "--start", "2024-01-01", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    months = {d["session"]: d["targets"] for d in result["decisions"]}
    assert "2025-12-31" in months and "2024-01-31" in months
    cfg = load_config(workbook)
    for session in ("2024-06-28", "2025-12-31"):  # research and production agree
        ready_to_decide(cfg, session)
        assert decide(cfg, session).targets == months[session]
    assert {"cagr", "sharpe", "max_drawdown", "turnover"} <= set(result["metrics"])


@pytest.mark.subprocess
@pytest.mark.slow
def test_sweep_when_grid_has_defensive_choices_loads_their_bars(workbook, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("lookback_months: [6, 12]\ntop_n: [1, 2]\ndefensive: [AGG, IEF]\n")
    done = cli(workbook, "sweep", "--grid", str(grid), "--config", "gem", "--start", "2020-01-01",
               "--sort", "max_drawdown", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)
    assert len(rows) == 2 * 2 * 2  # every row, best first: the smallest drawdown
    assert {r["defensive"] for r in rows} == {"AGG", "IEF"}
    drawdowns = [r["max_drawdown"] for r in rows]
    assert drawdowns == sorted(drawdowns) and drawdowns[0] < drawdowns[-1]


@pytest.mark.subprocess
@pytest.mark.slow
def test_sweep_when_grid_has_rule_keys_prints_them_and_each_row_is_its_backtest(workbook, tmp_path):
    grid = tmp_path / "rules.yaml"
    grid.write_text("trend_length: [0, 10]\nfailed_slot: [defensive, cash]\n"
                    "weighting: [equal, inverse_volatility]\n")  # fmt: skip
    args = ("sweep", "--grid", str(grid), "--config", "topn", "--start", "2022-01-01")
    done = cli(workbook, *args, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)
    assert len(rows) == 8
    cfg = research.load_research_config(load_config(workbook), "topn")
    bars, calendar = research.load_bars(cfg), open_calendar(cfg)
    for row in rows:
        rules = {k: row[k] for k in ("trend_length", "failed_slot", "weighting")}
        values = {**cfg.values, "strategy": {**cfg.values["strategy"], **rules}}
        result = research.backtest(values, bars, start=row["start"], calendar=calendar)
        for name, value in result.metrics().items():
            assert value is None or math.isclose(row[name], value, rel_tol=1e-9), (row, name)
    printed = cli(workbook, *args, "--top", "3")
    assert printed.returncode == 0, printed.stderr[-2000:]
    header = printed.stdout.splitlines()[1].split()
    assert {"trend_length", "failed_slot", "weighting", "sharpe"} <= set(header)


@pytest.mark.subprocess
def test_sweep_when_grid_has_unknown_key_exits_with_one_line(workbook, tmp_path):
    grid = tmp_path / "bad.yaml"
    grid.write_text("lookbacks: [6, 12]\n")
    done = cli(workbook, "sweep", "--grid", str(grid))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "lookbacks" in done.stderr


def test_sweep_when_the_metric_is_unknown_says_the_choices_before_any_work(workbook, capsys):
    from ops_runner.cli import main

    code = main(["--workbook", str(workbook), "sweep", "--grid", "nowhere.yaml", "--sort", "fun"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "sharpe" in err and "nowhere" not in err


README = Path(__file__).resolve().parents[2] / "README.md"
PERCENT = re.compile(r"^-?\d+\.\d\d%$")


def _readme_line(start: str) -> list[str]:
    (line,) = [row.split("#")[0].strip() for row in README.read_text(encoding="utf-8").splitlines()
               if row.startswith(start)]  # fmt: skip
    words = shlex.split(line)
    return [str(EXE) if w == "ops-runner" else w for w in words]


@pytest.mark.subprocess
@pytest.mark.slow
def test_readme_research_lines_when_run_as_written_from_another_folder_use_the_templates(
    workbook, tmp_path, monkeypatch, capsys
):
    """`--config templates/gem.yaml` and `--grid templates/grids/...` as the README writes them,
    from a folder without templates/: the project's files, named on stderr. Progress shows on
    a terminal (the sweep's stderr is a pty) and not elsewhere (the backtest's, captured)."""
    from ops_runner.cli import main

    env = {**os.environ, "OPS_RUNNER_HOME": str(workbook)}
    primary, terminal = pty.openpty()
    try:
        done = subprocess.run(_readme_line("ops-runner sweep --grid templates/grids/example.yaml"),
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=terminal,
                              text=True, timeout=600)  # fmt: skip
        os.close(terminal)
        seen = b""
        with contextlib.suppress(OSError):  # EIO once the terminal's last reader closed
            while chunk := os.read(primary, 65536):
                seen += chunk
    finally:
        os.close(primary)
    err = seen.decode()
    assert done.returncode == 0, err[-2000:]
    assert f"using the project's {ROOT / 'templates' / 'grids' / 'example.yaml'}" in err
    assert "sweeping 64 combinations" in err and "] done" in err  # progress, on a terminal
    head, columns, *rows = done.stdout.strip().splitlines()
    assert head.startswith("64 combinations") and "best 10 by sharpe" in head
    names = columns.split()
    assert len(rows) == 10 and [int(r.split()[0]) for r in rows] == list(range(1, 11))
    table = [dict(zip(names, r.split()[1:], strict=True)) for r in rows]
    sharpes = [float(r["sharpe"]) for r in table]
    assert sharpes == sorted(sharpes, reverse=True)
    assert all(re.fullmatch(r"-?\d+\.\d\d", r["sharpe"]) for r in table)
    for name in ("cagr", "volatility", "max_drawdown"):
        assert all(PERCENT.match(r[name]) for r in table), name
    assert all(re.fullmatch(r"[\d,]+\.\d\d", r["final_equity"]) for r in table)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPS_RUNNER_HOME", str(workbook))
    argv = _readme_line("ops-runner backtest --config templates/gem.yaml")
    assert main(argv[1:]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["strategy"]["name"] == "gem"
    (said,) = out.err.strip().splitlines()  # the file used; no progress off a terminal
    assert said.endswith(f"using the project's {ROOT / 'templates' / 'gem.yaml'}")
