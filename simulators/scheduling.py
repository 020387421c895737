"""Time for simulated devices: a virtual event loop (fast mode) or asyncio (live mode).

Simulated robots, doors and lifts are written once against `Scheduler`; which one they get
decides whether a simulated hour takes an hour, three minutes, or a fraction of a second.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from fleet.clock import Clock, ManualClock


class Cancellable(Protocol):
    """Something scheduled that can be called off."""

    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """Current time and delayed calls, in simulated seconds."""

    def now(self) -> float: ...

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> Cancellable: ...


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    fn: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class VirtualLoop:
    """A discrete-event loop under a ManualClock: events run in (time, insertion) order, so a
    run is a pure function of its inputs and seed."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self._heap: list[_Event] = []
        self._seq = itertools.count()
        self.events_run = 0

    def now(self) -> float:
        return self.clock.now()

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> _Event:
        ev = _Event(self.clock.now() + max(0.0, delay_s), next(self._seq), fn)
        heapq.heappush(self._heap, ev)
        return ev

    def call_soon(self, fn: Callable[[], None]) -> _Event:
        return self.call_later(0.0, fn)

    def run_until(self, t_end: float, stop: Callable[[], bool] | None = None) -> None:
        """Run events up to `t_end` (or until `stop()` is true); the clock ends at the last
        event run, or at `t_end` when the loop ran dry before it."""
        while self._heap and self._heap[0].at <= t_end:
            ev = heapq.heappop(self._heap)
            if ev.cancelled:
                continue
            self.clock.advance_to(ev.at)
            ev.fn()
            self.events_run += 1
            if stop is not None and stop():
                return
        if self.clock.now() < t_end:
            self.clock.advance_to(t_end)


class AsyncioScheduler:
    """Live mode: simulated seconds pass `time_scale` times faster than real ones."""

    def __init__(self, clock: Clock, time_scale: float) -> None:
        self._clock = clock
        self._scale = time_scale

    def now(self) -> float:
        return self._clock.now()

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, delay_s) / self._scale, fn)
