"""CSV layouts: what each reads from small hand-written files, and every refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ops_runner.core.errors import DataError, ImportRefused
from ops_runner.market.bars import BAR_COLUMNS
from ops_runner.market.importer import import_files
from ops_runner.market.prices import PriceStore
from ops_runner.market.sources import ParsedFile, layouts, read_path
from ops_runner.market.sources.csvfiles import compute_inferred_dividends, read_vendor_adjusted

AV_HEADER = "timestamp,open,high,low,close,adjusted_close,volume,dividend_amount,split_coefficient"
# Newest first, as Alpha Vantage publishes: a 2:1 split on 01-06, a 0.50 dividend on 01-07.
AV_TEXT = f"""{AV_HEADER}
2020-01-07,49.8,50.2,49.0,49.5,49.5,1500,0.5000,1.0
2020-01-06,50.5,51.0,49.5,50.0,49.5,2400,0.0000,2.0
2020-01-03,101.0,103.0,100.0,102.0,50.49,1000,0.0000,1.0
"""
YAHOO_HEADER = """Price,Price,Close,High,Low,Open,Volume
Ticker,XYZ,XYZ,XYZ,XYZ,XYZ,XYZ
Ticker,XYZ,XYZ,XYZ,XYZ,XYZ,XYZ
Date,,,,,,
"""
# The adj/close ratio steps from 0.99 to 1.0 on 01-06: a dividend of 101.0 * (1 - 0.99) = 1.01.
YAHOO_TEXT = (
    YAHOO_HEADER
    + """2020-01-02 00:00:00,99.0,100.0,101.0,99.0,100.5,1000
