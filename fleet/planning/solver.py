"""Solve a `Problem` with OR-Tools routing: a pickup-and-delivery problem with open routes.

Model (see `solve` for the search):

- Nodes: one start per vehicle (at its start node), one shared dummy end depot, a pickup and a
  delivery node per task someone may serve, and a delivery node per onboard order. Routes are
  open: every arc into the end depot costs 0 and takes 0 time.
- Arc cost and the "time" transit are the same vehicle-specific integer matrix (one per travel
  class, i.e. per distinct flow and speed): service time at the from-node + travel time.
  Unreachable arcs carry `UNREACHABLE`, which exceeds the time horizon, so no feasible route uses
  them; vehicles that cannot reach a task at all were already left out of its allowed vehicles,
  which restrict the domain of the task nodes' vehicle variables. (`SetAllowedVehiclesForIndex`
  is not used: its SWIG wrapper in OR-Tools 9.15 rejects every Python sequence for its
  `absl::Span<const int>` argument.)
- "time": seconds after `problem.now`, capacity 48 h, waiting (slack) allowed, each start cumul
  fixed at when the vehicle is free. `needed_by` becomes a soft upper bound on the delivery's
  cumul, costing `LATENESS_COST_PER_S[priority]` per second late.
- "slots": capacity in slots; the start cumul is fixed at the onboard load, pickups add the
  quantity and deliveries remove it.
- "cd_mix" (only when controlled drugs are involved): a controlled drug weighs `M` and any other
  order 1, capacity `M`, where `M` exceeds the number of orders. A lone controlled drug fits
  (M <= M); a drug plus anything else (M + 1) or two drugs (2M) do not; any number of other
  orders (< M) does. So a controlled-drug trip carries nothing else.
- Clean/dirty hygiene needs no dimension: a task is only allowed on vehicles of its own flow, and
  vehicles whose load already mixes flows take no new task (see `fleet.planning.problem`).
- Pickup and delivery: `AddPickupAndDelivery`, same vehicle, pickup cumul <= delivery cumul.
- Dropping: a disjunction on each pickup and delivery node with `DROP_PENALTY[priority]`, far above
  any travel or lateness cost, so the solver serves everything it can and, when it cannot, drops
  ROUTINE before URGENT before STAT. Onboard deliveries are mandatory and fixed to their vehicle.
- Objective: travel seconds + lateness + drop penalties + `GLOBAL_SPAN_COST` x (the time the last
  robot finishes - the earliest start). Without the span term, travel alone happily chains many
  orders on one robot while others idle, which delays every order without a `needed_by`. Measured
  on random 10-robot/30-task problems, the span term roughly halved the latest delivery and cut
  the mean delivery time by 5-25 % for about the same travel, at twice the (still sub-second)
  solve time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ortools.constraint_solver import pywrapcp, routing_enums_pb2

from fleet.domain.cargo import CargoClass
from fleet.domain.priority import Priority
from fleet.planning.plan import Plan, RoutePlan, Stop, StopKind
from fleet.planning.problem import HORIZON_S, UNREACHABLE, Problem, seconds_up

LATENESS_COST_PER_S = {Priority.STAT: 1000, Priority.URGENT: 100, Priority.ROUTINE: 10}
"""Cost per second late against `needed_by` (a travel second costs 1): base 10 x 100/10/1."""

DROP_PENALTY = {Priority.STAT: 10**12, Priority.URGENT: 10**11, Priority.ROUTINE: 10**10}
"""Penalty per dropped pickup or delivery node. Even ROUTINE exceeds 48 h of STAT lateness (1.7e8)
many times, so dropping is only ever chosen for tasks the fleet cannot serve."""

GLOBAL_SPAN_COST = 1
"""Cost per second of the fleet's makespan (see the module docstring), on a par with travel."""


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


