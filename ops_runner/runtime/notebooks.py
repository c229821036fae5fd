"""Run the workbook's parameterized notebooks with papermill and judge the result honestly."""

from __future__ import annotations

import ast
import base64
import contextlib
import functools
import io
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ops_runner import BLOCK_SLOW_IMPORTS
from ops_runner.core.clock import format_seconds, format_stamp, read_clock
from ops_runner.core.errors import OpsError, WorkbookError
from ops_runner.core.events import EventKind, Trigger
from ops_runner.core.faults import inject
from ops_runner.core.files import write_bytes_atomic
from ops_runner.core.hashing import read_sha256
from ops_runner.ledger import Ledger, open_ledger
from ops_runner.ledger.states import apply_trigger, incident_event
from ops_runner.workbook.config import _SECRET_WORDS, Config, load_config, resolve_workbook

log = logging.getLogger(__name__)

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# Papermill's per-cell bar on stderr: on only for runs a person started where they watch them
# (the CLI's --progress or a terminal), never for the tick's scheduled runs.
_CELL_PROGRESS = threading.Event()


def show_cell_progress(on: bool) -> None:
    """Show (or hide) papermill's per-cell progress bar on stderr for the kernel runs that
    follow in this process."""
    if on:
        _CELL_PROGRESS.set()
    else:
        _CELL_PROGRESS.clear()


KERNEL_NAME = "ops-runner"
COMPLETION_KEY = "completion"
SECRET_PARAMETER_WORDS = (
    "password",
    "secret",
    "token",
    "api_key",
    "api-key",
    "apikey",
    "credential",
    "auth",
)


class NotebookError(OpsError):
    """A notebook run failed; the partial executed notebook is kept at ``output``.

    Fields: ``output`` (None when nothing ran), ``reason`` (one line), ``duration`` (seconds).
    """

    def __init__(
        self, message: str, output: Path | None = None, reason: str = "", duration: float = 0.0
    ) -> None:
        super().__init__(message)
        self.output = output
        self.reason = reason or message
        self.duration = duration


@dataclass(frozen=True)
class NotebookRun:
    """One executed notebook: where it is, its SHA-256 and what its last cell recorded."""

    job: str
    output: Path
    sha256: str
    completion: dict[str, Any]
    scraps: dict[str, Any]
    duration: float = 0.0


def compute_run_id(now: datetime | None = None) -> str:
    """Return a new run id: the UTC start time and 6 random hex digits, e.g.
    20251128T183000Z-3fa2c1 (sortable, and unique when two runs start in one second)."""
    return f"{format_stamp(now or datetime.now(UTC))}-{secrets.token_hex(3)}"


def compute_output_path(cfg: Config, folder: str, job: str, run_id: str) -> Path:
    """Return ledger/runs/<folder>/<job>-<run id>.ipynb: every run its own file."""
    return cfg.path("ledger") / "runs" / folder / f"{job}-{run_id}.ipynb"


DEMO_WORKBOOK = NOTEBOOKS.parent / "demo"  # made by `make demo`: the SYNTHETIC sample market
PREVIEW_NOTE = (
    "PREVIEW: run by hand, not by the tick or `ops-runner run` (no run id): everything is "
    "computed and shown, nothing is recorded, submitted or sent"
)


def open_workbook(workbook: str = "", run_id: str = "", now: str = "") -> Config:
    """Return the Config of the notebook's workbook. Opening it never writes to it.

    ``workbook`` "" means $OPS_RUNNER_HOME, else the project's demo workbook ``demo/`` (made
    by ``make demo`` on the SYNTHETIC sample market), so a notebook opened in JupyterLab runs
    offline on the demo. ``run_id`` "" (a notebook run by hand, not by the tick or
    ``ops-runner run``) makes it a preview: the Config says so, every ledger it opens is an
    in-memory copy that vanishes with the kernel, nothing is submitted and no alert goes out.
    ``now`` (the tick's instant on a simulated clock, "" the real clock) stamps what the job
    records in the ledger, as it stamps the tick's own events. Raises WorkbookError, one line
    saying how to make the workbook, when there is none, and OpsError for a bad ``now``.
    """
    if not workbook:
        workbook = os.environ.get("OPS_RUNNER_HOME") or str(DEMO_WORKBOOK)
    root = resolve_workbook(workbook)
    if not (root / "config.yaml").is_file():
        hint = "`make demo` makes it" if root == DEMO_WORKBOOK.resolve() else (
            "`ops-runner init --workbook PATH` makes one (`--template demo`: the SYNTHETIC "
            "sample market)")  # fmt: skip
        raise WorkbookError(f"no workbook at {root}: {hint}; nothing was written")
    cfg = load_config(root)
    if now:
        cfg = replace(cfg, simulated_now=read_clock(now)())
    return cfg if run_id else replace(cfg, preview=True)


