"""The optimizer's input: a snapshot of the fleet and the open work, and the solver-ready problem.

`build_problem` is the only place that calls the travel-time function. It turns a `Snapshot` into
a `Problem` that holds plain data (integer travel matrices, who may serve what), so the problem can
be pickled, sent to a worker process and solved there by `fleet.planning.solver.solve`
(DESIGN.md principle 4: the optimizer is a pure function).

The cargo rules decided here, once, for every (task, vehicle) pair:

- the vehicle must be allowed to carry the task's cargo class, and that class must belong to the
  vehicle's flow (clean or dirty), so clean and dirty cargo never share a load;
- the task's quantity must fit the empty vehicle, and so must its weight (`Task.weight_kg`
  against `VehicleState.max_payload_kg`) and its compartment (a robot with `compartments == 0`
  takes nothing);
- a task pinned to a robot (`Task.pinned_robot`) may only go to that robot, and a task pinned to
  a compartment (`Task.pinned_compartment`) only to a robot that has that compartment; when the
  robot is absent or cannot serve the task, the task has no vehicle (it is reported unassigned,
  never given to another robot);
- a robot whose battery model is on (`VehicleState.drain_pct_per_s > 0`) and whose battery is
  already below its reserve takes no new task unless it can charge (`charge_pct_per_s > 0` and
  a charger of `Snapshot.chargers` it can reach);
- the vehicle must be able to reach the pickup from its start and the drop-off from the pickup in
  its flow (travel times are shortest paths, so reachability is transitive and these two checks
  are enough);
- a vehicle whose current load already breaks a rule (mixed flows, a controlled drug sharing the
  load, more than its capacity in slots, weight or compartments) is "locked": it only delivers
  what it has on board and takes no new task, so the broken load is never made worse.

Everything else (capacity over time in slots, weight and compartments, controlled drugs and
pinned compartments, STAT-only use of a charging robot, the battery, time, lateness) is modelled
by the solver (`fleet.planning.solver`).

The hospital rules beyond the basic model (issue 3), all off by default:

- weight: `Task.weight_kg` / `OnboardTask.weight_kg` against `VehicleState.max_payload_kg`
  (None: unlimited), counted in whole grams (`grams`);
- compartments: `VehicleState.compartments` (None: no compartment rule); every order on board
  takes one compartment of its own (a compartment is locked for one recipient). After solving,
  each order gets a compartment index, `Plan.compartment`; an order on board may already have
  one (`OnboardTask.compartment`), which is kept;
- pinning: `Task.pinned_robot`, `Task.pinned_compartment` (a controlled drug's return leg goes
  back on the robot and in the compartment it came in). A pinned-compartment task is only picked
  up when the robot carries nothing, so its compartment is free (a controlled drug travels alone
  anyway); other tasks may be loaded while it is on board, into the other compartments;
- charging and STAT: `VehicleState.charging_until` (the robot is on its charger until then):
  only STAT tasks may use it before that time; a non-STAT task's pickup on it starts at
  `charging_until` at the earliest;
- battery: `VehicleState.battery_pct`, `reserve_pct`, `drain_pct_per_s` (per second of driving;
  0, the default, disables the battery model), `charge_pct_per_s`, and the charger nodes
  `Snapshot.chargers`: no route takes a robot below its reserve; the solver plans a charging
  visit where one is needed (see `fleet.planning.solver`).

Options beyond the hospital's defaults (all off by default, so the dispatcher's problem is
unchanged) let the very same model serve the public benchmarks (Li & Lim PDPTW, Solomon VRPTW):

- hard time windows on a task's pickup and drop-off (`Task.pickup_earliest` ... `dropoff_latest`,
  absolute seconds); a task whose window has already closed (or is empty) gets no allowed vehicle;
- tasks loaded at the start (`Task.loaded_at_start`: a depot delivery with no pickup stop, as in
  VRPTW); only robots starting at its pickup node may serve one;
- closed routes: `VehicleState.end_node` (and its window `end_earliest`/`end_latest`) makes the
  robot return there; the default `None` keeps open routes;
- `VehicleState.fixed_cost`: a cost for using the vehicle at all (minimise vehicles first);
- `build_problem(..., distance=...)`: the arc cost becomes a distance (scaled by `distance_scale`
  to integers) instead of the travel time; the time dimension still uses `travel`;
- `time_resolution_s`: the solver's integer time step (default 1 s; the benchmarks use 1e-4 so
  that double-precision travel times are kept), and `horizon_s`: the capacity of the time
  dimension;
- `search`: a `SearchConfig` (first-solution strategy, OR-Tools parameters, the route-elimination
  phase that minimises the number of vehicles before the distance); `ROUTE_ELIMINATION_SEARCH`
  is the one the Li & Lim benchmark runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from fleet.domain.cargo import CargoClass, Flow, flow_of
from fleet.domain.priority import Priority
from fleet.planning.plan import StopKind

TravelTime = Callable[[str, str, Flow, float], float]
"""(from_node, to_node, flow, speed_m_s) -> seconds; `math.inf` when `to_node` is unreachable."""

Distance = Callable[[str, str, Flow], float]
"""(from_node, to_node, flow) -> distance (any unit, e.g. metres); the arc cost when given."""

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

GRAMS_PER_KG = 1000
"""Weights are modelled in whole grams (`grams`): the solver's capacities are integers."""