def solve(problem: Problem, time_limit_s: float = 2.0, seed: int = 0) -> Plan:
    """Plan routes for `problem`; pure and, with GREEDY_DESCENT, deterministic.

    GREEDY_DESCENT (the default) stops at a local optimum, so the plan does not depend on the
    machine's speed; `time_limit_s` is only a safety cap (hitting it on a very large problem
    would make the result timing dependent). Other metaheuristics run until the limit.

    `seed` is accepted for the `build_problem -> solve(problem, time_limit_s, seed)` contract; the
    OR-Tools routing search has no random seed and this function breaks no ties randomly, so the
    result does not depend on it today.

    Without tasks to plan and nothing on board, returns empty routes without calling OR-Tools.
    If OR-Tools finds no solution at all (e.g. an onboard drop-off that cannot be reached within
    the horizon), falls back to a plan where every task is unassigned and each robot drives
    straight to its onboard drop-offs in the order given (unreachable ones get an infinite
    arrival), so the caller always gets a plan.
    """
    del seed  # see the docstring: nothing is random
    if not time_limit_s > 0:
        raise ValueError("time_limit_s: must be > 0")
    served = [k for k, allowed in enumerate(problem.allowed_vehicles) if allowed]
    has_onboard = any(v.onboard for v in problem.vehicles)
    if not served and not has_onboard:
        return _plan_without_solver(problem, onboard=False)
    nodes, pickups = _layout(problem, served)
    plan = _solve_model(problem, nodes, pickups, time_limit_s)
    return plan if plan is not None else _plan_without_solver(problem, onboard=True)


def _layout(problem: Problem, served: Sequence[int]) -> tuple[list[_Node], list[tuple[int, int]]]:
    """The model's nodes: starts, end depot, task pickup/delivery pairs, onboard deliveries.

    Returns the nodes and, per served task (same order as `served`), its (pickup, delivery) node.
    """
    where = problem.location_index()
    n_orders = len(served) + sum(len(v.onboard) for v in problem.vehicles)
    drug = n_orders + 1  # M in the module docstring

    def weight(cargo: CargoClass) -> int:
        return drug if cargo is CargoClass.CONTROLLED_DRUG else 1

    nodes = [_Node(where[v.start_node], 0, 0.0, 0, 0) for v in problem.vehicles]
    nodes.append(_Node(-1, 0, 0.0, 0, 0))
    pairs: list[tuple[int, int]] = []
    for k in served:
        t = problem.tasks[k]
        w = weight(t.cargo_class)
        pairs.append((len(nodes), len(nodes) + 1))
        nodes.append(
            _Node(
                where[t.pickup_node],
                seconds_up(t.pickup_service_s),
                t.pickup_service_s,
                t.quantity,
                w,
                t.order_id,
                StopKind.PICKUP,
            )
        )
        nodes.append(
            _Node(
                where[t.dropoff_node],
                seconds_up(t.dropoff_service_s),
                t.dropoff_service_s,
                -t.quantity,
                -w,
                t.order_id,
                StopKind.DROPOFF,
            )
        )
    for v in problem.vehicles:
        for o in v.onboard:
            nodes.append(
                _Node(
                    where[o.dropoff_node],
                    seconds_up(o.dropoff_service_s),
                    o.dropoff_service_s,
                    -o.quantity,
                    -weight(o.cargo_class),
                    o.order_id,
                    StopKind.DROPOFF,
                )
            )
    return nodes, pairs


def _transit_matrix(nodes: Sequence[_Node], travel: Sequence[Sequence[int]]) -> list[list[int]]:
    """Node-by-node transit for one travel class: service at i + travel i -> j; 0 into the end."""
    matrix: list[list[int]] = []
    for a in nodes:
        row: list[int] = []
        for b in nodes:
            if b.location < 0 or a.location < 0:
                row.append(0)  # open routes: reaching the dummy end is free
                continue
            leg = travel[a.location][b.location]
            row.append(UNREACHABLE if leg >= UNREACHABLE else a.service_s + leg)
        matrix.append(row)
    return matrix


