"""Sweeps on Dask distributed: a sweep's chunks computed by a LocalCluster's or a scheduler's
workers, the shared panel sent once, a lost worker's chunk computed again; a walk-forward's
training-window sweeps the same way."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

import pandas as pd
from distributed import Client, Future, LocalCluster, as_completed
from distributed.scheduler import KilledWorker
from tqdm import tqdm

from ops_runner.core.errors import OpsError
from ops_runner.strategy.sweep import (
    ChunkOutcome,
    ComputeChunk,
    SweepChunk,
    SweepPanel,
    compute_placement,
    compute_sweep_work,
    sweep,
)
from ops_runner.strategy.walk_forward import (
    WalkForwardResult,
    compute_training_work,
    walk_forward,
)

log = logging.getLogger(__name__)

# A chunk that raises is submitted again this many times (``Client.submit(retries=)``). A chunk
# whose worker dies is computed again by the scheduler itself, on another worker, up to
# ``distributed.scheduler.allowed-failures`` times (3 by default), then KilledWorker.
RETRIES = 2
# Chunks per worker a grid is cut into at least: every worker busy, and a worker that finishes
# early takes another. Fewer, larger chunks simulate faster per combination up to ~300.
CHUNKS_PER_WORKER = 2
# How long to wait for a scheduler's address to answer before saying there is none.
CONNECT_SECONDS = 10


class ClusterError(OpsError):
    """No Dask scheduler answers at the address, or a chunk kept killing its workers."""

    exit_code = 1


class DaskRunner:
    """A sweep's chunks submitted to a Dask ``Client``: the panel scattered to every worker once,
    each chunk one task (retried), a bar over the finished ones, the outcomes in chunk order."""

    def __init__(self, client: Client, out: TextIO | None = None) -> None:
        self.client = client
        self.out = out

    def workers(self) -> int:
        """Return the threads the cluster has now (at least 1)."""
        return max(1, sum(self.client.nthreads().values()))

    def size_chunk(self, memory: int, combinations: int) -> int:
        """Return the combinations per chunk: at most ``memory`` shared by the workers (a local
        cluster's workers share this machine), and small enough that each worker gets
        CHUNKS_PER_WORKER chunks."""
        workers = self.workers()
        spread = -(-combinations // (CHUNKS_PER_WORKER * workers))
        return max(1, min(memory // workers, spread))

    def run(
        self, compute: ComputeChunk, chunks: Sequence[SweepChunk], panel: SweepPanel,
        progress: bool,
    ) -> Iterator[ChunkOutcome]:  # fmt: skip
        """Yield each chunk's outcome in order, computed on the cluster. Raises ClusterError
        when a chunk's workers died more often than the scheduler allows."""
        shared = self.client.scatter(panel, broadcast=True, hash=False)
        sweep_id = uuid.uuid4().hex[:8]
        futures: list[Future] = [
            self.client.submit(
                compute,
                part,
                shared,
                key=f"sweep-{sweep_id}-chunk-{n}",
                retries=RETRIES,
                pure=False,
            )  # fmt: skip
            for n, part in enumerate(chunks)
        ]
        bar = tqdm(total=len(futures), desc="sweep (dask)", unit="chunk", disable=not progress,
                   dynamic_ncols=True)  # fmt: skip
        try:
            for _ in as_completed(futures):
                bar.update()
            bar.close()
            for n, future in enumerate(futures):
                try:
                    yield future.result()
                except KilledWorker as exc:
                    raise ClusterError(
                        f"sweep: chunk {n + 1} of {len(chunks)} killed its worker each time it "
                        f"ran ({exc.last_worker.address if exc.last_worker else 'unknown'}); "
                        "see the workers' logs (memory?), or run with a smaller --chunk"
                    ) from None
        finally:
            bar.close()
            self.client.cancel([*futures, shared])


@contextlib.contextmanager
def open_dask_runner(placement: str, out: TextIO | None = None) -> Iterator[DaskRunner]:
    """Yield a DaskRunner on ``placement``: "local" starts a LocalCluster for the sweep (one
    single-threaded worker process per core, closed after), an address (tcp://host:8786)
    connects to its scheduler. ``out`` (e.g. stderr) is told the cluster and its dashboard.
    Raises ClusterError in one line when no scheduler answers."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # The scheduler of a LocalCluster runs in this process: its INFO lines (workers
        # registered, keys cancelled) would bury the sweep's own output.
        logging.getLogger("distributed").setLevel(logging.WARNING)
    with contextlib.ExitStack() as stack:
        if placement == "local":
            workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
            served = importlib.util.find_spec("bokeh") is not None
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=max(1, workers),
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0" if served else None,
                    silence_logs=logging.ERROR,
                )  # fmt: skip
            )
            client = stack.enter_context(Client(cluster))
            where = f"a local cluster of {workers} worker(s) at {cluster.scheduler_address}"
            dashboard = cluster.dashboard_link if served else "none (install bokeh for one)"
        else:
            try:
                client = stack.enter_context(Client(placement, timeout=CONNECT_SECONDS))
            except (OSError, TimeoutError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ClusterError(
                    f"sweep: no Dask scheduler at {placement}: {reason}; start one "
                    "(`dask scheduler`) or check the address"
                ) from None
            where = f"the Dask scheduler at {placement}"
            dashboard = client.dashboard_link
        if out is not None:
            print(f"sweep: chunks on {where}; dashboard: {dashboard}", file=out)
        yield DaskRunner(client, out)


def sweep_placed(
    cfg_or_settings: Any, grid: Mapping[str, Sequence[Any]], bars: Mapping[str, pd.DataFrame],
    start: Any = None, end: Any = None, scheduler: str | None = None, progress: bool = False,
    out: TextIO | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Return ``sweep.sweep``'s table, its chunks run where ``compute_placement`` puts a sweep
    of this size (``scheduler``: inprocess, local or an address; None: DASK_SCHEDULER_ADDRESS,
    else by the grid's size): the same rows wherever. Raises ResearchError as ``sweep`` does,
    and ClusterError when no scheduler answers."""
    work = compute_sweep_work(cfg_or_settings, grid, bars, start, end)
    placement = compute_placement(scheduler, work)
    if placement == "inprocess":
        return sweep(cfg_or_settings, grid, bars, start=start, end=end, progress=progress)
    with open_dask_runner(placement, out) as runner:
        return sweep(cfg_or_settings, grid, bars, start=start, end=end, progress=progress,
                     runner=runner)  # fmt: skip


def walk_forward_placed(
    cfg_or_settings: Any, grid: Mapping[str, Sequence[Any]], bars: Mapping[str, pd.DataFrame],
    train_years: int = 3, scheduler: str | None = None, out: TextIO | None = None,
    **options: Any,
) -> WalkForwardResult:  # fmt: skip
    """Return ``walk_forward.walk_forward``'s result, each training window's sweep run where
    ``compute_placement`` puts a sweep of one window's size (``scheduler``: inprocess, local or
    an address; None: DASK_SCHEDULER_ADDRESS, else by the size), one cluster for all windows:
    the same result wherever. ``options``: walk_forward's other arguments. Raises
    ResearchError as ``walk_forward`` does, and ClusterError when no scheduler answers."""
    work = compute_training_work(cfg_or_settings, grid, bars, train_years, options.get("end"))
    placement = compute_placement(scheduler, work)
    if placement == "inprocess":
        return walk_forward(cfg_or_settings, grid, bars, train_years=train_years, **options)
    with open_dask_runner(placement, out) as runner:
        return walk_forward(cfg_or_settings, grid, bars, train_years=train_years, runner=runner,
                            **options)  # fmt: skip