ENERGY_UNITS_PER_PCT = 1000
"""Battery energy is modelled in thousandths of a percent (integers in the solver)."""


def grams(weight_kg: float) -> int:
    """A weight in kilograms as whole grams (rounded to the nearest), as every rule counts it."""
    return round(weight_kg * GRAMS_PER_KG)


FIRST_SOLUTION_STRATEGIES = frozenset(
    {
        "AUTOMATIC",
        "PATH_CHEAPEST_ARC",
        "PATH_MOST_CONSTRAINED_ARC",
        "SAVINGS",
        "PARALLEL_SAVINGS",
        "SWEEP",
        "CHRISTOFIDES",
        "BEST_INSERTION",
        "PARALLEL_CHEAPEST_INSERTION",
        "SEQUENTIAL_CHEAPEST_INSERTION",
        "LOCAL_CHEAPEST_INSERTION",
        "LOCAL_CHEAPEST_COST_INSERTION",
        "GLOBAL_CHEAPEST_ARC",
        "LOCAL_CHEAPEST_ARC",
        "FIRST_UNBOUND_MIN_VALUE",
    }
)
"""OR-Tools first-solution strategies a `SearchConfig` may name."""


@dataclass(frozen=True)
class SearchConfig:
    """How `solve` searches; the defaults are the dispatcher's (deterministic greedy descent).

    - `first_solution`: an OR-Tools first-solution strategy (see `FIRST_SOLUTION_STRATEGIES`).
    - `solution_limit`: stop after this many improving solutions (None: no limit).
    - `guided_local_search_lambda`: GLS penalty weight (None: OR-Tools' default, 0.1).
    - `use_full_propagation`: full constraint propagation during the first solution.
    - `operators`: (name, on/off) pairs for fields of OR-Tools' `local_search_operators`, e.g.
      `(("use_inactive_lns", True),)`.
    - `lns_time_limit_s`: time limit of each LNS sub-search (None: OR-Tools' default, 0.1 s).
    - `neighbors_ratio`, `min_neighbors`: let the local search operators only consider each
      node's nearest neighbours (a "granular" neighbourhood; OR-Tools' `ls_operator_*`; None:
      all nodes). Fewer moves per step; on Li & Lim it found worse routes (BENCHMARKS.md).
    - `route_elimination`: first minimise the number of vehicles used (try again with one route
      fewer, starting from the current solution minus its smallest route, and keep the result
      if it serves every task the previous solution served), then minimise the cost with the
      time that remains. Only vehicles without anything on board are ever removed.
    - `initial_share`: with route elimination, the share of the time limit spent on a first
      search (`Problem.metaheuristic`, fixed costs left out) before eliminating routes; 0: only
      a first solution with the fixed costs, improved by greedy descent.
    - `elimination_share`: the share of the time limit by which route elimination stops
      (counted from the start, so it includes `initial_share`).
    - `elimination_attempt_s`: the time limit of one elimination attempt.
    - `elimination_metaheuristic`: the local search of the elimination attempts (the cost phase
      uses `Problem.metaheuristic`).
    """

    first_solution: str = "PARALLEL_CHEAPEST_INSERTION"
    solution_limit: int | None = None
    guided_local_search_lambda: float | None = None
    use_full_propagation: bool = False
    operators: tuple[tuple[str, bool], ...] = ()
    lns_time_limit_s: float | None = None
    neighbors_ratio: float | None = None
    min_neighbors: int | None = None
    route_elimination: bool = False
    initial_share: float = 0.0
    elimination_share: float = 0.5
    elimination_attempt_s: float = 1.0
    elimination_metaheuristic: str = "GUIDED_LOCAL_SEARCH"

    def __post_init__(self) -> None:
        if self.first_solution not in FIRST_SOLUTION_STRATEGIES:
            raise ValueError(
                f"search.first_solution: unknown {self.first_solution!r}, expected one of "
                + ", ".join(sorted(FIRST_SOLUTION_STRATEGIES))
            )
        if self.solution_limit is not None and self.solution_limit < 1:
            raise ValueError("search.solution_limit: must be >= 1")
        if self.neighbors_ratio is not None and not 0.0 < self.neighbors_ratio <= 1.0:
            raise ValueError("search.neighbors_ratio: must be within (0, 1]")
        if self.min_neighbors is not None and self.min_neighbors < 1:
            raise ValueError("search.min_neighbors: must be >= 1")
        if not 0.0 <= self.initial_share <= self.elimination_share:
            raise ValueError("search.initial_share: must be within [0, elimination_share]")
        if not 0.0 <= self.elimination_share <= 1.0:
            raise ValueError("search.elimination_share: must be within [0, 1]")
        if self.elimination_metaheuristic not in METAHEURISTICS:
            raise ValueError(
                f"search.elimination_metaheuristic: unknown {self.elimination_metaheuristic!r}"
            )
        if not self.elimination_attempt_s > 0:
            raise ValueError("search.elimination_attempt_s: must be > 0")


