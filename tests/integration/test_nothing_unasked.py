"""Nothing is ever written that nobody asked for (issue 16, part 1).

A workbook made by `ops-runner init` names no data source: no tick ever writes the SYNTHETIC
sample or a decision into it. A production notebook run by hand (no run id) is a preview that
computes and shows everything and records nothing. And every path to a decision (the tick,
`ops-runner run decision`, `ops-runner decide`, a notebook, the library) passes the same gates:
RUN, an approved and unchanged baseline, a clean data QA of the session on the data as it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    copy_of_built,
    make_decided_november,
    make_undecided_november,
    snapshot_folder,
)

from ops_runner.core.events import EventKind, Trigger
from ops_runner.ledger import open_ledger
from ops_runner.ledger.states import apply_trigger
from ops_runner.market.prices import open_store
from ops_runner.ops.decision import DecisionRefused, decide
from ops_runner.runtime.notebooks import NotebookError, read_scraps, run_notebook
from ops_runner.workbook.config import load_config

EXE = Path(sys.executable).with_name("ops-runner")
KEY = "0123456789abcdef" * 4


def cli(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "OPS_RUNNER_APPROVAL_KEY": KEY, **(env or {})}
    return subprocess.run([str(EXE), "--workbook", str(root), *args], capture_output=True,
                          text=True, timeout=300, env=full)  # fmt: skip


def rows(root: Path) -> list[tuple[int, str]]:
    with open_ledger(load_config(root), readonly=True) as ledger:
        return [(e.seq, e.kind) for e in ledger.events()]


def content(root: Path) -> dict[str, bytes]:
    """Every file of the workbook but SQLite's own WAL working files (a reader touches them)."""
    return {k: v for k, v in snapshot_folder(root).items() if not k.endswith(("-wal", "-shm"))}


# --- a fresh workbook -------------------------------------------------------------------------


@pytest.mark.subprocess
def test_init_when_run_says_there_is_no_data_source_yet_and_how_to_name_one(tmp_path):
    done = cli(tmp_path / "wb", "init")
    assert done.returncode == 0, done.stderr
    assert "no data source yet" in done.stdout and "data.primary" in done.stdout
    assert load_config(tmp_path / "wb").values["data"]["primary"] is None


@pytest.mark.parametrize(
    "now",
    [
        "2025-11-28T21:30:00Z",
        "2025-12-01T13:30:00Z",
        "2025-11-23T15:00:00Z",
        "2026-12-06T19:47:00Z",
    ],  # fmt: skip
    ids=["decision-due", "execution-due", "audit-due", "a-sunday"],
)
@pytest.mark.subprocess
@pytest.mark.slow
def test_fresh_workbook_when_ticked_writes_no_prices_and_no_decision(tmp_path, now):
    root = tmp_path / "wb"
    assert cli(root, "init").returncode == 0
    before = rows(root), content(root)
    done = cli(root, "tick", "--now", now)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "data.primary: not set" in line and "Traceback" not in done.stderr
    assert (rows(root), content(root)) == before  # nothing at all: no sample, no decision
    assert not list((root / "data").iterdir())


@pytest.mark.subprocess
def test_demo_template_when_inited_is_the_synthetic_sample_and_says_so(tmp_path):
    done = cli(tmp_path / "wb", "init", "--template", "demo")
    assert done.returncode == 0, done.stderr
    cfg = load_config(tmp_path / "wb")
    assert cfg.values["data"]["primary"] == "sample"
    assert "SYNTHETIC" in (tmp_path / "wb" / "config.yaml").read_text(encoding="utf-8")


# --- notebooks run by hand: previews --------------------------------------------------------

PREVIEWS = [
    ("data_qa", {"as_of": "2025-11-28"}),
    ("decision", {"session": "2025-11-28"}),
    ("execution", {"cycle": "2025-11", "now": "2025-12-01T13:30:00Z"}),
    ("reconciliation", {"cycle": "2025-11", "now": "2025-12-01T15:30:00Z"}),
    ("slippage_report", {"cycle": "2025-11"}),
    ("audit", {"now": "2025-12-05T22:00:00Z"}),
    ("incident", {"now": "2025-12-01T15:30:00Z"}),
    ("performance", {}),
]


@pytest.fixture(scope="module")
def decided(tmp_path_factory) -> Path:
    return make_decided_november(tmp_path_factory.mktemp("previews") / "wb")


@pytest.mark.notebook
@pytest.mark.parametrize(("job", "parameters"), PREVIEWS, ids=[j for j, _ in PREVIEWS])
def test_notebook_when_run_by_hand_is_a_preview_that_records_nothing(
    decided, tmp_path, job, parameters
):
    before = rows(decided), content(decided)
    out = tmp_path / f"{job}.ipynb"  # outside the workbook, as a person's copy would be
    run = run_notebook(job, out, {"workbook": str(decided), **parameters}, deadline=300)
    assert run.completion["job"] == job
    assert (rows(decided), content(decided)) == before
    first = next(c for c in json.loads(out.read_text())["cells"] if c.get("outputs"))
    assert "PREVIEW" in json.dumps(first["outputs"])  # the first thing it shows
    if job == "execution":
        assert run.completion["status"] == "PREVIEW"
        submission = read_scraps(out)["submission"]
        assert {row["outcome"] for row in submission["rows"]} == {"preview"}


