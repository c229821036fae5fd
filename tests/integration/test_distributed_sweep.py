"""A sweep on Dask distributed: a real LocalCluster on 127.0.0.1 gives the single-process table
exactly, a worker killed mid-sweep costs a retry and not a row, and no scheduler is one line;
a walk-forward's training sweeps on it give the single-process walk."""

from __future__ import annotations

import logging
import socket
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from distributed import Client, LocalCluster

from ops_runner.cli import main
from ops_runner.market.sources.sample import generate_sample_market
from ops_runner.strategy import distributed
from ops_runner.strategy.distributed import DaskRunner
from ops_runner.strategy.momentum import StrategySettings
from ops_runner.strategy.research import ResearchError
from ops_runner.strategy.sweep import (
    CLUSTER_FROM,
    SCHEDULER_ENV,
    compute_placement,
    compute_sweep_work,
    sweep,
)
from ops_runner.strategy.walk_forward import compute_training_work, walk_forward
from ops_runner.workbook.config import TEMPLATES, load_config_text, read_config_text

GRID = {"lookback_months": [3, 12], "skip_months": [0, 1], "top_n": [1, 2],
        "absolute_momentum": [True, False]}  # fmt: skip


def template(name: str):
    path = TEMPLATES / f"{name}.yaml"
    return load_config_text(read_config_text(path), Path("."), path)


@pytest.fixture(scope="module")
def market() -> dict[str, pd.DataFrame]:
    return generate_sample_market(start=date(2012, 1, 3), end=date(2016, 12, 30))


