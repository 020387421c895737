"""Exclusive resources (door passages, lift cars) and who holds or waits for them.

Grants are first come, first served, so a waiting robot is never starved. A robot asks for its
next exclusive resource only after releasing the previous one (the step expansion guarantees
it), so no robot holds one resource while waiting for another and no deadlock can form here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class _Resource:
    capacity: int
    holders: list[str] = field(default_factory=list)
    queue: deque[str] = field(default_factory=deque)


class Reservations:
    """Holders and FIFO queues of capacity-limited resources."""

    def __init__(self, capacities: dict[str, int]) -> None:
        self._res = {name: _Resource(cap) for name, cap in capacities.items()}

    def request(self, resource: str, holder: str) -> bool:
        """Ask for `resource`; True when `holder` holds it now. Asking again changes nothing."""
        r = self._res[resource]
        if holder in r.holders:
            return True
        if holder in r.queue:
            return False
        if len(r.holders) < r.capacity and not r.queue:
            r.holders.append(holder)
            return True
        r.queue.append(holder)
        return False

    def release(self, resource: str, holder: str) -> list[str]:
        """Give up (or stop waiting for) `resource`; returns the holders granted it as a result."""
        r = self._res[resource]
        if holder in r.holders:
            r.holders.remove(holder)
        elif holder in r.queue:
            r.queue.remove(holder)
            return []
        granted: list[str] = []
        while r.queue and len(r.holders) < r.capacity:
            nxt = r.queue.popleft()
            r.holders.append(nxt)
            granted.append(nxt)
        return granted

    def release_all(self, holder: str, keep: str = "") -> list[tuple[str, str]]:
        """Release everything `holder` holds or waits for except `keep`; returns the
        (resource, new holder) grants that follow."""
        grants: list[tuple[str, str]] = []
        for name, r in self._res.items():
            if name != keep and (holder in r.holders or holder in r.queue):
                grants.extend((name, g) for g in self.release(name, holder))
        return grants

    def holders(self, resource: str) -> tuple[str, ...]:
        """Who holds `resource` now."""
        return tuple(self._res[resource].holders)

    def held_by(self, holder: str) -> list[str]:
        """The resources `holder` holds."""
        return [name for name, r in self._res.items() if holder in r.holders]

    def over_capacity(self) -> list[str]:
        """Resources held by more holders than they admit (always empty: an invariant check)."""
        return [name for name, r in self._res.items() if len(r.holders) > r.capacity]
