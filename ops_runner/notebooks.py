"""Run the workbook's parameterized notebooks with papermill and judge the result honestly."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops_runner.config import Config, init_workbook, load_config, resolve_workbook
from ops_runner.errors import OpsError

log = logging.getLogger(__name__)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL_NAME = "ops-runner"
COMPLETION_KEY = "completion"
SAMPLE_DECIDED_SESSION = "2025-11-28"  # the cycle the sample notebooks default to (2025-11)
SECRET_PARAMETER_WORDS = ("password", "secret", "token", "api_key", "apikey", "credential")


class NotebookError(OpsError):
    """A notebook run failed; the partial executed notebook is kept at ``output``."""

    def __init__(self, message: str, output: Path | None = None) -> None:
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class NotebookRun:
    """One executed notebook: where it is, its SHA-256 and what its last cell recorded."""

    job: str
    output: Path
    sha256: str
    completion: dict[str, Any]
    scraps: dict[str, Any]


def open_workbook(workbook: str = "") -> Config:
    """Return the Config of the notebook's workbook, setting up the sample workbook if needed.

    ``workbook`` empty means $OPS_RUNNER_HOME, else the project's ``demo/`` sample workbook,
    so that a notebook opened in JupyterLab runs top to bottom offline on the sample data.
    """
    if not workbook and not os.environ.get("OPS_RUNNER_HOME"):
        workbook = str(NOTEBOOKS.parent / "demo")
    root = resolve_workbook(workbook)
    if not (root / "config.yaml").exists():
        init_workbook(root)
    cfg = load_config(root)
    if cfg.values["data"]["primary"] == "sample" and "sample" not in cfg.store().sources():
        from ops_runner.decision import decide
        from ops_runner.sources.sample import write_sample

        write_sample(cfg.store(), calendar=cfg.calendar())
        # A new sample workbook also gets the decision its execution and reconciliation
        # notebooks default to, so each of them runs offline on its own.
        decide(cfg, SAMPLE_DECIDED_SESSION)
    return cfg


def _ipc_kernel_manager() -> type:
    """Return a kernel manager talking to the kernel over local IPC sockets, not TCP ports.

    Each kernel's sockets get their own path in the user's private Jupyter runtime folder.
    jupyter_client's default is the relative name ``kernel-ipc``: every kernel would share
    one path in the current folder (the notebooks/ folder here), a kernel still shutting down
    would answer the next one's client ("Invalid Signature"), and socket files would be left
    beside the notebooks. Other local users cannot reach the kernel, and ipykernel has no
    reason to warn about unencrypted TCP.
    """
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir
    from traitlets import CaselessStrEnum, default

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @default("ip")
        def _ip_default(self) -> str:
            folder = Path(jupyter_runtime_dir())
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            # short: a Unix socket path must stay under ~104 bytes with its "-N" suffix
            return str(folder / f"opsr-{uuid.uuid4().hex[:12]}-ipc")

    return IPCKernelManager


def kernel_name() -> str:
    """Return the venv's registered kernel if present, else the native python3 kernel."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        return "python3"
    return KERNEL_NAME


def require_known_parameters(source: Path, parameters: dict[str, Any]) -> None:
    """Raise NotebookError for a parameter the notebook does not declare.

    papermill only warns about unknown parameters, so a misspelled one would silently run
    with the default (papermill's strict mode is unmerged).
    """
    import papermill as pm

    declared = set(pm.inspect_notebook(str(source)))
    unknown = sorted(set(parameters) - declared)
    if unknown:
        raise NotebookError(
            f"{source.name} has no parameter {', '.join(unknown)}; "
            f"it declares: {', '.join(sorted(declared))}"
        )


def require_safe_parameters(parameters: dict[str, Any]) -> None:
    """Raise OpsError if a parameter looks like a secret: papermill writes parameters in clear."""
    for name in parameters:
        if any(word in name.lower() for word in SECRET_PARAMETER_WORDS):
            raise OpsError(
                f"parameter {name!r} looks like a secret; papermill writes parameters into the "
                "executed notebook, so secrets are read inside ops_runner from the environment"
            )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_scraps(path: Path) -> dict[str, Any]:
    """Return the scrapbook scraps glued in an executed notebook (name -> data)."""
    import scrapbook as sb

    return {name: scrap.data for name, scrap in sb.read_notebook(str(path)).scraps.items()}


def run_notebook(
    job: str,
    output: Path,
    parameters: dict[str, Any],
    cell_timeout: int = 600,
) -> NotebookRun:
    """Execute notebooks/<job>.ipynb in a fresh kernel into ``output`` and return the run.

    A run counts only when papermill returned cleanly AND the last cell glued its completion
    record: papermill's own metadata says "completed" even after a killed kernel.
    Raises NotebookError (the partial notebook stays at ``output``).
    """
    import papermill as pm

    source = NOTEBOOKS / f"{job}.ipynb"
    if not source.is_file():
        raise NotebookError(f"no notebook {source}; known jobs: {', '.join(known_jobs())}")
    require_safe_parameters(parameters)
    require_known_parameters(source, parameters)
    output.parent.mkdir(parents=True, exist_ok=True)
    log.info("executing %s -> %s", source.name, output)
    try:
        pm.execute_notebook(
            str(source),
            str(output),
            parameters=parameters,
            kernel_name=kernel_name(),
            kernel_manager_class=_ipc_kernel_manager(),
            cwd=str(NOTEBOOKS),
            execution_timeout=cell_timeout,
            progress_bar=False,
            log_output=False,
        )
    except pm.PapermillExecutionError as exc:
        raise NotebookError(
            f"{job} failed in cell {exc.cell_index}: {exc.ename}: {exc.evalue}; "
            f"the partial notebook is {output}",
            output,
        ) from None
    except Exception as exc:  # boundary: kernel death, timeout, nbclient errors
        raise NotebookError(
            f"{job} did not finish ({type(exc).__name__}: {exc}); the partial notebook is {output}",
            output,
        ) from None
    scraps = read_scraps(output)
    completion = scraps.get(COMPLETION_KEY)
    if not isinstance(completion, dict) or completion.get("job") != job:
        raise NotebookError(
            f"{job} wrote no completion record; treat the run as failed and read {output}", output
        )
    return NotebookRun(job, output, _sha256(output), completion, scraps)


def known_jobs() -> list[str]:
    """Return the names of the notebooks that can be run as jobs."""
    return sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))


def completion_record(job: str, **outputs: Any) -> dict[str, Any]:
    """Return the completion record a notebook's last cell glues (JSON-safe)."""
    return json.loads(json.dumps({"job": job, **outputs}, default=str))