SINGLE_NODE_MOVES_OFF: tuple[tuple[str, bool], ...] = (
    ("use_exchange", False),
    ("use_cross", False),
    ("use_relocate", False),
    ("use_lin_kernighan", False),
    ("use_make_inactive", False),
    ("use_make_chain_inactive", False),
    ("use_swap_active", False),
    ("use_shortest_path_swap_active", False),
    ("use_swap_active_chain", False),
)
"""`SearchConfig.operators` switching off the OR-Tools operators that move, swap or deactivate
single nodes. Without loaded-at-start tasks (with them, do not use this) every node of this model
is half of a pickup-and-delivery pair or an onboard delivery fixed to its robot, so such moves
between routes are never feasible: they only cost time (Li & Lim lrc101: ~150,000 neighbours,
~0.1 s, per local-search step, nearly all rejected). Pair, sub-trip, or-opt, 2-opt and insertion
operators stay on (or-opt and 2-opt still move single nodes within a route)."""

ROUTE_ELIMINATION_SEARCH = SearchConfig(
    route_elimination=True,
    initial_share=0.2,
    elimination_share=0.7,
    elimination_attempt_s=2.0,
    operators=SINGLE_NODE_MOVES_OFF,
)
"""Fewest vehicles first, then the least cost: the search the public benchmarks run (with
`metaheuristic="TABU_SEARCH"`; see BENCHMARKS.md for what was measured). 20 % of the time limit
for a first search of the cost alone, route elimination until 70 %, the rest for the cost with
the vehicles left. Not deterministic (it runs until the time limit)."""


