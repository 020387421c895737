"""Solve a `Problem` with OR-Tools routing: a pickup-and-delivery problem with time windows.

Model (see `solve` for the search):

- Nodes: one start per vehicle (at its start node), one shared dummy end depot, a pickup and a
  delivery node per task someone may serve, a delivery node per onboard order, and an end node
  per vehicle with a closed route (`VehicleState.end_node`). Open routes (the default) end at the
  dummy depot: every arc into it costs 0 and takes 0 time.
- The "time" transit is a vehicle-specific integer matrix (one per travel class, i.e. per
  distinct flow and speed): service time at the from-node + travel time, in time units of
  `problem.time_resolution_s` (1 s by default). The arc cost is the same matrix, or the distance
  matrix when the problem has one (benchmarks minimise distance), plus `fixed_cost` for a used
  vehicle. Unreachable arcs carry `problem.unreachable`, which exceeds the time horizon, so no
  feasible route uses them; vehicles that cannot reach a task at all were already left out of
  its allowed vehicles, which restrict the domain of the task nodes' vehicle variables.
  (`SetAllowedVehiclesForIndex` is not used: its SWIG wrapper in OR-Tools 9.15 rejects every
  Python sequence for its `absl::Span<const int>` argument.)
- "time": time units after `problem.now`, capacity the horizon (48 h by default), waiting (slack)
  allowed, each start cumul fixed at when the vehicle is free. Hard windows (`Task.pickup_earliest`
  ... `dropoff_latest`, a closed route's end window) restrict the node's cumul; `needed_by`
  becomes a soft upper bound on the delivery's cumul, costing `LATENESS_COST_PER_S[priority]` per
  time unit late.
- "slots": capacity in slots; the start cumul is fixed at the onboard load, pickups add the
  quantity and deliveries remove it.
- "cd_mix" (only when controlled drugs are involved): a controlled drug weighs `M` and any other
  order 1, capacity `M`, where `M` exceeds the number of orders. A lone controlled drug fits
  (M <= M); a drug plus anything else (M + 1) or two drugs (2M) do not; any number of other
  orders (< M) does. So a controlled-drug trip carries nothing else.
- "weight" (only when some robot has `max_payload_kg` and some order weighs something): like
  "slots", in whole grams; a robot without a payload limit gets a capacity nothing exceeds.
- "compartments" (only when some robot has `compartments`): +1 at each pickup, -1 at each
  delivery, capacity the number of compartments, start at the number of orders on board. A
  task pinned to a compartment (`Task.pinned_compartment`) is only picked up by an empty robot
  (its cumul on arrival at the pickup is 0), so its compartment is free; after solving,
  `fleet.planning.plan.assign_compartments` colours each route (left-edge, exact for intervals)
  into `Plan.compartment`.
- STAT pre-empts charging: a non-STAT task's pickup on a robot still on its charger
  (`VehicleState.charging_until` after `now`) starts at `charging_until` at the earliest (an
  element constraint on the pickup's vehicle); STAT tasks may use the robot at once.
- Battery (only for robots with `VehicleState.drain_pct_per_s > 0`): a first solve without it;
  when some robot's route in that plan would take it below its reserve (or it is below it
  already), a second solve adds the "energy" dimension (remaining charge above the reserve,
  transit minus the drain of each drive, capacity 100 % - reserve, so never below the reserve)
  and, for each such robot that can charge, optional charging visits at each charger it can
  reach, with fixed gains (`CHARGE_EIGHTHS`) whose charging time is their service time; it
  makes exactly one of them (`CHARGE_PENALTY`), wherever in its route the solver finds best.
  A robot below its reserve starts with no energy and drives to its charger on credit, paid
  back (the deficit) before the charge counts, so it charges before anything else. The plan
  shows the visit as a CHARGE stop charging just what the rest of the route needs. Details,
  measurements and the robots that cannot keep the rule: `_with_charging`. Simplifications:
  one charging visit per robot and solve (the next re-plan may add another), no queueing at
  chargers (two robots may be planned on one charger at once), charging is linear in time.
  Not combinable with `SearchConfig.route_elimination`.
- Clean/dirty hygiene needs no dimension: a task is only allowed on vehicles of its own flow, and
  vehicles whose load already mixes flows take no new task (see `fleet.planning.problem`).
- Pickup and delivery: `AddPickupAndDelivery`, same vehicle, pickup cumul <= delivery cumul.
  A task loaded at the start (`Task.loaded_at_start`) has only its delivery node; then the load
  dimensions' start cumuls are free (at least what is on board) and their end cumuls 0, so a
  robot starts with exactly what it has on board plus what its route delivers.
- Dropping: a disjunction on each pickup and delivery node with `DROP_PENALTY[priority]`, far above
  any travel or lateness cost, so the solver serves everything it can and, when it cannot, drops
  ROUTINE before URGENT before STAT. Onboard deliveries are mandatory and fixed to their vehicle.
- Objective: travel (time or distance) + fixed costs + lateness + drop penalties + the span cost
  (`problem.span_cost`, default `GLOBAL_SPAN_COST`) x (the time the last robot finishes - the
  earliest start). Without the span term, travel alone happily chains many orders on one robot
  while others idle, which delays every order without a `needed_by`. Measured on random
  10-robot/30-task problems, the span term roughly halved the latest delivery and cut the mean
  delivery time by 5-25 % for about the same travel, at twice the (still sub-second) solve time.
  The benchmarks set it to 0 (their objective is distance only).

Search: one OR-Tools solve with `problem.search` (first-solution strategy, parameters) and
`problem.metaheuristic`; or, with `search.route_elimination`, three phases: a first search (with
the fixed costs and greedy descent, or for `initial_share` of the time without them), route
elimination (leave out the vehicle of the smallest route, search from the other routes with its
tasks unperformed and a moderate drop penalty, keep the result when every task is still served),
and a cost phase from the best solution with the vehicles it uses. Once the vehicles are decided
by which ones the model holds, the fixed costs are left out of the objective: they dwarf the
travel costs, and guided local search scales its penalties with the objective (measured in
BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses
import math
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ortools.constraint_solver import pywrapcp, routing_enums_pb2
from ortools.util import optional_boolean_pb2

from fleet.domain.cargo import CargoClass
from fleet.domain.priority import Priority
from fleet.planning.plan import Plan, RoutePlan, Stop, StopKind, assign_compartments
from fleet.planning.problem import (
    ENERGY_UNITS_PER_PCT,
    Problem,
    SearchConfig,
    drain_units,
    energy_units,
    grams,
)

LATENESS_COST_PER_S = {Priority.STAT: 1000, Priority.URGENT: 100, Priority.ROUTINE: 10}
"""Cost per second late against `needed_by` (a travel second costs 1): base 10 x 100/10/1."""

DROP_PENALTY = {Priority.STAT: 10**12, Priority.URGENT: 10**11, Priority.ROUTINE: 10**10}
"""Penalty per dropped pickup or delivery node. Even ROUTINE exceeds 48 h of STAT lateness (1.7e8)
many times, so dropping is only ever chosen for tasks the fleet cannot serve."""

GLOBAL_SPAN_COST = 1
"""Cost per second of the fleet's makespan (see the module docstring), on a par with travel."""


CHARGE_PENALTY = 10**13
"""Penalty for not making the charging visit a robot needs (above every drop penalty, so the
solver gives up any task first)."""

_RATE_DENOMINATOR = 1000
"""Charging speed as the fraction num / 1000 energy units per time unit (num rounded down)."""


@dataclass(frozen=True)
class _Node:
    """One node of the routing model (the index in the node list is its OR-Tools node index)."""

    location: int  # row in problem.travel_s; -1 for the dummy end depot
    service_s: int  # rounded up, for the transit
    service_exact_s: float  # for the reported departure time
    demand: int  # slots: + at pickup, - at delivery
    drug_weight: int  # cd_mix: see the module docstring; signed like demand
    order_id: str = ""
    kind: StopKind | None = None
    window: tuple[float | None, float | None] = (None, None)  # hard, absolute seconds
    grams: int = 0  # weight: + at pickup, - at delivery
    count: int = 0  # compartments: +1 at pickup, -1 at delivery
    charge_for: int = -1  # a charging visit: the vehicle it belongs to
    gain: int = 0  # a charging visit: energy above the reserve it adds (units)

    @property
    def key(self) -> tuple[str, StopKind | None]:
        """What the node stands for, whatever its index in a model."""
        return (self.order_id, self.kind)