@pytest.fixture(scope="module")
def local_table(market) -> pd.DataFrame:
    """The single-process sweep, in one chunk: what every distributed run must equal."""
    return sweep(template("config"), GRID, market, start=date(2014, 1, 1), chunk=10_000)


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes on 127.0.0.1, as the LocalCluster a sweep starts."""
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                     dashboard_address=None, silence_logs=logging.ERROR) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        yield client


def _dying_once(marker: Path):
    """A chunk computation that kills its worker process the first time it meets chunk 0.

    A closure, so the workers receive it by value (cloudpickle) without importing this module.
    """

    def compute(chunk, panel):
        import os
        from pathlib import Path

        from ops_runner.strategy.sweep import compute_chunk_outcome

        if chunk.start == 0 and not Path(marker).exists():
            Path(marker).touch()
            os._exit(1)  # the worker dies mid-sweep, its task unfinished
        return compute_chunk_outcome(chunk, panel)

    return compute


class DyingRunner(DaskRunner):
    def __init__(self, client: Client, marker: Path) -> None:
        super().__init__(client)
        self.marker = marker

    def run(self, compute, chunks, panel, progress):
        return super().run(_dying_once(self.marker), chunks, panel, progress)


@pytest.mark.subprocess
@pytest.mark.slow
def test_sweep_on_a_local_cluster_equals_the_single_process_table(market, local_table, client):
    runner = DaskRunner(client)
    assert runner.size_chunk(10_000, len(local_table)) == 4  # 16 combinations, 2 per worker
    found = sweep(template("config"), GRID, market, start=date(2014, 1, 1), runner=runner)
    assert len(found) == 16
    pd.testing.assert_frame_equal(found, local_table, check_exact=True)


@pytest.mark.subprocess
@pytest.mark.slow
def test_sweep_when_a_worker_dies_mid_sweep_retries_its_chunk(market, local_table, client,
                                                               tmp_path):  # fmt: skip
    marker = tmp_path / "died"
    runner = DyingRunner(client, marker)
    found = sweep(template("config"), GRID, market, start=date(2014, 1, 1), chunk=3,
                  runner=runner)  # fmt: skip
    assert marker.exists()  # a worker did die on chunk 0
    pd.testing.assert_frame_equal(found, local_table, check_exact=True)


@pytest.mark.subprocess
@pytest.mark.slow
def test_sweep_placed_at_a_schedulers_address_equals_the_single_process_table(
    market, local_table, client, monkeypatch
):
    """What the research notebook's ``scheduler`` parameter does; DASK_SCHEDULER_ADDRESS
    says the same when no scheduler is given."""
    address = client.scheduler.address
    args = (template("config"), GRID, market)
    found = distributed.sweep_placed(*args, start=date(2014, 1, 1), scheduler=address)
    pd.testing.assert_frame_equal(found, local_table, check_exact=True)
    monkeypatch.setenv(SCHEDULER_ENV, address)
    found = distributed.sweep_placed(*args, start=date(2014, 1, 1))
    pd.testing.assert_frame_equal(found, local_table, check_exact=True)


def test_sweep_with_a_closed_scheduler_port_is_one_line(sample_workbook, tmp_path, capsys,
                                                        monkeypatch):  # fmt: skip
    monkeypatch.setattr(distributed, "CONNECT_SECONDS", 1)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # closed once the block ends: nobody listens there
    grid = tmp_path / "grid.yaml"
    grid.write_text("top_n: [1, 2]\n")
    code = main(["--workbook", str(sample_workbook), "sweep", "--grid", str(grid),
                 "--scheduler", f"tcp://127.0.0.1:{port}"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert f"sweep: no Dask scheduler at tcp://127.0.0.1:{port}: " in err


@pytest.mark.parametrize(
    ("scheduler", "environ", "work", "where"),
    [
        (None, {}, CLUSTER_FROM - 1, "inprocess"),
        (None, {}, CLUSTER_FROM, "local"),
        (None, {SCHEDULER_ENV: "tcp://10.0.0.5:8786"}, 10, "tcp://10.0.0.5:8786"),
        ("inprocess", {SCHEDULER_ENV: "tcp://10.0.0.5:8786"}, 10**6, "inprocess"),
        ("local", {}, 1, "local"),
        ("tcp://h:8786", {}, 1, "tcp://h:8786"),
    ],
)
def test_placement_follows_the_option_then_the_environment_then_the_grid_size(
    scheduler, environ, work, where
):
    assert compute_placement(scheduler, work, environ) == where


def test_sweep_work_counts_combinations_symbols_and_months_in_the_window():
    cfg = template("config")
    symbols = StrategySettings.from_config(cfg.values).symbols()
    index = pd.DatetimeIndex(["2014-01-02", "2016-12-30"])
    bars = {s: pd.DataFrame({"close": [1.0, 1.0]}, index=index) for s in symbols}
    # top_n 1 and 2 (both valid), every symbol of the strategy, June 2015 .. December 2016
    work = compute_sweep_work(cfg, {"top_n": [1, 2]}, bars, start=date(2015, 6, 1))
    assert work == 2 * len(symbols) * 19
    # benchmarks/sweep.py --cluster: the cluster paid from ~880 combinations of 100 symbols
    # over 30 years (360 months) and ~270 of 1,000 symbols over 10 years (120): ~CLUSTER_FROM.
    assert (
        0.8 < 880 * 100 * 360 / CLUSTER_FROM < 1.2 and 0.8 < 270 * 1000 * 120 / CLUSTER_FROM < 1.2
    )


def test_placement_when_the_scheduler_is_not_understood_says_the_choices():
    with pytest.raises(ResearchError, match="write inprocess, local or a scheduler's address"):
        compute_placement("cluster", 10, {})


# -- walk-forward: each training window's sweep on the cluster --------------------------------

WALK = {"train_years": 1, "test_months": 6, "start": date(2014, 1, 1), "blocks": 4}


@pytest.fixture(scope="module")
def local_walk(market):
    """The walk-forward in this process: what the walk on the cluster must equal."""
    return walk_forward(template("config"), GRID, market, **WALK)


@pytest.mark.subprocess
@pytest.mark.slow
def test_walk_forward_on_a_local_cluster_equals_the_single_process_walk(market, local_walk, client):
    """What ``ops-runner walk-forward --scheduler`` and the notebook's ``scheduler`` do: every
    training window's sweep on the cluster's workers, the same steps, returns and figures."""
    found = distributed.walk_forward_placed(
        template("config"), GRID, market, scheduler=client.scheduler.address, **WALK
    )
    assert len(found.steps) >= 3
    pd.testing.assert_frame_equal(found.steps, local_walk.steps, check_exact=True)
    pd.testing.assert_series_equal(found.returns, local_walk.returns, check_exact=True)
    assert found.metrics() == local_walk.metrics()


def test_walk_forward_with_a_closed_scheduler_port_is_one_line(sample_workbook, capsys,
                                                               monkeypatch):  # fmt: skip
    monkeypatch.setattr(distributed, "CONNECT_SECONDS", 1)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # closed once the block ends: nobody listens there
    code = main(["--workbook", str(sample_workbook), "walk-forward", "--train-years", "1",
                 "--scheduler", f"tcp://127.0.0.1:{port}"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert f"no Dask scheduler at tcp://127.0.0.1:{port}: " in err


def test_walk_forward_with_an_unknown_scheduler_is_one_line(sample_workbook, capsys):
    code = main(["--workbook", str(sample_workbook), "walk-forward", "--scheduler", "cluster"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "write inprocess, local or a scheduler's address" in err


def test_training_work_is_one_training_windows_sweep():
    cfg = template("config")
    symbols = StrategySettings.from_config(cfg.values).symbols()
    index = pd.DatetimeIndex(["2010-01-04", "2016-12-30"])
    bars = {s: pd.DataFrame({"close": [1.0, 1.0]}, index=index) for s in symbols}
    # top_n 1 and 2, every symbol, December 2013 .. December 2016 (3 years back from the end,
    # its own month counted): 37 months
    assert compute_training_work(cfg, {"top_n": [1, 2]}, bars, 3) == 2 * len(symbols) * 37
    # an end given: 1 year back from June 2015, June 2014 .. June 2015
    work = compute_training_work(cfg, {"top_n": [1, 2]}, bars, 1, end=date(2015, 6, 15))
    assert work == 2 * len(symbols) * 13
