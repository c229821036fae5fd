"""The decision series' fast reads against slow references: 10-digit price texts against Decimal,
the series against one decision at a time, and its records against digests taken from the code
before the reads were batched (a replay compares records byte for byte)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ops_runner.market.calendar import MarketCalendar
from ops_runner.market.sources.sample import generate_sample_market
from ops_runner.strategy.momentum import (
    SeriesReader,
    StrategySettings,
    compute_decision,
    compute_decision_series,
    compute_price_texts,
    compute_price_values,
)
from ops_runner.workbook.config import TEMPLATES, load_config_text, read_config_text

CAL = MarketCalendar()
START, END = date(2017, 1, 1), date(2021, 12, 31)

# Value, then its 10 significant digits as Decimal prints them: the plain cases, a carry into
# the next power of ten, float noise just below and above a half, and values the fast path
# leaves to Decimal (0, negative, 1e10 and above, below 1e-13, not finite).
KNOWN_TEXTS = [
    (24.5, "24.50000000"),
    (1.0, "1.000000000"),
    (123.456789012345, "123.4567890"),
    (0.00245, "0.002450000000"),
    (9.99999999995, "10.00000000"),
    (9999999999.4, "9999999999"),
    (9999999999.6, "10000000000"),
    (1.0000000005, "1.000000001"),  # the float is 1.00000000050000004137...
    (1.0000000015, "1.000000001"),  # the float is 1.00000000149999990206...
    (2.0000000025, "2.000000003"),
    (24.50000000049999, "24.50000000"),
    (0.0, "0.000000000"),
    (-2.5, "-2.500000000"),
    (12345678901234.0, "12345678900000"),
    (1e-14, "0.00000000000001000000000"),
]


def decimal_text(value: float) -> str:
    """The reference: Python's 10-significant-digit scientific text, read and printed by
    Decimal."""
    return format(Decimal(format(value, ".9e")), "f")


@pytest.mark.parametrize(("value", "text"), KNOWN_TEXTS)
def test_price_texts_when_given_known_values_write_their_ten_digits(value, text):
    assert compute_price_texts(np.array([value])) == [text]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(min_value=1e-15, max_value=1e12), min_size=1, max_size=200))
def test_price_texts_when_given_any_positive_floats_equal_decimals_texts(values):
    assert compute_price_texts(np.array(values)) == [decimal_text(v) for v in values]


@settings(max_examples=200, deadline=None)
@given(st.integers(10**9, 10**10 - 1), st.integers(-13, 0), st.sampled_from([-1, 0, 1]))
def test_price_texts_when_a_value_sits_on_a_half_equal_decimals_texts(digits, exponent, step):
    """A decimal half between two 10-digit numbers, and the floats on either side of it."""
    half = float(f"{digits}5e{exponent - 1}")
    value = float(np.nextafter(half, np.inf if step > 0 else -np.inf)) if step else half
    assert compute_price_texts(np.array([value])) == [decimal_text(value)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False), min_size=1, max_size=200))
def test_price_values_when_given_any_floats_equal_the_floats_of_decimals_texts(values):
    got = compute_price_values(np.array(values).reshape(-1, 1))
    assert got.shape == (len(values), 1)
    want = np.array([float(decimal_text(v)) for v in values])
    assert (got.ravel().view(np.int64) == want.view(np.int64)).all()  # bit for bit, -0.0 too


@pytest.fixture(scope="module")
def sample() -> tuple[StrategySettings, dict]:
    path = TEMPLATES / "topn.yaml"
    base = StrategySettings.from_config(load_config_text(read_config_text(path), Path("."), path))
    return base, generate_sample_market(start=date(2015, 1, 2), end=END)


# Each rule's records over 2017-2021 on the sample market, as sha256 of their sorted JSON:
# taken from the strategy as it was before its series read in batches (commit 1e615e4).
RULES = {
    "trend on months": (
        {"trend_length": 10, "trend_fast": 2},
        "3e49a35305c32d4f94befb2d8e4b815a5caad3411f4645873eeedbae58b7650f",
    ),
    "trend on sessions": (
        {"trend_length": 150, "trend_basis": "sessions", "failed_slot": "cash"},
        "6c7bd29719c6554e3d085980c8880a1045196f69be3ee995dde2385bc0547446",
    ),
    "inverse volatility": (
        {"weighting": "inverse_volatility", "volatility_sessions": 42},
        "3694f6e560850d7e946ae92025a686810831d029b3d18ed789f878680f26446b",
    ),
    "inverse volatility capped, offset": (
        {"weighting": "inverse_volatility", "weight_cap": 0.4, "signal_offset": -1},
        "fcbe8efbb3677f0311a4d68d6e29fe7eeb1d3b82aff0bbe7c1e7c7f9fcfb07fd",
    ),
}


@pytest.mark.parametrize("rule", RULES)
def test_decision_series_when_a_rule_is_on_writes_the_records_it_wrote_before(sample, rule):
    base, bars = sample
    changes, digest = RULES[rule]
    decisions = compute_decision_series(dataclasses.replace(base, **changes), bars, CAL,
                                        START, END)  # fmt: skip
    text = json.dumps([d.to_record() for d in decisions], sort_keys=True)
    assert len(decisions) == 60
    assert hashlib.sha256(text.encode()).hexdigest() == digest


@pytest.mark.parametrize("rule", RULES)
def test_decision_series_when_a_rule_is_on_equals_each_decision_taken_alone(sample, rule):
    """The series reads every session in one pass; a lone decision reads its own bars."""
    base, bars = sample
    rules = dataclasses.replace(base, **RULES[rule][0])
    series = compute_decision_series(rules, bars, CAL, date(2019, 1, 1), date(2019, 12, 31))
    alone = [compute_decision(rules, d.session, bars, CAL) for d in series]
    assert len(series) == 12
    assert [d.to_record() for d in series] == [d.to_record() for d in alone]


@pytest.mark.parametrize("keep", [1, 8])
def test_series_reader_when_settings_share_their_reads_decides_as_each_alone(sample, keep):
    """Settings reading the same days, then other days, then the first again (kept or read
    anew): each series equals the one its settings decide alone, with the digests above."""
    base, bars = sample
    reader = SeriesReader(bars, CAL, END, keep=keep)
    for rule in [*RULES, next(iter(RULES))]:
        changes, digest = RULES[rule]
        for top_n in (3, 2):
            rules = dataclasses.replace(base, top_n=top_n, **changes)
            shared = [d.to_record() for d in reader.compute_series(rules, START)]
            alone = compute_decision_series(rules, bars, CAL, START, END)
            assert shared == [d.to_record() for d in alone]
            if top_n == 3:
                text = json.dumps(shared, sort_keys=True)
                assert hashlib.sha256(text.encode()).hexdigest() == digest