def solve(problem: Problem, time_limit_s: float = 2.0, seed: int = 0) -> Plan:
    """Plan routes for `problem`; pure and, with GREEDY_DESCENT, deterministic.

    GREEDY_DESCENT (the default) stops at a local optimum, so the plan does not depend on the
    machine's speed; `time_limit_s` is only a safety cap (hitting it on a very large problem
    would make the result timing dependent). Other metaheuristics run until the limit (or
    `problem.search.solution_limit`), and so does the route-elimination phase
    (`problem.search.route_elimination`): their plans depend on the machine's speed.

    `seed` is accepted for the `build_problem -> solve(problem, time_limit_s, seed)` contract; the
    OR-Tools routing search has no random seed and this function breaks no ties randomly, so the
    result does not depend on it today.

    With the battery model on for some robot, up to three solves run one after the other (see
    `_with_charging`), each with `time_limit_s` as its cap; each is greedy descent, so the plan
    stays deterministic.

    Without tasks to plan, nothing on board and no robot that must charge, returns empty routes
    without calling OR-Tools.
    If OR-Tools finds no solution at all (e.g. an onboard drop-off that cannot be reached within
    the horizon), falls back to a plan where every task is unassigned and each robot drives
    straight to its onboard drop-offs in the order given (unreachable ones get an infinite
    arrival), so the caller always gets a plan.
    """
    del seed  # see the docstring: nothing is random
    if not time_limit_s > 0:
        raise ValueError("time_limit_s: must be > 0")
    battery = any(v.battery_modelled for v in problem.vehicles)
    if battery and problem.search.route_elimination:
        raise ValueError("search.route_elimination: not supported with the battery model")
    served = [k for k, allowed in enumerate(problem.allowed_vehicles) if allowed]
    has_onboard = any(v.onboard for v in problem.vehicles)
    must_charge = battery and any(
        _energy_start(problem, v)[1] for v in range(len(problem.vehicles))
    )
    if not served and not has_onboard and not must_charge:
        return _plan_without_solver(problem, onboard=False)
    nodes, pickups = _layout(problem, served)
    plan = _search(problem, nodes, pickups, time_limit_s)
    if plan is not None and battery:
        plan = _with_charging(problem, served, plan, time_limit_s)
    return plan if plan is not None else _plan_without_solver(problem, onboard=True)


def _layout(
    problem: Problem, served: Sequence[int], charges: Sequence[tuple[int, str, int, int]] = ()
) -> tuple[list[_Node], list[tuple[int, int]]]:
    """The model's nodes: starts, end depot, task pickup/delivery pairs, onboard deliveries,
    charging visits ((vehicle index, charger node, energy gained, charging time units)),
    closed-route ends.

    Returns the nodes and, per served task (same order as `served`), its (pickup, delivery) node;
    the pickup is -1 for a task loaded at the start (`Task.loaded_at_start`).
    """
    where = problem.location_index()
    n_orders = len(served) + sum(len(v.onboard) for v in problem.vehicles)
    drug = n_orders + 1  # M in the module docstring

    def weight(cargo: CargoClass) -> int:
        return drug if cargo is CargoClass.CONTROLLED_DRUG else 1

    units = problem.units
    nodes = [_Node(where[v.start_node], 0, 0.0, 0, 0) for v in problem.vehicles]
    nodes.append(_Node(-1, 0, 0.0, 0, 0))
    pairs: list[tuple[int, int]] = []
    for k in served:
        t = problem.tasks[k]
        w = weight(t.cargo_class)
        if t.loaded_at_start:  # no pickup stop: the robot leaves its start with it on board
            pairs.append((-1, len(nodes)))
        else:
            pairs.append((len(nodes), len(nodes) + 1))
            nodes.append(
                _Node(
                    where[t.pickup_node],
                    units(t.pickup_service_s),
                    t.pickup_service_s,
                    t.quantity,
                    w,
                    t.order_id,
                    StopKind.PICKUP,
                    (t.pickup_earliest, t.pickup_latest),
                    grams(t.weight_kg),
                    1,
                )
            )
        nodes.append(
            _Node(
                where[t.dropoff_node],
                units(t.dropoff_service_s),
                t.dropoff_service_s,
                -t.quantity,
                -w,
                t.order_id,
                StopKind.DROPOFF,
                (t.dropoff_earliest, t.dropoff_latest),
                -grams(t.weight_kg),
                -1,
            )
        )
    for v in problem.vehicles:
        for o in v.onboard:
            nodes.append(
                _Node(
                    where[o.dropoff_node],
                    units(o.dropoff_service_s),
                    o.dropoff_service_s,
                    -o.quantity,
                    -weight(o.cargo_class),
                    o.order_id,
                    StopKind.DROPOFF,
                    (None, None),
                    -grams(o.weight_kg),
                    -1,
                )
            )
    for vehicle, charger, gain, duration in charges:
        nodes.append(
            _Node(
                where[charger],
                duration,
                duration * problem.time_resolution_s,
                0,
                0,
                "",
                StopKind.CHARGE,
                charge_for=vehicle,
                gain=gain,
            )
        )
    # Closed routes: one end node per vehicle that returns somewhere (last, after the onboard
    # deliveries, so the indices above do not depend on them).
    for v in problem.vehicles:
        if v.end_node is not None:
            nodes.append(
                _Node(where[v.end_node], 0, 0.0, 0, 0, "", None, (v.end_earliest, v.end_latest))
            )
    return nodes, pairs


def _transit_matrix(
    nodes: Sequence[_Node],
    travel: Sequence[Sequence[int]],
    unreachable: int,
    charging: bool = True,
) -> list[list[int]]:
    """Node-by-node transit for one travel class: service at i + travel i -> j; 0 into the end.

    Without `charging`, a charging visit's service (its charging time) is left out."""
    matrix: list[list[int]] = []
    for a in nodes:
        row: list[int] = []
        service = a.service_s if charging or a.charge_for < 0 else 0
        for b in nodes:
            if b.location < 0 or a.location < 0:
                row.append(0)  # open routes: reaching the dummy end is free
                continue
            leg = travel[a.location][b.location]
            row.append(unreachable if leg >= unreachable else service + leg)
        matrix.append(row)
    return matrix


def _cost_matrix(nodes: Sequence[_Node], distance: Sequence[Sequence[int]]) -> list[list[int]]:
    """Node-by-node distance cost for one travel class (no service); 0 into the open end."""
    return [
        [0 if a.location < 0 or b.location < 0 else distance[a.location][b.location] for b in nodes]
        for a in nodes
    ]


@dataclass
class _Model:
    """One OR-Tools routing model of the problem, some vehicles possibly switched off."""

    manager: pywrapcp.RoutingIndexManager
    routing: pywrapcp.RoutingModel
    time: pywrapcp.RoutingDimension
    keep: list[object] = field(default_factory=list)  # callbacks must outlive the model


