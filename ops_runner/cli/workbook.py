"""`ops-runner` verbs for the workbook itself: init, config, status, the demo and JupyterLab."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ops_runner.cli.common import add_verb


def cmd_init(args: argparse.Namespace) -> int:
    from ops_runner.ledger.init import init_workbook
    from ops_runner.workbook.config import load_config

    target = init_workbook(args.workbook, template=args.template)
    print(f"workbook ready: {target} (edit it, then `ops-runner config check`)")
    if load_config(target.parent).values["data"]["primary"] is None:
        print(
            "no data source yet: fetch or import prices under a source name (`ops-runner data "
            "fetch --source NAME`, `ops-runner data import PATH --layout L --name NAME`), then "
            "set data.primary: NAME; `--template demo` makes a SYNTHETIC sample workbook"
        )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from ops_runner.workbook.config import load_config, mask_account

    cfg = load_config(args.workbook)
    if args.action == "show":  # JSON either way: the whole config, the account masked
        values = json.loads(json.dumps(cfg.values, default=str))
        values["broker"]["account"] = mask_account(values["broker"]["account"])
        print(json.dumps(values, indent=2, sort_keys=True))
    elif args.json:
        print(json.dumps({"ok": True, "config": str(cfg.source_path), "hash": cfg.hash}))
    elif args.action == "hash":
        print(cfg.hash)
    else:
        print(f"config ok: {cfg.source_path} (hash {cfg.hash[:12]})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ops_runner.ops import status
    from ops_runner.workbook.config import load_config

    report = status.read_status(load_config(args.workbook))
    print(json.dumps(report, indent=2, default=str) if args.json else status.format_status(report))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ops_runner import demo

    if not args.verbose:  # the demo tells the story itself; state warnings would break the bar
        logging.getLogger("ops_runner").setLevel(logging.ERROR)
    return demo.run_demo_cli(args.workbook, args.months, args.broker)


def cmd_lab(args: argparse.Namespace) -> int:
    from ops_runner.runtime.notebooks import NOTEBOOKS

    if args.workbook:
        os.environ["OPS_RUNNER_HOME"] = str(Path(args.workbook).resolve())
    os.execvp(sys.executable, [sys.executable, "-m", "jupyterlab", str(NOTEBOOKS.parent)])
    return 0  # pragma: no cover - exec does not return


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
        {2: "config.yaml has a mistake: one line names each key"},
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
    p.set_defaults(func=cmd_lab)