@pytest.mark.notebook
def test_notebook_when_its_workbook_does_not_exist_says_how_to_make_it_and_writes_nothing(
    tmp_path,
):
    missing = tmp_path / "nowhere"
    with pytest.raises(NotebookError, match="no workbook at .*ops-runner init"):
        run_notebook("data_qa", tmp_path / "out.ipynb", {"workbook": str(missing)})
    assert not missing.exists()


# --- the decision's gates, on every path ----------------------------------------------------


@pytest.fixture
def undecided(tmp_path) -> Path:
    return make_undecided_november(tmp_path / "wb")


@pytest.fixture
def qa_clean(tmp_path) -> Path:
    """``undecided`` after ``qa_then``: built once per test process, copied for each test."""
    return copy_of_built("qa-clean", _build_qa_clean, tmp_path / "wb")


def _build_qa_clean(root: Path) -> Path:
    workbook = make_undecided_november(root)
    qa_then(workbook)
    return workbook


def qa_then(root: Path) -> None:
    """The data QA of 2025-11-28 recorded clean, by hand under the tick's rules."""
    done = cli(root, "run", "pre_rebalance_checks", "--as-of", "2025-11-28", "--now",
               "2025-11-28T19:00:00Z")  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = cli(root, "run", "data_qa", "--as-of", "2025-11-28", "--now", "2025-11-28T19:00:00Z")
    assert done.returncode == 0 and "clean" in done.stdout, done.stdout + done.stderr


def change_data(root: Path) -> None:
    """A new import after the QA: a vendor's revised SPY (recorded, as every import is)."""
    cfg = load_config(root)
    bars = open_store(cfg).load_bars("sample", "SPY")
    csv = root.parent / "SPY.csv"
    frame = bars.assign(close=bars["close"] * 1.001)
    lines = ["Date,Open,High,Low,Close,Adj Close,Volume"] + [
        f"{d:%Y-%m-%d},{r.open},{max(r.high, r.close)},{r.low},{r.close},{r.close},{int(r.volume)}"
        for d, r in frame.iterrows()
    ]
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = cli(root, "data", "import", str(csv), "--layout", "generic", "--name", "sample")
    assert done.returncode == 0, done.stderr


GATES = {  # (whether the data QA ran clean first, what shuts the gate, the reason given)
    "no-qa": (False, lambda root: None, "no data QA of 2025-11-28 in the ledger"),
    "data-changed": (True, change_data, "stored data changed"),
    "safe-mode": (True, lambda root: _safe_mode(root), "the state is SAFE_MODE"),
    "baseline-changed": (
        True,
        lambda root: _change_config(root),
        "changed since the validated baseline",
    ),  # fmt: skip
}


def _safe_mode(root: Path) -> None:
    with open_ledger(load_config(root)) as ledger:
        apply_trigger(ledger, Trigger.INCIDENT, "an incident", ["test"])


def _change_config(root: Path) -> None:
    config = root / "config.yaml"
    text = config.read_text(encoding="utf-8").replace("cash_buffer: 0.02", "cash_buffer: 0.03")
    config.write_text(text, encoding="utf-8")


def decisions(root: Path) -> int:
    return sum(1 for _, kind in rows(root) if kind == EventKind.DECISION_RECORDED)


@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.subprocess
@pytest.mark.slow
def test_decision_when_a_gate_is_shut_is_refused_by_the_library_and_the_cli(request, gate):
    qa_first, prepare, reason = GATES[gate]
    undecided = request.getfixturevalue("qa_clean" if qa_first else "undecided")
    prepare(undecided)
    before = decisions(undecided)
    with pytest.raises(DecisionRefused, match=reason):
        decide(load_config(undecided), "2025-11-28")
    done = cli(undecided, "decide", "--session", "2025-11-28")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert reason in line
    assert decisions(undecided) == before


@pytest.mark.slow  # a cycle to the decision, each way
@pytest.mark.parametrize("path", ["run", "tick"])
@pytest.mark.subprocess
def test_decision_when_the_data_changed_after_qa_the_run_and_the_tick_refuse(qa_clean, path):
    undecided = qa_clean  # data QA of 2025-11-28 clean, recorded
    change_data(undecided)  # then a new import: the QA no longer speaks for the data
    before = decisions(undecided)
    if path == "run":
        done = cli(undecided, "run", "decision", "--as-of", "2025-11-28", "--now",
                   "2025-11-28T19:05:00Z")  # fmt: skip
        assert done.returncode == 1
    else:  # the data_qa slot is done: the tick runs the decision notebook, whose gate refuses
        done = cli(undecided, "tick", "--now", "2025-11-28T19:05:00Z")
        assert done.returncode == 0
    assert "decision:2025-11 FAILED" in done.stdout, done.stdout + done.stderr
    assert "stored data changed since its QA" in done.stdout
    assert decisions(undecided) == before  # refused: nothing decided, SAFE_MODE and an incident
    with open_ledger(load_config(undecided)) as ledger:
        assert str(ledger.last(str(EventKind.STATE_CHANGED)).payload["to"]) == "SAFE_MODE"