def _build_model(
    problem: Problem,
    nodes: list[_Node],
    pairs: list[tuple[int, int]],
    disabled: frozenset[int] = frozenset(),
    *,
    fixed_costs: bool = True,
    drop_penalty: int | None = None,
    energy: _Energy | None = None,
) -> _Model:
    """The routing model; `disabled` vehicles stay empty.

    The route-elimination search leaves the fixed costs out once the set of vehicles is decided
    by `disabled` (they only inflate the objective, and guided local search scales its penalties
    with the objective), and may use a smaller uniform `drop_penalty` for the same reason.
    """
    vehicles = problem.vehicles
    n_vehicles = len(vehicles)
    horizon = problem.horizon
    unreachable = problem.unreachable
    open_end = n_vehicles  # the dummy end depot's node index
    ends: list[int] = []
    closed = len(nodes) - sum(1 for vehicle in vehicles if vehicle.end_node is not None)
    for vehicle in vehicles:
        if vehicle.end_node is None:
            ends.append(open_end)
        else:
            ends.append(closed)
            closed += 1
    manager = pywrapcp.RoutingIndexManager(len(nodes), n_vehicles, list(range(n_vehicles)), ends)
    routing = pywrapcp.RoutingModel(manager)
    solver = routing.solver()
    if open_end not in ends:
        # Every route is closed: the dummy end depot is an ordinary node nobody may visit.
        unused_end = manager.NodeToIndex(open_end)
        routing.AddDisjunction([unused_end], 0)
        routing.ActiveVar(unused_end).SetValue(0)

    # Travel time: one registered matrix per travel class, shared by its vehicles. The arc cost
    # is the same matrix, or the distance matrix when the problem has one.
    transit = [
        routing.RegisterTransitMatrix(_transit_matrix(nodes, travel, unreachable))
        for travel in problem.travel_s
    ]
    per_vehicle = [transit[problem.vehicle_class[v]] for v in range(n_vehicles)]
    if problem.distance is None and any(n.charge_for >= 0 for n in nodes):
        # Charging time is no arc cost (the makespan term still counts it): the charging
        # options of a charger then cost the same, and the insertion heuristics take the
        # first, the biggest charge, which leaves the most room for work; the local search
        # swaps it for a smaller one when the route allows.
        charging = [
            routing.RegisterTransitMatrix(_transit_matrix(nodes, travel, unreachable, False))
            for travel in problem.travel_s
        ]
        cost = [charging[problem.vehicle_class[v]] for v in range(n_vehicles)]
    elif problem.distance is None:
        cost = per_vehicle
    else:
        by_class = [routing.RegisterTransitMatrix(_cost_matrix(nodes, d)) for d in problem.distance]
        cost = [by_class[problem.vehicle_class[v]] for v in range(n_vehicles)]
    homogeneous = len(set(cost)) == 1
    if homogeneous:
        routing.SetArcCostEvaluatorOfAllVehicles(cost[0])
    for v, callback in enumerate(cost):
        if not homogeneous:
            routing.SetArcCostEvaluatorOfVehicle(callback, v)
        if fixed_costs and vehicles[v].fixed_cost:
            routing.SetFixedCostOfVehicle(vehicles[v].fixed_cost, v)
    routing.AddDimensionWithVehicleTransits(per_vehicle, horizon, horizon, False, "time")
    time = routing.GetDimensionOrDie("time")
    span = GLOBAL_SPAN_COST if problem.span_cost is None else problem.span_cost
    if span:
        time.SetGlobalSpanCostCoefficient(span)
    for v, vehicle in enumerate(vehicles):
        start = min(horizon, problem.units(max(0.0, vehicle.available_at - problem.now)))
        time.CumulVar(routing.Start(v)).SetValue(start)
        if vehicle.end_node is not None:
            lo, hi = _window(problem, (vehicle.end_earliest, vehicle.end_latest))
            time.CumulVar(routing.End(v)).SetRange(max(lo, start), max(hi, start))

    # Capacity in slots. A locked vehicle (already over capacity) gets room for what it carries;
    # it takes no new task (build_problem), so its load only goes down.
    slots_cb = routing.RegisterUnaryTransitVector([n.demand for n in nodes])
    loads = [v.onboard_load for v in vehicles]
    capacities = [max(v.capacity_slots, load) for v, load in zip(vehicles, loads, strict=True)]
    routing.AddDimensionWithVehicleCapacity(slots_cb, 0, capacities, False, "slots")
    slots = routing.GetDimensionOrDie("slots")
    preloaded = any(pickup < 0 for pickup, _ in pairs)
    for v, load in enumerate(loads):
        _start_load(routing, slots, v, load, capacities[v], preloaded)

    # Controlled drugs travel alone (only modelled when there are any).
    if any(abs(n.drug_weight) > 1 for n in nodes):
        drug = max(abs(n.drug_weight) for n in nodes)
        drug_cb = routing.RegisterUnaryTransitVector([n.drug_weight for n in nodes])
        weights = [
            sum(-nodes[i].drug_weight for i in _onboard_nodes(problem, v))
            for v in range(n_vehicles)
        ]
        routing.AddDimensionWithVehicleCapacity(
            drug_cb, 0, [max(drug, w) for w in weights], False, "cd_mix"
        )
        cd_mix = routing.GetDimensionOrDie("cd_mix")
        for v, w in enumerate(weights):
            _start_load(routing, cd_mix, v, w, max(drug, w), preloaded)

    keep: list[object] = [transit, cost, slots_cb]
    keep.extend(_weight_and_compartments(problem, nodes, manager, routing, preloaded))

    served = [k for k, allowed in enumerate(problem.allowed_vehicles) if allowed]
    for k, (p_node, d_node) in zip(served, pairs, strict=True):
        task = problem.tasks[k]
        delivery = manager.NodeToIndex(d_node)
        indices = [delivery]
        if p_node >= 0:
            pickup = manager.NodeToIndex(p_node)
            indices.insert(0, pickup)
            routing.AddPickupAndDelivery(pickup, delivery)
            solver.Add(routing.VehicleVar(pickup) == routing.VehicleVar(delivery))
            solver.Add(time.CumulVar(pickup) <= time.CumulVar(delivery))
        allowed = [v for v in problem.allowed_vehicles[k] if v not in disabled]
        penalty = DROP_PENALTY[task.priority] if drop_penalty is None else drop_penalty
        for index in indices:
            if len(allowed) < n_vehicles:
                # -1 stays in the domain: the node may still be dropped (its disjunction).
                routing.VehicleVar(index).SetValues([-1, *allowed])
            window = nodes[manager.IndexToNode(index)].window
            if window != (None, None):
                lo, hi = _window(problem, window)
                time.CumulVar(index).SetRange(lo, hi)
            routing.AddDisjunction([index], penalty)
        _lateness(problem, time, delivery, task.needed_by, task.priority)
        if task.priority is not Priority.STAT:
            _after_charging(problem, routing, time, indices[0], allowed)

    for v, vehicle in enumerate(vehicles):
        for node, order in zip(_onboard_nodes(problem, v), vehicle.onboard, strict=True):
            index = manager.NodeToIndex(node)
            routing.VehicleVar(index).SetValues([v])  # mandatory: no disjunction, no -1
            _lateness(problem, time, index, order.needed_by, order.priority)
    for v in disabled:
        routing.NextVar(routing.Start(v)).SetValue(routing.End(v))
    if energy is not None:
        keep.extend(_energy_dimension(problem, nodes, manager, routing, energy))
    return _Model(manager, routing, time, keep)


def _weight_and_compartments(
    problem: Problem,
    nodes: Sequence[_Node],
    manager: pywrapcp.RoutingIndexManager,
    routing: pywrapcp.RoutingModel,
    preloaded: bool,
) -> list[object]:
    """The "weight" (grams) and "compartments" (one per order) load dimensions, when used.

    Only added when some robot has the rule (so plans without it are exactly as before). A robot
    without the rule gets a capacity nothing can exceed. A robot whose load already exceeds its
    capacity is locked (takes no new task, see `fleet.planning.problem`) and gets room for what
    it carries, as for the slots. A task pinned to a compartment is only picked up by an empty
    robot: its compartment count on arrival at the pickup is 0 (see `Task.pinned_compartment`).
    """
    vehicles = problem.vehicles
    keep: list[object] = []
    weighed = any(v.max_payload_kg is not None for v in vehicles)
    if weighed and any(n.grams for n in nodes):
        total = sum(n.grams for n in nodes if n.grams > 0) + sum(v.onboard_grams for v in vehicles)
        callback = routing.RegisterUnaryTransitVector([n.grams for n in nodes])
        keep.append(callback)
        capacities = [
            max(total if v.max_payload_kg is None else grams(v.max_payload_kg), v.onboard_grams)
            for v in vehicles
        ]
        routing.AddDimensionWithVehicleCapacity(callback, 0, capacities, False, "weight")
        dimension = routing.GetDimensionOrDie("weight")
        for v, vehicle in enumerate(vehicles):
            _start_load(routing, dimension, v, vehicle.onboard_grams, capacities[v], preloaded)
    if any(v.compartments is not None for v in vehicles) and any(n.count for n in nodes):
        orders = sum(1 for n in nodes if n.count < 0)
        callback = routing.RegisterUnaryTransitVector([n.count for n in nodes])
        keep.append(callback)
        capacities = [
            max(orders if v.compartments is None else v.compartments, len(v.onboard))
            for v in vehicles
        ]
        routing.AddDimensionWithVehicleCapacity(callback, 0, capacities, False, "compartments")
        dimension = routing.GetDimensionOrDie("compartments")
        for v, vehicle in enumerate(vehicles):
            _start_load(routing, dimension, v, len(vehicle.onboard), capacities[v], preloaded)
        pinned = {t.order_id for t in problem.tasks if t.pinned_compartment is not None}
        for node, n in enumerate(nodes):
            if n.kind is StopKind.PICKUP and n.order_id in pinned:
                dimension.CumulVar(manager.NodeToIndex(node)).SetValue(0)
    return keep


