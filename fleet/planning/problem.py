"""The optimizer's input: a snapshot of the fleet and the open work, and the solver-ready problem.

`build_problem` is the only place that calls the travel-time function. It turns a `Snapshot` into
a `Problem` that holds plain data (integer travel matrices, who may serve what), so the problem can
be pickled, sent to a worker process and solved there by `fleet.planning.solver.solve`
(DESIGN.md principle 4: the optimizer is a pure function).

The cargo rules decided here, once, for every (task, vehicle) pair:

- the vehicle must be allowed to carry the task's cargo class, and that class must belong to the
  vehicle's flow (clean or dirty), so clean and dirty cargo never share a load;
- the task's quantity must fit the empty vehicle;
- the vehicle must be able to reach the pickup from its start and the drop-off from the pickup in
  its flow (travel times are shortest paths, so reachability is transitive and these two checks
  are enough);
- a vehicle whose current load already breaks a rule (mixed flows, a controlled drug sharing the
  load, more than its capacity) is "locked": it only delivers what it has on board and takes no
  new task, so the broken load is never made worse.

Everything else (capacity over time, controlled drugs travelling alone, time, lateness) is modelled
by the solver.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from fleet.domain.cargo import CargoClass, Flow, flow_of
from fleet.domain.priority import Priority

TravelTime = Callable[[str, str, Flow, float], float]
"""(from_node, to_node, flow, speed_m_s) -> seconds; `math.inf` when `to_node` is unreachable."""

HORIZON_S = 48 * 3600
"""The planning horizon in seconds after `Snapshot.now`; the capacity of the time dimension."""

UNREACHABLE = 10 * HORIZON_S
"""Integer travel time standing for 'cannot get there'.

Larger than the horizon, so a route using such an arc is infeasible on the time dimension; small
enough that sums of a few of them cannot overflow int64 in the solver's cost.
"""

METAHEURISTICS = frozenset(
    {
        "GREEDY_DESCENT",
        "GUIDED_LOCAL_SEARCH",
        "SIMULATED_ANNEALING",
        "TABU_SEARCH",
        "GENERIC_TABU_SEARCH",
        "AUTOMATIC",
    }
)
"""OR-Tools local-search metaheuristics a `Problem` may name.