def _solve_model(
    problem: Problem,
    nodes: list[_Node],
    pairs: list[tuple[int, int]],
    time_limit_s: float,
) -> Plan | None:
    vehicles = problem.vehicles
    n_vehicles = len(vehicles)
    end = n_vehicles  # the dummy end depot's node index
    manager = pywrapcp.RoutingIndexManager(
        len(nodes), n_vehicles, list(range(n_vehicles)), [end] * n_vehicles
    )
    routing = pywrapcp.RoutingModel(manager)
    solver = routing.solver()

    # Travel cost and time: one registered matrix per travel class, shared by its vehicles.
    transit = [
        routing.RegisterTransitMatrix(_transit_matrix(nodes, travel)) for travel in problem.travel_s
    ]
    per_vehicle = [transit[problem.vehicle_class[v]] for v in range(n_vehicles)]
    for v, callback in enumerate(per_vehicle):
        routing.SetArcCostEvaluatorOfVehicle(callback, v)
    routing.AddDimensionWithVehicleTransits(per_vehicle, HORIZON_S, HORIZON_S, False, "time")
    time = routing.GetDimensionOrDie("time")
    time.SetGlobalSpanCostCoefficient(GLOBAL_SPAN_COST)
    for v, vehicle in enumerate(vehicles):
        start = min(HORIZON_S, max(0, seconds_up(vehicle.available_at - problem.now)))
        time.CumulVar(routing.Start(v)).SetValue(start)

    # Capacity in slots. A locked vehicle (already over capacity) gets room for what it carries;
    # it takes no new task (build_problem), so its load only goes down.
    slots_cb = routing.RegisterUnaryTransitVector([n.demand for n in nodes])
    loads = [v.onboard_load for v in vehicles]
    capacities = [max(v.capacity_slots, load) for v, load in zip(vehicles, loads, strict=True)]
    routing.AddDimensionWithVehicleCapacity(slots_cb, 0, capacities, False, "slots")
    slots = routing.GetDimensionOrDie("slots")
    for v, load in enumerate(loads):
        slots.CumulVar(routing.Start(v)).SetValue(load)

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
            cd_mix.CumulVar(routing.Start(v)).SetValue(w)

    served = [k for k, allowed in enumerate(problem.allowed_vehicles) if allowed]
    for k, (p_node, d_node) in zip(served, pairs, strict=True):
        task = problem.tasks[k]
        pickup, delivery = manager.NodeToIndex(p_node), manager.NodeToIndex(d_node)
        routing.AddPickupAndDelivery(pickup, delivery)
        solver.Add(routing.VehicleVar(pickup) == routing.VehicleVar(delivery))
        solver.Add(time.CumulVar(pickup) <= time.CumulVar(delivery))
        allowed = problem.allowed_vehicles[k]
        if len(allowed) < n_vehicles:
            # -1 stays in the domain: the node may still be dropped (its disjunction).
            routing.VehicleVar(pickup).SetValues([-1, *allowed])
            routing.VehicleVar(delivery).SetValues([-1, *allowed])
        penalty = DROP_PENALTY[task.priority]
        routing.AddDisjunction([pickup], penalty)
        routing.AddDisjunction([delivery], penalty)
        _lateness(time, delivery, task.needed_by, task.priority, problem.now)

    for v, vehicle in enumerate(vehicles):
        for node, order in zip(_onboard_nodes(problem, v), vehicle.onboard, strict=True):
            index = manager.NodeToIndex(node)
            routing.VehicleVar(index).SetValues([v])  # mandatory: no disjunction, no -1
            _lateness(time, index, order.needed_by, order.priority, problem.now)

    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = (
        routing_enums_pb2.FirstSolutionStrategy.PARALLEL_CHEAPEST_INSERTION
    )
    params.local_search_metaheuristic = getattr(
        routing_enums_pb2.LocalSearchMetaheuristic, problem.metaheuristic
    )
    params.time_limit.FromMilliseconds(max(1, round(time_limit_s * 1000)))
    solution = routing.SolveWithParameters(params)
    if solution is None:
        return None
    return _extract(problem, nodes, manager, routing, time, solution)


def _onboard_nodes(problem: Problem, vehicle: int) -> range:
    """Node indices of `vehicle`'s onboard deliveries (they come last, vehicle by vehicle)."""
    first = len(problem.vehicles) + 1 + 2 * sum(1 for a in problem.allowed_vehicles if a)
    first += sum(len(v.onboard) for v in problem.vehicles[:vehicle])
    return range(first, first + len(problem.vehicles[vehicle].onboard))