# Run in each job's kernel before its first cell: no slow optional import (see
# BLOCK_SLOW_IMPORTS), and exit() or quit() in a cell kills the kernel at once. IPython's own
# exit() stops the kernel only after the cell, so whether the next cells still ran (and glued
# a completion record) was a race; a job that asks to exit has failed, every time.
#
# jupyter_client interrupts a kernel before shutting it down; an interrupt that lands while the
# kernel still handles the run's last message makes ipykernel log "KeyboardInterrupt caught in
# kernel" on the tick's stderr, after the notebook completed. Nothing else interrupts our
# kernels (the deadlines kill them), so that line only ever says the shutdown raced the last
# message: the kernel's log drops it, and every other line of it still shows.
#
# Last, the modules every job's first cell imports (pandas with them): a kernel started ahead
# (``keep_next_kernel_ready``) loads them while the notebook before it runs. Nothing of a job's
# state: the kernel is as fresh as before, with its imports done.
KERNEL_START = (
    f"{BLOCK_SLOW_IMPORTS}; import os as _os; "
    "get_ipython().user_ns.update(exit=lambda *_: _os._exit(1), quit=lambda *_: _os._exit(1)); "
    "getattr(get_ipython().kernel.log, 'logger', get_ipython().kernel.log).addFilter("
    "lambda record: 'KeyboardInterrupt caught in kernel' not in record.getMessage()); "
    "import ops_runner.reports.pages, ops_runner.runtime.notebooks"
)

# A Unix socket path holds at most 107 bytes (sun_path is 108 with its NUL); jupyter_client
# adds "-<channel number>" to the base path. Past this, the kernel cannot start at all.
SOCKET_PATH_LIMIT = 100


def compute_socket_base(runtime: Path, name: str) -> Path | None:
    """Return ``runtime/name`` when its sockets' paths fit the Unix limit, else None."""
    return runtime / name if len(os.fsencode(runtime / name)) + 3 <= SOCKET_PATH_LIMIT else None


def _short_private_folder() -> Path:
    """Return a new 0700 folder for kernel sockets under a short temporary root."""
    import tempfile

    root = tempfile.gettempdir()
    if len(os.fsencode(root)) > 40:  # a deep $TMPDIR: the system's own /tmp is short
        root = "/tmp"
    return Path(tempfile.mkdtemp(prefix="opsr-", dir=root))  # mkdtemp makes it 0700


def _ipc_kernel_manager(
    started: list | None = None,
    deadline_passed: threading.Event | None = None,
    spare: Any = None,
) -> type:
    """Return a kernel manager talking to the kernel over local IPC sockets, not TCP ports.

    Each kernel's sockets get their own path in the user's private Jupyter runtime folder, or,
    when that folder is too deep for a Unix socket path (a service account's HOME, a test's tmp
    folder), in a short private 0700 folder removed with the kernel. jupyter_client's default
    is the relative name ``kernel-ipc``: every kernel would share one path in the current
    folder (the notebooks/ folder here), a kernel still shutting down would answer the next
    one's client ("Invalid Signature"), and socket files would be left beside the notebooks.
    Other local users cannot reach the kernel, and ipykernel has no reason to warn about
    unencrypted TCP.

    A kernel that fails to start is killed and its sockets and zmq context closed at once: a
    context left with open sockets blocks for ever in ``Context.term()`` when garbage
    collection reaches it, at whatever line then runs (FAULTS.md).

    ``spare``: a manager whose kernel was started ahead for this run (``_Spare``); the first
    manager nbclient asks for is that one, already started, and nbclient then runs, shuts down
    and cleans it up as its own.
    """
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir
    from traitlets import CaselessStrEnum, default

    adopt = [spare] if spare is not None else []

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)
        private_folder: Path | None = None

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            if adopt:  # another class's instance: Python does not run __init__ on it again
                manager = adopt.pop()
                if started is not None:
                    started.append(manager)
                if deadline_passed is not None and deadline_passed.is_set():
                    _kill_kernels([manager], deadline_passed)
                return manager
            return super().__new__(cls, *args, **kwargs)

        @default("ip")
        def _ip_default(self) -> str:
            name = f"opsr-{uuid.uuid4().hex[:12]}-ipc"
            runtime = Path(jupyter_runtime_dir())
            base = compute_socket_base(runtime, name)
            if base is None:
                self.private_folder = _short_private_folder()
                log.info("runtime folder %s is too deep for a socket path; using %s",
                         runtime, self.private_folder)  # fmt: skip
                return str(self.private_folder / name)
            runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
            return str(base)

        # jupyter_client types these on the sync base class; AsyncKernelManager's are async.
        async def start_kernel(self, **kwargs: Any) -> None:  # type: ignore[override]
            if started is not None:  # the runner's deadline watchdog needs the process
                started.append(self)
            try:
                await super().start_kernel(**kwargs)
            except BaseException:
                await self._abandon()
                raise
            if deadline_passed is not None and deadline_passed.is_set():
                _kill_kernels([self], deadline_passed)

        async def _abandon(self) -> None:
            """After a failed start: kill the process, close every socket and the context."""
            try:
                if self.has_kernel:
                    await self._async_kill_kernel()
                await self.cleanup_resources()
                if not self.context.closed:  # a context someone else created: ours to close
                    self.context.destroy(linger=0)
            except Exception:  # boundary: the start's own error is the one to report
                log.exception("cleaning up a kernel that failed to start")
            self._remove_private_folder()

        async def cleanup_resources(self, restart: bool = False) -> None:  # type: ignore[override]
            await super().cleanup_resources(restart=restart)
            if not restart:
                self._remove_private_folder()

        def _remove_private_folder(self) -> None:
            if self.private_folder is not None:
                import shutil

                shutil.rmtree(self.private_folder, ignore_errors=True)
                self.private_folder = None

    return IPCKernelManager