@dataclass(frozen=True)
class Task:
    """An order not yet picked up: one pickup and one drop-off, on the same robot, in that order.

    (With `loaded_at_start`, only the drop-off is a stop: the robot leaves its start with it.)
    """

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
    pickup_earliest: float | None = None
    pickup_latest: float | None = None
    dropoff_earliest: float | None = None
    dropoff_latest: float | None = None
    """Hard time windows (absolute seconds) on the start of the pickup and of the drop-off service;
    None: no bound. Waiting for the earliest time is allowed. `needed_by` stays a soft bound."""
    loaded_at_start: bool = False
    """The goods wait at `pickup_node` and are loaded before the robot leaves it: only robots
    starting there may serve the task, which has no pickup stop (a depot delivery, as in VRPTW;
    the pickup window and service time are ignored). The robot's start load is what it has on
    board plus the loaded-at-start tasks its route delivers."""
    weight_kg: float = 0.0
    """The load's weight (kg, finite, >= 0), counted against `VehicleState.max_payload_kg` along
    the route, in whole grams (`grams`). 0 (the default): weightless, as before."""
    pinned_robot: str | None = None
    """Only the robot with this id may serve the task (a controlled drug's return leg stays on the
    robot that brought it). If that robot is not in the snapshot or may not serve the task (cargo,
    capacity, reachability, ...), the task gets no vehicle and is reported unassigned: it is
    never handed to another robot. None (the default): any robot."""
    pinned_compartment: int | None = None
    """The task must ride in this compartment (index from 0) of `pinned_robot`, which it needs;
    the pinned robot must have `compartments` greater than the index, else the task gets no
    vehicle. Nothing else occupies that compartment while the task is on board: the task is only
    picked up when the robot carries nothing (a controlled drug travels alone anyway), and
    whatever is loaded while it is on board goes into other compartments. Not combinable with
    `loaded_at_start`. None (the default): any compartment."""
    custody: bool = False
    """A controlled-drug custody case's order: it needs a robot with lockable compartments and
    one no other case keeps for its return (`VehicleState.custody_full`); a pinned return leg
    rides in its own."""


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
    weight_kg: float = 0.0
    """The load's weight (kg, finite, >= 0); see `Task.weight_kg`."""
    compartment: int | None = None
    """The compartment (index from 0) it is in, when known; the compartment assignment keeps it
    (`Plan.compartment`). Ignored for a robot without a compartment rule (`compartments` None).
    Two orders on one robot may not name the same compartment. None: not known yet (the plan
    assigns one)."""


@dataclass(frozen=True)
class VehicleState:
    """A robot as the planner sees it: where and when it is free, what it may carry, its load.

    `available_at` is the absolute time (seconds, same clock as `Snapshot.now`) at which the robot
    is free at `start_node`; a time in the past means "now".

    `end_node`: None (the default) leaves the route open (it ends at the last drop-off); a node
    makes the robot return there, arriving within [`end_earliest`, `end_latest`] (absolute
    seconds, None: no bound). `fixed_cost` is added to the objective when the robot is used.

    The hospital rules' fields (defaults keep them off) are documented one by one below.
    """

    robot_id: str
    start_node: str
    available_at: float
    capacity_slots: int
    speed_m_s: float
    cargo_classes: frozenset[CargoClass]
    flow: Flow
    onboard: tuple[OnboardTask, ...] = ()
    end_node: str | None = None
    end_earliest: float | None = None
    end_latest: float | None = None
    fixed_cost: int = 0
    max_payload_kg: float | None = None
    """The most weight (kg) the robot may carry at once; None (the default): unlimited. A task
    heavier than this gets no vehicle; the load's weight never exceeds it along the route."""
    compartments: int | None = None
    """How many lockable compartments the robot has; each order on board takes one of its own.
    None (the default): no compartment rule and no compartment assignment. With a number, the
    plan assigns each order on the robot a compartment index in [0, compartments)
    (`Plan.compartment`)."""
    charging_until: float | None = None
    """The robot is on its charger until this absolute time (seconds): only STAT tasks may use it
    before then (STAT pre-empts charging); a non-STAT task's pickup on this robot starts at
    `charging_until` at the earliest. None (the default), or a time not after `now`: not
    charging. (A parked or idle robot is an ordinary available robot.)"""
    battery_pct: float = 100.0
    """State of charge now (percent, 0-100). Only used when `drain_pct_per_s > 0`."""
    reserve_pct: float = 0.0
    """The plan never takes the robot below this state of charge (percent, 0-100)."""
    drain_pct_per_s: float = 0.0
    """Battery used per second of driving (percent per second, travel time only, not service).
    0 (the default) switches the battery model off for this robot."""
    charge_pct_per_s: float = 0.0
    """Charging speed at a charger (percent per second). 0: the robot cannot be charged by the
    plan (no charging visit is planned for it)."""
    custody_full: bool = False
    """Every compartment is kept for a custody case's return leg: no new custody case may be
    loaded (its pinned returns still may)."""

    @property
    def onboard_load(self) -> int:
        """Slots taken by what is on board."""
        return sum(o.quantity for o in self.onboard)

    @property
    def onboard_grams(self) -> int:
        """Weight of what is on board, in whole grams (see `grams`)."""
        return sum(grams(o.weight_kg) for o in self.onboard)

    @property
    def battery_modelled(self) -> bool:
        """True when the battery rule applies to this robot (`drain_pct_per_s > 0`)."""
        return self.drain_pct_per_s > 0

    @property
    def locked(self) -> bool:
        """True when the load on board already breaks a cargo rule, so nothing may be added.

        That is: cargo of the other flow, a controlled drug together with anything else, or more
        than the capacity (slots, weight or compartments). Such a robot still delivers what it
        has.
        """
        if any(flow_of(o.cargo_class) is not self.flow for o in self.onboard):
            return True
        has_drug = any(o.cargo_class is CargoClass.CONTROLLED_DRUG for o in self.onboard)
        if has_drug and len(self.onboard) > 1:
            return True
        if self.max_payload_kg is not None and self.onboard_grams > grams(self.max_payload_kg):
            return True
        if self.compartments is not None and len(self.onboard) > self.compartments:
            return True
        return self.onboard_load > self.capacity_slots

    def charging_at(self, now: float) -> bool:
        """True when the robot is on its charger at `now` (only STAT may use it)."""
        return self.charging_until is not None and self.charging_until > now


