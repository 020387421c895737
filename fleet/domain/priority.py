"""Order priorities."""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    """How urgent an order is. STAT jumps the queue."""

    STAT = "STAT"
    URGENT = "URGENT"
    ROUTINE = "ROUTINE"

    @property
    def rank(self) -> int:
        """0 for the most urgent; used to order queues."""
        return _RANK[self]

    @property
    def default_within_s(self) -> float | None:
        """How soon an order of this priority placed without a needed-by time is wanted, as
        the planner assumes: STAT within 15 minutes, URGENT within an hour, ROUTINE no bound."""
        return _DEFAULT_WITHIN_S[self]


_RANK = {Priority.STAT: 0, Priority.URGENT: 1, Priority.ROUTINE: 2}
_DEFAULT_WITHIN_S: dict[Priority, float | None] = {
    Priority.STAT: 15 * 60.0,
    Priority.URGENT: 60 * 60.0,
    Priority.ROUTINE: None,
}
