"""Numbers and tables for people: money, percent, bps and instants as a reviewer reads them.

One home for the page's spellings: the runs index and every notebook call these, so a dollar
amount, a missing value or a time reads the same everywhere. A value that is missing (None,
NaN, an empty string) is a dash, never ``None`` or ``NaN``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import pandas as pd

from ops_runner.core.clock import parse_instant

if TYPE_CHECKING:
    from pandas.io.formats.style import Styler

MISSING = "—"  # what a page shows where a value is absent

# Short cells (a symbol, a date, an amount) never break; middling ones wrap at their spaces and
# hyphens; long text (hashes, evidence, detail) may wrap anywhere: nothing runs off the page.
NO_WRAP_UPTO = 12  # characters
WRAP_AFTER = 24  # characters: a cell longer than this may wrap anywhere
WIDE_TABLE = 10  # columns: a wider table is set smaller
TABLE_STYLES = [
    {"selector": "", "props": "border-collapse: collapse; max-width: 100%;"},
    {
        "selector": "td, th",
        "props": "text-align: left; padding: 2px 6px; vertical-align: top; "
        "white-space: normal; overflow-wrap: normal;",
    },  # fmt: skip
    {"selector": "td.nw, tbody th", "props": "white-space: nowrap;"},
    {"selector": "td.wrap", "props": "overflow-wrap: anywhere; min-width: 10em;"},
    {"selector": "td.num", "props": "text-align: right; font-variant-numeric: tabular-nums;"},
]
WIDE_STYLE = {"selector": "", "props": "font-size: 11.5px;"}
FLAG_STYLE = "background-color: #fde0dc;"  # a flagged row: out of band


def _number(value: Any) -> Decimal | None:
    """Return ``value`` as a Decimal, or None when it is missing or not a number."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        number = Decimal(str(value).strip().replace(",", ""))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def is_missing(value: Any) -> bool:
    """Return whether ``value`` says nothing: None, NaN, NaT, pd.NA or blank text."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip() or value.strip() in ("None", "nan", "NaN", "NaT", "<NA>")
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or a dict: something, not missing
        return False


def format_money(value: Any, currency: str = "$") -> str:
    """Return an amount with its sign first, thousands separated, two decimals: -$1,234.50."""
    number = _number(value)
    if number is None:
        return MISSING if is_missing(value) else str(value)
    cents = number.quantize(Decimal("0.01"), ROUND_HALF_UP)
    sign = "-" if cents < 0 else ""
    return f"{sign}{currency}{abs(cents):,.2f}"


def format_percent(value: Any, digits: int = 2, signed: bool = False) -> str:
    """Return a fraction as a percent (0.0531 -> 5.31%); ``signed`` adds the +."""
    number = _number(value)
    if number is None:
        return MISSING if is_missing(value) else str(value)
    shown = (number * 100).quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP)
    return f"{shown:+.{digits}f}%" if signed else f"{shown:.{digits}f}%"


def format_bps(value: Any, digits: int = 1) -> str:
    """Return basis points as given (already in bps), signed: +3.2 bps."""
    number = _number(value)
    if number is None:
        return MISSING if is_missing(value) else str(value)
    return f"{number.quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP):+.{digits}f} bps"


def format_number(value: Any, digits: int = 2) -> str:
    """Return a plain number with thousands separated (whole numbers without decimals)."""
    number = _number(value)
    if number is None:
        return MISSING if is_missing(value) else str(value)
    if number == number.to_integral_value() and digits >= 0 and abs(number) >= 1:
        return f"{number:,.0f}"
    return f"{number:,.{digits}f}"


def format_when(value: Any) -> str:
    """Return an instant to the minute in UTC (2025-11-28 21:30 UTC), seconds only when they
    are not zero, never microseconds; a date stays a date; text that is neither stays as is."""
    if is_missing(value):
        return MISSING
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        text = str(value).strip()
        if len(text) <= 10:
            return text
        try:
            moment = parse_instant(text)
        except ValueError:
            return text
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    spelled = "%Y-%m-%d %H:%M:%S UTC" if moment.second else "%Y-%m-%d %H:%M UTC"
    return moment.strftime(spelled)


_FRACTION = re.compile(r"(\d\d:\d\d:\d\d)\.\d+")  # an instant's fraction of a second


def format_value(value: Any) -> str:
    """Return any cell as text a person reads: a dash for missing, yes/no for booleans,
    numbers as numbers, a mapping as "key: value" lines, and no instant inside a text with its
    fraction of a second (2025-10-31T20:30:00.000000Z reads 2025-10-31T20:30:00Z)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {format_value(v)}" for k, v in value.items()) or MISSING
    if isinstance(value, list | tuple):
        return "; ".join(format_value(v) for v in value) or MISSING
    if is_missing(value):
        return MISSING
    if isinstance(value, float):
        return format_number(value, 4 if abs(value) < 1 else 2)
    return _FRACTION.sub(r"\1", str(value))


