"""The decision job and its replay with the new rules: a trend filter decided one session before
the month-end, on the sample workbook."""

from __future__ import annotations

from pathlib import Path

from conftest import make_sample_workbook, ready_to_decide

from ops_runner.ops.decision import decide, replay
from ops_runner.workbook.config import load_config

SIGNAL = "2025-12-30"  # one session before the month-end session 2025-12-31
RULES = """universe:
  risk: [SPY, EFA, IEF, VNQ, GLD]
  defensive: BIL
  cash_proxy: null

strategy:
  name: trend
  lookback_months: 1
  top_n: 5
  absolute_momentum: false
  benchmark: null
  trend_length: 10
  signal_offset: -1

"""


def trend_workbook(root: Path):
    make_sample_workbook(root)
    path = root / "config.yaml"
    text = path.read_text()
    path.write_text(text[: text.index("universe:")] + RULES + text[text.index("data:") :])
    return load_config(root)


def test_decide_when_signal_is_one_session_early_records_it_and_replays_identically(tmp_path):
    cfg = trend_workbook(tmp_path)
    ready_to_decide(cfg, SIGNAL)
    outcome = decide(cfg, SIGNAL)
    record = outcome.record
    assert record["cycle_id"] == "2025-12" and record["session"] == SIGNAL
    assert record["settings"]["trend_length"] == 10 and record["settings"]["signal_offset"] == -1
    assert record["decision"]["signal"]["month_end_session"] == "2025-12-31"
    assert max(d for d, _ in record["decision"]["prices_used"]["SPY"]) == SIGNAL
    assert all(isinstance(row["trend"], bool) for s, row in record["decision"]["scores"].items()
               if s != "BIL")  # fmt: skip
    again = replay(cfg, "2025-12")
    assert again.identical, again.differences
