"""The optimizer's output: per robot, an ordered list of stops with estimated times."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class StopKind(StrEnum):
    """What a robot does at a stop.

    CHARGE: the robot charges at a charger node (`Snapshot.chargers`) from `arrival` to
    `departure`; the stop has no order ids. Only plans of robots with the battery model on
    (`VehicleState.drain_pct_per_s > 0`) contain such stops.
    """

    PICKUP = "PICKUP"
    DROPOFF = "DROPOFF"
    CHARGE = "CHARGE"


@dataclass(frozen=True)
class Stop:
    """One visit of a robot to a building node, loading or unloading one or more orders.

    Consecutive visits of the same kind to the same node are merged into one stop. `arrival` and
    `departure` are absolute seconds (estimates); `departure` is `arrival` plus the longest
    service time of the merged orders (one docking, the items handled together). A CHARGE stop
    has no order ids; its `departure - arrival` is the charging time.
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
    - `compartment`: order id -> (robot id, compartment index), for every order (task or on
      board) on a route of a robot with a compartment rule (`VehicleState.compartments` not
      None); orders on other robots are not in it. Indices run from 0; an onboard order's known
      compartment (`OnboardTask.compartment`) and a task's pinned one (`Task.pinned_compartment`)
      are kept, the others are assigned by `assign_compartments`.
    """

    routes: dict[str, RoutePlan]
    unassigned: tuple[str, ...]
    eta: dict[str, float]
    cost: int
    compartment: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def assignment(self) -> dict[str, str]:
        """Order id -> robot id, for every order on some route."""
        return {
            order_id: robot_id
            for robot_id, route in self.routes.items()
            for order_id in route.order_ids
        }


def assign_compartments(
    compartments: int,
    onboard: Sequence[tuple[str, int | None]],
    stops: Sequence[Stop],
    pinned: Mapping[str, int],
) -> dict[str, int] | None:
    """Give every order on one robot's route a compartment, or None when that is impossible.

    `onboard` lists what is on board at the start, in order, with its known compartment (None:
    to assign); `stops` the route; `pinned` the compartment a task must have
    (`Task.pinned_compartment`). Left-edge (interval) colouring along the route: at the start the
    known compartments are taken, then the others get the lowest free index; at each stop the
    drop-offs free their compartments and the pickups take one (pinned ones first, at their
    index; the others the lowest free index). Interval graphs are perfect, so with at most
    `compartments` orders on board at every moment this never fails, as long as the
    pre-assigned compartments are free when needed; the solver guarantees that by only picking
    up a pinned task when the robot is empty. Returns None when a stop finds no free or no
    pinned compartment (a route that breaks the rules).
    """
    used: dict[int, str] = {}
    result: dict[str, int] = {}

    def take(order_id: str, wanted: int | None) -> bool:
        if wanted is None:
            wanted = next((c for c in range(compartments) if c not in used), None)
        if wanted is None or wanted in used or not 0 <= wanted < compartments:
            return False
        used[wanted] = order_id
        result[order_id] = wanted
        return True

    for order_id, known in sorted(onboard, key=lambda item: item[1] is None):
        if not take(order_id, known):
            return None
    for stop in stops:
        if stop.kind is StopKind.DROPOFF:
            for order_id in stop.order_ids:
                held = result.get(order_id)
                if held is not None and used.get(held) == order_id:
                    del used[held]
        elif stop.kind is StopKind.PICKUP:
            for order_id in sorted(stop.order_ids, key=lambda o: o not in pinned):
                if not take(order_id, pinned.get(order_id)):
                    return None
    return result
