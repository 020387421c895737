"""Injected time. The core asks a Clock; it never calls time.time() itself."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Seconds since the Unix epoch, as the running mode defines them."""

    def now(self) -> float: ...


class SystemClock:
    """Wall-clock time, for the production service."""

    def now(self) -> float:
        return time.time()


class ScaledClock:
    """Time that runs `factor` times faster than the wall clock, from a fixed origin.

    Used by the live demo: the server and the simulated robots agree on a clock that runs, say,
    20 times faster than real time, so an hour of hospital work passes in three minutes.
    """

    def __init__(self, factor: float, origin: float | None = None) -> None:
        if factor <= 0:
            raise ValueError(f"time scale must be positive, got {factor}")
        self.factor = factor
        self._wall0 = time.monotonic()
        self._origin = time.time() if origin is None else origin

    def now(self) -> float:
        return self._origin + (time.monotonic() - self._wall0) * self.factor


class ManualClock:
    """A clock that moves only when told; the digital twin and unit tests drive it."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance_to(self, t: float) -> None:
        """Move the clock forward to `t` (never backwards)."""
        if t < self._now:
            raise ValueError(f"clock cannot go back from {self._now} to {t}")
        self._now = t
