"""The Cycle: one monthly rebalance, named by its year and month ("2025-11")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from ops_runner.core.errors import CycleError

_CYCLE_ID = re.compile(r"([0-9]{4})-([0-9]{2})")  # ASCII digits only: str() must give it back


@dataclass(frozen=True, order=True)
class Cycle:
    """One monthly rebalance: ``str()`` is its id ("2025-11"); cycles order by time.

    A cycle belongs to the month of its rebalance session (the month's last session).
    """

    year: int
    month: int

    def __post_init__(self) -> None:
        if not (1 <= self.year <= 9999 and 1 <= self.month <= 12):
            raise CycleError(f"cycle: year {self.year}, month {self.month} is not a cycle")

    @classmethod
    def of(cls, session: date) -> Cycle:
        """Return the cycle a rebalance session belongs to: its year and month."""
        return cls(session.year, session.month)

    @classmethod
    def parse(cls, text: object, what: str = "cycle") -> Cycle:
        """Return the cycle ``text`` names (YYYY-MM, month 01..12). Raises CycleError.

        ``what`` names the input in the message: "--cycle: '2025-13' is not a cycle such as
        2025-11".
        """
        found = _CYCLE_ID.fullmatch(text) if isinstance(text, str) else None
        year, month = (int(found[1]), int(found[2])) if found else (0, 0)
        if not (year >= 1 and 1 <= month <= 12):
            raise CycleError(f"{what}: {text!r} is not a cycle such as 2025-11")
        return cls(year, month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def previous(self) -> Cycle:
        """Return the cycle of the month before."""
        if self.month == 1:
            return Cycle(self.year - 1, 12)
        return Cycle(self.year, self.month - 1)