# Kernel managers of the runs in progress in this process, with each run's "killed" event:
# the tick's own deadline kills them all (``kill_running_kernels``).
_RUNNING: dict[int, tuple[list, threading.Event]] = {}


def kill_running_kernels() -> int:
    """Kill the kernel of every notebook run in progress in this process, and the kernel started
    ahead for the next (``keep_next_kernel_ready``); return how many runs."""
    runs = list(_RUNNING.values())
    for managers, fired in runs:
        _kill_kernels(managers, fired)
    if _SPARE:
        _kill_kernels([_SPARE[0].manager], threading.Event())
    return len(runs)


# The tick's next notebook may start its kernel while the current notebook runs (issue 21): a
# fresh kernel, started as nbclient starts one (same kernel, arguments and folder) and nothing
# run in it, so each job still has a kernel of its own. The start is a task on the event loop
# papermill runs its client on, so it advances while the current notebook's cells wait on
# their kernel, and the next run takes the manager as its own.
_NEXT_KERNEL = threading.Event()  # the tick expects another notebook after the one it runs
_SPARE: list[_Spare] = []  # at most one


@dataclass
class _Spare:
    manager: Any
    starting: Any = None  # the asyncio task of its start (None: started already)


def keep_next_kernel_ready(expected: bool) -> None:
    """Say whether another notebook follows the next one in this process (the tick, from its
    agenda): if so, that run starts the following one's kernel while its own cells run."""
    if expected:
        _NEXT_KERNEL.set()
    else:
        _NEXT_KERNEL.clear()


KERNEL_ARGUMENTS = [f"--IPKernelApp.exec_lines={KERNEL_START}"]


def start_kernel_ahead() -> None:
    """Start the kernel of the notebook the tick is about to run (once it knows one is due), so
    that it boots while the run prepares; the run takes it as it takes one started during the
    previous notebook. Nothing when one is waiting already, or runs are in process."""
    if not _SPARE and os.environ.get(IN_PROCESS_ENV) != "1":
        _start_spare()


def _spare_arguments(manager: Any) -> list[str]:
    """The arguments nbclient would start ``manager``'s kernel with: ours, then, for a kernel
    jupyter_client calls ipykernel, its in-memory history file."""
    history = ["--HistoryManager.hist_file=:memory:"] if manager.ipykernel else []
    return [*KERNEL_ARGUMENTS, *history]


def _start_spare() -> None:
    """Start a kernel for the next run, as a task on papermill's event loop."""
    from jupyter_core.utils import ensure_event_loop

    manager = _ipc_kernel_manager()(kernel_name=kernel_name())
    loop = ensure_event_loop()
    starting = loop.create_task(
        manager.start_kernel(extra_arguments=_spare_arguments(manager), cwd=str(NOTEBOOKS))
    )
    _SPARE.append(_Spare(manager, starting))


