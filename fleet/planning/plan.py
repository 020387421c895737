"""The optimizer's output: per robot, an ordered list of stops with estimated times."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class StopKind(StrEnum):
    """What a robot does at a stop."""

    PICKUP = "PICKUP"
    DROPOFF = "DROPOFF"


@dataclass(frozen=True)
class Stop:
    """One visit of a robot to a building node, loading or unloading one or more orders.

    Consecutive visits of the same kind to the same node are merged into one stop. `arrival` and
    `departure` are absolute seconds (estimates); `departure` is `arrival` plus the longest
    service time of the merged orders (one docking, the items handled together).
    """

    node: str
    kind: StopKind
    order_ids: tuple[str, ...]
    arrival: float
    departure: float


@dataclass(frozen=True)
class RoutePlan:
    """The stops one robot should make, in order (empty: nothing to do).

    `end_arrival`: for a robot with a closed route (`VehicleState.end_node`), the estimated
    arrival (absolute seconds) back at its end node; None for an open route (and in the
    fallback plan made without the solver).
    """

    robot_id: str
    stops: tuple[Stop, ...]
    end_arrival: float | None = None

    @property
    def order_ids(self) -> tuple[str, ...]:
        """Every order this route picks up or drops off, each once, in first-visit order."""
        seen: dict[str, None] = {}
        for stop in self.stops:
            for order_id in stop.order_ids:
                seen.setdefault(order_id)
        return tuple(seen)


@dataclass(frozen=True)
class Plan:
    """The result of one solve.

    - `routes`: robot id -> its route; every vehicle of the problem has an entry.
    - `unassigned`: order ids of tasks that could not be served (nobody may carry them, nobody can
      reach them, or the solver dropped them).
    - `eta`: order id -> estimated arrival (absolute seconds) at its drop-off stop, for every
      assigned task and every onboard order.
    - `cost`: the solver's objective value (travel seconds + lateness + drop penalties); only
      comparable between plans of the same problem.
    """

    routes: dict[str, RoutePlan]
    unassigned: tuple[str, ...]
    eta: dict[str, float]
    cost: int

    @property
    def assignment(self) -> dict[str, str]:
        """Order id -> robot id, for every order on some route."""
        return {
            order_id: robot_id
            for robot_id, route in self.routes.items()
            for order_id in route.order_ids
        }