def _lateness(
    time: pywrapcp.RoutingDimension,
    index: int,
    needed_by: float | None,
    priority: Priority,
    now: float,
) -> None:
    """Soft upper bound at `needed_by` (relative to now, never negative) on a delivery's time."""
    if needed_by is None:
        return
    bound = max(0, math.floor(needed_by - now))
    time.SetCumulVarSoftUpperBound(index, min(bound, HORIZON_S), LATENESS_COST_PER_S[priority])


def _extract(
    problem: Problem,
    nodes: list[_Node],
    manager: pywrapcp.RoutingIndexManager,
    routing: pywrapcp.RoutingModel,
    time: pywrapcp.RoutingDimension,
    solution: pywrapcp.Assignment,
) -> Plan:
    routes: dict[str, RoutePlan] = {}
    eta: dict[str, float] = {}
    on_route: set[str] = set()
    for v, vehicle in enumerate(problem.vehicles):
        visits: list[tuple[_Node, float]] = []
        index = solution.Value(routing.NextVar(routing.Start(v)))
        while not routing.IsEnd(index):
            node = nodes[manager.IndexToNode(index)]
            # Min of the cumul: the earliest arrival consistent with the solution.
            visits.append((node, problem.now + solution.Min(time.CumulVar(index))))
            on_route.add(node.order_id)
            index = solution.Value(routing.NextVar(index))
        stops = _merge(problem, visits)
        routes[vehicle.robot_id] = RoutePlan(vehicle.robot_id, stops)
        eta.update(_etas(stops))
    unassigned = tuple(t.order_id for t in problem.tasks if t.order_id not in on_route)
    return Plan(routes, unassigned, eta, solution.ObjectiveValue())


def _merge(problem: Problem, visits: list[tuple[_Node, float]]) -> tuple[Stop, ...]:
    """Consecutive visits of one kind to one building node become one stop.

    The stop's arrival is the first visit's; its departure is arrival + the longest service time
    among the merged orders (one docking, items handled together). The model itself charges the
    services one after the other, so later arrivals are, if anything, pessimistic.
    """
    stops: list[Stop] = []
    for node, arrival in visits:
        assert node.kind is not None  # starts and the end depot are never visited mid-route
        name = problem.locations[node.location]
        last = stops[-1] if stops else None
        if last is not None and last.node == name and last.kind is node.kind:
            service = max(last.departure - last.arrival, node.service_exact_s)
            stops[-1] = Stop(
                name,
                node.kind,
                (*last.order_ids, node.order_id),
                last.arrival,
                last.arrival + service,
            )
        else:
            stops.append(
                Stop(name, node.kind, (node.order_id,), arrival, arrival + node.service_exact_s)
            )
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
        visits: list[tuple[_Node, float]] = []
        if onboard:
            travel = problem.travel_s[problem.vehicle_class[v]]
            clock = max(problem.now, vehicle.available_at)
            here = where[vehicle.start_node]
            for order in vehicle.onboard:
                node = _Node(
                    where[order.dropoff_node],
                    seconds_up(order.dropoff_service_s),
                    order.dropoff_service_s,
                    -order.quantity,
                    0,
                    order.order_id,
                    StopKind.DROPOFF,
                )
                leg = travel[here][node.location]
                clock = math.inf if leg >= UNREACHABLE else clock + leg
                cost += 0 if leg >= UNREACHABLE else leg + node.service_s
                visits.append((node, clock))
                clock += order.dropoff_service_s
                here = node.location
        stops = _merge(problem, visits)
        routes[vehicle.robot_id] = RoutePlan(vehicle.robot_id, stops)
        eta.update(_etas(stops))
    unassigned = tuple(t.order_id for t in problem.tasks)
    return Plan(routes, unassigned, eta, cost)


def _etas(stops: Sequence[Stop]) -> dict[str, float]:
    """Order id -> arrival at its drop-off stop."""
    return {
        order_id: stop.arrival
        for stop in stops
        if stop.kind is StopKind.DROPOFF
        for order_id in stop.order_ids
    }
