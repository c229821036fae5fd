"""The ledger layer: the event store, the projections folded from it, states and approvals.

The package's front door re-exports what callers use most from ``store``; the rest is imported
from its module (``ops_runner.ledger.states``, ``.projections``, ``.approvals``).
"""

from ops_runner.ledger.store import (
    LEDGER_FILE,
    Event,
    Ledger,
    LedgerConflict,
    LedgerCorrupt,
    LedgerMissing,
    open_ledger,
)

__all__ = [
    "LEDGER_FILE",
    "Event",
    "Ledger",
    "LedgerConflict",
    "LedgerCorrupt",
    "LedgerMissing",
    "open_ledger",
]