def _take_spare() -> Any:
    """Return the manager of the kernel started ahead, its start finished; None when there is
    none or it did not start (then it is cleaned up and the run starts its own)."""
    if not _SPARE:
        return None
    from jupyter_core.utils import ensure_event_loop

    spare = _SPARE.pop()
    try:
        ensure_event_loop().run_until_complete(spare.starting)
    except Exception:  # boundary: the run starts a kernel of its own, as without a spare
        log.warning("the kernel started ahead did not start; starting one now", exc_info=True)
        return None
    if not spare.manager.has_kernel:
        return None
    return spare.manager


def discard_spare_kernel() -> None:
    """Shut down the kernel started ahead when no run took it (the tick's end)."""
    if not _SPARE:
        return
    from jupyter_core.utils import ensure_event_loop

    spare = _SPARE.pop()
    ensure_event_loop().run_until_complete(_shut_down(spare))


async def _shut_down(spare: _Spare) -> None:
    manager = spare.manager
    try:
        if spare.starting is not None:
            with contextlib.suppress(Exception):  # a start that failed cleaned up after itself
                await spare.starting
        if manager.has_kernel:
            await manager.shutdown_kernel(now=True)
        await manager.cleanup_resources()
    except Exception:  # boundary: an unused kernel must not fail the tick that ends
        log.exception("shutting down the kernel started ahead")
    finally:
        if not manager.context.closed:
            manager.context.destroy(linger=0)