def _after_charging(
    problem: Problem,
    routing: pywrapcp.RoutingModel,
    time: pywrapcp.RoutingDimension,
    index: int,
    allowed: Sequence[int],
) -> None:
    """A non-STAT task's first stop on a robot still charging starts at `charging_until` at the
    earliest (only STAT pre-empts charging); on other robots it is unconstrained.

    One element constraint per task (cumul >= start[vehicle + 1], the unperformed vehicle -1
    mapping to 0); a plain lower bound when every allowed robot is charging until the same time.
    """
    starts = [0] * (len(problem.vehicles) + 1)
    for v in allowed:
        vehicle = problem.vehicles[v]
        if vehicle.charging_at(problem.now):
            starts[v + 1] = _window(problem, (vehicle.charging_until, None))[0]
    if not any(starts):
        return
    cumul = time.CumulVar(index)
    if len({starts[v + 1] for v in allowed}) == 1:
        cumul.SetMin(starts[allowed[0] + 1])
        return
    solver = routing.solver()
    vehicle_plus_one = (routing.VehicleVar(index) + 1).Var()
    solver.Add(cumul >= solver.Element(starts, vehicle_plus_one))


def _start_load(
    routing: pywrapcp.RoutingModel,
    dimension: pywrapcp.RoutingDimension,
    vehicle: int,
    onboard: int,
    capacity: int,
    preloaded: bool,
) -> None:
    """Fix a load dimension's start at what is on board.

    With tasks loaded at the start, the start is free (at least what is on board) and the end is
    0 instead: everything on board at the start, including the loaded-at-start tasks the route
    delivers, is delivered by its end.
    """
    if not preloaded:
        dimension.CumulVar(routing.Start(vehicle)).SetValue(onboard)
        return
    dimension.CumulVar(routing.Start(vehicle)).SetRange(onboard, max(onboard, capacity))
    dimension.CumulVar(routing.End(vehicle)).SetValue(0)


def _window(problem: Problem, window: tuple[float | None, float | None]) -> tuple[int, int]:
    """A hard window (absolute seconds) as a cumul range in time units within the horizon.

    The earliest bound is rounded up and the latest down, so the integer model never allows
    what the exact times forbid. (build_problem left out tasks whose window has closed.)
    """
    earliest, latest = window
    res = problem.time_resolution_s
    lo = 0 if earliest is None else max(0, math.ceil((earliest - problem.now) / res - 1e-9))
    hi = problem.horizon
    if latest is not None:
        hi = min(hi, math.floor((latest - problem.now) / res + 1e-9))
    lo = min(lo, problem.horizon)
    return lo, max(lo, hi)  # an empty window (build_problem drops those tasks) is its earliest


def _parameters(
    problem: Problem, time_limit_s: float, metaheuristic: str | None = None
) -> pywrapcp.RoutingSearchParameters:
    config: SearchConfig = problem.search
    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = getattr(
        routing_enums_pb2.FirstSolutionStrategy, config.first_solution
    )
    params.local_search_metaheuristic = getattr(
        routing_enums_pb2.LocalSearchMetaheuristic, metaheuristic or problem.metaheuristic
    )
    params.time_limit.FromMilliseconds(max(1, round(time_limit_s * 1000)))
    if config.solution_limit is not None:
        params.solution_limit = config.solution_limit
    if config.guided_local_search_lambda is not None:
        params.guided_local_search_lambda_coefficient = config.guided_local_search_lambda
    if config.use_full_propagation:
        params.use_full_propagation = True
    if config.lns_time_limit_s is not None:
        params.lns_time_limit.FromMilliseconds(max(1, round(config.lns_time_limit_s * 1000)))
    if config.neighbors_ratio is not None:
        params.ls_operator_neighbors_ratio = config.neighbors_ratio
    if config.min_neighbors is not None:
        params.ls_operator_min_neighbors = config.min_neighbors
    operators = params.local_search_operators
    for name, on in config.operators:
        if not hasattr(operators, name):
            raise ValueError(f"search.operators: unknown local search operator {name!r}")
        setattr(
            operators,
            name,
            optional_boolean_pb2.BOOL_TRUE if on else optional_boolean_pb2.BOOL_FALSE,
        )
    error = pywrapcp.FindErrorInRoutingSearchParameters(params)
    if error:
        raise ValueError(f"search: OR-Tools rejects the parameters: {error}")
    return params


def _search(
    problem: Problem,
    nodes: list[_Node],
    pairs: list[tuple[int, int]],
    time_limit_s: float,
) -> Plan | None:
    """One solve, or (route elimination) a vehicle-minimising phase followed by a cost phase."""
    config = problem.search
    if not config.route_elimination:
        model = _build_model(problem, nodes, pairs)
        params = _parameters(problem, time_limit_s)
        solution = None
        routes = _hint_routes(problem, nodes, pairs)
        if any(routes):
            # Warm start from the current plan; from scratch when it no longer fits.
            warm = _solve_from(model, routes, params)
            solution = None if warm is None else warm[0]
        if solution is None:
            solution = model.routing.SolveWithParameters(params)
        return None if solution is None else _extract(problem, nodes, model, solution)

    started = _time.monotonic()
    deadline = started + time_limit_s
    phase1_end = started + time_limit_s * config.elimination_share
    if config.initial_share > 0:
        # A first search for the cost alone; fixed costs would drown the metaheuristic.
        first = _build_model(problem, nodes, pairs, fixed_costs=False)
        params = _parameters(problem, time_limit_s * config.initial_share)
    else:
        # A first solution with the fixed costs (few vehicles), improved by greedy descent.
        first = _build_model(problem, nodes, pairs)
        params = _parameters(
            problem, min(config.elimination_attempt_s, time_limit_s), "GREEDY_DESCENT"
        )
    solution = first.routing.SolveWithParameters(params)
    if solution is None:
        return None
    # Routes as (order id, stop kind) keys, per vehicle index of `problem`.
    best = {v: [nodes[i].key for i in route] for v, route in enumerate(_routes(first, solution))}
    best = {v: route for v, route in best.items() if route or problem.vehicles[v].onboard}
    best_plan = _extract(problem, nodes, first, solution)
    if not best:
        return best_plan  # nothing could be served: no route to eliminate or improve
    penalty = _moderate_drop_penalty(problem)
    tried: set[int] = set()
    # Route elimination: leave out the vehicle of the smallest route not yet tried and search
    # from the other routes, its tasks unperformed; keep the result if every task is served.
    # The models only hold the vehicles in use, so the search wastes no moves on empty ones.
    while (attempt := min(config.elimination_attempt_s, phase1_end - _time.monotonic())) > 0.05:
        candidates = [v for v in best if v not in tried and not problem.vehicles[v].onboard]
        if not candidates:
            break
        victim = min(candidates, key=lambda v: (len(best[v]), v))
        tried.add(victim)
        trial = {v: route for v, route in best.items() if v != victim}
        params = _parameters(problem, attempt, config.elimination_metaheuristic)
        found = _solve_restricted(problem, trial, params, drop_penalty=penalty)
        if found is not None and _served(found[0]) >= _served(best):
            best, best_plan, tried = found[0], found[1], set()
    # Cost phase: the remaining time, from the best solution, with the vehicles it uses.
    remaining = max(0.05, deadline - _time.monotonic())
    found = _solve_restricted(problem, best, _parameters(problem, remaining))
    if found is None:  # not expected (the start is a solution): keep the best so far
        return best_plan
    fixed = sum(problem.vehicles[v].fixed_cost for v, route in found[0].items() if route)
    return dataclasses.replace(found[1], cost=found[1].cost + fixed)