Hint = tuple[tuple[str, tuple[tuple[str, StopKind], ...]], ...]
"""Per robot id, its planned visits in order as (order id, PICKUP or DROPOFF)."""


@dataclass(frozen=True)
class Snapshot:
    """The fleet and the open work at time `now` (absolute seconds)."""

    now: float
    vehicles: tuple[VehicleState, ...]
    tasks: tuple[Task, ...]
    chargers: tuple[str, ...] = ()
    """Building nodes where a robot can charge; the plan sends robots whose battery would fall
    below their reserve to one of them (see `VehicleState.drain_pct_per_s`). Empty (the default):
    no charging visit is planned."""
    hint: Hint = ()
    """The current plan, to warm-start the search from: per robot id, its planned visits in
    order as (order id, PICKUP or DROPOFF). Visits the problem does not have, or that would
    break a rule, are left out; a hint that does not fit at all is ignored."""


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
    - `time_resolution_s`: the length of one integer time unit in `travel_s` and in the solver
      (1 s by default; `travel_s` then holds whole seconds). `horizon_s` is the capacity of the
      time dimension after `now`; `unreachable` (10 x the horizon, in time units) stands for
      "cannot get there" (`UNREACHABLE` at the defaults).
    - `distance`: when not None, `distance[c][i][j]` (integer, the distance x `distance_scale`)
      is the arc cost instead of the travel time, per travel class like `travel_s`.
    - `span_cost`: cost per time unit of the fleet's makespan (None: the solver's default,
      `GLOBAL_SPAN_COST`); lateness costs are per time unit too.
    - `search`: see `SearchConfig`.
    - `chargers`: the snapshot's charger nodes (each one of `locations` when some robot has the
      battery model on; empty otherwise).
    """

    now: float
    vehicles: tuple[VehicleState, ...]
    tasks: tuple[Task, ...]
    allowed_vehicles: tuple[tuple[int, ...], ...]
    locations: tuple[str, ...]
    travel_s: tuple[tuple[tuple[int, ...], ...], ...]
    vehicle_class: tuple[int, ...]
    metaheuristic: str = "GREEDY_DESCENT"
    time_resolution_s: float = 1.0
    horizon_s: float = HORIZON_S
    distance: tuple[tuple[tuple[int, ...], ...], ...] | None = None
    span_cost: int | None = None
    search: SearchConfig = SearchConfig()
    chargers: tuple[str, ...] = ()
    hint: Hint = ()

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
        if not (self.time_resolution_s > 0 and math.isfinite(self.time_resolution_s)):
            raise ValueError("time_resolution_s: must be finite and > 0")
        if not (self.horizon_s > 0 and math.isfinite(self.horizon_s)):
            raise ValueError("horizon_s: must be finite and > 0")
        if self.distance is not None and len(self.distance) != len(self.travel_s):
            raise ValueError("distance: one matrix per travel class expected")

    @property
    def horizon(self) -> int:
        """The horizon in time units."""
        return seconds_up(self.horizon_s / self.time_resolution_s)

    @property
    def unreachable(self) -> int:
        """Integer travel time (in time units) standing for 'cannot get there'."""
        return 10 * self.horizon

    def units(self, seconds: float) -> int:
        """A duration in whole time units, rounded up (see `seconds_up`)."""
        return seconds_up(seconds / self.time_resolution_s)

    def location_index(self) -> dict[str, int]:
        """Building node name -> row/column in the travel matrices."""
        return {name: i for i, name in enumerate(self.locations)}


def seconds_up(value: float) -> int:
    """Whole seconds, rounded up, with float noise (3.0000000001) not costing a whole second."""
    return max(0, math.ceil(value - 1e-9))


def build_problem(
    snapshot: Snapshot,
    travel: TravelTime,
    distance: Distance | None = None,
    *,
    distance_scale: float = 1.0,
    time_resolution_s: float = 1.0,
    horizon_s: float = HORIZON_S,
    span_cost: int | None = None,
    metaheuristic: str = "GREEDY_DESCENT",
    search: SearchConfig | None = None,
) -> Problem:
    """Check the snapshot, compute the travel matrices and decide who may serve which task.

    The keyword options are described on `Problem` (their defaults give the dispatcher's problem:
    open routes, travel time as the cost, 1 s resolution, greedy descent).

    Raises ValueError naming the offending field for inconsistent input (duplicate ids,
    non-positive quantities or speeds, negative service times, inverted windows, a non-positive
    distance scale or time resolution).
    """
    _validate(snapshot)
    if not (distance_scale > 0 and math.isfinite(distance_scale)):
        raise ValueError("distance_scale: must be finite and > 0")
    if not (time_resolution_s > 0 and math.isfinite(time_resolution_s)):
        raise ValueError("time_resolution_s: must be finite and > 0")
    if not (horizon_s > 0 and math.isfinite(horizon_s)):
        raise ValueError("horizon_s: must be finite and > 0")
    horizon = seconds_up(horizon_s / time_resolution_s)
    unreachable = 10 * horizon
    vehicles = snapshot.vehicles

    battery = any(v.battery_modelled for v in vehicles)
    chargers = tuple(dict.fromkeys(snapshot.chargers)) if battery else ()
    locations = _distinct_locations(snapshot, chargers)
    classes: list[tuple[Flow, float]] = []
    vehicle_class: list[int] = []
    for v in vehicles:
        key = (v.flow, v.speed_m_s)
        if key not in classes:
            classes.append(key)
        vehicle_class.append(classes.index(key))
    travel_s = tuple(
        _matrix(locations, flow, speed, travel, time_resolution_s, unreachable)
        for flow, speed in classes
    )
    costs = (
        None
        if distance is None
        else tuple(
            _distance_matrix(locations, flow, distance, distance_scale) for flow, _ in classes
        )
    )

    where = {name: i for i, name in enumerate(locations)}
    # Below its reserve with no way to charge: the robot only delivers what it carries.
    stranded = [
        v.battery_modelled
        and v.battery_pct < v.reserve_pct
        and not _can_charge(v, travel_s[vehicle_class[vi]], where, chargers, unreachable)
        for vi, v in enumerate(vehicles)
    ]
    allowed: list[tuple[int, ...]] = []
    for task in snapshot.tasks:
        pickup, dropoff = where[task.pickup_node], where[task.dropoff_node]
        ok: list[int] = []
        for vi, v in enumerate(vehicles):
            matrix = travel_s[vehicle_class[vi]]
            if (
                _may_carry(v, task.cargo_class, task.quantity)
                and fits_vehicle(v, task)
                and not stranded[vi]
                and (not task.loaded_at_start or v.start_node == task.pickup_node)
                and matrix[where[v.start_node]][pickup] < unreachable
                and matrix[pickup][dropoff] < unreachable
            ):
                ok.append(vi)
        allowed.append(tuple(ok) if _windows_open(task, snapshot.now) else ())

    return Problem(
        now=snapshot.now,
        vehicles=vehicles,
        tasks=snapshot.tasks,
        allowed_vehicles=tuple(allowed),
        locations=locations,
        travel_s=travel_s,
        vehicle_class=tuple(vehicle_class),
        metaheuristic=metaheuristic,
        time_resolution_s=time_resolution_s,
        horizon_s=horizon_s,
        distance=costs,
        span_cost=span_cost,
        search=search if search is not None else SearchConfig(),
        chargers=chargers,
        hint=snapshot.hint,
    )


def _can_charge(
    vehicle: VehicleState,
    matrix: tuple[tuple[int, ...], ...],
    where: dict[str, int],
    chargers: tuple[str, ...],
    unreachable: int,
) -> bool:
    """True when the robot charges (`charge_pct_per_s > 0`) and can reach a charger."""
    start = where[vehicle.start_node]
    return vehicle.charge_pct_per_s > 0 and any(
        matrix[start][where[c]] < unreachable for c in chargers
    )


def energy_units(pct: float) -> int:
    """A state of charge (percent) in the solver's integer energy units, rounded down."""
    return math.floor(pct * ENERGY_UNITS_PER_PCT + 1e-9)


