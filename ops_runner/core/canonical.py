"""Canonical JSON: the one spelling of a value that the ledger stores and hashes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import is_dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Any

from ops_runner.core.clock import format_instant
from ops_runner.core.errors import LedgerError

_dumps = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def _decimal_text(value: Decimal, where: str) -> str:
    if not value.is_finite():
        raise LedgerError(f"{where} is the Decimal {value}; the ledger stores finite numbers only")
    text = format(value, "f")  # exact: never rounded by a decimal context, unlike normalize()
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _plain(value: Any, where: str) -> Any:
    """Return ``value`` in JSON-native types; refuse what has more than one honest spelling."""
    if isinstance(value, Enum):
        value = value.value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        raise LedgerError(f"{where} is a float; use Decimal or str for money and quantities")
    if isinstance(value, Decimal):
        return _decimal_text(value, where)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise LedgerError(f"{where} is a naive datetime; give it a time zone (UTC)")
        return format_instant(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for name, item in value.items():
            label = name.value if isinstance(name, Enum) else name
            if not isinstance(label, str):
                kind = type(name).__name__
                raise LedgerError(f"{where} has the key {name!r} ({kind}); keys must be strings")
            result[str(label)] = _plain(item, f"{where}.{label}")
        return result
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise LedgerError(
        f"{where} is a {type(value).__name__}; the ledger stores str, int, bool, None, Decimal, "
        "date, aware datetime, Enum, list, tuple and dict"
    )


def canonical_json(value: Any, root: str = "payload") -> str:
    """Return the one canonical JSON text of ``value``. Raises LedgerError naming the field.

    Keys sorted, no whitespace, non-ASCII kept as UTF-8 (ensure_ascii=False: readable in the
    file, and the same bytes in any language that sorts keys by code point). Floats are refused;
    a Decimal becomes its exact plain-decimal string without trailing zeros ("1.50" -> "1.5",
    1E+2 -> "100"), so equal amounts hash alike; a date its ISO form; an aware datetime UTC ISO
    with microseconds and "Z" (naive refused); an Enum its value; a tuple a list; dict keys must
    be strings. ``root`` names the value in messages: "payload.price is a float; ...".
    """
    text = _dumps(_plain(value, root))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise LedgerError(f"{root} holds a lone surrogate, which UTF-8 cannot store") from None
    return text


def compute_json_ready(value: Any) -> Any:
    """Return ``value`` JSON-ready for a report's payload; the lenient cousin of canonical_json.

    Decimals and StrEnums become ``str(value)`` (trailing zeros kept: "1.50"), a datetime its
    ``isoformat()``, a dataclass instance a dict of its attributes, a tuple a list, dict keys
    strings; anything else (int, bool, None, str, a date) is returned as it is. Nothing is
    refused: the ledger's canonical_json judges the result when it is recorded.
    """
    if isinstance(value, Decimal | StrEnum):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [compute_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {str(k): compute_json_ready(v) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return {k: compute_json_ready(v) for k, v in vars(value).items()}
    return value
