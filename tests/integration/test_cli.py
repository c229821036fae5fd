"""The `ops-runner` command as a user runs it: real process, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("ops-runner")


def run(*args: str, workbook: Path | None = None, env: dict | None = None):
    argv = [str(EXE)] + (["--workbook", str(workbook)] if workbook else []) + list(args)
    full_env = {k: v for k, v in os.environ.items() if k != "OPS_RUNNER_HOME"}
    full_env.update(env or {})
    return subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=300)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def assert_one_line_error(done, code: int, *words: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture(scope="module")
def workbook(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wb")
    done = run("init", "--template", "demo", workbook=root)  # the SYNTHETIC sample market
    assert done.returncode == 0, done.stderr
    return root


@pytest.mark.subprocess
def test_cli_when_config_has_unknown_key_exits_2_with_one_line(tmp_path):
    assert run("init", workbook=tmp_path).returncode == 0
    config = tmp_path / "config.yaml"
    config.write_text(config.read_text().replace("  top_n: 1", "  top_m: 1"))
    done = run("config", "check", workbook=tmp_path)
    assert_one_line_error(done, 2, "strategy.top_m", "unknown key")


@pytest.mark.subprocess
def test_cli_when_submission_window_after_open_exits_2_naming_key(tmp_path):
    assert run("init", "--template", "demo", workbook=tmp_path).returncode == 0
    config = tmp_path / "config.yaml"
    config.write_text(config.read_text().replace('end: "09:20"', 'end: "09:45"'))
    done = run("qa", "--as-of", "2025-12-31", workbook=tmp_path)
    assert_one_line_error(done, 2, "schedule.submission_window.end", "open")


@pytest.mark.subprocess
def test_cli_when_workbook_missing_says_run_init(tmp_path):
    done = run("config", "check", workbook=tmp_path / "none")
    assert_one_line_error(done, 2, "ops-runner init")


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_when_bad_as_of_exits_2(workbook):
    done = run("qa", "--as-of", "2025-31-12", workbook=workbook)
    assert_one_line_error(done, 2, "--as-of", "YYYY-MM-DD")


@pytest.mark.subprocess
def test_cli_when_usage_wrong_exits_2_one_line():
    done = run("data", "import", "x.csv", "--layout", "bloomberg")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "bloomberg" in done.stderr


@pytest.mark.subprocess
def test_cli_when_home_env_set_uses_that_workbook(workbook):
    done = run("config", "hash", env={"OPS_RUNNER_HOME": str(workbook)})
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip()) == 64


@pytest.mark.subprocess
def test_cli_data_when_csv_has_bad_date_refuses_and_store_unchanged(workbook, tmp_path):
    good = "Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,10,11,9,10.5,10.5,100\n"
    (tmp_path / "AAA.csv").write_text(good)
    bad = good + "2024-01-0x,10,11,9,10.5,10.5,100\n"
    (tmp_path / "BBB.csv").write_text(bad)
    before = snapshot(workbook / "data")
    done = run(
        "data", "import", str(tmp_path), "--layout", "generic", "--name", "mine", workbook=workbook
    )
    assert_one_line_error(done, 2, "BBB.csv", "line 3")
    assert snapshot(workbook / "data") == before


@pytest.mark.subprocess
def test_cli_data_when_header_matches_no_layout_refuses(workbook, tmp_path):
    (tmp_path / "ZZZ.csv").write_text("when,price\n2024-01-02,10\n")
    before = snapshot(workbook / "data")
    done = run(
        "data", "import", str(tmp_path / "ZZZ.csv"), "--layout", "alphavantage", workbook=workbook
    )
    assert_one_line_error(done, 2, "ZZZ.csv", "alphavantage")
    assert snapshot(workbook / "data") == before


@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_data_when_sample_then_list_shows_synthetic_symbols(workbook):
    done = run("data", "sample", workbook=workbook)
    assert done.returncode == 0, done.stderr
    assert "SYNTHETIC" in done.stdout
    again = run("data", "sample", workbook=workbook)
    assert again.returncode == 0 and "imported 0" in again.stdout
    listing = run("data", "list", "--json", workbook=workbook)
    rows = json.loads(listing.stdout)
    spy = next(r for r in rows if r["symbol"] == "SPY" and r["source"] == "sample")
    assert spy["synthetic"] is True and spy["rows"] > 2500


@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_qa_when_sample_is_clean_exits_0(workbook):
    assert run("data", "sample", workbook=workbook).returncode == 0
    done = run("qa", "--as-of", "2025-12-31", "--json", workbook=workbook)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["blocking"] is False
    assert report["as_of"] == "2025-12-31"


@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_qa_when_universe_symbol_stale_exits_1(workbook):
    assert run("data", "sample", workbook=workbook).returncode == 0
    # 2026-01-02 is a session the sample market (which ends 2025-12-31) has no bar for.
    done = run("qa", "--as-of", "2026-01-02", "--json", workbook=workbook)
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    stale = {f["symbol"] for f in report["findings"] if f["check"] == "freshness"}
    assert {"SPY", "AGG", "BIL"} <= stale


@pytest.mark.subprocess
def test_cli_when_workbook_given_after_the_verb_uses_it(tmp_path):
    done = run("init", "--workbook", str(tmp_path / "after"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "after" / "config.yaml").is_file()
    listing = run("data", "list", "--workbook", str(tmp_path / "after"))
    assert listing.returncode == 0 and "price store is empty" in listing.stdout


@pytest.mark.slow  # a whole cycle through ops-runner run
@pytest.mark.subprocess
def test_cli_run_when_a_cycle_goes_through_the_sim_broker_registers_each_notebook(tmp_path):
    from ops_runner.core.events import EventKind
    from ops_runner.ledger import open_ledger

    assert run("init", "--template", "demo", workbook=tmp_path).returncode == 0
    assert run("data", "sample", workbook=tmp_path).returncode == 0
    # by hand, in the tick's order and windows: QA and the decision after the 2025-11-28 close
    steps = [
        ("baseline", "approve", "--reason", "the sample workbook as made"),
        ("run", "pre_rebalance_checks", "--as-of", "2025-11-28", "--now", "2025-11-28T19:00:00Z"),
        ("run", "data_qa", "--as-of", "2025-11-28", "--now", "2025-11-28T19:00:00Z"),
        ("run", "decision", "--as-of", "2025-11-28", "--now", "2025-11-28T19:00:00Z"),
        ("run", "execution", "--cycle", "2025-11", "--now", "2025-12-01T13:30:00Z"),
        ("run", "reconciliation", "--cycle", "2025-11", "--now", "2025-12-01T15:30:00Z"),
    ]
    for step in steps:
        done = run(*step, workbook=tmp_path)
        assert done.returncode == 0, (step, done.stdout, done.stderr[-2000:])
    assert done.stdout.strip() == "reconciliation:2025-11 CLEAN"
    check = run("broker", "check", "--json", workbook=tmp_path)
    assert check.returncode == 0 and '"account": "DU*****00"' in check.stdout
    assert json.loads(check.stdout)["role"] == "readonly"
    check = run("broker", "check", "--json", "--role", "orders", workbook=tmp_path)
    assert check.returncode == 0 and json.loads(check.stdout)["role"] == "orders"
    from ops_runner.workbook.config import load_config

    with open_ledger(load_config(tmp_path)) as ledger:
        registered = [e.payload for e in ledger.events(kind=str(EventKind.ARTIFACT_RECORDED))]
    jobs = ["data_qa", "decision", "execution", "reconciliation"]
    assert [r["job"] for r in registered] == jobs
    assert {r["outcome"] for r in registered} == {"completed"}
    paths = [r["path"] for r in registered]
    assert len(set(paths)) == 4 and all(f"-{r['run_id']}.ipynb" in r["path"] for r in registered)
    import hashlib

    for item in registered:  # the artifact and the record vouch for each other
        assert hashlib.sha256((tmp_path / item["path"]).read_bytes()).hexdigest() == item["sha256"]
    again = run("run", "execution", "--cycle", "2025-11", "--now", "2025-12-01T13:40:00Z",
                workbook=tmp_path)  # fmt: skip
    assert again.returncode == 0  # every intent already settled: nothing to send, nothing twice
    late = run("run", "execution", "--cycle", "2025-11", "--now", "2025-12-02T13:30:00Z",
               workbook=tmp_path)  # fmt: skip
    assert late.returncode == 1 and "submission window for 2025-12-01 closed" in late.stderr
    with open_ledger(load_config(tmp_path)) as ledger:
        runs = [e.payload["path"] for e in ledger.events(kind=str(EventKind.ARTIFACT_RECORDED))]
        submitted = list(ledger.events(kind=str(EventKind.ORDER_SUBMITTED)))
    assert len(runs) == 5 and runs[:4] == paths  # the re-run has its own file; none rewritten
    assert len(submitted) == len({e.payload["client_ref"] for e in submitted})
    verify = run("ledger", "verify", workbook=tmp_path)
    assert verify.returncode == 0 and "5 registered notebooks" in verify.stdout
    (tmp_path / paths[0]).write_text("{}")  # an artifact edited after the fact
    broken = run("ledger", "verify", workbook=tmp_path)
    assert broken.returncode == 1 and "changed since it was recorded" in broken.stdout


@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_when_output_piped_into_head_exits_quietly(tmp_path):
    assert run("init", "--template", "demo", workbook=tmp_path).returncode == 0
    assert run("data", "sample", workbook=tmp_path).returncode == 0
    argv = f"'{EXE}' --workbook '{tmp_path}' data list | head -1"
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {argv}"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
    assert done.stdout.startswith("source")


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
@pytest.mark.subprocess
def test_cli_data_sample_when_the_workbook_is_not_a_demo_refuses_and_writes_nothing(tmp_path):
    assert run("init", workbook=tmp_path).returncode == 0
    before = snapshot(tmp_path / "data")
    done = run("data", "sample", workbook=tmp_path)
    assert_one_line_error(done, 2, "data.primary", "demo")
    assert snapshot(tmp_path / "data") == before


# -- help that teaches, "did you mean", JSON on every read verb and on every failure ---------------

# The exit codes a user relies on (issue 19): QA 1 on blocking findings, drill 0/1/2, corrupt 3.
KNOWN_EXIT_CODES = {
    "qa": {1: "blocking", 3: "corrupt"},
    "drill": {0: "PASS", 1: "FAIL", 2: "NO_BACKUP", 3: "corrupt"},
    "tick": {4: "deadline"},
    "audit": {0: "CLEAN", 1: "BREAK"},
}


def _exit_codes(help_text: str) -> dict[int, str]:
    block = help_text.split("exit codes:\n", 1)[1]
    rows = [line.split(maxsplit=1) for line in block.splitlines() if line.startswith("  ")]
    return {int(code): text for code, text in rows}


@pytest.mark.subprocess
def test_cli_help_when_asked_for_a_verb_shows_its_purpose_an_example_and_exit_codes():
    done = run("drill", "--help")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "disaster-recovery drill" in done.stdout.split("\n\n")[1]
    example = done.stdout.split("example:\n", 1)[1].splitlines()[0].strip()
    assert example.startswith("ops-runner drill"), example
    codes = _exit_codes(done.stdout)
    for code, word in KNOWN_EXIT_CODES["drill"].items():
        assert word in codes[code], (code, codes)


def test_cli_help_when_asked_for_any_verb_or_action_has_an_example_and_exit_codes(capsys):
    from ops_runner.cli import build_parser, main

    parser = build_parser()
    (verbs,) = [a for a in parser._subparsers._group_actions]  # type: ignore[union-attr]
    paths = []
    for name, verb in verbs.choices.items():
        paths.append([name])
        if verb._subparsers is not None:
            (actions,) = verb._subparsers._group_actions
            paths += [[name, action] for action in actions.choices]
    assert len(paths) > 30
    for path in paths:
        with pytest.raises(SystemExit) as done:
            main([*path, "--help"])
        text = capsys.readouterr().out
        assert done.value.code == 0
        purpose = text.split("\n\n")[1].strip()  # the line after the usage
        assert purpose and not purpose.startswith(("options", "positional")), (path, text)
        assert "example:\n  ops-runner " in text and _exit_codes(text)[0] != "", path
        for code, word in KNOWN_EXIT_CODES.get(path[0], {}).items():
            assert word in _exit_codes(text)[code], (path, code, text)


@pytest.mark.subprocess
def test_cli_top_level_help_speaks_to_users_and_lists_every_verb_with_its_purpose():
    done = run("--help")
    assert done.returncode == 0
    text = done.stdout
    assert "maps expected errors" not in text and "the one entry point" not in text
    assert "ops-runner demo" in text and "ops-runner VERB --help" in text
    for verb in ("init", "tick", "run", "decide", "qa", "drill", "sweep", "walk-forward", "lab",
                 "incident"):  # fmt: skip
        (line,) = [row for row in text.splitlines() if row.strip().startswith(f"{verb} ")]
        assert len(line.split()) > 2, line  # the verb and its purpose


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "typed, meant", [(["tikc"], "tick"), (["stauts"], "status"), (["data", "imprt", "x"], "import")]
)
def test_cli_when_a_verb_is_misspelled_suggests_the_right_one_in_one_line(typed, meant):
    done = run(*typed)
    assert_one_line_error(done, 2, f"did you mean `{meant}`?")
    assert done.stdout == ""


@pytest.mark.subprocess
def test_cli_when_json_is_asked_and_the_command_fails_stdout_holds_the_error(tmp_path):
    done = run("config", "show", "--json", workbook=tmp_path / "none")  # no workbook there
    assert_one_line_error(done, 2, "ops-runner init")
    answer = json.loads(done.stdout)
    assert (
        answer == {"error": answer["error"], "exit_code": 2}
        and "ops-runner init" in answer["error"]
    )


def test_cli_when_json_is_asked_and_the_line_or_the_ledger_fails_stdout_holds_the_error(
    tmp_path, capsys
):
    from ops_runner.cli import main

    assert main(["tikc", "--json"]) == 2  # the line does not parse
    assert json.loads(capsys.readouterr().out)["error"].startswith("unknown 'tikc'")
    assert main(["--workbook", str(tmp_path), "init"]) == 0
    (tmp_path / "ledger" / "ledger.sqlite").write_bytes(b"not a database" * 100)
    capsys.readouterr()
    code = main(["--workbook", str(tmp_path), "incident", "show", "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert code == 3 and answer["exit_code"] == 3 and "corrupt" in answer["error"]


@pytest.mark.subprocess
def test_cli_config_show_json_masks_the_account_and_prints_no_secret(workbook):
    secret = "k" * 40
    done = run("config", "show", "--json", workbook=workbook,
               env={"OPS_RUNNER_APPROVAL_KEY": secret})  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    assert config["broker"]["account"] == "DU*****00"  # DU0000000 in the template
    assert "DU0000000" not in done.stdout and secret not in done.stdout
    done = run("config", "check", "--json", workbook=workbook)
    assert json.loads(done.stdout)["ok"] is True and done.returncode == 0


# -- ops-runner lab --------------------------------------------------------------------------------


def _workbook_with_runs(root: Path) -> dict[str, bytes]:
    """A workbook holding two executed runs; returns their bytes by path under ledger/runs."""
    from ops_runner.ledger.init import init_workbook

    init_workbook(root, template="demo")
    runs = {"2025-11/data_qa-20251128T213000Z-aaaaaa.ipynb": b'{"cells": []}',
            "2025-11/decision-20251128T213100Z-bbbbbb.ipynb": b'{"cells": [], "n": 1}'}  # fmt: skip
    for name, data in runs.items():
        (root / "ledger" / "runs" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "ledger" / "runs" / name).write_bytes(data)
    return runs


def test_lab_when_options_are_given_passes_them_to_jupyterlab_beside_the_runs(
    tmp_path, monkeypatch, capsys
):
    from ops_runner.cli import main

    root = tmp_path / "wb"
    runs = _workbook_with_runs(root)
    before = snapshot(root)
    monkeypatch.setenv("OPS_RUNNER_CACHE_DIR", str(tmp_path / "cache"))
    started: list = []
    monkeypatch.setattr(os, "execvpe", lambda file, argv, env: started.append((argv, env)))

    argv = ["--workbook", str(root), "lab", "--port", "8899", "--no-browser", "--ip", "127.0.0.1"]
    assert main([*argv, "--", "--ServerApp.allow_origin=*"]) == 0

    [(command, env)] = started
    folder = Path(command[3].split("=", 1)[1])
    assert command == [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}",
                       "--port=8899", "--ip=127.0.0.1", "--no-browser",
                       "--ServerApp.allow_origin=*"]  # fmt: skip
    assert (folder / "notebooks").resolve() == ROOT / "notebooks"
    assert {str(p.relative_to(folder / "runs")): p.read_bytes()
            for p in (folder / "runs").rglob("*.ipynb")} == runs  # fmt: skip
    assert env["OPS_RUNNER_HOME"] == str(root.resolve())
    assert snapshot(root) == before  # opening a workbook never writes to it
    assert "2 read-only copies" in capsys.readouterr().err

    (folder / "notebooks").unlink()  # a link left by a project since moved
    (folder / "notebooks").symlink_to(tmp_path, target_is_directory=True)
    assert main(argv) == 0
    assert (folder / "notebooks").resolve() == ROOT / "notebooks"


@pytest.mark.subprocess
@pytest.mark.slow
def test_lab_when_started_serves_the_notebooks_and_the_workbooks_runs(tmp_path):
    import socket
    import time
    import urllib.request

    root = tmp_path / "wb"
    runs = _workbook_with_runs(root)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root_only = ["--", "--allow-root"] if os.geteuid() == 0 else []  # JupyterLab refuses root
    env = {**os.environ, "JUPYTER_TOKEN": "t0k3n", "OPS_RUNNER_CACHE_DIR": str(tmp_path / "c")}
    argv = [str(EXE), "--workbook", str(root), "lab", "--no-browser", "--ip", "127.0.0.1",
            "--port", str(port), *root_only]  # fmt: skip
    lab = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/api/contents/runs/2025-11?token=t0k3n"
        listing = None
        for _ in range(240):
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    listing = json.load(answer)
                break
            except OSError:
                assert lab.poll() is None, lab.stderr.read().decode()[-2000:] if lab.stderr else ""
                time.sleep(0.25)
        assert listing is not None, "JupyterLab did not answer in 60 s"
        assert {f"2025-11/{item['name']}" for item in listing["content"]} == set(runs)
        notebooks = f"http://127.0.0.1:{port}/api/contents/notebooks?token=t0k3n"
        with urllib.request.urlopen(notebooks, timeout=5) as answer:
            names = {item["name"] for item in json.load(answer)["content"]}
        assert "decision.ipynb" in names and "execution.ipynb" in names
    finally:
        lab.terminate()
        lab.wait(timeout=30)
