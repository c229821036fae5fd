"""The canonical bars frame, adjustments computed from raw prices, and the price store on disk."""

from __future__ import annotations

import contextlib
import enum
import io
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ops_runner.core.errors import DataError
from ops_runner.core.files import write_bytes_atomic
from ops_runner.core.hashing import compute_sha256, read_sha256
from ops_runner.market.bars import (
    SYMBOL_PATTERN,
    require_bars_shape,
)

if TYPE_CHECKING:
    from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)


# Parsed bars by the SHA-256 of their file, checked against the manifest on every load: a tick
# or a walk loads the same symbol many times, and Parquet parsing plus the shape check are about
# 12 ms of each load. Keyed by content, so new bytes (a re-import) can never be served stale;
# each caller gets its own copy.
_PARSED: OrderedDict[str, pd.DataFrame] = OrderedDict()
_PARSED_LOCK = threading.Lock()
PARSED_KEPT = 64  # frames; 30 years of daily bars are about 0.4 MB each

_LISTED = ("first_date", "last_date", "rows", "layout", "imported_at", "source_file")
_SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_IMPORT_HINT = "ops-runner data import <file-or-folder> --layout <layout> --name {source}"


# -- adjustments --------------------------------------------------------------------------------


class DividendConvention(enum.Enum):
    """How a cash dividend on its ex-date scales every earlier price.

    EX_DATE_CLOSE: factor ``close_t / (close_t + D_t)`` (Alpha Vantage's adjusted_close).
    PREVIOUS_CLOSE: factor ``1 - D_t / close_{t-1}`` (CRSP and Yahoo's adjusted close).
    """

    EX_DATE_CLOSE = "ex_date_close"
    PREVIOUS_CLOSE = "previous_close"


def compute_adjustment_factors(
    bars: pd.DataFrame, convention: DividendConvention = DividendConvention.EX_DATE_CLOSE
) -> pd.Series:
    """Return, per day, the product of the dividend and split factors of every LATER day.

    Multiplying a raw price by it gives the back-adjusted (total-return) price; the last day's
    factor is 1.0. A split ``s`` on day t divides every earlier price by ``s``.
    """
    event = _compute_events(bars, len(bars), convention)
    factors = np.ones(len(event))
    if len(event) > 1:
        factors[:-1] = np.cumprod(event[:0:-1])[::-1]
    return pd.Series(factors, index=bars.index, name="factor")


def _compute_events(bars: pd.DataFrame, cut: int, convention: DividendConvention) -> np.ndarray:
    """Each of the first ``cut`` days' own factor (exactly 1.0 without a dividend or split)."""
    close = bars["close"].to_numpy(dtype=np.float64)[:cut]
    dividend = bars["dividend"].to_numpy(dtype=np.float64)[:cut]
    split = bars["split"].to_numpy(dtype=np.float64)[:cut]
    if convention is DividendConvention.EX_DATE_CLOSE:
        return close / (close + dividend) / split
    previous = np.concatenate([close[:1], close[:-1]])
    # The dividend is per post-split share; the previous close is per pre-split share.
    return (1.0 - dividend * split / previous) / split


def compute_adjusted_close(
    bars: pd.DataFrame, convention: DividendConvention = DividendConvention.EX_DATE_CLOSE
) -> pd.Series:
    """Return the back-adjusted total-return close; its last value equals the last raw close.

    The default convention reproduces Alpha Vantage's ``adjusted_close``: every day before a
    dividend ex-date t is multiplied by ``close_t / (close_t + dividend_t)`` and every day before
    a split divided by its ratio.
    """
    adjusted = bars["close"] * compute_adjustment_factors(bars, convention)
    return adjusted.rename("adjusted_close")