def _kill_kernels(managers: list, fired: threading.Event) -> None:
    """The whole-notebook deadline: kill the kernel so nbclient stops waiting on it."""
    fired.set()
    for manager in managers:
        process = getattr(getattr(manager, "provisioner", None), "process", None)
        if process is not None and process.poll() is None:
            log.error("notebook deadline passed: killing kernel pid %s", process.pid)
            try:
                os.kill(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def kernel_name() -> str:
    """Return the venv's registered kernel if present, else the native python3 kernel."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        return "python3"
    return KERNEL_NAME


def _declared(source: Path) -> set[str]:
    """Return the parameters the notebook's ``parameters`` cell declares (none if no file).
    Raises ValueError for a notebook papermill cannot inspect (no kernel name)."""
    if not source.is_file():
        return set()
    stat = source.stat()
    return set(_inspect(str(source), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=64)
def _inspect(source: str, mtime_ns: int, size: int) -> frozenset[str]:
    # papermill's own reading of the parameters cell, once per version of the file (a tenth of
    # a second each, asked twice per run)
    import papermill as pm

    return frozenset(pm.inspect_notebook(source))


def _declares_run_id(source: Path) -> bool:
    try:
        return "run_id" in _declared(source)
    except ValueError:  # run_notebook reports it as the run's failure
        return False


def require_known_parameters(source: Path, parameters: dict[str, Any]) -> None:
    """Raise NotebookError for a parameter the notebook does not declare.

    papermill only warns about unknown parameters, so a misspelled one would silently run
    with the default (papermill's strict mode is unmerged).
    """
    declared = _declared(source)
    unknown = sorted(set(parameters) - declared)
    if unknown:
        raise NotebookError(
            f"{source.name} has no parameter {', '.join(unknown)}; "
            f"it declares: {', '.join(sorted(declared))}"
        )


def require_safe_parameters(parameters: dict[str, Any]) -> None:
    """Raise OpsError if a parameter looks like a secret: papermill writes parameters in clear."""

    for name in parameters:
        lowered = name.lower()
        if _SECRET_WORDS.search(name) or any(word in lowered for word in SECRET_PARAMETER_WORDS):
            raise OpsError(
                f"parameter {name!r} looks like a secret; papermill writes parameters into the "
                "executed notebook, so secrets are read inside ops_runner from the environment"
            )


# scrapbook's JSON scrap, as ``sb.glue`` writes it and ``sb.read_notebook`` reads it back.
SCRAP_MIME = "application/scrapbook.scrap.json+json"
SCRAP_VERSION = 1
# The scraps of the in-process runs under way in this process (``_execute_in_process``).
_CAPTURED: list[list[tuple[dict[str, Any], dict[str, Any]]]] = []


def _json_default(value: Any) -> Any:
    """What jupyter_client's JSON encoder accepts beyond JSON: numbers (numpy's too), instants."""
    import numbers

    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"a scrap holds JSON only, not {type(value).__name__}")


def glue(name: str, data: Any) -> None:
    """Record ``data`` (JSON) under ``name`` in the executed notebook, in scrapbook's own scrap
    format (``read_scraps`` and ``scrapbook.read_notebook`` read it back).

    Written here rather than with ``scrapbook.glue``: importing scrapbook in a kernel imports
    papermill, nbformat and jsonschema, seconds of every notebook run for one display call.
    """
    value = json.loads(json.dumps(data, default=_json_default))
    bundle = {
        SCRAP_MIME: {"name": name, "data": value, "encoder": "json", "version": SCRAP_VERSION}
    }
    metadata = {"scrapbook": {"name": name, "data": True, "display": False}}
    if _CAPTURED:
        _CAPTURED[-1].append((bundle, metadata))
        return
    from IPython.display import display

    display(bundle, metadata=metadata, raw=True)


def read_scraps(path: Path) -> dict[str, Any]:
    """Return the scrapbook scraps glued in an executed notebook (name -> data). Raises OSError
    and ValueError (not JSON)."""
    return compute_scraps(json.loads(path.read_text(encoding="utf-8")))


def compute_scraps(node: Any) -> dict[str, Any]:
    """Return the scraps glued in a notebook node (name -> data; the last of a name wins), read
    from its outputs directly: ``glue`` writes JSON scraps only, so neither scrapbook (seconds
    of imports) nor a second parse of the file is needed."""
    scraps: dict[str, Any] = {}
    for cell in node.get("cells", []):
        for output in cell.get("outputs", []) or []:
            scrap = (output.get("data") or {}).get(SCRAP_MIME)
            if isinstance(scrap, dict) and "name" in scrap:
                scraps[str(scrap["name"])] = scrap.get("data")
    return scraps


def run_notebook(
    job: str,
    output: Path,
    parameters: dict[str, Any],
    cell_timeout: float = 600,
    deadline: float | None = None,
    source: Path | None = None,
    in_process: bool = False,
) -> NotebookRun:
    """Execute notebooks/<job>.ipynb (or ``source``) in a fresh kernel into ``output``.

    ``in_process`` runs its cells in this process instead (``_execute_in_process``: for the
    simulated broker's tests, no deadline, no isolation).

    ``cell_timeout`` bounds each cell (seconds); ``deadline`` bounds the whole run (seconds):
    past it the kernel is killed. A run counts only when papermill returned cleanly AND the
    last cell glued a completion record naming ``job``: papermill's own metadata says
    "completed" even after a killed kernel or a timeout. Returns the run; raises NotebookError
    with the reason (the partial notebook stays at ``output``).
    """
    import papermill as pm

    source = source or NOTEBOOKS / f"{job}.ipynb"
    if not source.is_file():
        raise NotebookError(f"no notebook {source}; known jobs: {', '.join(known_jobs())}")
    try:
        require_safe_parameters(parameters)
        require_known_parameters(source, parameters)
    except NotebookError:
        raise
    except (OpsError, ValueError) as exc:  # a secret-looking name; papermill cannot read it
        raise NotebookError(f"{job} refused before running: {exc}", None, str(exc)) from None
    output.parent.mkdir(parents=True, exist_ok=True)
    log.info("executing %s -> %s", source.name, output)
    managers: list = []
    fired = threading.Event()
    spare = None if in_process else _take_spare()
    _RUNNING[id(managers)] = (managers, fired)
    watchdog = None
    if deadline is not None:
        watchdog = threading.Timer(deadline, _kill_kernels, args=(managers, fired))
        watchdog.daemon = True
        watchdog.start()
    began = time.monotonic()

    def failed(reason: str) -> NotebookError:
        took = time.monotonic() - began
        where = output if output.exists() else None
        kept = f"; the partial notebook is {output}" if where else "; no notebook was written"
        return NotebookError(f"{job} failed: {reason}{kept}", where, reason, took)

    try:
        if in_process:
            _execute_in_process(source, output, parameters)
        else:
            manager_class = _ipc_kernel_manager(managers, fired, spare)
            if _NEXT_KERNEL.is_set() and not _SPARE:
                _start_spare()  # advances while this notebook's cells run
            pm.execute_notebook(
                str(source),
                str(output),
                parameters=parameters,
                kernel_name=kernel_name(),
                kernel_manager_class=manager_class,
                cwd=str(NOTEBOOKS),
                execution_timeout=cell_timeout,
                progress_bar=_CELL_PROGRESS.is_set(),
                log_output=False,
                extra_arguments=list(KERNEL_ARGUMENTS),
            )
    except pm.PapermillExecutionError as exc:
        raise failed(f"cell {exc.cell_index} raised {exc.ename}: {exc.evalue}") from None
    except Exception as exc:  # boundary: kernel death, timeouts, nbclient errors
        if fired.is_set():
            limit = f"whole-notebook deadline of {deadline:g} s" if deadline else "tick's deadline"
            raise failed(f"{limit} passed; kernel killed") from None
        if type(exc).__name__ == "CellTimeoutError":
            raise failed(f"a cell ran past the {cell_timeout} s cell timeout") from None
        if type(exc).__name__ == "DeadKernelError":
            raise failed("the kernel died (killed or crashed) before the last cell") from None
        raise failed(f"{type(exc).__name__}: {exc}") from None
    finally:
        _RUNNING.pop(id(managers), None)
        if watchdog is not None:
            watchdog.cancel()
        if spare is not None and spare not in managers:  # taken, but nbclient never asked
            from jupyter_core.utils import ensure_event_loop

            ensure_event_loop().run_until_complete(_shut_down(_Spare(spare)))
    if fired.is_set():  # a deadline passed even if no kernel was there to kill yet
        raise failed("the notebook's or the tick's deadline passed")
    scraps = read_scraps(output)
    completion = scraps.get(COMPLETION_KEY)
    if not isinstance(completion, dict) or completion.get("job") != job:
        raise failed("no completion record from the last cell (the notebook stopped early)")
    took = time.monotonic() - began
    return NotebookRun(job, output, read_sha256(output), completion, scraps, took)


IN_PROCESS_ENV = "OPS_RUNNER_IN_PROCESS_NOTEBOOKS"


def read_in_process(cfg: Config) -> bool:
    """True when ``OPS_RUNNER_IN_PROCESS_NOTEBOOKS=1`` asks for in-process runs (the tests).
    Raises NotebookError when it asks that of a workbook whose broker is not a simulator: a
    real account's jobs run in kernels, each the isolated record of what was done."""
    if os.environ.get(IN_PROCESS_ENV) != "1":
        return False
    if not cfg.simulated:
        why = f"{IN_PROCESS_ENV}=1 is for the simulated broker only; unset it for this workbook"
        raise NotebookError(f"refused before running: {why}", None, why)
    return True


def _execute_in_process(source: Path, output: Path, parameters: dict[str, Any]) -> None:
    """Run the notebook's code cells, parameterized as papermill does, in this process.

    Each cell's outputs are a kernel's: its printed text, what it displays and glues, the value
    of its last expression (tables as HTML, Markdown), and the figures it left open as PNG, so
    its page reads as the kernel's does; a cell that raises stops the run with papermill's own
    error, the partial notebook written. The same code as a kernel runs, without a kernel's
    isolation or deadline: for the tests of the tick on the simulated broker
    (``OPS_RUNNER_IN_PROCESS_NOTEBOOKS=1``), so that only the notebook tests pay seconds for
    each kernel. Never a real account (``execute_job`` refuses).
    """
    import IPython.display
    import nbformat
    import papermill as pm
    from IPython.core import display_functions
    from IPython.core.formatters import DisplayFormatter
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    notebook = load_notebook_node(str(source))
    if parameters:  # as papermill: no injected cell without parameters
        notebook = parameterize_notebook(notebook, parameters, kernel_name="python3",
                                         language="python")  # fmt: skip
    namespace: dict[str, Any] = {"__name__": "__main__"}
    captured: list[tuple[dict[str, Any], dict[str, Any]]] = []
    formatter = DisplayFormatter()

    def display(*objects: Any, **_: Any) -> None:  # IPython's display, as a kernel shows it
        for obj in objects:
            captured.append(formatter.format(obj))

    shown = (IPython.display.display, display_functions.display)
    IPython.display.display = display_functions.display = display
    _CAPTURED.append(captured)
    try:
        count = 0
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            count += 1
            captured.clear()
            printed = io.StringIO()
            error, value = None, None
            try:
                with contextlib.redirect_stdout(printed):
                    value = _run_cell(cell.source, f"<{source.name} cell {index}>", namespace)
            except SystemExit:  # exit() or quit(): in a kernel, the kernel dies (KERNEL_START)
                from nbclient.exceptions import DeadKernelError

                raise DeadKernelError(f"cell {index} called exit()") from None
            except Exception as exc:  # boundary: the cell's error ends the run, as in a kernel
                error = exc
            outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed.getvalue())]
            outputs = outputs if printed.getvalue() else []
            outputs += [nbformat.v4.new_output("display_data", data=bundle, metadata=meta)
                        for bundle, meta in captured]  # fmt: skip
            if value is not None:
                data, meta = formatter.format(value)
                outputs.append(nbformat.v4.new_output("execute_result", data=data, metadata=meta,
                                                      execution_count=count))  # fmt: skip
            outputs += [nbformat.v4.new_output("display_data", data=figure)
                        for figure in _drawn_figures()]  # fmt: skip
            if error is not None:
                ename, evalue = type(error).__name__, str(error)
                trace = [f"{ename}: {evalue}"]
                outputs.append(nbformat.v4.new_output("error", ename=ename, evalue=evalue,
                                                      traceback=trace))  # fmt: skip
            cell.outputs = outputs
            cell.execution_count = count
            if error is not None:
                write_bytes_atomic(output, nbformat.writes(notebook).encode())
                raise pm.PapermillExecutionError(index, None, cell.source, ename, evalue, [])
    finally:
        _CAPTURED.pop()
        IPython.display.display, display_functions.display = shown
        _drawn_figures()  # a failed cell's figures: closed all the same
    write_bytes_atomic(output, nbformat.writes(notebook).encode())