def drain_units(vehicle: VehicleState, seconds: float) -> int:
    """Energy (integer units, rounded up) `vehicle` uses driving for `seconds`."""
    return seconds_up(vehicle.drain_pct_per_s * seconds * ENERGY_UNITS_PER_PCT)


def fits_vehicle(vehicle: VehicleState, task: Task) -> bool:
    """The static hospital rules for one (vehicle, task) pair: weight, compartments, pinning.

    (The cargo rules are separate; `fleet.planning.insertion` applies both, like
    `build_problem`.)"""
    if task.pinned_robot is not None and task.pinned_robot != vehicle.robot_id:
        return False
    if vehicle.max_payload_kg is not None and grams(task.weight_kg) > grams(vehicle.max_payload_kg):
        return False
    if vehicle.compartments is not None and vehicle.compartments < 1:
        return False
    if task.custody and (not vehicle.compartments or vehicle.custody_full):
        # A custody case rides in a lockable compartment, one no other case keeps.
        return task.pinned_robot is not None and bool(vehicle.compartments)
    pinned = task.pinned_compartment
    return pinned is None or (vehicle.compartments is not None and pinned < vehicle.compartments)


def _windows_open(task: Task, now: float) -> bool:
    """False when a hard window has already closed (latest < now) or cannot be met in order."""
    pickup_latest = None if task.loaded_at_start else task.pickup_latest
    for latest in (pickup_latest, task.dropoff_latest):
        if latest is not None and latest < now:
            return False
    return (
        task.loaded_at_start
        or task.pickup_earliest is None
        or task.dropoff_latest is None
        or task.dropoff_latest >= task.pickup_earliest
    )


