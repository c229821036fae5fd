"""A break: one mismatch between what the ledger expects and what the broker says, with its
numbers. Reconciliation, the books and the weekly audit all report them."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class BreakKind(StrEnum):
    """What a break is about."""

    PARTIAL_FILL = "partial_fill"
    MISSING_FILL = "missing_fill"
    OVERFILL = "overfill"
    ORDER_WORKING = "order_working"  # still working at the broker at the limit
    UNEXPECTED_FILL = "unexpected_fill"  # an execution of the session that is no cycle intent
    FILL_CHANGED = "fill_changed"  # one exec_id reported with other numbers
    COMMISSION_MISSING = "commission_missing"
    COMMISSION_CHANGED = "commission_changed"
    POSITION = "position"
    POSITION_NOT_REPORTED = "position_not_reported"  # no entry is not a flat position
    CASH = "cash"
    PAYMENT_MISSING = "payment_missing"  # a dividend unpaid past its pay date and the grace
    TARGET = "target"  # the account is not where the cycle's decision and plan said it would be


@dataclass(frozen=True)
class Break:
    """One mismatch with its numbers: what the ledger expects, what the broker (or a fill) says."""

    what: BreakKind
    symbol: str | None
    expected: int | Decimal | str | None
    actual: int | Decimal | str | None
    detail: str
    client_ref: str | None = None