_Key = tuple[str, StopKind | None]


def _hint_routes(
    problem: Problem, nodes: Sequence[_Node], pairs: Sequence[tuple[int, int]]
) -> list[list[int]]:
    """`problem.hint` as routes of node numbers, per vehicle, keeping only visits that can
    stand: each node once, a task's pickup and delivery on one allowed vehicle in that order,
    an onboard delivery on its own vehicle. Empty routes when there is no hint."""
    if not problem.hint:
        return [[] for _ in problem.vehicles]
    where = {
        node.key: i
        for i, node in enumerate(nodes)
        if node.kind in (StopKind.PICKUP, StopKind.DROPOFF)
    }
    task_of = {t.order_id: k for k, t in enumerate(problem.tasks)}
    partner: dict[int, int] = {}
    for p, d in pairs:
        if p >= 0:
            partner[p], partner[d] = d, p
    hinted = dict(problem.hint)
    used: set[int] = set()
    routes: list[list[int]] = []
    for v, vehicle in enumerate(problem.vehicles):
        onboard = {o.order_id for o in vehicle.onboard}
        wanted = [where[key] for key in hinted.get(vehicle.robot_id, ()) if key in where]
        position = {n: i for i, n in enumerate(wanted)}
        route: list[int] = []
        for i, n in enumerate(wanted):
            node = nodes[n]
            if n in used:
                continue
            if node.order_id in onboard:
                ok = node.kind is StopKind.DROPOFF
            else:
                k = task_of.get(node.order_id)
                other = partner.get(n)
                ok = (
                    k is not None
                    and other is not None
                    and v in problem.allowed_vehicles[k]
                    and (
                        position.get(other, -1) > i
                        if node.kind is StopKind.PICKUP
                        else other in used and other in route
                    )
                )
            if ok:
                route.append(n)
                used.add(n)
        routes.append(route)
    return routes


def _solve_restricted(
    problem: Problem,
    start: dict[int, list[_Key]],
    params: pywrapcp.RoutingSearchParameters,
    *,
    drop_penalty: int | None = None,
) -> tuple[dict[int, list[_Key]], Plan] | None:
    """Search from `start` (vehicle index -> its visits) with only those vehicles, no fixed costs.

    Returns the routes found (same form) and the plan for the whole `problem` (the vehicles left
    out get empty routes).
    """
    keep = sorted(start)
    index_of = {v: i for i, v in enumerate(keep)}
    allowed = tuple(
        tuple(index_of[v] for v in vehicles if v in index_of)
        for vehicles in problem.allowed_vehicles
    )
    sub = dataclasses.replace(
        problem,
        vehicles=tuple(problem.vehicles[v] for v in keep),
        vehicle_class=tuple(problem.vehicle_class[v] for v in keep),
        allowed_vehicles=allowed,
    )
    served = [k for k, vehicles in enumerate(allowed) if vehicles]
    nodes, pairs = _layout(sub, served)
    where = {node.key: i for i, node in enumerate(nodes) if node.kind is not None}
    routes = [[where[key] for key in start[v] if key in where] for v in keep]
    model = _build_model(sub, nodes, pairs, fixed_costs=False, drop_penalty=drop_penalty)
    found = _solve_from(model, routes, params)
    if found is None:
        return None
    solution, visits = found
    result = {keep[i]: [nodes[n].key for n in route] for i, route in enumerate(visits)}
    sub_plan = _extract(sub, nodes, model, solution)
    empty = {v.robot_id: RoutePlan(v.robot_id, ()) for v in problem.vehicles}
    plan = Plan(
        {robot_id: sub_plan.routes.get(robot_id, route) for robot_id, route in empty.items()},
        tuple(t.order_id for t in problem.tasks if t.order_id not in sub_plan.assignment),
        sub_plan.eta,
        sub_plan.cost,
        sub_plan.compartment,
    )
    return result, plan


def _served(routes: dict[int, list[_Key]]) -> int:
    return sum(len(route) for route in routes.values())


def _moderate_drop_penalty(problem: Problem) -> int:
    """A drop penalty just above what inserting any node could cost (two of the longest arcs)."""
    matrices = problem.distance if problem.distance is not None else problem.travel_s
    longest = max(
        (x for m in matrices for row in m for x in row if x < problem.unreachable), default=1
    )
    return 2 * longest + 1


def _routes(model: _Model, solution: pywrapcp.Assignment) -> list[list[int]]:
    """Per vehicle, the node indices it visits (starts and ends left out)."""
    routing, manager = model.routing, model.manager
    routes: list[list[int]] = []
    for v in range(routing.vehicles()):
        route: list[int] = []
        index = solution.Value(routing.NextVar(routing.Start(v)))
        while not routing.IsEnd(index):
            route.append(manager.IndexToNode(index))
            index = solution.Value(routing.NextVar(index))
        routes.append(route)
    return routes


def _solve_from(
    model: _Model, routes: list[list[int]], params: pywrapcp.RoutingSearchParameters
) -> tuple[pywrapcp.Assignment, list[list[int]]] | None:
    """Search from the given routes of node numbers (nodes not on them start unperformed)."""
    model.routing.CloseModelWithParameters(params)
    indices = [[model.manager.NodeToIndex(node) for node in route] for route in routes]
    initial = model.routing.ReadAssignmentFromRoutes(indices, True)
    if initial is None:
        return None
    solution = model.routing.SolveFromAssignmentWithParameters(initial, params)
    if solution is None:
        return None
    return solution, _routes(model, solution)


def _onboard_nodes(problem: Problem, vehicle: int) -> range:
    """Node indices of `vehicle`'s onboard deliveries (they come last, vehicle by vehicle)."""
    first = len(problem.vehicles) + 1
    first += sum(
        1 if task.loaded_at_start else 2
        for task, allowed in zip(problem.tasks, problem.allowed_vehicles, strict=True)
        if allowed
    )
    first += sum(len(v.onboard) for v in problem.vehicles[:vehicle])
    return range(first, first + len(problem.vehicles[vehicle].onboard))


def _lateness(
    problem: Problem,
    time: pywrapcp.RoutingDimension,
    index: int,
    needed_by: float | None,
    priority: Priority,
) -> None:
    """Soft upper bound at `needed_by` (relative to now, never negative) on a delivery's time.

    The cost is per time unit (per second at the default resolution)."""
    if needed_by is None:
        return
    bound = max(0, math.floor((needed_by - problem.now) / problem.time_resolution_s + 1e-9))
    time.SetCumulVarSoftUpperBound(
        index, min(bound, problem.horizon), LATENESS_COST_PER_S[priority]
    )