def _run_cell(code: str, name: str, namespace: dict[str, Any]) -> Any:
    """Run a cell's code in ``namespace``; return its last expression's value, as a kernel
    shows it (None when the cell ends in a statement or a ``;``)."""
    tree = ast.parse(code, name)
    last = tree.body[-1] if tree.body else None
    shows = isinstance(last, ast.Expr) and not code.rstrip().endswith(";")
    body = ast.Module(tree.body[:-1] if shows else tree.body, type_ignores=[])
    exec(compile(body, name, "exec"), namespace)
    if not shows:
        return None
    return eval(compile(ast.Expression(last.value), name, "eval"), namespace)  # type: ignore[union-attr]


def _drawn_figures() -> list[dict[str, str]]:
    """Return the figures left open as a kernel's inline backend shows them (PNG), and close
    them."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    figures = []
    for number in plt.get_fignums():
        figure = plt.figure(number)
        png = io.BytesIO()
        figure.savefig(png, format="png", bbox_inches="tight")
        figures.append({"image/png": base64.b64encode(png.getvalue()).decode("ascii"),
                        "text/plain": repr(figure)})  # fmt: skip
    plt.close("all")
    return figures


def known_jobs() -> list[str]:
    """Return the names of the notebooks that can be run as jobs."""
    return sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))


def completion_record(job: str, **outputs: Any) -> dict[str, Any]:
    """Return the completion record a notebook's last cell glues (JSON-safe)."""
    return json.loads(json.dumps({"job": job, **outputs}, default=str))


