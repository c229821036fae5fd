"""Adjustments on hand-computed tables, and the price store's writes, versions and provenance."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ops_runner.market.prices as data_module
from ops_runner.core.errors import DataError, ImportRefused
from ops_runner.market.bars import BAR_COLUMNS, make_bars, require_bars_shape
from ops_runner.market.importer import import_files
from ops_runner.market.prices import (
    AdjustedCloses,
    DividendConvention,
    compute_adjusted_close,
    compute_split_adjusted,
)

DAYS = ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07", "2020-01-08"]
# A 2:1 split on 01-06 (raw close halves) and a 1.00 dividend going ex on 01-07.
HAND = make_bars(
    DAYS,
    open=[99.0, 101.0, 51.0, 50.0, 49.5],
    high=[101.0, 105.0, 53.0, 50.5, 50.5],
    low=[98.0, 100.0, 50.0, 48.5, 49.0],
    close=[100.0, 104.0, 52.0, 49.0, 50.0],
    volume=[1000.0, 1100.0, 2400.0, 2500.0, 2000.0],
    dividend=[0.0, 0.0, 0.0, 1.0, 0.0],
    split=[1.0, 1.0, 2.0, 1.0, 1.0],
)

GENERIC = """Date,Open,High,Low,Close,Adj Close,Volume
2020-01-02,10.0,10.5,9.5,10.0,9.8,100
2020-01-03,10.0,10.6,9.9,10.2,9.996,100
2020-01-06,10.0,10.1,9.7,10.0,10.0,100
"""


def write_csv(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- adjustments --------------------------------------------------------------------------------


def test_adjusted_close_when_dividend_and_split_matches_hand_computation():
    # Ex-date factor 49 / (49 + 1) = 0.98 for every day before 01-07; the split halves 01-02/03.
    expected = [100 * 0.98 / 2, 104 * 0.98 / 2, 52 * 0.98, 49.0, 50.0]  # 49.0, 50.96, 50.96
    adjusted = compute_adjusted_close(HAND)
    assert adjusted.tolist() == pytest.approx(expected, rel=1e-12)
    assert adjusted.tolist() == pytest.approx([49.0, 50.96, 50.96, 49.0, 50.0], rel=1e-12)
    assert adjusted.index.equals(HAND.index) and adjusted.name == "adjusted_close"


def test_adjusted_close_when_previous_close_convention_matches_hand_computation():
    # Factor 1 - 1 / 52 = 51 / 52 for every day before 01-07.
    expected = [100 * 51 / 52 / 2, 104 * 51 / 52 / 2, 51.0, 49.0, 50.0]
    adjusted = compute_adjusted_close(HAND, DividendConvention.PREVIOUS_CLOSE)
    assert adjusted.tolist() == pytest.approx(expected, rel=1e-12)


def test_adjusted_close_when_last_day_equals_last_raw_close():
    assert compute_adjusted_close(HAND).iloc[-1] == HAND["close"].iloc[-1]


def test_adjusted_close_when_no_events_equals_raw_close():
    plain = HAND.assign(dividend=0.0, split=1.0)
    assert compute_adjusted_close(plain).tolist() == plain["close"].tolist()


def test_adjusted_close_when_split_and_dividend_share_a_day_uses_post_split_dividend():
    bars = make_bars(DAYS[:2], [1, 1], [1, 1], [1, 1], close=[100.0, 48.0], volume=[1, 1],
                     dividend=[0.0, 2.0], split=[1.0, 2.0])  # fmt: skip
    # 48 / (48 + 2) / 2 = 0.48 ; previous-close: (1 - 2 / (100 / 2)) / 2 = 0.48 as well.
    assert compute_adjusted_close(bars).tolist() == pytest.approx([48.0, 48.0])
    previous = compute_adjusted_close(bars, DividendConvention.PREVIOUS_CLOSE)
    assert previous.tolist() == pytest.approx([48.0, 48.0])


def test_split_adjusted_when_split_divides_earlier_prices_and_multiplies_volume():
    adjusted = compute_split_adjusted(HAND)
    assert adjusted["close"].tolist() == [50.0, 52.0, 52.0, 49.0, 50.0]
    assert adjusted["open"].tolist() == [49.5, 50.5, 51.0, 50.0, 49.5]
    assert adjusted["high"].tolist() == [50.5, 52.5, 53.0, 50.5, 50.5]
    assert adjusted["low"].tolist() == [49.0, 50.0, 50.0, 48.5, 49.0]
    assert adjusted["volume"].tolist() == [2000.0, 2200.0, 2400.0, 2500.0, 2000.0]
    assert adjusted["dividend"].tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert adjusted["split"].tolist() == [1.0] * 5
    require_bars_shape(adjusted)


def test_split_adjusted_when_dividend_precedes_split_divides_the_dividend():
    bars = HAND.assign(dividend=[0.0, 0.5, 0.0, 0.0, 0.0])
    assert compute_split_adjusted(bars)["dividend"].tolist() == [0.0, 0.25, 0.0, 0.0, 0.0]


def test_split_adjusted_when_adjusted_close_computed_gives_the_same_series():
    assert compute_adjusted_close(compute_split_adjusted(HAND)).tolist() == pytest.approx(
        [49.0, 50.96, 50.96, 49.0, 50.0], rel=1e-12
    )


@st.composite
def histories(draw: st.DrawFn) -> tuple[pd.DataFrame, int, list[int]]:
    """Bars with dividends and splits on random days, a cut and the rows a reader asks for."""
    n = draw(st.integers(2, 60))
    close = draw(st.lists(st.floats(0.5, 500.0), min_size=n, max_size=n))
    paid = st.one_of(st.just(0.0), st.floats(0.001, 5.0))
    dividend = draw(st.lists(paid, min_size=n, max_size=n))
    split = draw(st.lists(st.sampled_from([1.0, 1.0, 1.0, 2.0, 3.0, 0.5, 0.1]), min_size=n,
                          max_size=n))  # fmt: skip
    days = pd.bdate_range("2001-01-02", periods=n).strftime("%Y-%m-%d").tolist()
    bars = make_bars(days, open=close, high=close, low=close, close=close, volume=[1.0] * n,
                     dividend=dividend, split=split)  # fmt: skip
    cut = draw(st.integers(1, n))
    rows = draw(st.lists(st.integers(0, cut - 1), min_size=1, max_size=12))
    return bars, cut, rows


@settings(max_examples=120, deadline=None)
@given(histories(), st.sampled_from(list(DividendConvention)))
def test_adjusted_closes_when_read_as_of_a_cut_are_bit_for_bit_the_whole_adjustment(
    history, convention
):
    bars, cut, rows = history
    whole = compute_adjusted_close(bars.iloc[:cut], convention).to_numpy()[rows]
    read = AdjustedCloses(bars, convention).as_of(cut, np.array(rows))
    assert whole.tobytes() == read.tobytes()  # the same bits, not merely close


@settings(max_examples=80, deadline=None)
@given(st.lists(histories(), min_size=1, max_size=1), st.data())
def test_adjusted_closes_when_read_as_of_many_cuts_at_once_are_each_cut_bit_for_bit(drawn, data):
    bars = drawn[0][0]
    n = len(bars)
    cuts = data.draw(st.lists(st.integers(1, n), min_size=1, max_size=8))
    width = data.draw(st.integers(1, 6))
    line = [st.lists(st.integers(0, c - 1), min_size=width, max_size=width) for c in cuts]
    rows = [data.draw(each) for each in line]
    ready = AdjustedCloses(bars)
    each = ready.as_of_each(np.array(cuts), np.array(rows))
    one = np.array([ready.as_of(c, np.array(r)) for c, r in zip(cuts, rows, strict=True)])
    assert each.tobytes() == one.tobytes()


# -- the frame's shape --------------------------------------------------------------------------


def test_bars_shape_when_canonical_passes():
    require_bars_shape(HAND)
    assert list(HAND.columns) == BAR_COLUMNS and HAND.index.name == "date"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda f: f.drop(columns="split"), "columns are"),
        (lambda f: f.rename_axis("day"), "named 'day'"),
        (lambda f: f.tz_localize("UTC"), "timezone"),
        (lambda f: f.iloc[::-1], "not sorted"),
        (lambda f: pd.concat([f, f.iloc[-1:]]), "duplicate dates"),
        (lambda f: f.set_axis(f.index + pd.Timedelta(hours=16)), "times of day"),
        (lambda f: f.astype({"volume": "int64"}), "not float64"),
        (lambda f: f.assign(close=[1.0, np.nan, 1.0, 1.0, 1.0]), "NaN"),
        (lambda f: f.assign(split=0.0), "split ratio"),
    ],
)
def test_bars_shape_when_not_canonical_raises_naming_the_problem(change, problem):
    with pytest.raises(DataError, match=problem):
        require_bars_shape(change(HAND))


# -- the store ----------------------------------------------------------------------------------


def provenance(sha: str = "a" * 64) -> dict:
    return {"layout": "broker", "source_file": "test", "source_sha256": sha, "notes": "hand"}


def test_store_when_bars_written_loads_them_back_identically(store):
    manifest = store.write_bars("broker", "SPY", HAND, provenance())
    loaded = store.load_bars("broker", "SPY")
    pd.testing.assert_frame_equal(loaded, HAND)
    path = store.root / "broker" / "SPY.parquet"
    assert manifest["stored_sha256"] == sha256_of(path)
    assert manifest["first_date"] == "2020-01-02" and manifest["last_date"] == "2020-01-08"
    assert manifest["rows"] == 5 and manifest["synthetic"] is False and manifest["history"] == []
    assert set(manifest) == {
        "symbol", "source", "layout", "source_file", "source_sha256", "imported_at",
        "first_date", "last_date", "rows", "stored_sha256", "synthetic", "notes", "history",
    }  # fmt: skip
    on_disk = json.loads((store.root / "broker" / "SPY.manifest.json").read_text())
    assert on_disk == manifest and on_disk["imported_at"].endswith("+00:00")


def test_store_when_loaded_again_gives_a_fresh_copy_and_follows_new_bytes(store):
    store.write_bars("broker", "SPY", HAND, provenance())
    first = store.load_bars("broker", "SPY")
    first.loc[:, "close"] = -1.0  # a caller's own change stays its own
    pd.testing.assert_frame_equal(store.load_bars("broker", "SPY"), HAND)
    changed = HAND.assign(close=HAND["close"] + 1.0)
    store.write_bars("broker", "SPY", changed, provenance("b" * 64))
    pd.testing.assert_frame_equal(store.load_bars("broker", "SPY"), changed)
    path = store.root / "broker" / "SPY.parquet"
    path.write_bytes(path.read_bytes() + b"tampered")  # loaded before: still checked
    with pytest.raises(DataError, match="does not match the SHA-256"):
        store.load_bars("broker", "SPY")


def test_store_when_imported_lists_sources_symbols_and_rows(tmp_path, store):
    report = import_files(store, write_csv(tmp_path / "in", "spy.csv", GENERIC), "generic", "gen")
    assert (report.imported, report.unchanged, report.replaced) == (["SPY"], [], [])
    assert store.sources() == ["gen"] and store.symbols("gen") == ["SPY"]
    (row,) = store.list_rows()
    assert row["source"] == "gen" and row["symbol"] == "SPY" and row["rows"] == 3
    assert row["layout"] == "generic" and row["synthetic"] is False and row["versions"] == 1
    manifest = store.read_manifest("gen", "SPY")
    assert manifest["source_sha256"] == sha256_of(tmp_path / "in" / "spy.csv")
    assert "inferred" in manifest["notes"]


def test_import_when_no_source_name_given_uses_the_layout(tmp_path, store):
    report = import_files(store, write_csv(tmp_path / "in", "SPY.csv", GENERIC), "generic")
    assert report.source == "generic" and store.symbols("generic") == ["SPY"]


def test_store_when_same_file_imported_again_is_a_no_op(tmp_path, store, snapshot):
    path = write_csv(tmp_path / "in", "SPY.csv", GENERIC)
    import_files(store, path, "generic", "gen")
    before = snapshot(store.root)
    report = import_files(store, path, "generic", "gen")
    assert (report.imported, report.unchanged, report.replaced) == ([], ["SPY"], [])
    assert snapshot(store.root) == before


def test_store_when_file_changes_keeps_old_version_in_history_and_on_disk(tmp_path, store):
    path = write_csv(tmp_path / "in", "SPY.csv", GENERIC)
    import_files(store, path, "generic", "gen")
    old_manifest = store.read_manifest("gen", "SPY")
    old_bars = store.load_bars("gen", "SPY")
    write_csv(tmp_path / "in", "SPY.csv", GENERIC.replace("10.0,10.0,100", "10.1,10.1,100"))
    report = import_files(store, path, "generic", "gen")
    assert report.replaced == ["SPY"]
    manifest = store.read_manifest("gen", "SPY")
    assert manifest["source_sha256"] == sha256_of(path) != old_manifest["source_sha256"]
    assert store.load_bars("gen", "SPY")["close"].iloc[-1] == 10.1
    (previous,) = manifest["history"]
    assert previous == {k: v for k, v in old_manifest.items() if k != "history"}
    kept = store.root / "gen" / "versions" / "SPY" / f"{old_manifest['stored_sha256']}.parquet"
    assert sha256_of(kept) == old_manifest["stored_sha256"]
    pd.testing.assert_frame_equal(pd.read_parquet(kept), old_bars)
    assert store.check_provenance("gen") == []


def test_store_when_changed_twice_history_lists_newest_first(tmp_path, store):
    path = write_csv(tmp_path / "in", "SPY.csv", GENERIC)
    shas = []
    for close in ("10.0", "10.1", "10.2"):
        write_csv(tmp_path / "in", "SPY.csv", GENERIC.replace("10.0,10.0,100", f"{close},10.0,100"))
        import_files(store, path, "generic", "gen")
        shas.append(store.read_manifest("gen", "SPY")["source_sha256"])
    history = store.read_manifest("gen", "SPY")["history"]
    assert [h["source_sha256"] for h in history] == [shas[1], shas[0]]
    assert all("history" not in h for h in history)
    assert store.list_rows()[0]["versions"] == 3


def test_provenance_when_parquet_modified_reports_it_and_load_refuses(store):
    store.write_bars("broker", "SPY", HAND, provenance())
    path = store.root / "broker" / "SPY.parquet"
    path.write_bytes(path.read_bytes() + b"tampered")
    ((symbol, problem),) = store.check_provenance("broker")
    assert symbol == "SPY" and "does not match the manifest" in problem
    with pytest.raises(DataError, match="changed outside ops-runner"):
        store.load_bars("broker", "SPY")


def test_provenance_when_parquet_missing_or_orphaned_reports_both(store):
    store.write_bars("broker", "SPY", HAND, provenance())
    store.write_bars("broker", "QQQ", HAND, provenance())
    (store.root / "broker" / "SPY.parquet").unlink()
    (store.root / "broker" / "QQQ.manifest.json").unlink()
    findings = dict(store.check_provenance("broker"))
    assert "manifest without file" in findings["SPY"]
    assert "file without manifest" in findings["QQQ"]


def test_load_bars_when_missing_names_source_symbol_and_the_fix(store):
    store.write_bars("broker", "SPY", HAND, provenance())
    with pytest.raises(DataError) as caught:
        store.load_bars("broker", "NOPE")
    assert "broker/NOPE" in str(caught.value) and "ops-runner data import" in str(caught.value)


def test_load_many_when_some_missing_names_all_of_them(store):
    store.write_bars("broker", "SPY", HAND, provenance())
    with pytest.raises(DataError, match="AAA, BBB"):
        store.load_many("broker", ["SPY", "AAA", "BBB"])
    assert list(store.load_many("broker", ["SPY"])) == ["SPY"]


def test_write_bars_when_same_provenance_and_bars_again_writes_nothing(store, snapshot):
    store.write_bars("broker", "SPY", HAND, provenance())
    before = snapshot(store.root)
    store.write_bars("broker", "SPY", HAND.copy(), provenance())
    assert snapshot(store.root) == before


def test_write_bars_when_same_evidence_gives_other_bars_keeps_a_new_version(store):
    # One vendor answer cut to a longer date range: the same source_sha256, more bars.
    first = store.write_bars("broker", "SPY", HAND.iloc[:-1], provenance())
    second = store.write_bars("broker", "SPY", HAND, provenance())
    assert second["rows"] == len(HAND) and len(second["history"]) == 1
    assert second["history"][0]["stored_sha256"] == first["stored_sha256"]


def test_write_bars_when_frame_not_canonical_writes_nothing(store, snapshot):
    with pytest.raises(DataError, match="not a canonical bars frame"):
        store.write_bars("broker", "SPY", HAND.drop(columns="split"), provenance())
    assert snapshot(store.root) == {}


@pytest.mark.parametrize("name", ["", "Bad Name", "../up", "UPPER"])
def test_store_when_source_name_is_unsafe_refuses(store, name):
    with pytest.raises(DataError, match="bad source name"):
        store.write_bars(name, "SPY", HAND, provenance())


def test_import_when_later_file_refused_writes_nothing(tmp_path, store, snapshot):
    folder = tmp_path / "in"
    write_csv(folder, "AAA.csv", GENERIC)
    write_csv(folder, "BBB.csv", GENERIC)
    write_csv(folder, "CCC.csv", GENERIC.replace("2020-01-06", "2020-01-03"))
    with pytest.raises(ImportRefused, match="duplicate date"):
        import_files(store, folder, "generic", "gen")
    assert snapshot(store.root) == {}
    assert not store.root.exists()


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4, 5, 6, 7])
def test_import_when_a_write_fails_half_way_rolls_everything_back(
    tmp_path, store, snapshot, monkeypatch, fail_at
):
    import_files(store, write_csv(tmp_path / "old", "BBB.csv", GENERIC), "generic", "gen")
    before = snapshot(store.root)
    folder = tmp_path / "in"
    write_csv(folder, "AAA.csv", GENERIC)  # new: parquet + manifest
    write_csv(folder, "BBB.csv", GENERIC.replace("9.996", "9.995"))  # changed: 3 writes
    write_csv(folder, "CCC.csv", GENERIC)  # new: parquet + manifest
    real_write = data_module.write_bytes_atomic
    calls = []

    def failing_write(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == fail_at:
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(data_module, "write_bytes_atomic", failing_write)
    with pytest.raises(OSError, match="No space left"):
        import_files(store, folder, "generic", "gen")
    assert snapshot(store.root) == before
    assert not (store.root / "gen" / "versions").exists()
