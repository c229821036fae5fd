"""What a page shows a person: numbers, instants and verdicts, against tables of known answers."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import pytest

from ops_runner.reports.formats import (
    MISSING,
    format_bps,
    format_money,
    format_percent,
    format_value,
    format_when,
    show_mapping,
    show_table,
)
from ops_runner.reports.verdicts import Tone, compute_verdict


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("2086.565", "$2,086.57"),  # half up, to the cent
        (Decimal("-1234.5"), "-$1,234.50"),
        (0, "$0.00"),
        (102123.32, "$102,123.32"),
        (None, MISSING),
        (math.nan, MISSING),
        ("", MISSING),
        ("n/a", "n/a"),  # text that is not a number is shown as it is
    ],
)
def test_format_money_when_given_known_amounts_spells_them(value, shown):
    assert format_money(value) == shown


@pytest.mark.parametrize(
    ("value", "digits", "signed", "shown"),
    [
        ("0.0531049770", 2, False, "5.31%"),
        (1, 0, False, "100%"),
        (-0.0469, 1, True, "-4.7%"),
        (0.01, 1, True, "+1.0%"),
        (None, 2, False, MISSING),
    ],
)
def test_format_percent_when_given_fractions_spells_percent(value, digits, signed, shown):
    assert format_percent(value, digits, signed) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [(1.9, "+1.9 bps"), ("-2.23", "-2.2 bps"), (0, "+0.0 bps"), (float("nan"), MISSING)],
)
def test_format_bps_when_given_basis_points_signs_them(value, shown):
    assert format_bps(value) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("2025-11-28T21:30:00.000000Z", "2025-11-28 21:30 UTC"),  # no microseconds
        ("2026-12-07T12:58:26.532778Z", "2026-12-07 12:58:26 UTC"),
        ("2025-12-01T10:00:00-05:00", "2025-12-01 15:00 UTC"),
        (datetime(2025, 10, 31, 21, 5, tzinfo=UTC), "2025-10-31 21:05 UTC"),
        ("2025-11-28", "2025-11-28"),
        (None, MISSING),
        ("not a time at all", "not a time at all"),
    ],
)
def test_format_when_when_given_instants_drops_microseconds(value, shown):
    assert format_when(value) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [(True, "yes"), (None, MISSING), (math.nan, MISSING), ("None", MISSING),
     ({"Data": 3, "Broker/API": 0}, "Data: 3; Broker/API: 0"), ([], MISSING),
     ("as_of=2025-10-31T20:30:00.000000Z; x", "as_of=2025-10-31T20:30:00Z; x")],
)  # fmt: skip
def test_format_value_when_given_any_cell_never_says_none_or_nan(value, shown):
    assert format_value(value) == shown


def test_show_table_when_columns_are_named_formats_them_and_keeps_long_text_whole():
    detail = "no bar for the as_of session 2025-10-31: last bar 2025-10-30, one session behind"
    frame = pd.DataFrame(
        {"cost": [49.3, None], "ratio": [1.0, 0.5], "vs_open_bps": [1.9, math.nan],
         "detail": [detail, None]},
        index=["VEU", "AGG"],
    )  # fmt: skip
    page = show_table(frame, money=["cost"], percent=["ratio"], bps=["vs_open_bps"]).to_html()
    for text in ("$49.30", "100.00%", "50.00%", "+1.9 bps", detail):
        assert text in page
    assert "None" not in page and "NaN" not in page and "nan" not in page
    assert "overflow-wrap" in page  # long text wraps in its cell
    assert "vs open bps" in page  # headers spaced, so they wrap
    show_table(frame, money=["price"])  # a column the frame lacks never fails the page


def test_show_mapping_when_given_scores_shows_a_table_not_a_dict():
    page = show_mapping({"Data": 6, "Scheduler": 6}, "cause", "signals").to_html()
    assert "{" not in page.split("</style>")[-1] and "<td" in page
    assert page.index("Data") < page.index("Scheduler")


def test_show_table_when_transposed_turns_a_wide_row_on_its_side():
    wide = pd.DataFrame([{f"c{i}": i for i in range(20)}])
    shown = show_table(wide, transpose=True)
    assert shown.data.shape == (20, 1) and list(shown.data.index)[:2] == ["c0", "c1"]


# (job, completion, scraps, failed) -> (word, tone); what each job's result is called.
VERDICTS = [
    ("data_qa", {"blocking": True, "findings": 1},
     {"findings": [{"symbol": "SPY", "check": "freshness", "severity": "blocking",
                    "detail": "last bar 2025-10-30"}]}, None, "BLOCKED", Tone.BAD),
    ("data_qa", {"blocking": False, "findings": 0}, {}, None, "CLEAN", Tone.GOOD),
    ("decision", {"created": True, "targets": {"AGG": "1"}}, {}, None, "DECIDED", Tone.GOOD),
    ("execution", {"status": "SUBMITTED"}, {}, None, "SUBMITTED", Tone.GOOD),
    ("reconciliation", {"status": "BREAKS"}, {}, None, "BREAKS", Tone.BAD),
    ("audit", {"status": "BREAK"}, {}, None, "BREAK", Tone.BAD),
    ("audit", {"status": "CLEAN"}, {}, None, "CLEAN", Tone.GOOD),
    ("slippage_report", {"status": "WITHIN_BANDS"}, {}, None, "WITHIN_BANDS", Tone.GOOD),
    ("slippage_report", {"status": "OUT_OF_BAND", "flagged": 2}, {}, None, "FLAGGED", Tone.BAD),
    ("dr_drill", {"status": "PASS"}, {}, None, "PASS", Tone.GOOD),
    ("dr_drill", {"status": "FAIL"}, {"drill": {"reasons": ["verify: archive truncated"]}},
     None, "FAIL", Tone.BAD),
    ("dr_drill", {"status": "NO_BACKUP"}, {}, None, "NO_BACKUP", Tone.BAD),
    ("performance", {"status": "DIVERGING"}, {}, None, "DIVERGING", Tone.BAD),
    ("incident", {"incident": "x", "classification": "Data", "state": "SAFE_MODE"}, {}, None,
     "INVESTIGATED", Tone.WARN),
    ("reconciliation", {"status": "SOMETHING_NEW"}, {}, None, "SOMETHING_NEW", Tone.WARN),
    ("decision", None, {}, None, "INCOMPLETE", Tone.BAD),
    ("decision", {"targets": {}}, {}, "CellExecutionError in cell 4", "FAILED", Tone.BAD),
]  # fmt: skip


@pytest.mark.parametrize(("job", "completion", "scraps", "failed", "word", "tone"), VERDICTS)
def test_compute_verdict_when_a_run_ends_says_its_jobs_word_and_colour(
    job, completion, scraps, failed, word, tone
):
    verdict = compute_verdict(job, completion, scraps, failed=failed)
    assert (verdict.word, verdict.tone) == (word, tone)


def test_compute_verdict_when_the_drill_failed_says_why_and_qa_blocked_names_the_finding():
    drill = compute_verdict("dr_drill", {"status": "FAIL"},
                            {"drill": {"reasons": ["verify: archive truncated"]}})  # fmt: skip
    assert drill.line == "FAIL: verify: archive truncated"
    qa = compute_verdict("data_qa", {"blocking": True, "findings": 1}, VERDICTS[0][2])
    assert "SPY freshness: last bar 2025-10-30" in qa.why
    decided = compute_verdict(
        "decision", {"created": False, "targets": {"AGG": "0.6", "SPY": "0.4"}}
    )
    assert decided.why == "hold AGG 60%, SPY 40% (already decided)"
