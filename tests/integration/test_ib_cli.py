"""The CLI against IB: `ops-runner broker check` and `ops-runner data fetch` (daily bars from
IB's historical data into the price store).

A workbook whose store holds the sample market plays the venue (the TWS simulator serves its
bars as IB does: TRADES split-adjusted, ADJUSTED_LAST with dividends); a second workbook
fetches them through the adapter over a real socket and must get back the same closes and the
same dividends, with provenance.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from ops_runner.brokers.ib_source import IB_LAYOUT, import_from_ib
from ops_runner.ledger.init import init_workbook
from ops_runner.market.sources.sample import write_sample
from ops_runner.workbook.config import load_config

tws_sim = pytest.importorskip("ops_runner.simulators.tws_sim")
from ops_runner.market.calendar import open_calendar  # noqa: E402
from ops_runner.market.prices import open_store  # noqa: E402
from ops_runner.simulators.market import WorkbookMarket  # noqa: E402

EXE = Path(sys.executable).with_name("ops-runner")
NOW = datetime(2025, 12, 1, 22, 0, tzinfo=UTC)
START, END = date(2025, 1, 2), date(2025, 11, 28)


def configure(root: Path, **broker) -> None:
    config = root / "config.yaml"
    values = yaml.safe_load(config.read_text())
    values["broker"].update(broker)
    config.write_text(yaml.safe_dump(values))


@pytest.fixture(scope="module")
def venue(tmp_path_factory):
    """(the venue's sample workbook, a started simulator serving its bars)."""
    root = tmp_path_factory.mktemp("venue")
    init_workbook(root, template="demo")
    cfg = load_config(root)
    write_sample(open_store(cfg), calendar=open_calendar(cfg))
    sim = tws_sim.TwsSimulator(WorkbookMarket(cfg), lambda: NOW, account="DU1234521",
                               cash=Decimal("100000"))  # fmt: skip
    sim.start()
    yield cfg, sim
    sim.stop()


def fetcher(root: Path, port: int) -> Path:
    init_workbook(root, template="demo")
    configure(root, kind="ib", simulator=True, port=port, account="DU1234521",
              connect_timeout_seconds=2, request_timeout_seconds=10,
              retry={"attempts": 1, "wait_seconds": 0})  # fmt: skip
    return root


def test_fetch_stores_ib_bars_with_the_venues_closes_dividends_and_provenance(venue, tmp_path):
    venue_cfg, sim = venue
    cfg = load_config(fetcher(tmp_path / "wb", sim.port))
    report = import_from_ib(cfg, ["SPY", "AGG"], START, END)
    assert sorted(report.imported) == ["AGG", "SPY"]
    store = open_store(cfg)
    for symbol in ("SPY", "AGG"):
        got = store.load_bars("ib", symbol)
        truth = open_store(venue_cfg).load_bars("sample", symbol).loc[str(START) : str(END)]
        assert list(got.index) == list(truth.index)
        assert got["close"].to_numpy() == pytest.approx(truth["close"].to_numpy(), abs=0.006)
        assert (got["split"] == 1.0).all()
        paid, derived = truth["dividend"], got["dividend"]
        expected = paid[paid > 0]  # the adapter asks for more than the window: day one too
        assert list(derived[derived > 0].index) == list(expected.index)
        assert symbol == "SPY" or len(expected) >= 9  # the bond fund pays monthly
        for day in derived[derived > 0].index:
            assert derived[day] == pytest.approx(paid[day], abs=0.01)
        manifest = store.read_manifest("ib", symbol)
        assert manifest["layout"] == IB_LAYOUT and not manifest["synthetic"]
        assert manifest["source_file"].startswith(f"ib://127.0.0.1:{sim.port}/{symbol} ")
        assert manifest["first_date"] == "2025-01-02" and manifest["last_date"] == "2025-11-28"
    assert (tmp_path / "wb" / "data").exists()
    again = import_from_ib(cfg, ["SPY", "AGG"], START, END)
    assert sorted(again.unchanged) == ["AGG", "SPY"]  # the same download changes nothing


@pytest.mark.subprocess
@pytest.mark.slow
def test_fetch_cli_unknown_symbol_and_no_gateway_fail_in_one_line_storing_nothing(venue, tmp_path):
    _, sim = venue
    root = fetcher(tmp_path / "wb", sim.port)

    def fetch(*args):
        return subprocess.run(
            [str(EXE), "--workbook", str(root), "data", "fetch", "--start", "2025-06-02",
             "--end", "2025-06-30", *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    done = fetch("--symbols", "SPY,ZZZZ")
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("ops-runner: ") and "ZZZZ" in line
    assert not (root / "data" / "ib").exists()  # all or nothing: SPY was not stored either
    done = fetch("--symbols", "SPY")
    assert done.returncode == 0, done.stderr
    assert "ib: imported 1" in done.stdout
    configure(root, port=1)  # nothing listens on port 1
    done = fetch("--symbols", "SPY")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    *warnings, line = done.stderr.strip().splitlines()
    assert line.startswith("ops-runner: ") and "127.0.0.1:1" in line
    assert all(" WARNING ops_runner.brokers." in w for w in warnings)  # the retries, logged


@pytest.mark.parametrize("role", ["readonly", "orders"])
@pytest.mark.subprocess
@pytest.mark.slow
def test_broker_check_logs_in_with_the_roles_client_id_and_shows_the_account_masked(
    venue, tmp_path, role
):
    import json

    _, sim = venue
    root = fetcher(tmp_path / "wb", sim.port)
    done = subprocess.run(
        [str(EXE), "--workbook", str(root), "broker", "check", "--json", "--role", role],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["connected"] is True and report["paper"] is True and report["role"] == role
    assert report["account"] == "DU*****21" and "DU1234521" not in done.stdout + done.stderr
    assert report["server_time"] == NOW.isoformat()  # the broker's clock, not ours
    assert Decimal(report["cash"]) == Decimal("100000") and report["positions"] == {}