2020-01-03 00:00:00,99.99,101.0,102.0,100.0,100.0,1100
2020-01-06 00:00:00,99.0,99.0,100.0,98.0,99.5,1200
"""
)

GENERIC_HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"
# The ratio steps from 0.98 to 1.0 on 01-06: a dividend of 10.2 * (1 - 0.98) = 0.204.
GENERIC_TEXT = f"""{GENERIC_HEADER}
2020-01-02,10.0,10.5,9.5,10.0,9.8,100
2020-01-03,10.0,10.6,9.9,10.2,9.996,100
2020-01-06,10.0,10.1,9.7,10.0,10.0,100
"""
TEXTS = {"alphavantage": AV_TEXT, "yahoo": YAHOO_TEXT, "generic": GENERIC_TEXT}


def write(folder: Path, name: str, text: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def read_one(tmp_path: Path, layout: str, text: str, name: str = "xyz.csv") -> ParsedFile:
    (parsed,) = read_path(write(tmp_path / "in", name, text), layout)
    return parsed


@pytest.fixture
def seeded_store(tmp_path: Path, store: PriceStore) -> PriceStore:
    """A store that already holds one good import, so 'unchanged' means something."""
    import_files(store, write(tmp_path / "good", "OLD.csv", AV_TEXT), "alphavantage", "vendor")
    return store


def refuse(tmp_path, store, snapshot, text, layout="alphavantage", name="BAD.csv"):
    """Import a bad file; assert the store did not change by a byte; return the refusal."""
    before = snapshot(store.root)
    path = write(tmp_path / "bad", name, text)
    with pytest.raises(ImportRefused) as caught:
        import_files(store, path, layout, "vendor")
    assert snapshot(store.root) == before
    assert caught.value.path == str(path)
    assert str(path) in str(caught.value)
    return caught.value


# -- reading ------------------------------------------------------------------------------------


def test_alphavantage_when_newest_first_reads_ascending_raw_bars(tmp_path):
    parsed = read_one(tmp_path, "alphavantage", AV_TEXT)
    bars = parsed.bars
    assert list(bars.columns) == BAR_COLUMNS
    assert (bars.dtypes == np.float64).all()
    assert bars.index.name == "date"
    assert [d.isoformat() for d in bars.index.date] == ["2020-01-03", "2020-01-06", "2020-01-07"]
    assert bars["close"].tolist() == [102.0, 50.0, 49.5]
    assert bars["open"].tolist() == [101.0, 50.5, 49.8]
    assert bars["volume"].tolist() == [1000.0, 2400.0, 1500.0]
    assert bars["dividend"].tolist() == [0.0, 0.0, 0.5]
    assert bars["split"].tolist() == [1.0, 2.0, 1.0]
    assert parsed.layout == "alphavantage"
    assert "splits as published: 2020-01-06 x2" in parsed.notes


def test_alphavantage_when_read_keeps_vendor_adjusted_close_aside(tmp_path):
    parsed = read_one(tmp_path, "alphavantage", AV_TEXT)
    assert "adjusted_close" not in parsed.bars.columns
    assert parsed.extra["adjusted_close"].tolist() == [50.49, 49.5, 49.5]
    vendor = read_vendor_adjusted(parsed.source_path)
    assert vendor.index.equals(parsed.bars.index)
    assert vendor.tolist() == [50.49, 49.5, 49.5]


def test_parsed_file_when_read_records_sha256_of_the_bytes(tmp_path):
    import hashlib

    parsed = read_one(tmp_path, "alphavantage", AV_TEXT)
    assert parsed.source_sha256 == hashlib.sha256(AV_TEXT.encode()).hexdigest()


def test_symbol_when_file_stem_is_lower_case_is_upper_cased(tmp_path):
    assert read_one(tmp_path, "generic", GENERIC_TEXT, name="spy.csv").symbol == "SPY"


def test_yahoo_when_four_line_header_reads_prices_as_given_with_split_one(tmp_path):
    parsed = read_one(tmp_path, "yahoo", YAHOO_TEXT, name="XYZ.csv")
    bars = parsed.bars
    assert bars["close"].tolist() == [100.0, 101.0, 99.0]
    assert bars["open"].tolist() == [100.5, 100.0, 99.5]
    assert bars["high"].tolist() == [101.0, 102.0, 100.0]
    assert bars["low"].tolist() == [99.0, 100.0, 98.0]
    assert bars["split"].tolist() == [1.0, 1.0, 1.0]
    assert parsed.extra["adjusted_close"].tolist() == [99.0, 99.99, 99.0]
    assert "split-adjusted" in parsed.notes and "inferred" in parsed.notes


def test_yahoo_when_ratio_steps_infers_dividend_from_previous_close(tmp_path):
    bars = read_one(tmp_path, "yahoo", YAHOO_TEXT, name="XYZ.csv").bars
    assert bars["dividend"].tolist() == pytest.approx([0.0, 0.0, 1.01], abs=1e-9)


def test_yahoo_when_ticker_line_differs_from_file_name_says_so_in_notes(tmp_path):
    parsed = read_one(tmp_path, "yahoo", YAHOO_TEXT, name="ABC.csv")
    assert parsed.symbol == "ABC"
    assert "file ticker XYZ differs" in parsed.notes


def test_generic_when_adj_close_steps_infers_dividend(tmp_path):
    parsed = read_one(tmp_path, "generic", GENERIC_TEXT)
    assert parsed.bars["dividend"].tolist() == pytest.approx([0.0, 0.0, 0.204], abs=1e-9)
    assert parsed.bars["split"].tolist() == [1.0, 1.0, 1.0]


def test_inferred_dividends_when_steps_are_float32_noise_are_zero():
    close = np.array([100.0, 100.0, 100.0])
    adjusted = np.array([99.0, 99.0 * (1 + 3e-6), 99.0])  # steps of +-3e-6: noise
    assert compute_inferred_dividends(close, adjusted).tolist() == [0.0, 0.0, 0.0]


def test_read_path_when_folder_reads_every_csv_sorted_by_symbol(tmp_path):
    folder = tmp_path / "in"
    write(folder, "b.csv", GENERIC_TEXT)
    write(folder, "A.csv", GENERIC_TEXT)
    write(folder, "notes.txt", "not a csv")
    assert [p.symbol for p in read_path(folder, "generic")] == ["A", "B"]


def test_read_path_when_layout_unknown_raises_data_error_naming_layouts(tmp_path):
    path = write(tmp_path, "X.csv", GENERIC_TEXT)
    with pytest.raises(DataError, match="alphavantage, generic, yahoo"):
        read_path(path, "bloomberg")


def test_registry_when_layouts_listed_holds_the_three_csv_layouts():
    assert layouts.names() == ["alphavantage", "generic", "yahoo"]


# -- refusals -----------------------------------------------------------------------------------


def test_import_when_header_matches_no_layout_names_layout_and_header(
    tmp_path, seeded_store, snapshot
):
    error = refuse(tmp_path, seeded_store, snapshot, "day,price\n2020-01-02,1.0\n")
    assert error.line == 1
    assert "'alphavantage' layout" in error.problem
    assert "'day,price'" in error.problem


def test_import_when_header_is_another_layouts_names_the_right_one(
    tmp_path, seeded_store, snapshot
):
    error = refuse(tmp_path, seeded_store, snapshot, GENERIC_TEXT, layout="alphavantage")
    assert "looks like the 'generic' layout" in error.problem


def test_import_when_yahoo_header_is_broken_names_the_yahoo_layout(
    tmp_path, seeded_store, snapshot
):
    text = YAHOO_TEXT.replace("Ticker,XYZ,XYZ,XYZ,XYZ,XYZ,XYZ\nDate", "Date")
    error = refuse(tmp_path, seeded_store, snapshot, text, layout="yahoo")
    assert "'yahoo' layout" in error.problem and error.line == 1


@pytest.mark.parametrize(
    ("bad_date", "problem"),
    [
        ("01/06/2020", "unparseable date '01/06/2020'"),
        ("2020-02-30", "unparseable date '2020-02-30'"),
        ("", "unparseable date ''"),
    ],
)
def test_import_when_date_is_unparseable_names_line_and_date(
    tmp_path, seeded_store, snapshot, bad_date, problem
):
    text = AV_TEXT.replace("2020-01-06,", f"{bad_date},")
    error = refuse(tmp_path, seeded_store, snapshot, text)
    assert error.line == 3
    assert problem in error.problem
    assert f"line 3: {problem}" in str(error)


def test_import_when_dates_carry_one_tz_offset_refuses(tmp_path, seeded_store, snapshot):
    rows = GENERIC_TEXT.splitlines()
    rows[1:] = [row.replace(",", "T00:00:00-05:00,", 1) for row in rows[1:]]
    error = refuse(tmp_path, seeded_store, snapshot, "\n".join(rows) + "\n", layout="generic")
    assert error.line == 2
    assert "timezone offset" in error.problem


def test_import_when_dates_mix_timezones_refuses_naming_both_lines(
    tmp_path, seeded_store, snapshot
):
    text = YAHOO_HEADER + (
        "2020-03-06 00:00:00-05:00,99.0,100.0,101.0,99.0,100.5,1000\n"
        "2020-03-09 00:00:00-04:00,99.99,101.0,102.0,100.0,100.0,1100\n"
    )
    error = refuse(tmp_path, seeded_store, snapshot, text, layout="yahoo", name="XYZ.csv")
    assert error.line == 5
    assert "mixed timezones" in error.problem and "line 6" in error.problem


def test_import_when_date_has_time_of_day_refuses(tmp_path, seeded_store, snapshot):
    text = YAHOO_TEXT.replace("2020-01-03 00:00:00", "2020-01-03 16:00:00")
    error = refuse(tmp_path, seeded_store, snapshot, text, layout="yahoo", name="XYZ.csv")
    assert error.line == 6 and "time of day" in error.problem


def test_import_when_dates_repeat_names_both_lines(tmp_path, seeded_store, snapshot):
    text = AV_TEXT.replace("2020-01-03,", "2020-01-07,")
    error = refuse(tmp_path, seeded_store, snapshot, text)
    assert error.line == 4
    assert "duplicate date 2020-01-07 (first on line 2)" in error.problem


@pytest.mark.parametrize(
    ("field", "problem"), [("abc", "non-numeric close: 'abc'"), ("", "non-numeric close: an empty")]
)
def test_import_when_price_is_not_numeric_names_column_and_value(
    tmp_path, seeded_store, snapshot, field, problem
):
    text = AV_TEXT.replace("51.0,49.5,50.0,", f"51.0,49.5,{field},")
    error = refuse(tmp_path, seeded_store, snapshot, text)
    assert error.line == 3
    assert problem in error.problem


def test_import_when_generic_volume_is_not_numeric_refuses(tmp_path, seeded_store, snapshot):
    text = GENERIC_TEXT.replace("10.0,100\n", "10.0,n/a\n")
    error = refuse(tmp_path, seeded_store, snapshot, text, layout="generic")
    assert error.line == 4 and "non-numeric Volume: 'n/a'" in error.problem


def test_import_when_price_is_zero_refuses(tmp_path, seeded_store, snapshot):
    text = AV_TEXT.replace("49.8,50.2,", "0.0,50.2,")
    error = refuse(tmp_path, seeded_store, snapshot, text)
    assert error.line == 2 and "open must be > 0" in error.problem


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_import_when_file_is_empty_refuses(tmp_path, seeded_store, snapshot, content):
    error = refuse(tmp_path, seeded_store, snapshot, content)
    assert error.problem == "empty file"


def test_import_when_only_a_header_refuses(tmp_path, seeded_store, snapshot):
    error = refuse(tmp_path, seeded_store, snapshot, AV_HEADER + "\n")
    assert "no data rows" in error.problem


def test_import_when_a_row_has_too_few_fields_refuses(tmp_path, seeded_store, snapshot):
    text = AV_TEXT.replace(",0.0000,2.0\n", "\n")
    error = refuse(tmp_path, seeded_store, snapshot, text)
    assert error.line == 3 and "expected 9 fields" in error.problem and "found 7" in error.problem


def test_import_when_file_is_not_utf8_refuses(tmp_path, seeded_store, snapshot):
    data = AV_TEXT.replace("2020-01-03,", "2020-01-03\xff,").encode("latin-1")
    error = refuse(tmp_path, seeded_store, snapshot, data)
    assert error.line == 4 and "UTF-8" in error.problem


def test_import_when_generic_close_is_not_split_adjusted_refuses(tmp_path, seeded_store, snapshot):
    text = GENERIC_TEXT.replace("10.2,9.996", "20.4,9.996")  # adj/close halves on the next day
    error = refuse(tmp_path, seeded_store, snapshot, text, layout="generic")
    assert error.line == 4 and "unadjusted for a split" in error.problem


def test_import_when_one_file_in_folder_is_bad_imports_nothing(tmp_path, seeded_store, snapshot):
    folder = tmp_path / "mixed"
    write(folder, "AAA.csv", AV_TEXT)
    write(folder, "OLD.csv", AV_TEXT.replace("49.5,49.5,1500", "49.6,49.6,1500"))
    bad = write(folder, "ZZZ.csv", AV_TEXT.replace("2020-01-06,", "2020-13-06,"))
    before = snapshot(seeded_store.root)
    with pytest.raises(ImportRefused) as caught:
        import_files(seeded_store, folder, "alphavantage", "vendor")
    assert caught.value.path == str(bad) and caught.value.line == 3
    assert snapshot(seeded_store.root) == before
    assert seeded_store.symbols("vendor") == ["OLD"]


def test_import_when_path_is_missing_refuses(tmp_path, seeded_store, snapshot):
    before = snapshot(seeded_store.root)
    with pytest.raises(ImportRefused, match="no such file or folder"):
        import_files(seeded_store, tmp_path / "nowhere", "alphavantage", "vendor")
    assert snapshot(seeded_store.root) == before


def test_import_when_folder_has_no_csv_refuses(tmp_path, seeded_store):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportRefused, match=r"no \*\.csv files"):
        import_files(seeded_store, tmp_path / "empty", "alphavantage", "vendor")


def test_import_when_two_files_give_one_symbol_refuses(tmp_path, seeded_store, snapshot):
    folder = tmp_path / "twins"
    write(folder, "spy.csv", GENERIC_TEXT)
    write(folder, "SPY.CSV", GENERIC_TEXT)
    before = snapshot(seeded_store.root)
    with pytest.raises(ImportRefused, match="symbol SPY also comes from"):
        import_files(seeded_store, folder, "generic", "vendor")
    assert snapshot(seeded_store.root) == before


def test_refusal_when_printed_is_one_line_naming_file_line_and_problem(tmp_path):
    path = write(tmp_path, "X.csv", AV_TEXT.replace("2020-01-06,", "bad,"))
    with pytest.raises(ImportRefused) as caught:
        read_path(path, "alphavantage")
    message = str(caught.value)
    assert message.startswith(f"import refused: {path}, line 3: unparseable date 'bad'")
    assert "\n" not in message


def test_vendor_adjusted_when_compared_with_frame_index_is_aligned(tmp_path):
    parsed = read_one(tmp_path, "generic", GENERIC_TEXT)
    vendor = parsed.extra["adjusted_close"]
    assert isinstance(vendor.index, pd.DatetimeIndex) and vendor.index.equals(parsed.bars.index)


def test_import_when_file_name_is_not_a_ticker_refuses(tmp_path, seeded_store, snapshot):
    error = refuse(tmp_path, seeded_store, snapshot, AV_TEXT, name="my prices.csv")
    assert "'MY PRICES'" in error.problem and "not a ticker" in error.problem


def _av_with_true_dividend(published: str) -> str:
    # The vendor adjusts with the true dividend 0.49993 but publishes it rounded (or wrong).
    true_dividend, split = 0.49993, 2.0
    r1 = 49.5 / (49.5 + true_dividend)  # adj/close ratio before the ex-date
    return (
        f"{AV_HEADER}\n"
        f"2020-01-07,49.8,50.2,49.0,49.5,49.5000000000,1500,{published},1.0\n"
        f"2020-01-06,50.5,51.0,49.5,50.0,{50.0 * r1:.10f},2400,0.0000,2.0\n"
        f"2020-01-03,101.0,103.0,100.0,102.0,{102.0 * r1 / split:.10f},1000,0.0000,1.0\n"
    )


def test_alphavantage_when_dividend_rounded_restores_vendor_implied_amount(tmp_path):
    parsed = read_one(tmp_path, "alphavantage", _av_with_true_dividend("0.4999"))
    assert parsed.bars["dividend"].iloc[-1] == pytest.approx(0.49993, abs=1e-8)
    assert "1 of them restored" in parsed.notes


def test_alphavantage_when_implied_dividend_disagrees_keeps_published_amount(tmp_path):
    parsed = read_one(tmp_path, "alphavantage", _av_with_true_dividend("0.4000"))
    assert parsed.bars["dividend"].iloc[-1] == 0.4
    assert "1 kept as published" in parsed.notes