Only GREEDY_DESCENT stops by itself at a local optimum, so only it gives the same plan for the
same problem whatever the machine's speed; the others run until the time limit.
"""


@dataclass(frozen=True)
class Task:
    """An order not yet picked up: one pickup and one drop-off, on the same robot, in that order."""

    order_id: str
    pickup_node: str
    dropoff_node: str
    cargo_class: CargoClass
    quantity: int
    priority: Priority
    created_at: float
    needed_by: float | None
    pickup_service_s: float
    dropoff_service_s: float


@dataclass(frozen=True)
class OnboardTask:
    """An order already on (or committed to) a robot: only its drop-off is left, by that robot."""

    order_id: str
    dropoff_node: str
    cargo_class: CargoClass
    quantity: int
    priority: Priority
    needed_by: float | None
    dropoff_service_s: float


@dataclass(frozen=True)
class VehicleState:
    """A robot as the planner sees it: where and when it is free, what it may carry, its load.

    `available_at` is the absolute time (seconds, same clock as `Snapshot.now`) at which the robot
    is free at `start_node`; a time in the past means "now".
    """

    robot_id: str
    start_node: str
    available_at: float
    capacity_slots: int
    speed_m_s: float
    cargo_classes: frozenset[CargoClass]
    flow: Flow
    onboard: tuple[OnboardTask, ...] = ()

    @property
    def onboard_load(self) -> int:
        """Slots taken by what is on board."""
        return sum(o.quantity for o in self.onboard)

    @property
    def locked(self) -> bool:
        """True when the load on board already breaks a cargo rule, so nothing may be added.

        That is: cargo of the other flow, a controlled drug together with anything else, or more
        than the capacity. Such a robot still delivers what it has.
        """
        if any(flow_of(o.cargo_class) is not self.flow for o in self.onboard):
            return True
        has_drug = any(o.cargo_class is CargoClass.CONTROLLED_DRUG for o in self.onboard)
        if has_drug and len(self.onboard) > 1:
            return True
        return self.onboard_load > self.capacity_slots


@dataclass(frozen=True)
class Snapshot:
    """The fleet and the open work at time `now` (absolute seconds)."""

    now: float
    vehicles: tuple[VehicleState, ...]
    tasks: tuple[Task, ...]


@dataclass(frozen=True)
class Problem:
    """Everything `solve` needs, as plain picklable data (no callables).

    - `tasks` are all the snapshot's tasks, in snapshot order; `allowed_vehicles[k]` lists the
      indices into `vehicles` that may serve `tasks[k]` (empty: nobody can, the task is
      unassigned without asking the solver).
    - `locations` are the distinct building nodes involved; `travel_s[c][i][j]` is the travel time
      in whole seconds (rounded up) from `locations[i]` to `locations[j]` for travel class `c`, or
      `UNREACHABLE`. A travel class is a distinct (flow, speed) pair among the vehicles;
      `vehicle_class[v]` is the class of `vehicles[v]`.
    - `metaheuristic` names the OR-Tools local search (see `METAHEURISTICS`); switch it with
      `dataclasses.replace(problem, metaheuristic="GUIDED_LOCAL_SEARCH")`.
    """

    now: float
    vehicles: tuple[VehicleState, ...]
    tasks: tuple[Task, ...]
    allowed_vehicles: tuple[tuple[int, ...], ...]
    locations: tuple[str, ...]
    travel_s: tuple[tuple[tuple[int, ...], ...], ...]
    vehicle_class: tuple[int, ...]
    metaheuristic: str = "GREEDY_DESCENT"

    def __post_init__(self) -> None:
        if self.metaheuristic not in METAHEURISTICS:
            raise ValueError(
                f"metaheuristic: unknown {self.metaheuristic!r}, expected one of "
                + ", ".join(sorted(METAHEURISTICS))
            )
        if len(self.allowed_vehicles) != len(self.tasks):
            raise ValueError("allowed_vehicles: one entry per task expected")
        if len(self.vehicle_class) != len(self.vehicles):
            raise ValueError("vehicle_class: one entry per vehicle expected")

    def location_index(self) -> dict[str, int]:
        """Building node name -> row/column in the travel matrices."""
        return {name: i for i, name in enumerate(self.locations)}


def seconds_up(value: float) -> int:
    """Whole seconds, rounded up, with float noise (3.0000000001) not costing a whole second."""
    return max(0, math.ceil(value - 1e-9))


def build_problem(snapshot: Snapshot, travel: TravelTime) -> Problem:
    """Check the snapshot, compute the travel matrices and decide who may serve which task.

    Raises ValueError naming the offending field for inconsistent input (duplicate ids,
    non-positive quantities or speeds, negative service times).
    """
    _validate(snapshot)
    vehicles = snapshot.vehicles

    locations = _distinct_locations(snapshot)
    classes: list[tuple[Flow, float]] = []
    vehicle_class: list[int] = []
    for v in vehicles:
        key = (v.flow, v.speed_m_s)
        if key not in classes:
            classes.append(key)
        vehicle_class.append(classes.index(key))
    travel_s = tuple(_matrix(locations, flow, speed, travel) for flow, speed in classes)

    where = {name: i for i, name in enumerate(locations)}
    allowed: list[tuple[int, ...]] = []
    for task in snapshot.tasks:
        pickup, dropoff = where[task.pickup_node], where[task.dropoff_node]
        ok: list[int] = []
        for vi, v in enumerate(vehicles):
            matrix = travel_s[vehicle_class[vi]]
            if (
                _may_carry(v, task.cargo_class, task.quantity)
                and matrix[where[v.start_node]][pickup] < UNREACHABLE
                and matrix[pickup][dropoff] < UNREACHABLE
            ):
                ok.append(vi)
        allowed.append(tuple(ok))

    return Problem(
        now=snapshot.now,
        vehicles=vehicles,
        tasks=snapshot.tasks,
        allowed_vehicles=tuple(allowed),
        locations=locations,
        travel_s=travel_s,
        vehicle_class=tuple(vehicle_class),
    )


def _may_carry(vehicle: VehicleState, cargo: CargoClass, quantity: int) -> bool:
    """The static cargo rules for adding one task to `vehicle` (see the module docstring)."""
    return (
        cargo in vehicle.cargo_classes
        and flow_of(cargo) is vehicle.flow
        and quantity <= vehicle.capacity_slots
        and not vehicle.locked
    )


def _distinct_locations(snapshot: Snapshot) -> tuple[str, ...]:
    """Every building node the problem touches, once, in first-seen order (deterministic)."""
    seen: dict[str, None] = {}
    for v in snapshot.vehicles:
        seen.setdefault(v.start_node)
        for o in v.onboard:
            seen.setdefault(o.dropoff_node)
    for t in snapshot.tasks:
        seen.setdefault(t.pickup_node)
        seen.setdefault(t.dropoff_node)
    return tuple(seen)


def _matrix(
    locations: tuple[str, ...], flow: Flow, speed: float, travel: TravelTime
) -> tuple[tuple[int, ...], ...]:
    rows: list[tuple[int, ...]] = []
    for a in locations:
        row: list[int] = []
        for b in locations:
            if a == b:
                row.append(0)
                continue
            seconds = travel(a, b, flow, speed)
            if math.isnan(seconds) or seconds < 0:
                raise ValueError(f"travel({a!r}, {b!r}, {flow}, {speed}) returned {seconds}")
            row.append(UNREACHABLE if seconds >= UNREACHABLE else seconds_up(seconds))
        rows.append(tuple(row))
    return tuple(rows)


def _validate(snapshot: Snapshot) -> None:
    robot_ids = [v.robot_id for v in snapshot.vehicles]
    if len(set(robot_ids)) != len(robot_ids):
        raise ValueError("vehicles.robot_id: duplicate robot id")
    order_ids: set[str] = set()

    def check_order(field: str, order_id: str, quantity: int, service: tuple[float, ...]) -> None:
        if order_id in order_ids:
            raise ValueError(f"{field}.order_id: duplicate order id {order_id!r}")
        order_ids.add(order_id)
        if quantity < 1:
            raise ValueError(f"{field}.quantity: must be at least 1 for {order_id!r}")
        if any(not (s >= 0 and math.isfinite(s)) for s in service):
            raise ValueError(f"{field}: service times must be finite and >= 0 for {order_id!r}")

    for v in snapshot.vehicles:
        if not (v.speed_m_s > 0 and math.isfinite(v.speed_m_s)):
            raise ValueError(f"vehicles.speed_m_s: must be > 0 for {v.robot_id!r}")
        if v.capacity_slots < 0:
            raise ValueError(f"vehicles.capacity_slots: must be >= 0 for {v.robot_id!r}")
        for o in v.onboard:
            check_order("vehicles.onboard", o.order_id, o.quantity, (o.dropoff_service_s,))
    for t in snapshot.tasks:
        check_order("tasks", t.order_id, t.quantity, (t.pickup_service_s, t.dropoff_service_s))