class AdjustedCloses:
    """One symbol's bars, ready to give its back-adjusted closes as of any session's close.

    ``as_of(cut, rows)`` equals ``compute_adjusted_close(bars.iloc[:cut])`` read at ``rows``,
    bit for bit, without adjusting the whole history again: a day with no dividend or split
    has a factor of exactly 1.0, and multiplying by 1.0 changes no bit of a product, so the
    running product over the dividend and split days alone, taken in the same order (latest
    first), is the whole history's. A backtest decides every month-end and reads about a dozen
    days of each symbol's 30 years each time; adjusting the whole history for each was 94% of it.
    """

    def __init__(
        self, bars: pd.DataFrame, convention: DividendConvention = DividendConvention.EX_DATE_CLOSE
    ) -> None:
        self.dates = bars.index.to_numpy()
        self.close = bars["close"].to_numpy(dtype=np.float64)
        event = _compute_events(bars, len(bars), convention)  # a day's own: no later day's
        self._days = np.flatnonzero(event[1:] != 1.0) + 1  # NaN kept: it spoils what it spoils
        self._events = event[self._days]

    @property
    def first_date(self) -> date:
        """The date of the first bar."""
        return pd.Timestamp(self.dates[0]).date()

    def cut(self, session: Any) -> int:
        """The number of bars on or before ``session``."""
        return int(np.searchsorted(self.dates, np.datetime64(session, "ns"), side="right"))

    def as_of(self, cut: int, rows: np.ndarray) -> np.ndarray:
        """The adjusted closes at ``rows`` (each below ``cut``) from the first ``cut`` bars."""
        rows = np.asarray(rows, dtype=np.intp)
        n = int(np.searchsorted(self._days, cut))  # the event days among the first cut bars
        running = np.cumprod(self._events[:n][::-1])  # running[k]: the k + 1 latest's product
        later = n - np.searchsorted(self._days[:n], rows, side="right")  # events after each row
        factors = np.ones(len(rows))
        has = later > 0
        factors[has] = running[later[has] - 1]
        return self.close[rows] * factors

    def as_of_each(self, cuts: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``as_of(cuts[i], rows[i])`` for every i at once, bit for bit (``rows``: one line of
        rows per cut, each below its cut). The products are taken in ``as_of``'s order, latest
        event first, one event per step: a step per event between a row and its cut."""
        rows = np.asarray(rows, dtype=np.intp)
        n = np.searchsorted(self._days, np.asarray(cuts, dtype=np.intp))[:, None]
        n = np.broadcast_to(n, rows.shape)
        later = n - np.searchsorted(self._days, rows, side="right")  # events after each row
        factors = np.ones(rows.shape)
        for k in range(int(later.max(initial=0))):
            more = later > k
            factors[more] *= self._events[n[more] - 1 - k]
        return self.close[rows] * factors


def compute_split_ratio(raw: float) -> Decimal:
    """Return a split's ratio (new shares per old) as a broker applies it: the nearest simple
    fraction when the vendor's figure is within 1e-5 of one (Alpha Vantage writes 3:1 as
    3.000003), else the figure itself."""
    from fractions import Fraction

    near = Fraction(raw).limit_denominator(1000)
    if abs(float(near) - raw) <= 1e-5 * abs(raw):
        return Decimal(near.numerator) / Decimal(near.denominator)
    return Decimal(str(raw))


def compute_split_adjusted(bars: pd.DataFrame) -> pd.DataFrame:
    """Return bars with every split applied backwards, the way vendors publish split-adjusted data.

    open/high/low/close/dividend are divided by the product of all LATER splits (the split day
    itself already trades post-split), volume multiplied by it; the split column becomes 1.0.
    """
    split = bars["split"].to_numpy(dtype=np.float64)
    later = np.ones(len(split))
    if len(split) > 1:
        later[:-1] = np.cumprod(split[:0:-1])[::-1]
    adjusted = bars.copy()
    for column in ("open", "high", "low", "close", "dividend"):
        adjusted[column] = bars[column].to_numpy(dtype=np.float64) / later
    adjusted["volume"] = bars["volume"].to_numpy(dtype=np.float64) * later
    adjusted["split"] = 1.0
    return adjusted


def compute_parquet_bytes(bars: pd.DataFrame) -> bytes:
    """Return the parquet encoding the store writes for ``bars`` (deterministic for one frame)."""
    buffer = io.BytesIO()
    bars.to_parquet(buffer, engine="pyarrow", index=True, compression="zstd")
    return buffer.getvalue()


def _compute_vendor_adjusted_bytes(adjusted: pd.Series) -> bytes:
    """Return the parquet encoding of a vendor's adjusted close, indexed by date."""
    frame = pd.DataFrame(
        {"adjusted_close": adjusted.to_numpy(dtype=np.float64)}, index=adjusted.index
    )
    frame.index.name = "date"
    buffer = io.BytesIO()
    frame.to_parquet(buffer, engine="pyarrow", index=True, compression="zstd")
    return buffer.getvalue()