def _wrapping(text: str) -> str:
    if len(text) <= NO_WRAP_UPTO:
        return "nw"
    return "wrap" if len(text) > WRAP_AFTER else "mid"


def show_table(
    frame: pd.DataFrame,
    *,
    money: Iterable[str] = (),
    percent: Iterable[str] = (),
    bps: Iterable[str] = (),
    when: Iterable[str] = (),
    transpose: bool = False,
    hide_index: bool = False,
    flag: str | None = None,
) -> Styler:
    """Return ``frame`` styled for a page: the named columns as money, percent (fractions) or
    bps, instants to the minute, every other cell by ``format_value``; headers spaced so they
    wrap; long text wraps in its cell and is never cut. ``transpose`` turns a wide table (many
    columns, few rows) on its side so it fits the page. A named column the frame lacks is
    skipped: a page's formatting never fails the run that shows it. ``flag`` names a column
    whose true rows are tinted red (out of band at a glance)."""
    formatters: dict[str, Any] = {}
    for columns, spell in ((money, format_money), (percent, format_percent),
                           (bps, format_bps), (when, format_when)):  # fmt: skip
        formatters |= {column: spell for column in columns if column in frame.columns}
    shown = frame.copy()
    marked = [bool(v) for v in frame[flag]] if flag in frame.columns and not transpose else []
    for column in shown.columns:
        spell = formatters.get(column, format_value)
        shown[column] = [spell(v) for v in shown[column]]
    numeric = [str(c).replace("_", " ") for c in formatters if formatters[c] is not format_when]
    shown.columns = pd.Index([str(c).replace("_", " ") for c in shown.columns])
    labels = [format_value(i) for i in shown.index]
    if len(set(labels)) == len(labels):  # a styled table needs unique labels
        shown.index = pd.Index(labels)
    if transpose:
        shown = shown.T
    wide = [WIDE_STYLE] if len(shown.columns) > WIDE_TABLE else []
    styler = shown.style.set_table_styles([*TABLE_STYLES, *wide])
    if len(shown) and len(shown.columns):
        numbers = set() if transpose else set(numeric)
        classes = [
            [("num " if c in numbers else "") + _wrapping(str(v))
             for c, v in zip(shown.columns, row, strict=True)]
            for row in shown.itertuples(index=False)
        ]  # fmt: skip
        styler = styler.set_td_classes(
            pd.DataFrame(classes, index=shown.index, columns=shown.columns)
        )
    if any(marked):
        tints = [[FLAG_STYLE if on else ""] * len(shown.columns) for on in marked]
        styler = styler.apply(
            lambda _: pd.DataFrame(tints, index=shown.index, columns=shown.columns), axis=None
        )
    return styler.hide(axis="index") if hide_index else styler


def show_mapping(mapping: Mapping[str, Any], key: str = "name", value: str = "value") -> Styler:
    """Return a mapping as a two-column table (``key``, ``value``) in its own order, each value
    by ``format_value``: what a page shows instead of a Python dict."""
    frame = pd.DataFrame({key: list(mapping), value: list(mapping.values())})
    return show_table(frame, hide_index=True)
