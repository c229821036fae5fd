"""`ops-runner backtest`, `sweep` and `walk-forward` on the sample workbook, as a user runs them."""

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
from conftest import ready_to_decide, snapshot_folder

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


# -- walk-forward -------------------------------------------------------------------------------

WALK_GRID = "lookback_months: [3, 12]\ntop_n: [1, 2]\n"


def _walk(workbook: Path, config: str, grid: dict, metric: str, overfitting: bool):
    """The walk the CLI is asked for, computed here by the library itself (an independent run
    in this process, not the CLI's)."""
    from ops_runner.strategy.research import load_bars, load_research_config
    from ops_runner.strategy.walk_forward import walk_forward

    cfg = load_research_config(load_config(workbook), config)
    return walk_forward(cfg, grid, load_bars(cfg, grid), train_years=2, test_months=12,
                        metric=metric, start="2012-01-01", overfitting=overfitting)  # fmt: skip


@pytest.mark.subprocess
@pytest.mark.slow
def test_walk_forward_when_run_prints_and_writes_the_walk_the_library_computes(workbook, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(WALK_GRID)
    before = snapshot_folder(workbook)
    written = tmp_path / "out" / "wf.json"
    done = cli(workbook, "walk-forward", "--grid", str(grid), "--train-years", "2", "--test-months",
               "12", "--start", "2012-01-01", "--output", str(written))  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""  # no progress off a terminal
    expected = _walk(workbook, "", {"lookback_months": [3, 12], "top_n": [1, 2]}, "sharpe", True)

    summary, table = done.stdout.split("\n\n", 1)
    assert summary.splitlines() == expected.summary().splitlines()
    columns, *rows = table.strip().splitlines()
    assert rows[-1] == f"written: {written}"
    names = columns.split()
    assert names == ["step", "train", "test", "lookback_months", "top_n", "in_sample",
                     "out_of_sample"]  # fmt: skip
    printed = [dict(zip(names, row.split(), strict=True)) for row in rows[:-1]]
    assert len(printed) == len(expected.steps) >= 5
    for shown, step in zip(printed, expected.steps.to_dict("records"), strict=True):
        assert shown["step"] == str(step["step"])
        assert shown["train"] == f"{step['train_start']}..{step['train_end']}"
        assert shown["test"] == f"{step['test_start']}..{step['test_end']}"
        assert (shown["lookback_months"], shown["top_n"]) == (str(step["lookback_months"]),
                                                              str(step["top_n"]))  # fmt: skip
        for name in ("in_sample", "out_of_sample"):  # a Sharpe ratio, shown to 2 decimals
            assert float(shown[name]) == pytest.approx(step[name], abs=0.005 + 1e-12)

    assert json.loads(written.read_text()) == json.loads(json.dumps(expected.to_dict()))
    assert sorted(p.name for p in written.parent.iterdir()) == ["wf.json"]  # no temporary left
    assert snapshot_folder(workbook) == before  # nothing written to the ledger or reports


@pytest.mark.subprocess
@pytest.mark.slow
def test_walk_forward_when_json_is_asked_prints_the_result_and_writes_nothing(workbook, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(WALK_GRID)
    before = snapshot_folder(workbook)
    done = subprocess.run(
        [str(EXE), "--workbook", str(workbook), "walk-forward", "--grid", str(grid), "--config",
         "gem", "--train-years", "2", "--start", "2012-01-01", "--metric", "max_drawdown",
         "--no-overfitting", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    expected = _walk(workbook, "gem", {"lookback_months": [3, 12], "top_n": [1, 2]},
                     "max_drawdown", False)  # fmt: skip
    assert found == json.loads(json.dumps(expected.to_dict()))
    assert found["metric"] == "max_drawdown" and found["pbo"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml"]
    assert snapshot_folder(workbook) == before


@pytest.mark.parametrize(
    "args, said",
    [
        (["--metric", "fun"], "sharpe"),
        (["--grid", "nowhere.yaml"], "nowhere.yaml"),
        (["--grid", "{bad}"], "lookbacks"),
        (["--train-years", "40"], "shorten the windows"),
        (["--test-months", "0"], "at least 1"),
        (["--config", "nosuch"], "nosuch"),
        (["--blocks", "3"], "even number"),
    ],
)
def test_walk_forward_when_an_input_is_bad_says_so_in_one_line_and_writes_nothing(
    workbook, tmp_path, capsys, args, said
):
    from ops_runner.cli import main
    from ops_runner.strategy.research import ResearchError

    bad = tmp_path / "bad.yaml"
    bad.write_text("lookbacks: [6, 12]\n")
    args = [str(bad) if a == "{bad}" else a for a in args]
    kept = tmp_path / "wf.json"
    kept.write_text("an earlier result\n")
    code = main(["--workbook", str(workbook), "walk-forward", *args, "--output", str(kept)])
    err = capsys.readouterr().err
    assert code == ResearchError.exit_code and err.count("\n") == 1 and said in err, err
    assert "Traceback" not in err
    assert kept.read_text() == "an earlier result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "wf.json"]


@pytest.mark.slow
def test_walk_forward_when_the_disk_fills_while_writing_leaves_the_earlier_file(
    workbook, tmp_path, capsys, monkeypatch
):
    from ops_runner.cli import main

    kept = tmp_path / "wf.json"
    kept.write_text("an earlier result\n")
    monkeypatch.setenv("OPS_RUNNER_FAULT", "enospc@write:wf.json")  # half the bytes written
    code = main(["--workbook", str(workbook), "walk-forward", "--train-years", "2",
                 "--start", "2018-01-01", "--no-overfitting", "--output", str(kept)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "wf.json" in err and "space" in err.lower()
    assert kept.read_text() == "an earlier result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wf.json"]


@pytest.mark.subprocess
@pytest.mark.slow
def test_readme_walk_forward_line_when_run_as_written_writes_its_output_in_the_folder(
    workbook, tmp_path
):
    argv = _readme_line("ops-runner walk-forward")
    env = {**os.environ, "OPS_RUNNER_HOME": str(workbook)}
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    written = json.loads((tmp_path / argv[argv.index("--output") + 1]).read_text())
    head = done.stdout.splitlines()[0]
    assert head.startswith(f"walk-forward by {written['metric']}: {len(written['steps'])} windows")
    assert written["pbo"] is not None and written["deflated_sharpe"] is not None


@pytest.mark.slow
def test_walk_forward_when_progress_is_asked_names_each_window_on_stderr(workbook, capsys):
    from ops_runner.cli import main
    from ops_runner.strategy.research import load_bars
    from ops_runner.strategy.walk_forward import DEFAULT_GRID, walk_forward

    code = main(["--workbook", str(workbook), "--progress", "walk-forward", "--train-years", "2",
                 "--start", "2018-01-01"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    cfg = load_config(workbook)
    walked = walk_forward(cfg, DEFAULT_GRID, load_bars(cfg, DEFAULT_GRID), train_years=2,
                          start="2018-01-01", overfitting=False)  # fmt: skip
    count = len(walked.steps)
    said = [line.split("] ", 1)[1] for line in err.splitlines() if "] window " in line]
    assert said == [
        f"window {n}/{count}: training {s.train_start}..{s.train_end}, testing to {s.test_end}"
        for n, s in enumerate(walked.steps.itertuples(), 1)
    ]
    combinations = math.prod(len(values) for values in DEFAULT_GRID.values())
    assert f"overfitting: backtesting {combinations} combinations" in err
    assert err.rstrip().endswith("] done")
