"""Learned lift waits: how long robots really wait for each car, from what the traffic layer saw.

The map gives every lift a nominal wait (`expected_wait`), a guess made before the building was
run. A real hospital's lifts are slower at visiting hours and faster at night; a dirty lift
shared with porters is slower than a dedicated clean one. The dispatcher core measures each wait
(from the robot's `LIFT_CALL` to the car standing at its level with its doors open), feeds it to a
`LiftWaitEstimator`, and now and then hands the estimates to the building graph:

    estimator = LiftWaitEstimator.for_building(building)
    ...
    estimator.observe("LIFT-CLEAN", waited_s)          # on every car arrival for a call
    ...
    if graph.set_lift_waits(estimator.estimates()):     # a few times an hour
        ...                                             # travel times changed: re-plan

The estimator holds no clock and does no I/O: the same observations in the same order give the
same estimates, so the digital twin replays exactly.

How an estimate is made (per lift):

- **Prior.** Until `min_observations` waits have been seen, the estimate is the prior (the map's
  `expected_wait`), so one odd wait does not move the plan, and a lift that is never observed
  keeps exactly the map's travel times.
- **Exponentially weighted mean.** Each wait updates a running mean with weight
  `max(alpha, 1 / n)` for the n-th observation: the first `1 / alpha` waits are averaged evenly
  (so neither the prior nor the very first wait biases the result) and later ones are weighted
  exponentially, so the estimate follows the building's daily rhythm with a memory of about
  `1 / alpha` calls (ten with `DEFAULT_ALPHA`). When the estimate first leaves the prior it is
  the plain mean of the first `min_observations` waits.
- **Clamping.** A wait is clamped to `[0, max_wait_s]` before use: a negative one (clock skew
  between controllers) counts as no wait, and a wait of an hour (a car out of service, a fire
  recall) counts as `max_wait_s`, because such an outage is the traffic layer's fault handling,
  not the typical wait to plan for. A wait that is not a finite number is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from fleet.building.model import Building

DEFAULT_ALPHA = 0.1
"""Weight of a new wait once warmed up: a memory of about ten calls, an hour or two per lift."""

DEFAULT_MIN_OBSERVATIONS = 5
"""Waits needed before an estimate leaves the prior."""

DEFAULT_MAX_WAIT_S = 300.0
"""Longest wait taken at face value; a car that takes longer is out of order, not slow."""


@dataclass
class _Lift:
    prior_s: float
    count: int = 0
    mean_s: float = 0.0


class LiftWaitEstimator:
    """Per-lift wait estimates from observed waits: the prior, then an exponentially weighted mean.

    See the module's description for the rules. Deterministic and clock-free.
    """

    def __init__(
        self,
        priors: Mapping[str, float],
        *,
        alpha: float = DEFAULT_ALPHA,
        min_observations: int = DEFAULT_MIN_OBSERVATIONS,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> None:
        """Estimate the lifts named in `priors` (lift -> nominal wait in seconds).

        Raises ValueError for `alpha` outside (0, 1], `min_observations` below 1, a
        `max_wait_s` that is not positive, or a prior that is negative or not finite.
        """
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if min_observations < 1:
            raise ValueError(f"min_observations must be at least 1, got {min_observations}")
        if not (math.isfinite(max_wait_s) and max_wait_s > 0):
            raise ValueError(f"max_wait_s must be a positive number of seconds, got {max_wait_s}")
        for name, prior in priors.items():
            if not (math.isfinite(prior) and prior >= 0):
                raise ValueError(f"lift {name!r}: prior must be finite seconds >= 0, got {prior}")
        self.alpha = alpha
        self.min_observations = min_observations
        self.max_wait_s = max_wait_s
        self._lifts = {name: _Lift(float(prior)) for name, prior in priors.items()}

    @classmethod
    def for_building(
        cls,
        building: Building,
        *,
        alpha: float = DEFAULT_ALPHA,
        min_observations: int = DEFAULT_MIN_OBSERVATIONS,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> LiftWaitEstimator:
        """An estimator for every lift of `building`, its map's `expected_wait` as the prior."""
        return cls(
            {name: lift.expected_wait_s for name, lift in building.lifts.items()},
            alpha=alpha,
            min_observations=min_observations,
            max_wait_s=max_wait_s,
        )

    def observe(self, lift: str, waited_s: float) -> float:
        """Record one wait for `lift` (seconds from the call to the car open at the robot's level).

        Returns the wait as counted, after clamping to `[0, max_wait_s]`. Raises KeyError for a
        lift the estimator does not know and ValueError for a wait that is not a finite number.
        """
        state = self._lifts.get(lift)
        if state is None:
            raise KeyError(f"unknown lift {lift!r}")
        if not math.isfinite(waited_s):
            raise ValueError(f"lift {lift!r}: a wait must be a finite number, got {waited_s}")
        counted = min(max(float(waited_s), 0.0), self.max_wait_s)
        state.count += 1
        weight = max(self.alpha, 1.0 / state.count)
        state.mean_s += weight * (counted - state.mean_s)
        return counted

    def estimate(self, lift: str) -> float:
        """The wait to plan with for `lift`, in seconds; KeyError for an unknown lift."""
        state = self._lifts[lift]
        if state.count < self.min_observations:
            return state.prior_s
        return state.mean_s

    def estimates(self) -> dict[str, float]:
        """Every lift's estimate, for `BuildingGraph.set_lift_waits`."""
        return {name: self.estimate(name) for name in self._lifts}

    def observations(self, lift: str) -> int:
        """How many waits have been recorded for `lift`; KeyError for an unknown lift."""
        return self._lifts[lift].count

    def learned(self, lift: str) -> bool:
        """True once `lift` has enough observations for its estimate to leave the prior."""
        return self._lifts[lift].count >= self.min_observations