def _extract(
    problem: Problem,
    nodes: list[_Node],
    model: _Model,
    solution: pywrapcp.Assignment,
    energy: _Energy | None = None,
) -> Plan:
    """The plan of a solution: its routes, timed by `_earliest_times`."""
    manager, routing, time = model.manager, model.routing, model.time
    res = problem.time_resolution_s
    routes: dict[str, RoutePlan] = {}
    eta: dict[str, float] = {}
    on_route: set[str] = set()
    for v, vehicle in enumerate(problem.vehicles):
        route: list[int] = []  # node numbers, the closed route's end included
        index = solution.Value(routing.NextVar(routing.Start(v)))
        while not routing.IsEnd(index):
            route.append(manager.IndexToNode(index))
            index = solution.Value(routing.NextVar(index))
        end = manager.IndexToNode(index)
        closed = vehicle.end_node is not None
        start = solution.Value(time.CumulVar(routing.Start(v)))
        times = _earliest_times(problem, v, nodes, start, [*route, end], energy)
        idle = {
            n
            for n, (_, extra) in zip(route, times, strict=False)
            if nodes[n].charge_for >= 0 and not extra
        }
        if idle:
            # A charging visit the final route does not need (it was needed by the first
            # solve's route): skip the detour. Travel times are shortest paths, so leaving a
            # visit out never needs more charge or time.
            route = [n for n in route if n not in idle]
            times = _earliest_times(problem, v, nodes, start, [*route, end], energy)
        visits = [
            (nodes[n], problem.now + res * t, res * extra if extra else nodes[n].service_exact_s)
            for n, (t, extra) in zip(route, times, strict=False)
        ]
        on_route.update(nodes[n].order_id for n in route)
        stops = _merge(problem, visits)
        end_arrival = problem.now + res * times[-1][0] if closed else None
        routes[vehicle.robot_id] = RoutePlan(vehicle.robot_id, stops, end_arrival)
        eta.update(_etas(stops))
    unassigned = tuple(t.order_id for t in problem.tasks if t.order_id not in on_route)
    return Plan(routes, unassigned, eta, solution.ObjectiveValue(), _compartments(problem, routes))


def _earliest_times(
    problem: Problem,
    vehicle: int,
    nodes: Sequence[_Node],
    start_time: int,
    route: Sequence[int],
    energy: _Energy | None,
) -> list[tuple[int, int]]:
    """The earliest start (time units after now) of each visit of `route` (node numbers, ending
    with the route's end node), in order, with the charging time (units) at charging visits.

    The solution's cumuls are only some feasible times: where the route may wait (a window, a
    robot still charging) OR-Tools may put the wait anywhere before the bound, e.g. late at an
    earlier stop, which would make its ETA later than it has to be. Forward from the start,
    each visit starts at the later of (previous start + its service + travel) and the visit's
    own lower bound; these times are pointwise the earliest, so they keep every bound the
    solution keeps. A charging visit charges just what the rest of the route needs
    (`_charge_times`), which is at most what the solution charged.
    """
    travel = problem.travel_s[problem.vehicle_class[vehicle]]
    v = problem.vehicles[vehicle]
    charging = _window(problem, (v.charging_until, None))[0] if v.charging_at(problem.now) else 0
    first_node = {  # order id -> the kind of the task's first visit, for non-STAT tasks
        t.order_id: StopKind.DROPOFF if t.loaded_at_start else StopKind.PICKUP
        for t in problem.tasks
        if t.priority is not Priority.STAT
    }
    extra = _charge_times(problem, vehicle, nodes, route, energy)
    times: list[tuple[int, int]] = []
    clock, prev, prev_extra = start_time, nodes[vehicle], 0
    for position, n in enumerate(route):
        node = nodes[n]
        leg = 0 if node.location < 0 else travel[prev.location][node.location]
        # At a charging visit the robot stays for the charging it needs, not the model's.
        clock += (prev_extra if prev.charge_for >= 0 else prev.service_s) + leg
        if node.window != (None, None):
            clock = max(clock, _window(problem, node.window)[0])
        if charging and node.kind is not None and first_node.get(node.order_id) is node.kind:
            clock = max(clock, charging)
        prev_extra = extra.get(position, 0)
        times.append((clock, prev_extra))
        prev = node
    return times


def _compartments(problem: Problem, routes: dict[str, RoutePlan]) -> dict[str, tuple[str, int]]:
    """Order id -> (robot id, compartment) for the robots with a compartment rule.

    A robot whose load already breaks the compartment rule (more orders or duplicate
    compartments on board) is left out: no assignment exists.
    """
    tasks = {t.order_id: t for t in problem.tasks}
    pinned = {
        t.order_id: t.pinned_compartment for t in problem.tasks if t.pinned_compartment is not None
    }
    result: dict[str, tuple[str, int]] = {}
    for vehicle in problem.vehicles:
        if vehicle.compartments is None:
            continue
        route = routes[vehicle.robot_id]
        onboard: list[tuple[str, int | None]] = [
            (o.order_id, o.compartment) for o in vehicle.onboard
        ]
        onboard.extend(  # loaded at the start: on board from the start, no pickup stop
            (order_id, None)
            for order_id in route.order_ids
            if order_id in tasks and tasks[order_id].loaded_at_start
        )
        found = assign_compartments(vehicle.compartments, onboard, route.stops, pinned)
        if found is not None:
            result.update((oid, (vehicle.robot_id, c)) for oid, c in found.items())
    return result


def _merge(problem: Problem, visits: list[tuple[_Node, float, float]]) -> tuple[Stop, ...]:
    """Consecutive visits of one kind to one building node become one stop (unless the later
    visit arrives after the stop's departure, i.e. it waited). `visits` are (node, arrival,
    service seconds); a charging visit is a CHARGE stop of its own, its service the charging.

    The stop's arrival is the first visit's; its departure is arrival + the longest service time
    among the merged orders (one docking, items handled together). The model itself charges the
    services one after the other, so later arrivals are, if anything, pessimistic.
    """
    stops: list[Stop] = []
    for node, arrival, service_s in visits:
        assert node.kind is not None  # starts and the end depot are never visited mid-route
        name = problem.locations[node.location]
        if node.kind is StopKind.CHARGE:
            stops.append(Stop(name, StopKind.CHARGE, (), arrival, arrival + service_s))
            continue
        last = stops[-1] if stops else None
        # A visit after a wait (a window, a charging robot's start) is a stop of its own, so
        # that its arrival is not hidden behind the first visit's.
        if (
            last is not None
            and last.node == name
            and last.kind is node.kind
            and arrival <= last.departure + 1e-9
        ):
            service = max(last.departure - last.arrival, service_s)
            stops[-1] = Stop(
                name,
                node.kind,
                (*last.order_ids, node.order_id),
                last.arrival,
                last.arrival + service,
            )
        else:
            stops.append(Stop(name, node.kind, (node.order_id,), arrival, arrival + service_s))
    return tuple(stops)


def _plan_without_solver(problem: Problem, *, onboard: bool) -> Plan:
    """Every task unassigned; with `onboard`, each robot drives straight to its onboard drop-offs.

    Used when there is nothing for OR-Tools to do, and as the fallback when it finds no solution.
    Times follow the robot's travel matrix; an unreachable drop-off (and everything after it) gets
    an infinite arrival. The cost is the sum of the finite transit seconds.
    """
    where = problem.location_index()
    routes: dict[str, RoutePlan] = {}
    eta: dict[str, float] = {}
    cost = 0
    for v, vehicle in enumerate(problem.vehicles):
        visits: list[tuple[_Node, float, float]] = []
        if onboard:
            travel = problem.travel_s[problem.vehicle_class[v]]
            clock = max(problem.now, vehicle.available_at)
            here = where[vehicle.start_node]
            for order in vehicle.onboard:
                node = _Node(
                    where[order.dropoff_node],
                    problem.units(order.dropoff_service_s),
                    order.dropoff_service_s,
                    -order.quantity,
                    0,
                    order.order_id,
                    StopKind.DROPOFF,
                )
                leg = travel[here][node.location]
                unreachable = leg >= problem.unreachable
                clock = math.inf if unreachable else clock + leg * problem.time_resolution_s
                cost += 0 if unreachable else leg + node.service_s
                visits.append((node, clock, node.service_exact_s))
                clock += order.dropoff_service_s
                here = node.location
        stops = _merge(problem, visits)
        routes[vehicle.robot_id] = RoutePlan(vehicle.robot_id, stops)
        eta.update(_etas(stops))
    unassigned = tuple(t.order_id for t in problem.tasks)
    return Plan(routes, unassigned, eta, cost, _compartments(problem, routes))


