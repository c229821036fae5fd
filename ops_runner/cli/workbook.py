"""`ops-runner` verbs for the workbook itself: init, config, status, the demo and JupyterLab."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

from ops_runner.cli.common import add_verb
from ops_runner.ledger.init import init_workbook
from ops_runner.ops import status
from ops_runner.runtime.notebooks import DEMO_WORKBOOK, NOTEBOOKS
from ops_runner.workbook.config import (
    CONFIG_NAME,
    HOME_ENV,
    load_config,
    mask_account,
    resolve_workbook,
)


def cmd_init(args: argparse.Namespace) -> int:
    target = init_workbook(args.workbook, template=args.template)
    print(f"workbook ready: {target} (edit it, then `ops-runner config check`)")
    if load_config(target.parent).data.primary is None:
        print(
            "no data source yet: fetch or import prices under a source name (`ops-runner data "
            "fetch --source NAME`, `ops-runner data import PATH --layout L --name NAME`), then "
            "set data.primary: NAME; `--template demo` makes a SYNTHETIC sample workbook"
        )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.workbook)
    if args.action == "check" and cfg.alerts.push.channels:
        # here, not at the top: apprise loads only when there are push channels to check
        from ops_runner.runtime.alerts import require_push_channels

        require_push_channels(cfg)  # each one's URL is a secret: set, and a URL apprise knows
    if args.action == "show":  # JSON either way: the whole config, the account masked
        values = json.loads(json.dumps(cfg.values, default=str))
        values["broker"]["account"] = mask_account(cfg.broker.account)
        print(json.dumps(values, indent=2, sort_keys=True))
    elif args.json:
        print(json.dumps({"ok": True, "config": str(cfg.source_path), "hash": cfg.hash}))
    elif args.action == "hash":
        print(cfg.hash)
    else:
        print(f"config ok: {cfg.source_path} (hash {cfg.hash[:12]})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    report = status.read_status(load_config(args.workbook))
    print(json.dumps(report, indent=2, default=str) if args.json else status.format_status(report))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner import demo

    if not args.verbose:  # the demo tells the story itself; state warnings would break the bar
        logging.getLogger("ops_runner").setLevel(logging.ERROR)
    return demo.run_demo_cli(args.workbook, args.months, args.broker)


def choose_lab_workbook(workbook: str | None) -> tuple[Path, bool]:
    """Return the workbook whose runs the lab shows, and whether it was chosen (--workbook,
    $OPS_RUNNER_HOME or the current folder holding a config.yaml) rather than the demo
    workbook the notebooks open by default."""

    if workbook or os.environ.get(HOME_ENV) or (Path.cwd() / CONFIG_NAME).is_file():
        return resolve_workbook(workbook), True
    return DEMO_WORKBOOK.resolve(), False


def write_lab_folder(workbook: Path) -> tuple[Path, int]:
    """Return the folder JupyterLab opens and how many runs it shows: ``notebooks/`` (the
    project's sources, a link) beside ``runs/``, read-only copies of the workbook's executed
    notebooks (``ledger/runs``). Copies, because the originals are audit artifacts whose
    SHA-256 the ledger holds: a cell run and saved in the lab must never change them. The
    folder is in the machine's cache, never in the workbook; opening a workbook never writes
    to it."""
    # here, not at the top: pandas loads only when this verb runs
    from ops_runner.market.calendar import compute_cache_folder

    key = hashlib.sha256(str(workbook).encode()).hexdigest()[:12]
    folder = compute_cache_folder() / "lab" / f"{workbook.name}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "notebooks"
    if link.is_symlink() and link.readlink() != NOTEBOOKS:  # the project moved since
        link.unlink()
    if not link.is_symlink():
        link.symlink_to(NOTEBOOKS, target_is_directory=True)
    source = (
        load_config(workbook).path("ledger") / "runs"
        if (workbook / CONFIG_NAME).is_file()
        else workbook / "ledger" / "runs"
    )
    copies = folder / "runs"
    shown = 0
    for original in sorted(source.rglob("*.ipynb")) if source.is_dir() else []:
        copy = copies / original.relative_to(source)
        shown += 1
        if copy.is_file() and copy.stat().st_size == original.stat().st_size:
            continue  # a run is never edited after it is written: same name, same bytes
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.unlink(missing_ok=True)
        shutil.copyfile(original, copy)
        copy.chmod(0o444)
    return folder, shown


def compute_lab_command(folder: Path, args: argparse.Namespace) -> list[str]:
    """Return the JupyterLab command line: its root ``folder`` and the options passed on."""
    argv = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}"]
    if args.port is not None:
        argv.append(f"--port={args.port}")
    if args.ip:
        argv.append(f"--ip={args.ip}")
    if args.no_browser:
        argv.append("--no-browser")
    return argv + list(args.lab_args)


def cmd_lab(args: argparse.Namespace) -> int:
    workbook, chosen = choose_lab_workbook(args.workbook)
    folder, shown = write_lab_folder(workbook)
    env = dict(os.environ)
    if chosen:  # the notebooks' own default is $OPS_RUNNER_HOME, else the demo workbook
        env[HOME_ENV] = str(workbook)
    print(f"JupyterLab on {folder}: notebooks/ (the sources) and runs/ ({shown} read-only "
          f"copies of {workbook}/ledger/runs)", file=sys.stderr)  # fmt: skip
    argv = compute_lab_command(folder, args)
    sys.stderr.flush()
    os.execvpe(argv[0], argv, env)
    return 0  # only when exec is replaced (tests): exec does not return


def add_verbs(sub: argparse._SubParsersAction) -> None:
    """Add this group's verbs to the command's subparsers."""
    p = add_verb(
        sub,
        "init",
        "create a workbook: config.yaml from a template, an empty ledger",
        "ops-runner init --workbook ~/rotation\nops-runner init --workbook ~/demo --template demo",
    )
    p.add_argument(
        "--template",
        default="config",
        help="templates/<name>.yaml (default config: no data source yet); demo: the SYNTHETIC "
        "sample market",
    )
    p.set_defaults(func=cmd_init)

    p = add_verb(
        sub,
        "config",
        "check, show or hash the workbook's config.yaml",
        "ops-runner --workbook ~/rotation config check\n"
        "ops-runner --workbook ~/rotation config show --json",
        {
            2: "a mistake in config.yaml (one line names each key) or in the command line, or a "
            "push channel without its URL secret"
        },
    )
    p.add_argument("action", choices=("check", "show", "hash"), nargs="?", default="check")
    p.add_argument("--json", action="store_true", help="the answer as JSON (account masked)")
    p.set_defaults(func=cmd_config)

    p = add_verb(
        sub,
        "status",
        "the state and why, incidents, kill switch, ledger head, drawdown",
        "ops-runner --workbook ~/rotation status --json",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = add_verb(
        sub,
        "demo",
        "walk months of the production run on the SYNTHETIC sample market",
        "ops-runner demo --months 3",
    )
    p.add_argument("--months", type=int, default=3, help="rebalance cycles to walk (default 3)")
    p.add_argument(
        "--broker",
        choices=("sim", "ib-sim"),
        default="sim",
        help="sim: the file-backed simulated broker; ib-sim: the IB adapter against the loopback "
        "TWS API simulator",
    )
    p.set_defaults(func=cmd_demo)

    p = add_verb(
        sub,
        "lab",
        "open JupyterLab on the notebooks and the workbook's executed runs",
        "ops-runner --workbook ~/rotation lab --no-browser --port 8890",
    )
    p.add_argument("--port", type=int, help="JupyterLab's port (default: its own, 8888)")
    p.add_argument("--ip", help="the address to listen on (default: JupyterLab's, localhost)")
    p.add_argument(
        "--no-browser", action="store_true", help="do not open a browser (print the URL)"
    )
    p.add_argument(
        "lab_args",
        nargs="*",
        metavar="-- JUPYTER_OPTION",
        help="anything after -- goes to JupyterLab as written (e.g. -- --allow-root)",
    )
    p.set_defaults(func=cmd_lab)