def _may_carry(vehicle: VehicleState, cargo: CargoClass, quantity: int) -> bool:
    """The static cargo rules for adding one task to `vehicle` (see the module docstring)."""
    return (
        cargo in vehicle.cargo_classes
        and flow_of(cargo) is vehicle.flow
        and quantity <= vehicle.capacity_slots
        and not vehicle.locked
    )


def _distinct_locations(snapshot: Snapshot, chargers: tuple[str, ...]) -> tuple[str, ...]:
    """Every building node the problem touches, once, in first-seen order (deterministic).

    The chargers come last, so that without a battery model the locations are as they were."""
    seen: dict[str, None] = {}
    for v in snapshot.vehicles:
        seen.setdefault(v.start_node)
        for o in v.onboard:
            seen.setdefault(o.dropoff_node)
    for t in snapshot.tasks:
        seen.setdefault(t.pickup_node)
        seen.setdefault(t.dropoff_node)
    for v in snapshot.vehicles:
        if v.end_node is not None:
            seen.setdefault(v.end_node)
    for node in chargers:
        seen.setdefault(node)
    return tuple(seen)


def _matrix(
    locations: tuple[str, ...],
    flow: Flow,
    speed: float,
    travel: TravelTime,
    resolution: float,
    unreachable: int,
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
            units = seconds / resolution
            row.append(unreachable if units >= unreachable else seconds_up(units))
        rows.append(tuple(row))
    return tuple(rows)


def _distance_matrix(
    locations: tuple[str, ...], flow: Flow, distance: Distance, scale: float
) -> tuple[tuple[int, ...], ...]:
    rows: list[tuple[int, ...]] = []
    for a in locations:
        row: list[int] = []
        for b in locations:
            d = 0.0 if a == b else distance(a, b, flow)
            if not (d >= 0 and math.isfinite(d)):
                raise ValueError(f"distance({a!r}, {b!r}, {flow}) returned {d}")
            row.append(round(d * scale))
        rows.append(tuple(row))
    return tuple(rows)


def _validate_vehicle_rules(v: VehicleState) -> None:
    """The hospital rules' vehicle fields: payload, compartments, charging, battery."""
    rid = v.robot_id
    if v.max_payload_kg is not None and not (
        v.max_payload_kg >= 0 and math.isfinite(v.max_payload_kg)
    ):
        raise ValueError(f"vehicles.max_payload_kg: must be finite and >= 0 for {rid!r}")
    if v.compartments is not None:
        if v.compartments < 0:
            raise ValueError(f"vehicles.compartments: must be >= 0 for {rid!r}")
        known = [o.compartment for o in v.onboard if o.compartment is not None]
        for c in known:
            if not 0 <= c < v.compartments:
                raise ValueError(
                    f"vehicles.onboard.compartment: {c} is not a compartment of {rid!r}"
                )
        if len(set(known)) != len(known):
            raise ValueError(f"vehicles.onboard.compartment: two orders share one on {rid!r}")
    if v.charging_until is not None and not math.isfinite(v.charging_until):
        raise ValueError(f"vehicles.charging_until: must be finite for {rid!r}")
    for name in ("battery_pct", "reserve_pct"):
        value = getattr(v, name)
        if not 0 <= value <= 100:
            raise ValueError(f"vehicles.{name}: must be within [0, 100] for {rid!r}")
    for name in ("drain_pct_per_s", "charge_pct_per_s"):
        value = getattr(v, name)
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"vehicles.{name}: must be finite and >= 0 for {rid!r}")