def _etas(stops: Sequence[Stop]) -> dict[str, float]:
    """Order id -> arrival at its drop-off stop."""
    return {
        order_id: stop.arrival
        for stop in stops
        if stop.kind is StopKind.DROPOFF
        for order_id in stop.order_ids
    }


# --- battery: energy dimension and charging visits ------------------------------------------------


@dataclass(frozen=True)
class _Energy:
    """The battery model of the second solve (`_with_charging`), by vehicle index.

    - `constrained[v]`: the energy rule applies to vehicle v (its battery model is on and it can
      keep the rule);
    - `start[v]`: energy above the reserve at the start (units; 0 for a robot below it);
    - `capacity[v]`: (100 % - reserve) in units;
    - `rate[v]`: charging speed, `rate[v] / _RATE_DENOMINATOR` units per time unit (0: none);
    - `deficit[(v, location)]`: for a robot below its reserve, the energy its charging at that
      charger must first make up (what it lacks now plus the drive there) before it counts;
    - `first_charge`: the robots below their reserve, which charge before anything else.
    """

    constrained: tuple[bool, ...]
    start: tuple[int, ...]
    capacity: tuple[int, ...]
    rate: tuple[int, ...]
    deficit: dict[tuple[int, int], int]
    first_charge: frozenset[int]


CHARGE_EIGHTHS = (8, 6, 4, 2)
"""The charging options of a visit, in eighths of the capacity above the reserve: all, 3/4,
1/2 or 1/4, biggest first (see `_with_charging` and the arc cost in `_build_model`). More
options cost solve time (each is a node); the plan charges only what the route needs anyway."""


def _rate(problem: Problem, v: int) -> int:
    """Charging speed of vehicle v as a numerator over `_RATE_DENOMINATOR` (rounded down)."""
    vehicle = problem.vehicles[v]
    per_unit = vehicle.charge_pct_per_s * ENERGY_UNITS_PER_PCT * problem.time_resolution_s
    return math.floor(per_unit * _RATE_DENOMINATOR + 1e-9)


