"""The dispatcher's single book of exclusive resources: who holds what, who waits for what.

Resources are door passages, lift cars, exclusive lanes, corridor zones and exclusive nodes; their
names are opaque here. Each has a capacity (usually 1). A robot asks for a *set* of resources at
once and gets all of them or none (`request`), so it never holds half of what it needs for its
next step while blocking others with the other half.

Grant rule. Waiting requests form one queue, in the order they were first made. After every
change the queue is scanned front to back; a request is granted when every resource it still
needs has room *and* no earlier request that is still waiting needs any of the same resources.
An earlier waiter thus reserves what it needs against every later one, even where there is room
(a later request for a free resource it shares with an earlier waiter waits behind it). One
exception: a reservation does not hold against a later request from a robot that holds something
the earlier waiter needs. That robot is in the earlier waiter's way and can only get out of it
with what it asks for (a robot done at a docking hatch whose only way out is the doorway the next
robot queues for); making it wait behind the robot it blocks would deadlock both.

Why nobody starves. A waiting request W is never overtaken on a resource it needs, except by a
holder of W's resources that needs it to leave: a later request needing any of them is not
granted before W (the reservation), and a new request always joins the queue behind W. So the
only things between W and its grant are the current holders of W's resources and the finitely
many requests ahead of W. By induction on the queue position, if every holder gives up what it
holds within a bounded time, the head of the queue is granted within that time, then the next,
and so on: W's wait is bounded by the holding times of those ahead of it. (A holder that
overtakes W does so to give W's resource back: it only shortens W's wait.) One forward scan
finds every grantable request: granting a request only takes room and only drops a reservation
that later requests are still to see in the same scan, so no request already passed over can
have become grantable.

What the rule does not prevent is hold-and-wait: a robot standing on an exclusive node that waits
for a lift car, while the robot in the car waits for that node. `deadlocks()` reports such cycles
in the wait-for graph; breaking one (re-routing a robot, backing it off) is the dispatcher's call.
For capacity-1 resources a cycle is a deadlock. For larger capacities a cycle through one of
several holders is only a possible deadlock: another holder may still release.

`hold()` records physical presence that cannot be refused (a robot reconnecting while standing on
an exclusive node); it may exceed capacity, and says so, so that the caller raises an alert.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx


@dataclass(frozen=True)
class _Wait:
    resources: tuple[str, ...]
    since: float


class TrafficControl:
    """Holders and one FIFO queue of all-or-nothing requests for capacity-limited resources."""

    def __init__(self, capacities: Mapping[str, int]) -> None:
        for name, cap in capacities.items():
            if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
                raise ValueError(f"capacity of {name!r} must be an integer >= 1, not {cap!r}")
        self._capacity = dict(capacities)
        # Dicts as ordered sets: grant order stays visible and iteration is deterministic.
        self._holders: dict[str, dict[str, None]] = {name: {} for name in capacities}
        self._held: dict[str, dict[str, None]] = {}
        self._queue: dict[str, _Wait] = {}

    # --- changes ---------------------------------------------------------------------------------

    def request(self, holder: str, resources: Sequence[str], now: float = 0.0) -> bool:
        """Ask for all of `resources`; True when `holder` now holds all of them.

        Otherwise it holds none of the new ones and its request waits. Asking again with the same
        set keeps its place; a different set replaces the waiting request at the back of the
        queue. Replacing a request can let later waiters through: `submit` reports them (or call
        `cancel` first, which returns them).
        """
        return self.submit(holder, resources, now)[0]

    def submit(
        self, holder: str, resources: Sequence[str], now: float = 0.0
    ) -> tuple[bool, list[str]]:
        """`request`, also returning the other holders granted because a waiting request was
        replaced, in grant order."""
        wanted = tuple(dict.fromkeys(resources))
        for name in wanted:
            if name not in self._capacity:
                raise KeyError(f"unknown resource {name!r}")
        old = self._queue.get(holder)
        if old is not None:
            if set(old.resources) == set(wanted):
                return False, []
            del self._queue[holder]
        held = self._held.get(holder, {})
        if all(name in held for name in wanted):
            # An empty or already-held set is granted at once; it still replaces a waiting request.
            return True, self._scan() if old is not None else []
        self._queue[holder] = _Wait(wanted, now)
        granted = self._scan()
        return holder not in self._queue, [g for g in granted if g != holder]

    def cancel(self, holder: str) -> list[str]:
        """Stop waiting (what it holds it keeps); returns the holders granted as a result."""
        if self._queue.pop(holder, None) is None:
            return []
        return self._scan()

    def release(self, holder: str, resources: Iterable[str]) -> list[str]:
        """Give up those of `resources` it holds (others are ignored); returns the holders whose
        waiting request was granted as a result, in grant order."""
        for name in resources:
            self._drop(holder, name)
        return self._scan()

    def release_all(self, holder: str, keep: Iterable[str] = ()) -> list[str]:
        """Give up everything held except `keep` and stop waiting; returns newly granted holders."""
        kept = set(keep)
        self._queue.pop(holder, None)
        for name in list(self._held.get(holder, {})):
            if name not in kept:
                self._drop(holder, name)
        return self._scan()

    def hold(self, holder: str, resource: str) -> bool:
        """Record that `holder` physically occupies `resource`, even above its capacity.

        False when the resource is now over capacity (the caller raises an alert). If the holder
        was waiting, holding this may complete its request: check `waiting_for` afterwards.
        """
        if resource not in self._capacity:
            raise KeyError(f"unknown resource {resource!r}")
        self._take(holder, resource)
        self._scan()
        return len(self._holders[resource]) <= self._capacity[resource]

    # --- queries ---------------------------------------------------------------------------------

    def holders(self, resource: str) -> tuple[str, ...]:
        """Who holds `resource`, in the order they got it."""
        return tuple(self._holders[resource])

    def held_by(self, holder: str) -> tuple[str, ...]:
        """What `holder` holds, in the order it got it."""
        return tuple(self._held.get(holder, {}))

    def waiting_for(self, holder: str) -> tuple[str, ...]:
        """The resources of `holder`'s waiting request, () when it waits for nothing."""
        wait = self._queue.get(holder)
        return wait.resources if wait is not None else ()

    def waiting_since(self, holder: str) -> float | None:
        """When `holder` made its waiting request, None when it waits for nothing."""
        wait = self._queue.get(holder)
        return wait.since if wait is not None else None

    def waiters(self) -> list[str]:
        """Waiting holders in queue order."""
        return list(self._queue)

    def blockers(self, holder: str) -> set[str]:
        """Who `holder`'s waiting request waits for: holders of a needed resource that has no room
        (a holder of one with room blocks nobody) and earlier waiters needing the same ones."""
        if holder not in self._queue:
            return set()
        need = self._need(holder)
        out = {h for name in need if not self._room(name) for h in self._holders[name]}
        for earlier in self._queue:
            if earlier == holder:
                break
            if need & self._need(earlier):
                out.add(earlier)
        out.discard(holder)
        return out

    def deadlocks(self) -> list[list[str]]:
        """Cycles in the wait-for graph, each starting at its smallest holder id, sorted."""
        graph = nx.DiGraph()
        for waiter in self._queue:
            graph.add_edges_from((waiter, b) for b in self.blockers(waiter))
        cycles: list[list[str]] = []
        for cycle in nx.simple_cycles(graph):
            start = cycle.index(min(cycle))
            cycles.append(cycle[start:] + cycle[:start])
        return sorted(cycles)

    def over_capacity(self) -> list[str]:
        """Resources held by more holders than they admit (only `hold` can cause it)."""
        return [n for n, hs in self._holders.items() if len(hs) > self._capacity[n]]

    def check_invariants(self) -> list[str]:
        """Breaches of this book's own rules, [] when consistent (for tests and audits)."""
        problems: list[str] = []
        for name, hs in self._holders.items():
            problems += [
                f"{h} holds {name} unrecorded" for h in hs if name not in self._held.get(h, {})
            ]
        for h, names in self._held.items():
            problems += [f"{h} records {n} not held" for n in names if h not in self._holders[n]]
        reserved: set[str] = set()
        for waiter in self._queue:
            need = self._need(waiter)
            if all(self._room(n) and n not in reserved for n in need):
                problems.append(f"{waiter} waits although its request is grantable")
            reserved |= need
        return problems

    # --- internals -------------------------------------------------------------------------------

    def _need(self, holder: str) -> set[str]:
        held = self._held.get(holder, {})
        return {n for n in self._queue[holder].resources if n not in held}

    def _room(self, name: str) -> bool:
        return len(self._holders[name]) < self._capacity[name]

    def _take(self, holder: str, name: str) -> None:
        self._holders[name][holder] = None
        self._held.setdefault(holder, {})[name] = None

    def _drop(self, holder: str, name: str) -> None:
        held = self._held.get(holder)
        if held is None or name not in held:
            return
        del held[name]
        del self._holders[name][holder]
        if not held:
            del self._held[holder]

    def _scan(self) -> list[str]:
        """Grant every waiting request the rule allows, front to back; returns who got one."""
        granted: list[str] = []
        reserved: dict[str, list[str]] = {}  # resource -> earlier waiters still needing it
        for waiter in list(self._queue):
            need = self._need(waiter)
            mine = self._held.get(waiter, {})

            def free_for(name: str, mine: dict[str, None] = mine) -> bool:
                # Every earlier waiter for `name` waits for something this one holds.
                return all(self._need(w).intersection(mine) for w in reserved.get(name, ()))

            if all(self._room(n) and free_for(n) for n in need):
                for name in self._queue[waiter].resources:
                    if name in need:
                        self._take(waiter, name)
                del self._queue[waiter]
                granted.append(waiter)
            else:
                for name in need:
                    reserved.setdefault(name, []).append(waiter)
        return granted