def _validate(snapshot: Snapshot) -> None:
    robot_ids = [v.robot_id for v in snapshot.vehicles]
    if len(set(robot_ids)) != len(robot_ids):
        raise ValueError("vehicles.robot_id: duplicate robot id")
    order_ids: set[str] = set()

    def check_order(
        field: str, order_id: str, quantity: int, service: tuple[float, ...], weight: float
    ) -> None:
        if order_id in order_ids:
            raise ValueError(f"{field}.order_id: duplicate order id {order_id!r}")
        order_ids.add(order_id)
        if quantity < 1:
            raise ValueError(f"{field}.quantity: must be at least 1 for {order_id!r}")
        if not (weight >= 0 and math.isfinite(weight)):
            raise ValueError(f"{field}.weight_kg: must be finite and >= 0 for {order_id!r}")
        if any(not (s >= 0 and math.isfinite(s)) for s in service):
            raise ValueError(f"{field}: service times must be finite and >= 0 for {order_id!r}")

    def check_window(field: str, earliest: float | None, latest: float | None) -> None:
        for value in (earliest, latest):
            if value is not None and math.isnan(value):
                raise ValueError(f"{field}: window bound is NaN")
        if earliest is not None and latest is not None and latest < earliest:
            raise ValueError(f"{field}: latest {latest} is before earliest {earliest}")

    for v in snapshot.vehicles:
        if not (v.speed_m_s > 0 and math.isfinite(v.speed_m_s)):
            raise ValueError(f"vehicles.speed_m_s: must be > 0 for {v.robot_id!r}")
        if v.fixed_cost < 0:
            raise ValueError(f"vehicles.fixed_cost: must be >= 0 for {v.robot_id!r}")
        check_window(f"vehicles.end_latest of {v.robot_id!r}", v.end_earliest, v.end_latest)
        if v.capacity_slots < 0:
            raise ValueError(f"vehicles.capacity_slots: must be >= 0 for {v.robot_id!r}")
        _validate_vehicle_rules(v)
        for o in v.onboard:
            check_order(
                "vehicles.onboard", o.order_id, o.quantity, (o.dropoff_service_s,), o.weight_kg
            )
    for node in snapshot.chargers:
        if not node:
            raise ValueError("chargers: empty node name")
    for t in snapshot.tasks:
        check_order(
            "tasks",
            t.order_id,
            t.quantity,
            (t.pickup_service_s, t.dropoff_service_s),
            t.weight_kg,
        )
        if t.pinned_compartment is not None:
            if t.pinned_compartment < 0:
                raise ValueError(f"tasks.pinned_compartment: must be >= 0 for {t.order_id!r}")
            if t.pinned_robot is None:
                raise ValueError(f"tasks.pinned_compartment: needs pinned_robot for {t.order_id!r}")
            if t.loaded_at_start:
                raise ValueError(
                    f"tasks.pinned_compartment: not supported with loaded_at_start for "
                    f"{t.order_id!r}"
                )
        check_window(f"tasks.pickup_latest of {t.order_id!r}", t.pickup_earliest, t.pickup_latest)
        check_window(
            f"tasks.dropoff_latest of {t.order_id!r}", t.dropoff_earliest, t.dropoff_latest
        )
