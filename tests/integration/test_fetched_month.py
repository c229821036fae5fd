"""A month of real ticks on prices that arrive by themselves (issue 16, part 2).

A production workbook (no sample anywhere) whose primary is Alpha Vantage and whose secondary is
Tiingo, both answered by the loopback vendor server from the real files in ../shared/data, whose
"today" moves with the simulated clock. Every session the tick's data_fetch job fetches what the
store lacks; the October and November 2020 cycles are decided on those prices, traded through
the simulated broker and reconciled, with no import by hand. Then a vendor that goes down past
the data QA's deadline is DEGRADED_DATA with the vendor's own error in the incident.

The simulated broker fills a market-on-open order from the store's bar of that session, which a
vendor serves only after that session's close: reconciliation waits for the evening's fetch, so
this workbook gives reconciliation the day (a real broker fills at the open).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from ops_runner.core.events import EventKind, State
from ops_runner.ledger import open_ledger
from ops_runner.ledger.init import init_workbook
from ops_runner.ledger.states import read_state
from ops_runner.market.calendar import open_calendar
from ops_runner.market.prices import open_store
from ops_runner.ops.checks import approve_baseline
from ops_runner.ops.schedule import ScheduleSettings, compute_next_opening
from ops_runner.ops.tick import tick
from ops_runner.simulators.vendor_feed import load_alphavantage_folder
from ops_runner.simulators.vendor_server import Fault, VendorServer
from ops_runner.workbook.config import load_config

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "alphavantage"
KEY = "month-key-9c1e-never-shown"
SYMBOLS = ["SPY", "EFA", "AGG", "BIL"]
START = datetime(2020, 10, 30, 20, 30, tzinfo=UTC)  # October's rebalance close + 30 minutes
END = datetime(2020, 12, 1, 23, 0, tzinfo=UTC)  # after December 1's evening fetch


@pytest.fixture
def month(tmp_path, monkeypatch):
    if not DATA.is_dir():
        pytest.skip(f"real data not present at {DATA} (it lives beside the project, not in it)")
    monkeypatch.setenv("OPS_RUNNER_ALPHAVANTAGE_API_KEY", KEY)
    monkeypatch.setenv("OPS_RUNNER_TIINGO_API_KEY", KEY)
    server = VendorServer(load_alphavantage_folder(DATA, SYMBOLS), api_key=KEY, end=START.date())
    server.start()
    root = tmp_path / "wb"
    init_workbook(root)  # the production template: no data source, no sample
    config = root / "config.yaml"
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    fast = {"base_url": server.base_url, "timeout_seconds": 10.0, "retries": 1,
            "min_interval_seconds": 0.0}  # fmt: skip
    raw["universe"] = {"risk": ["SPY", "EFA"], "defensive": "AGG", "cash_proxy": "BIL"}
    raw["data"].update(primary="av", secondary="tiingo", fetch_start="2019-06-01",
                       providers={"av": {"vendor": "alphavantage", **fast},
                                  "tiingo": {"vendor": "tiingo", **fast}})  # fmt: skip
    raw["schedule"].update(weekly_audit=False, weekly_backup=False, investigate_incidents=False)
    raw["schedule"]["heartbeat_max_gap_minutes"] = 20160  # the clock jumps between openings
    # the simulated broker's fills wait for the evening's bar (see the module docstring)
    raw["schedule"]["deadlines"].update(reconciliation=900, slippage_report=1000)
    raw["execution"]["reconciliation_limit_minutes"] = 900
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    cfg = load_config(root)
    approve_baseline(cfg, "a production workbook on two vendors")
    yield cfg, server
    server.stop()


def walk(cfg, server, first: datetime, last: datetime) -> list[str]:
    """Tick at every slot opening from ``first`` to ``last``, the vendors' "today" following the
    clock (a vendor serves a session once it has closed)."""
    settings = ScheduleSettings.from_config(cfg.values)
    calendar, ran, moment = open_calendar(cfg), [], first
    while moment is not None and moment <= last:
        server.end = calendar.last_closed_session(moment)
        ran += tick(cfg, now=moment).ran
        moment = compute_next_opening(calendar, settings, moment)
    return ran


def events(cfg, kind: EventKind) -> list:
    with open_ledger(cfg) as ledger:
        return list(ledger.events(kind=str(kind)))


@pytest.mark.slow  # a month of ticks
def test_a_month_of_ticks_fetches_decides_and_trades_with_no_import_by_hand(month):
    cfg, server = month
    ran = walk(cfg, server, START, END)
    fetched = [line for line in ran if line.startswith("data_fetch:")]
    assert len(fetched) >= 21 and all(line.endswith(" fetched") for line in fetched), fetched
    for cycle in ("2020-10", "2020-11"):
        for job in ("data_qa", "decision", "reconciliation"):
            assert any(line.startswith(f"{job}:{cycle} ") for line in ran), (
                job,
                cycle,
                "\n".join(ran),
            )
    assert any(line == "reconciliation:2020-11 CLEAN" for line in ran), ran
    assert sorted(open_store(cfg).sources()) == ["av", "tiingo"]  # nothing else, no sample
    assert {e.payload["cycle_id"] for e in events(cfg, EventKind.DECISION_RECORDED)} == {
        "2020-10", "2020-11"}  # fmt: skip
    assert events(cfg, EventKind.FILL_RECORDED), "the cycles traded"
    with open_ledger(cfg) as ledger:
        assert read_state(ledger).state is State.RUN
        assert ledger.verify().ok
    # every stored version has its raw answer kept by its SHA-256, and no key anywhere
    for source in ("av", "tiingo"):
        for symbol in SYMBOLS:
            manifest = open_store(cfg).read_manifest(source, symbol)
            assert manifest["last_date"] == "2020-12-01"
            kept = open_store(cfg).root / source / "raw" / f"{manifest['source_sha256']}.json.gz"
            assert kept.is_file()
    leaks = [p for p in cfg.workbook.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaks == []
    # the first fetch asked Alpha Vantage for the full series, the later ones for compact
    asked = [r.params.get("outputsize") for r in server.requests if r.vendor == "alphavantage"]
    assert asked[: len(SYMBOLS)] == ["full"] * len(SYMBOLS) and set(asked[len(SYMBOLS):]) == {
        "compact"}  # fmt: skip


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
def test_a_vendor_down_past_the_qa_deadline_is_degraded_data_with_its_own_error(month):
    cfg, server = month
    evening = datetime(2020, 11, 2, 21, 30, tzinfo=UTC)  # EST: the 16:00 close + 30 minutes
    walk(cfg, server, START, evening - timedelta(minutes=1))  # October decided, orders sent
    before = {s: open_store(cfg).read_manifest("av", s)["stored_sha256"] for s in SYMBOLS}
    server.set_fault(Fault.INVALID_KEY)  # the key was revoked during the day
    ran = walk(cfg, server, evening, evening + timedelta(minutes=25))
    waiting = [line for line in ran if line.startswith("data_fetch:2020-11-02 waiting")]
    assert waiting and "alphavantage" in waiting[0] and "invalid API key" in waiting[0], ran
    with open_ledger(cfg) as ledger:
        assert read_state(ledger).state is State.RUN  # retried at every tick until the deadline
    walk(cfg, server, evening + timedelta(minutes=35), evening + timedelta(minutes=35))
    (missed,) = [e for e in events(cfg, EventKind.JOB_MISSED)
                 if e.payload["slot"] == "data_fetch:2020-11-02"]  # fmt: skip
    assert missed.payload["deadline"] == "2020-11-02T22:00:00Z"  # + the data QA's 30 minutes
    (incident,) = [e for e in events(cfg, EventKind.INCIDENT_OPENED)
                   if "data_fetch:2020-11-02" in e.payload["summary"]]  # fmt: skip
    assert "invalid API key" in incident.payload["summary"]  # the vendor's own error
    assert KEY not in json.dumps([e.payload for e in events(cfg, EventKind.INCIDENT_OPENED)])
    with open_ledger(cfg) as ledger:
        view = read_state(ledger)
    assert view.state is State.DEGRADED_DATA and str(view.trigger) == "data_fault"
    after = {s: open_store(cfg).read_manifest("av", s)["stored_sha256"] for s in SYMBOLS}
    assert after == before  # the refused answers changed nothing


README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
@pytest.mark.subprocess
def test_readme_data_fetch_lines_when_run_as_written_fetch_from_the_providers(tmp_path):
    """The README's own `data fetch` command lines, run as written (the workbook path swapped
    for a test's), against the loopback vendor server: a crash here once hid behind them."""
    import os
    import shlex
    import subprocess
    import sys
    from datetime import date

    from ops_runner.market.sources.sample import generate_sample_market
    from ops_runner.simulators.vendor_feed import compute_rows_from_bars

    lines = [line.split("#")[0].strip() for line in README.read_text(encoding="utf-8").splitlines()
             if line.startswith("ops-runner --workbook ~/rotation data fetch")]  # fmt: skip
    assert len(lines) >= 2, "the README shows how to fetch"
    market = generate_sample_market(["SPY", "VEU", "QQQ", "IWM", "EEM", "AGG", "BIL"],
                                    date(2015, 1, 2), date(2020, 11, 30))  # fmt: skip
    rows = {symbol: compute_rows_from_bars(bars) for symbol, bars in market.items()}
    root = tmp_path / "rotation"
    init_workbook(root)
    with VendorServer(rows, api_key=KEY, end=date(2020, 11, 30)) as server:
        config = root / "config.yaml"
        raw = yaml.safe_load(config.read_text(encoding="utf-8"))
        fast = {"base_url": server.base_url, "retries": 0, "min_interval_seconds": 0.0}
        raw["data"].update(primary="av", fetch_start="2015-01-02",
                           providers={"av": {"vendor": "alphavantage", **fast}})  # fmt: skip
        config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        env = {**os.environ, "OPS_RUNNER_ALPHAVANTAGE_API_KEY": KEY}
        exe = str(Path(sys.executable).with_name("ops-runner"))
        for line in lines:
            argv = [exe if w == "ops-runner" else str(root) if w == "~/rotation" else w
                    for w in shlex.split(line)]  # fmt: skip
            done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
            assert done.returncode == 0, (line, done.stderr)
            assert "Traceback" not in done.stderr and done.stdout.startswith("alphavantage")
    stored = {s: open_store(load_config(root)).read_manifest("av", s)["last_date"]
              for s in open_store(load_config(root)).symbols("av")}  # fmt: skip
    assert set(stored) == set(rows) and set(stored.values()) == {"2020-11-30"}


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
@pytest.mark.parametrize(
    "fault",
    [Fault.INVALID_KEY, Fault.RATE_LIMIT, Fault.UNKNOWN_SYMBOL, Fault.EMPTY_SERIES,
     Fault.TRUNCATED_JSON, Fault.HTML_ERROR, Fault.TIMEOUT],
    ids=lambda f: f.value,
)  # fmt: skip
@pytest.mark.subprocess
def test_data_fetch_cli_when_the_vendor_misbehaves_is_one_line_and_changes_nothing(tmp_path, fault):
    import os
    import subprocess
    import sys
    from datetime import date

    from conftest import snapshot_folder

    from ops_runner.market.sources.sample import generate_sample_market
    from ops_runner.simulators.vendor_feed import compute_rows_from_bars

    market = generate_sample_market(["SPY", "AGG"], date(2020, 1, 2), date(2020, 11, 30))
    rows = {symbol: compute_rows_from_bars(bars) for symbol, bars in market.items()}
    root = tmp_path / "wb"
    init_workbook(root)
    with VendorServer(rows, api_key=KEY, end=date(2020, 11, 30), hang_seconds=2.0) as server:
        config = root / "config.yaml"
        raw = yaml.safe_load(config.read_text(encoding="utf-8"))
        raw["data"].update(primary="tiingo", fetch_start="2020-01-02", providers={"tiingo": {
            "vendor": "tiingo", "base_url": server.base_url, "retries": 0,
            "timeout_seconds": 0.5, "min_interval_seconds": 0.0}})  # fmt: skip
        config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        env = {**os.environ, "OPS_RUNNER_TIINGO_API_KEY": KEY}
        exe = str(Path(sys.executable).with_name("ops-runner"))
        fetch = [exe, "--workbook", str(root), "data", "fetch", "--symbols", "SPY,AGG"]
        done = subprocess.run(fetch, capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        before = snapshot_folder(root / "data")
        server.end = date(2020, 11, 30)
        server.set_fault(fault, symbol="AGG")
        done = subprocess.run([*fetch, "--end", "2020-12-31"], capture_output=True, text=True,
                              timeout=120, env=env)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and KEY not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("ops-runner:")]
    assert len(lines) == 1 and "tiingo" in lines[0] and "AGG" in lines[0], done.stderr
    assert snapshot_folder(root / "data") == before  # nothing stored, not even SPY's answer