# --- jobs: a notebook run recorded in the ledger ---------------------------------------------


@dataclass(frozen=True)
class JobRun:
    """One recorded job run: ``completion`` when it completed, ``error`` when it failed."""

    job: str
    slot: str
    run_id: str
    output: Path | None
    completion: dict[str, Any] | None
    error: str | None
    duration: float

    @property
    def ok(self) -> bool:
        return self.error is None


def _relative(cfg: Config, path: Path) -> str:
    try:
        return path.resolve().relative_to(cfg.workbook.resolve()).as_posix()
    except ValueError:
        return str(path)


def execute_job(
    cfg: Config,
    job: str,
    folder: str,
    parameters: dict[str, Any],
    *,
    slot: str,
    session: str,
    cycle: str | None,
    at: datetime,
    source: Path | None = None,
    category: str = "scheduler",
) -> JobRun:
    """Run ``job``'s notebook into ledger/runs/<folder>/<job>-<run id>.ipynb and record it.

    JobStarted goes in before the kernel starts; the executed notebook is registered
    (ArtifactRecorded: path, SHA-256, duration, outcome) whether it completed or not. A failed
    run records JobFailed and an incident and moves to SAFE_MODE, all in one transaction, and
    returns the JobRun with its ``error``; it never raises for a notebook's failure. JobCompleted
    is the caller's to record: only it knows whether the outcome counts as done.
    """

    run_id = compute_run_id(at)  # the job's own clock: a simulated walk's ids read its time
    output = compute_output_path(cfg, folder, job, run_id)
    stamp = format_seconds(at)
    about = {"job": job, "slot": slot, "session": session, "cycle": cycle, "run_id": run_id,
             "at": stamp}  # fmt: skip
    with open_ledger(cfg) as ledger:
        ledger.append(str(EventKind.JOB_STARTED), f"JobStarted:{run_id}", about,
                      run_id=run_id, cycle_id=cycle)  # fmt: skip
    inject("job:started")
    sched = cfg.schedule
    if _declares_run_id(source or NOTEBOOKS / f"{job}.ipynb"):  # not a preview: it records
        parameters = {**parameters, "run_id": run_id}
    try:
        run = run_notebook(
            job,
            output,
            parameters,
            cell_timeout=int(sched.cell_timeout_seconds),
            deadline=60.0 * float(sched.notebook_deadline_minutes),
            source=source,
            in_process=read_in_process(cfg),
        )
    except NotebookError as exc:
        items = []
        if exc.output is not None and exc.output.exists():
            items.append(_artifact(cfg, about, exc.output, exc.duration, "failed", exc.reason))
        evidence = [f"run {run_id}"] + ([f"notebook {_relative(cfg, exc.output)}"]
                                        if exc.output is not None else [])  # fmt: skip
        with open_ledger(cfg) as ledger:
            record_job_failure(ledger, about, exc.reason, category,
                               evidence, extra=items)  # fmt: skip
        log.error("%s", exc)
        return JobRun(job, slot, run_id, exc.output, None, exc.reason, exc.duration)
    with open_ledger(cfg) as ledger:
        kind, key, payload = _artifact(cfg, about, run.output, run.duration, "completed", "")
        ledger.append(kind, key, payload, run_id=run_id, cycle_id=cycle)
    return JobRun(job, slot, run_id, run.output, run.completion, None, run.duration)