# -- the store ----------------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import (or a sample write) did, symbol by symbol."""

    source: str
    layout: str
    imported: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)


class _Transaction:
    """Remembers what a multi-file write changed, so a failure can put every file back."""

    def __init__(self) -> None:
        self._before: dict[Path, bytes | None] = {}
        self._new_folders: list[Path] = []

    def write(self, path: Path, data: bytes) -> None:
        if path not in self._before:
            self._before[path] = path.read_bytes() if path.exists() else None
            missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
            self._new_folders.extend(missing)
        write_bytes_atomic(path, data)

    def roll_back(self) -> None:
        for path, data in reversed(list(self._before.items())):
            if data is None:
                path.unlink(missing_ok=True)
            else:
                write_bytes_atomic(path, data)
        for folder in sorted(set(self._new_folders), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty: something else lives there now
                folder.rmdir()


class PriceStore:
    """Bars per source and symbol under ``root``, each file described by a JSON manifest.

    Layout: ``root/<source>/<SYMBOL>.parquet`` and ``<SYMBOL>.manifest.json``; replaced versions
    are kept as ``root/<source>/versions/<SYMBOL>/<stored_sha256>.parquet`` and listed in the
    manifest's ``history``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"PriceStore({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------------

    def _folder(self, source: str) -> Path:
        return self.root / source

    def bars_path(self, source: str, symbol: str) -> Path:
        """Return where the current bars of ``source``/``symbol`` are stored."""
        return self._folder(source) / f"{symbol}.parquet"

    def manifest_path(self, source: str, symbol: str) -> Path:
        """Return where the manifest of ``source``/``symbol`` is stored."""
        return self._folder(source) / f"{symbol}.manifest.json"

    def version_path(self, source: str, symbol: str, stored_sha256: str) -> Path:
        """Return where a replaced version of ``source``/``symbol`` is kept."""
        return self._folder(source) / "versions" / symbol / f"{stored_sha256}.parquet"

    def vendor_adjusted_path(self, source: str, symbol: str, sha256: str) -> Path:
        """Return where a vendor's own adjusted close of ``source``/``symbol`` is kept (one file
        per content, named by its SHA-256; the manifest names the current one)."""
        return self._folder(source) / "vendor" / symbol / f"adjusted_close.{sha256}.parquet"

    # -- reading -------------------------------------------------------------------------------

    def sources(self) -> list[str]:
        """Return the sources that hold at least one symbol, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and any(p.glob("*.manifest.json"))
        )

    def symbols(self, source: str) -> list[str]:
        """Return the symbols stored under ``source``, sorted (empty for an unknown source)."""
        folder = self._folder(source)
        if not folder.is_dir():
            return []
        return sorted(p.name.removesuffix(".manifest.json") for p in folder.glob("*.manifest.json"))

    def read_manifest(self, source: str, symbol: str) -> dict[str, Any]:
        """Return the manifest of ``source``/``symbol``; raise DataError if it is missing."""
        path = self.manifest_path(source, symbol)
        if not path.is_file():
            raise self._missing(source, symbol)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DataError(
                f"manifest {path} is unreadable ({error}); re-import {source}/{symbol} with "
                f"`{_IMPORT_HINT.format(source=source)}`"
            ) from None

    def load_bars(self, source: str, symbol: str) -> pd.DataFrame:
        """Return the stored bars of ``source``/``symbol``.

        Raises DataError when they are missing, or when the file no longer matches the SHA-256
        its manifest recorded (changed outside ops-runner).
        """
        manifest = self.read_manifest(source, symbol)
        path = self.bars_path(source, symbol)
        if not path.is_file():
            raise DataError(
                f"{source}/{symbol}: the manifest exists but {path} is missing; re-import with "
                f"`{_IMPORT_HINT.format(source=source)}`"
            )
        data = path.read_bytes()
        sha256 = compute_sha256(data)
        if sha256 != manifest["stored_sha256"]:
            raise DataError(
                f"{source}/{symbol}: {path} does not match the SHA-256 in its manifest (changed "
                f"outside ops-runner); re-import with `{_IMPORT_HINT.format(source=source)}`"
            )
        with _PARSED_LOCK:
            parsed = _PARSED.get(sha256)
            if parsed is not None:
                _PARSED.move_to_end(sha256)
                return parsed.copy()
        try:
            bars = pd.read_parquet(io.BytesIO(data), engine="pyarrow")
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(
                f"{source}/{symbol}: {path} cannot be read as Parquet ({exc}); re-import with "
                f"`{_IMPORT_HINT.format(source=source)}`"
            ) from None
        require_bars_shape(bars, f"{source}/{symbol}")
        with _PARSED_LOCK:
            _PARSED[sha256] = bars.copy()
            while len(_PARSED) > PARSED_KEPT:
                _PARSED.popitem(last=False)
        return bars

    def load_vendor_adjusted(self, source: str, symbol: str) -> pd.Series | None:
        """Return the vendor's own adjusted close kept at import (for data QA), or None when the
        layout had none. Raises DataError when it is missing or no longer matches its SHA-256.
        """
        sha256 = self.read_manifest(source, symbol).get("vendor_adjusted_sha256")
        if not sha256:
            return None
        path = self.vendor_adjusted_path(source, symbol, sha256)
        if not path.is_file() or read_sha256(path) != sha256:
            raise DataError(
                f"{source}/{symbol}: the vendor adjusted close {path} is missing or altered; "
                f"re-import with `{_IMPORT_HINT.format(source=source)}`"
            )
        return pd.read_parquet(path, engine="pyarrow")["adjusted_close"]

    def load_many(self, source: str, symbols: Sequence[str]) -> dict[str, pd.DataFrame]:
        """Return ``{symbol: bars}`` for every symbol; raise DataError naming all missing ones."""
        missing = [s for s in symbols if not self.manifest_path(source, s).is_file()]
        if missing:
            raise DataError(
                f"no bars for {', '.join(missing)} in source {source!r}; import them with "
                f"`{_IMPORT_HINT.format(source=source)}`"
            )
        return {symbol: self.load_bars(source, symbol) for symbol in symbols}

    def _missing(self, source: str, symbol: str) -> DataError:
        known = self.sources()
        where = (
            f"source {source!r} holds {len(self.symbols(source))} symbols"
            if source in known
            else f"known sources: {', '.join(known) or 'none'}"
        )
        return DataError(
            f"no bars for {source}/{symbol} in {self.root} ({where}); import them with "
            f"`{_IMPORT_HINT.format(source=source)}`"
        )

    def check_provenance(self, source: str) -> list[tuple[str, str]]:
        """Return ``(symbol, problem)`` for every stored file that disagrees with its manifest.

        Problems: a manifest without its parquet file, a parquet file whose SHA-256 differs from
        the manifest, a parquet file without a manifest, a kept version that is missing or altered,
        a vendor adjusted close the manifest names that is missing or altered.
        """
        findings: list[tuple[str, str]] = []
        folder = self._folder(source)
        for symbol in self.symbols(source):
            manifest = self.read_manifest(source, symbol)
            path = self.bars_path(source, symbol)
            if not path.is_file():
                findings.append((symbol, f"manifest without file: {path.name} is missing"))
            elif (actual := read_sha256(path)) != (expected := manifest.get("stored_sha256")):
                problem = f"SHA-256 {actual[:12]} does not match the manifest's {expected!s:.12}"
                findings.append((symbol, f"{path.name}: {problem}"))
            for old in manifest.get("history", []):
                kept = self.version_path(source, symbol, old["stored_sha256"])
                if not kept.is_file():
                    findings.append((symbol, f"kept version {kept.name} is missing"))
                elif read_sha256(kept) != old["stored_sha256"]:
                    findings.append((symbol, f"kept version {kept.name} was altered"))
            if vendor := manifest.get("vendor_adjusted_sha256"):
                kept = self.vendor_adjusted_path(source, symbol, vendor)
                if not kept.is_file() or read_sha256(kept) != vendor:
                    findings.append(
                        (symbol, f"vendor adjusted close {kept.name} missing or altered")
                    )
        if folder.is_dir():
            for path in sorted(folder.glob("*.parquet")):
                if not self.manifest_path(source, path.stem).is_file():
                    findings.append((path.stem, f"file without manifest: {path.name}"))
        return findings

    def list_rows(self) -> list[dict[str, Any]]:
        """Return one row per stored source/symbol, for ``ops-runner data list``."""
        rows = []
        for source in self.sources():
            for symbol in self.symbols(source):
                m = self.read_manifest(source, symbol)
                row = {"source": source, "symbol": symbol, **{k: m.get(k) for k in _LISTED}}
                row["synthetic"] = bool(m.get("synthetic"))
                row["versions"] = 1 + len(m.get("history", []))
                row["stored_sha256"] = m.get("stored_sha256")
                rows.append(row)
        return rows

    # -- writing -------------------------------------------------------------------------------

    def write_bars(
        self, source: str, symbol: str, bars: pd.DataFrame, provenance: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Store ``bars`` for ``source``/``symbol`` and return the manifest now in force.

        ``provenance`` gives ``layout``, ``source_file``, ``source_sha256``, and optionally
        ``synthetic`` and ``notes``. Same ``source_sha256``, layout and bars as stored: nothing
        is written. Raises DataError for a bad name or a non-canonical frame.

        ``provenance["vendor_adjusted_close"]`` (optional, a Series by date) is the vendor's own
        adjusted close: kept beside the bars, named in the manifest, and read by data QA.
        """
        self.write_many(source, {symbol: (bars, provenance)}, layout=str(provenance["layout"]))
        return self.read_manifest(source, symbol)

    def write_many(
        self,
        source: str,
        items: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]],
        layout: str,
        evidence: Mapping[str, bytes] | None = None,
    ) -> ImportReport:
        """Store several symbols as one change: either all are written or none (rolled back).

        ``items`` maps symbol to ``(bars, provenance)`` as for ``write_bars``. ``evidence`` maps
        a path relative to the source's folder (such as ``raw/<sha256>.json.gz``) to the bytes
        kept there, written first in the same change; a file already there is left as it is.
        """
        self.require_source_name(source)
        kept = []
        for name, data in sorted((evidence or {}).items()):
            relative = Path(name)
            if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                raise DataError(f"evidence path {name!r} leaves {source}/; nothing was written")
            kept.append((self._folder(source) / relative, data))
        plans = []
        for symbol, (bars, provenance) in sorted(items.items()):
            if not SYMBOL_PATTERN.fullmatch(symbol):
                raise DataError(f"{symbol!r} is not a ticker symbol; nothing was written")
            require_bars_shape(bars, f"{source}/{symbol}")
            if len(bars) == 0:
                raise DataError(f"{source}/{symbol}: no bars to store; nothing was written")
            missing = {"layout", "source_file", "source_sha256"} - set(provenance)
            if missing:
                raise DataError(f"{source}/{symbol}: provenance lacks {sorted(missing)}")
            plans.append((symbol, bars, provenance))
        report = ImportReport(source=source, layout=layout)
        transaction = _Transaction()
        try:
            for path, data in kept:
                if not path.is_file():
                    transaction.write(path, data)
            for symbol, bars, provenance in plans:
                outcome = self._write_symbol(transaction, source, symbol, bars, provenance)
                getattr(report, outcome).append(symbol)
        except BaseException:
            transaction.roll_back()
            raise
        return report

    def _write_symbol(
        self,
        transaction: _Transaction,
        source: str,
        symbol: str,
        bars: pd.DataFrame,
        provenance: Mapping[str, Any],
    ) -> str:
        manifest_path = self.manifest_path(source, symbol)
        previous = self.read_manifest(source, symbol) if manifest_path.is_file() else None
        data = compute_parquet_bytes(bars)
        vendor = provenance.get("vendor_adjusted_close")
        vendor_data = None if vendor is None else _compute_vendor_adjusted_bytes(vendor)
        vendor_sha = None if vendor_data is None else compute_sha256(vendor_data)
        # The same evidence can yield other bars (one vendor answer cut to another date range):
        # unchanged means the same source AND the same stored bytes.
        if (
            previous is not None
            and previous.get("source_sha256") == provenance["source_sha256"]
            and previous.get("layout") == provenance["layout"]
            and previous.get("stored_sha256") == compute_sha256(data)
            and previous.get("vendor_adjusted_sha256") == vendor_sha
            and self.bars_path(source, symbol).is_file()
        ):
            return "unchanged"
        history: list[dict[str, Any]] = []
        if previous is not None:
            old_path = self.bars_path(source, symbol)
            if old_path.is_file():
                old_data = old_path.read_bytes()
                kept = self.version_path(source, symbol, compute_sha256(old_data))
                if not kept.is_file():
                    transaction.write(kept, old_data)
            history = [{k: v for k, v in previous.items() if k != "history"}]
            history += previous.get("history", [])
        manifest = {
            "symbol": symbol,
            "source": source,
            "layout": str(provenance["layout"]),
            "source_file": str(provenance["source_file"]),
            "source_sha256": str(provenance["source_sha256"]),
            "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "first_date": bars.index[0].date().isoformat(),
            "last_date": bars.index[-1].date().isoformat(),
            "rows": len(bars),
            "stored_sha256": compute_sha256(data),
            "synthetic": bool(provenance.get("synthetic", False)),
            "notes": str(provenance.get("notes", "")),
            "history": history,
        }
        # The parquet files first, then the manifest that vouches for them.
        if vendor_data is not None and vendor_sha is not None:
            manifest["vendor_adjusted_sha256"] = vendor_sha
            kept = self.vendor_adjusted_path(source, symbol, vendor_sha)
            if not kept.is_file():
                transaction.write(kept, vendor_data)
        transaction.write(self.bars_path(source, symbol), data)
        text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
        transaction.write(manifest_path, text.encode("utf-8"))
        return "imported" if previous is None else "replaced"

    @staticmethod
    def require_source_name(source: str) -> None:
        if not isinstance(source, str) or not _SOURCE_NAME.fullmatch(source):
            raise DataError(
                f"bad source name {source!r}: use lower-case letters, digits, '_', '-' or '.' "
                "(for example 'alphavantage')"
            )


def open_store(cfg: Config) -> PriceStore:
    """Return the workbook's price store (config ``paths.data``)."""
    return PriceStore(cfg.path("data"))