def _charge_duration(energy_units: int, rate: int) -> int:
    """Time units (rounded up) to charge `energy_units` at `rate` (see `_rate`)."""
    return -(-energy_units * _RATE_DENOMINATOR // rate)


def _reachable_chargers(problem: Problem, v: int) -> list[str]:
    """The chargers vehicle v can drive to from its start (none when it cannot charge)."""
    if _rate(problem, v) <= 0:
        return []
    where = problem.location_index()
    travel = problem.travel_s[problem.vehicle_class[v]]
    start = where[problem.vehicles[v].start_node]
    return [c for c in problem.chargers if travel[start][where[c]] < problem.unreachable]


def _energy_start(problem: Problem, v: int) -> tuple[int, bool]:
    """(energy above the reserve at the start in units, 0 when below it; True when the robot is
    below its reserve and can charge, so that it must go and charge first)."""
    vehicle = problem.vehicles[v]
    if not vehicle.battery_modelled:
        return 0, False
    if vehicle.battery_pct < vehicle.reserve_pct:
        return 0, bool(_reachable_chargers(problem, v))
    return energy_units(vehicle.battery_pct - vehicle.reserve_pct), False


def _drain(problem: Problem, v: int, start: str, path: Sequence[str]) -> float:
    """Energy (units) vehicle v uses driving from `start` through `path` in order (infinite
    when a leg is unreachable)."""
    where = problem.location_index()
    travel = problem.travel_s[problem.vehicle_class[v]]
    vehicle = problem.vehicles[v]
    total: float = 0
    here = where[start]
    for name in path:
        leg = travel[here][where[name]]
        if leg >= problem.unreachable:
            return math.inf
        total += drain_units(vehicle, leg * problem.time_resolution_s)
        here = where[name]
    return total


@dataclass(frozen=True)
class _BatterySetup:
    """Who needs what for the battery rule, from the first solve's plan (`_with_charging`)."""

    energy: _Energy
    chargers: dict[int, list[str]]  # vehicle -> chargers it can reach (robots in the rule)
    flagged: frozenset[int]  # robots whose first route broke the rule, or below their reserve
    banned: frozenset[int]  # robots that cannot keep the rule: no new task, outside the rule
    needed: bool  # whether the first plan must be re-solved


def _battery_setup(problem: Problem, plan: Plan) -> _BatterySetup:
    """Classify the robots with the battery model on by the first plan (see `_with_charging`)."""
    n = len(problem.vehicles)
    constrained = [False] * n
    start = [0] * n
    capacity = [0] * n
    rate = [0] * n
    deficit: dict[tuple[int, int], int] = {}
    first: set[int] = set()
    reachable: dict[int, list[str]] = {}
    flagged: set[int] = set()
    banned: set[int] = set()
    where = problem.location_index()
    for v, vehicle in enumerate(problem.vehicles):
        if not vehicle.battery_modelled:
            continue
        e0, low_can_charge = _energy_start(problem, v)
        low = vehicle.battery_pct < vehicle.reserve_pct
        chargers = _reachable_chargers(problem, v)
        if low and not chargers:
            continue  # stranded: it only delivers what it carries
        capacity[v] = energy_units(100.0 - vehicle.reserve_pct)
        rate[v] = _rate(problem, v)
        stops = plan.routes[vehicle.robot_id].stops
        onboard = {o.order_id for o in vehicle.onboard}
        own = [s.node for s in stops if s.kind is StopKind.DROPOFF and onboard & set(s.order_ids)]
        home = vehicle.start_node
        if not low and _drain(problem, v, home, own) <= e0:
            keeps = True
        else:
            keeps = any(
                (low or _drain(problem, v, home, [c]) <= e0)
                and _drain(problem, v, c, own) <= capacity[v]
                for c in chargers
            )
        if not keeps:
            banned.add(v)
            continue
        constrained[v] = True
        start[v] = e0
        reachable[v] = chargers
        if low_can_charge:
            first.add(v)
            lacking = math.ceil(
                (vehicle.reserve_pct - vehicle.battery_pct) * ENERGY_UNITS_PER_PCT - 1e-9
            )
            for c in chargers:
                deficit[(v, where[c])] = lacking + int(_drain(problem, v, home, [c]))
        if chargers and (low_can_charge or _drain(problem, v, home, [s.node for s in stops]) > e0):
            flagged.add(v)
        elif _drain(problem, v, home, [s.node for s in stops]) > e0:
            flagged.add(v)  # it cannot charge: the energy rule alone keeps it in bounds
    energy = _Energy(
        tuple(constrained), tuple(start), tuple(capacity), tuple(rate), deficit, frozenset(first)
    )
    return _BatterySetup(
        energy, reachable, frozenset(flagged), frozenset(banned), bool(flagged or banned)
    )


def _with_charging(
    problem: Problem, served: Sequence[int], plan: Plan, time_limit_s: float
) -> Plan | None:
    """The plan with the battery rule kept: `plan` itself when no robot of it falls below its
    reserve, else a second solve with the energy dimension and charging visits.

    A robot with the battery model on gets optional charging visits at every charger it can
    reach when its route in `plan` would take it below its reserve (or it is below it already:
    then the visit comes first), and makes exactly one of them (a disjunction with
    `CHARGE_PENALTY`), wherever in its route the solver finds best. Each charger offers one
    visit per `CHARGE_EIGHTHS` option: gaining 1/8, 2/8, ... or all of the capacity above the
    reserve, in the time that takes (possible only when the robot arrives low enough for the
    gain to fit). Fixed gains keep every rule a plain dimension rule, which OR-Tools' local
    search checks fast; tying a free charge to the time spent with a constraint made the
    search ~10 times slower (measured: 13 s instead of 1.4 s for 10 robots and 40 tasks). The
    plan then charges only what the rest of the route needs (`_charge_times`), never more
    than the option chosen, so its times are at most the model's.

    If that second plan leaves tasks unassigned that some robot may serve, and some robot
    that can charge has nothing to do in it, a third solve also gives those idle robots a
    charging visit (charge, then take work), and the plan dropping less (by priority) wins.

    A robot that cannot keep the rule even with nothing but what it carries (its onboard
    deliveries, after charging if it can) takes no new task and is left out of the energy
    rule, and so is a robot below its reserve that cannot charge (it already has no task, see
    `build_problem`): the plan cannot make either of them keep the rule, and does not make it
    worse.
    """
    del served  # recomputed without the banned robots
    setup = _battery_setup(problem, plan)
    if not setup.needed:
        return plan
    allowed = tuple(
        tuple(v for v in vehicles if v not in setup.banned) for vehicles in problem.allowed_vehicles
    )
    restricted = dataclasses.replace(problem, allowed_vehicles=allowed)
    result = _solve_charging(restricted, setup, setup.flagged, time_limit_s)
    if result is None:
        return None
    servable = {t.order_id for t, vehicles in zip(problem.tasks, allowed, strict=True) if vehicles}
    idle = {
        v
        for v, chargers in setup.chargers.items()
        if chargers
        and v not in setup.flagged
        and not result.routes[problem.vehicles[v].robot_id].stops
    }
    if idle and servable & set(result.unassigned):
        retry = _solve_charging(restricted, setup, setup.flagged | idle, time_limit_s)
        if retry is not None and _dropped(problem, retry) < _dropped(problem, result):
            result = retry
    return result


def _dropped(problem: Problem, plan: Plan) -> int:
    """The drop penalties of a plan's unassigned tasks (fewer and less urgent is better)."""
    unassigned = set(plan.unassigned)
    return sum(DROP_PENALTY[t.priority] for t in problem.tasks if t.order_id in unassigned)


def _solve_charging(
    problem: Problem, setup: _BatterySetup, charging: frozenset[int] | set[int], time_limit_s: float
) -> Plan | None:
    """One solve with the energy dimension, `charging` robots making one charging visit."""
    where = problem.location_index()
    charges: list[tuple[int, str, int, int]] = []
    energy = setup.energy
    for v in sorted(charging):
        for c in setup.chargers.get(v, []):
            owed = energy.deficit.get((v, where[c]), 0)
            for eighths in CHARGE_EIGHTHS:
                gain = energy.capacity[v] * eighths // 8
                if gain > 0 and energy.rate[v] > 0:
                    charges.append((v, c, gain, _charge_duration(gain + owed, energy.rate[v])))
    served = [k for k, vehicles in enumerate(problem.allowed_vehicles) if vehicles]
    nodes, pairs = _layout(problem, served, charges)
    model = _build_model(problem, nodes, pairs, energy=energy)
    solution = model.routing.SolveWithParameters(_parameters(problem, time_limit_s))
    return None if solution is None else _extract(problem, nodes, model, solution, energy)


def _energy_leg(
    problem: Problem,
    energy: _Energy,
    vehicle: int,
    nodes: Sequence[_Node],
    i: int,
    j: int,
    *,
    gains: bool = True,
) -> int:
    """The energy transit (units) of `vehicle` from node i to node j.

    Minus the drain of the drive; a robot below its reserve drives to its charger on credit
    (free here), and leaving a charger first pays that deficit back. With `gains`, leaving a
    charging visit adds its gain (the deficit is part of what that visit charges).
    """
    a, b = nodes[i], nodes[j]
    drain = 0
    if a.location >= 0 and b.location >= 0:
        leg = problem.travel_s[problem.vehicle_class[vehicle]][a.location][b.location]
        if leg < problem.unreachable:
            drain = drain_units(problem.vehicles[vehicle], leg * problem.time_resolution_s)
    if i == vehicle and vehicle in energy.first_charge and b.charge_for == vehicle:
        drain = 0
    if a.charge_for < 0:
        return -drain
    if gains:
        return a.gain - drain
    return -drain - energy.deficit.get((a.charge_for, a.location), 0)


def _energy_dimension(
    problem: Problem,
    nodes: Sequence[_Node],
    manager: pywrapcp.RoutingIndexManager,
    routing: pywrapcp.RoutingModel,
    energy: _Energy,
) -> list[object]:
    """The "energy" dimension: remaining battery above the reserve, and the charging visits.

    Cumul = energy above the reserve on arrival (units of `ENERGY_UNITS_PER_PCT`), within
    [0, 100 % - reserve]: never below the reserve. The transit is minus the drain of the drive,
    plus a charging visit's gain when leaving it (`_energy_leg`; one matrix per travel class
    and drain rate); no slack. A charging visit is only possible when its gain fits (its cumul
    is at most the capacity minus the gain); its charging time is its service time. Robots
    outside the rule get a zero transit.
    """
    vehicles = problem.vehicles
    keep: list[object] = []
    callbacks: dict[tuple[int, float] | None, int] = {}
    evaluators: list[int] = []
    size = len(nodes)
    for v, vehicle in enumerate(vehicles):
        key = (problem.vehicle_class[v], vehicle.drain_pct_per_s) if energy.constrained[v] else None
        if key not in callbacks:
            if key is None:
                matrix = [[0] * size for _ in range(size)]
            else:
                matrix = [
                    [_energy_leg(problem, energy, v, nodes, i, j) for j in range(size)]
                    for i in range(size)
                ]
                # The rows of the other robots of this key: their start and charging visits.
                for w in range(v + 1, len(vehicles)):
                    if energy.constrained[w] and key == (
                        problem.vehicle_class[w],
                        vehicles[w].drain_pct_per_s,
                    ):
                        for i, node in enumerate(nodes):
                            if i == w or node.charge_for == w:
                                matrix[i] = [
                                    _energy_leg(problem, energy, w, nodes, i, j)
                                    for j in range(size)
                                ]
            callbacks[key] = routing.RegisterTransitMatrix(matrix)
            keep.append(callbacks[key])
        evaluators.append(callbacks[key])
    capacities = [max(1, c) for c in energy.capacity]
    routing.AddDimensionWithVehicleTransitAndCapacity(evaluators, 0, capacities, False, "energy")
    dimension = routing.GetDimensionOrDie("energy")
    for v in range(len(vehicles)):
        dimension.CumulVar(routing.Start(v)).SetValue(energy.start[v])
    visits: dict[int, list[int]] = {}
    for number, visit in enumerate(nodes):
        if visit.charge_for >= 0:
            index = manager.NodeToIndex(number)
            visits.setdefault(visit.charge_for, []).append(index)
            routing.VehicleVar(index).SetValues([-1, visit.charge_for])
            dimension.CumulVar(index).SetMax(energy.capacity[visit.charge_for] - visit.gain)
    for _, indices in sorted(visits.items()):
        routing.AddDisjunction(indices, CHARGE_PENALTY, 1)
    # A robot below its reserve starts at 0 energy: it can drive nowhere but to its charger
    # (free, see `_energy_leg`) before charging. (Forcing its first visit with NextVar instead
    # leaves the cheapest-insertion heuristics without a first solution: their empty routes
    # break it.)
    return keep


def _charge_times(
    problem: Problem,
    vehicle: int,
    nodes: Sequence[_Node],
    route: Sequence[int],
    energy: _Energy | None,
) -> dict[int, int]:
    """Position in `route` -> charging time (time units) of each charging visit.

    Just enough for the rest of the route (its drain after the visit, and the deficit of a
    robot below its reserve), rounded up to whole time units at the modelled charging speed:
    at most the visit's own charging time, since the model's route was feasible with its gain.
    """
    if energy is None or not energy.constrained[vehicle]:
        return {}
    legs: list[int] = []  # energy transit into each visit of the route, without gains
    prev = vehicle
    for n in route:
        legs.append(_energy_leg(problem, energy, vehicle, nodes, prev, n, gains=False))
        prev = n
    result: dict[int, int] = {}
    level = energy.start[vehicle]
    for position, n in enumerate(route):
        level += legs[position]
        if nodes[n].charge_for != vehicle:
            continue
        needed = max(0, -sum(legs[position + 1 :]) - level)
        if needed and energy.rate[vehicle] > 0:
            result[position] = min(
                nodes[n].service_s, _charge_duration(needed, energy.rate[vehicle])
            )
        level += needed
    return result
