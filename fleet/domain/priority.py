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


_RANK = {Priority.STAT: 0, Priority.URGENT: 1, Priority.ROUTINE: 2}