def record_job_failure(
    ledger: Ledger,
    about: dict[str, Any],
    error: str,
    category: str,
    evidence: list[str],
    extra: Sequence[tuple[str, str, dict[str, Any]]] = (),
) -> None:
    """Record a failed run: ``extra`` (e.g. its artifact), JobFailed, an incident and SAFE_MODE,
    in one transaction. ``about`` carries job, slot, session, cycle, run_id and at."""

    run_id, slot = str(about["run_id"]), str(about["slot"])
    summary = f"{about['job']} ({slot}) failed: {error}"
    incident_id = f"job-{slot.replace(':', '-')}-{run_id}"
    items = [
        *extra,
        (str(EventKind.JOB_FAILED), f"JobFailed:{run_id}", {**about, "error": error}),
        incident_event(incident_id, category, summary, evidence),
    ]
    apply_trigger(ledger, Trigger.INCIDENT, summary, evidence, run_id=run_id,
                  extra_events=items, cycle_id=about.get("cycle"))  # fmt: skip


def _artifact(
    cfg: Config, about: dict[str, Any], path: Path, duration: float, outcome: str, reason: str
) -> tuple[str, str, dict[str, Any]]:
    payload = {
        **about,
        "path": _relative(cfg, path),
        "sha256": read_sha256(path),
        "duration_seconds": f"{duration:.1f}",
        "outcome": outcome,
        "reason": reason,
    }
    payload.pop("at")
    return str(EventKind.ARTIFACT_RECORDED), f"ArtifactRecorded:{about['run_id']}", payload


_ABOUT = ("job", "slot", "session", "cycle", "run_id", "at")


def record_orphaned_runs(
    cfg: Config, ledger: Ledger, why: str, categories: Mapping[str, str]
) -> list[str]:
    """Record every run that started and never ended as failed; return their run ids.

    A run ended when its notebook was registered (ArtifactRecorded) or its job recorded
    JobCompleted or JobFailed. One that did neither died with its process (killed, power
    lost, stopped at the tick's deadline): JobFailed, an incident and SAFE_MODE, as for any
    failed job, with its partial notebook registered when one was written. Call it holding
    the tick lock, so that no run in progress in another process is taken for dead.
    """
    kinds = (EventKind.ARTIFACT_RECORDED, EventKind.JOB_COMPLETED, EventKind.JOB_FAILED)
    ended = ledger.run_ids([str(kind) for kind in kinds])
    started = ledger.run_ids([str(EventKind.JOB_STARTED)])
    if started <= ended:  # the usual tick: nothing died, nothing decoded
        return []
    orphans = [e for e in ledger.events(kind=str(EventKind.JOB_STARTED)) if e.run_id not in ended]
    for event in orphans:
        about = {k: event.payload.get(k) for k in _ABOUT}
        job, run_id = str(about["job"]), str(about["run_id"])
        written = sorted((cfg.path("ledger") / "runs").glob(f"*/{job}-{run_id}.ipynb"))
        items, evidence = [], [f"run {run_id}", f"started at {about['at']}"]
        if written:
            output = written[0]
            items.append(_artifact(cfg, about, output, 0.0, "failed", why))
            evidence.append(f"notebook {_relative(cfg, output)}")
        record_job_failure(ledger, about, why, categories.get(job, "scheduler"), evidence,
                           extra=items)  # fmt: skip
        log.error("run %s of %s never ended: %s", run_id, about["slot"], why)
    return [str(e.run_id) for e in orphans]
