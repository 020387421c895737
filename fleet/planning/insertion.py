"""Answer a nurse at once: insert one new task into the current plan, cheaply.

The full re-optimization (`fleet.planning.solver.solve`) runs in a worker process and takes
seconds. A new order must get a robot and an ETA right away, so `insert_task` tries every place
the task's pickup and drop-off could go in every robot's planned stops and keeps the cheapest
feasible one. The plan it returns for that robot is a good answer until the next full solve
replaces it.

The cargo rules are the solver's (see `fleet.planning.problem`):

- the robot must be allowed to carry the task's cargo class, and the class must belong to the
  robot's flow, so clean and dirty cargo never share a load; a robot whose load already breaks a
  rule (`VehicleState.locked`) takes nothing new;
- the load in slots never exceeds the robot's capacity anywhere along the route;
- a controlled drug travels alone: while a CONTROLLED_DRUG task is on board nothing else is,
  and a task is never on board together with a controlled drug;
- weight (`Task.weight_kg`, in whole grams) never exceeds `VehicleState.max_payload_kg`, and the
  number of orders on board never exceeds `VehicleState.compartments`, anywhere along the route;
- a pinned task (`Task.pinned_robot`) only goes to its robot; a task pinned to a compartment
  (`Task.pinned_compartment`) is only picked up where the robot carries nothing, and no other
  task is on board when a pinned task already in the route is picked up (the solver's rule, so
  that the pinned compartment is free); `Insertion.compartments` gives the new route's
  compartment assignment;
- the battery (`VehicleState.drain_pct_per_s > 0`): no insertion takes the robot below its
  reserve anywhere along the route; CHARGE stops already in the route restore
  `charge_pct_per_s` x their duration (capped at 100 %). The insertion plans no new charging
  stop: a task that needs one is left to the full solve (None here if no robot can take it);
- STAT pre-empts charging: on a robot still on its charger (`VehicleState.charging_until` after
  `now`) a pickup stop loading a non-STAT order starts at `charging_until` at the earliest (the
  robot waits), as in the solver; STAT orders are picked up at once. Such robots are searched by
  simulating every candidate from scratch (`_best_in_route_exact`, O(n^3) in the route's
  stops), since a wait absorbs delays and breaks the incremental bookkeeping below; they are
  few (only robots on their charger).

The cost of a candidate, in the solver's units (one second of robot time costs 1):

- the increase of the route's duration (travel plus service: the time the robot finishes later);
- lateness against `needed_by`, at `LATENESS_COST_PER_S[priority]` per second late (the solver's
  weights), for the new task and for the lateness the insertion adds to the orders already on
  the route;
- `eta_cost_per_s` per second from `now` to the new task's drop-off, so that among robots with
  similar detours the one that delivers sooner wins (the solver's makespan term plays this part
  in the full solve; the insertion sees one order at a time).

Times: a robot is free at `max(now, vehicle.available_at)` at `vehicle.start_node`, then drives
its stops in order; arrival = previous departure + travel, departure = arrival + the stop's
service. The service of an existing stop is taken from the plan (`departure - arrival`); a task
merged into an existing stop at the same node and of the same kind makes it
`max(old service, task's service)` (one docking, items handled together, as in the solver).
There is no waiting (no time windows open later than now), except on a robot still charging
(see the rules above).

Scope: the dispatcher's problem, i.e. open routes and soft deadlines. The options `build_problem`
has for the public benchmarks are not modelled: a task with hard time windows
(`pickup_earliest` ... `dropoff_latest`) raises ValueError, and a robot with a closed route
(`VehicleState.end_node`) is not considered.

Speed (the target is p99 < 50 ms for 100 robots with ~10 orders each): travel look-ups are
cached per call; robots are visited by a lower bound of their cost (the earliest the task could
be delivered by them) and skipped once that bound reaches the best cost found; inside a route,
lateness added to the orders downstream of a delay is computed in O(1) whenever the delay fits
within their slack, and position loops stop as soon as a capacity rule or the bound rules the
rest out. Nothing is allocated per candidate; `Stop` objects are built only for the winner.

Pure: standard library and the planning types only (no clock, no I/O, no OR-Tools).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fleet.domain.cargo import CargoClass, Flow, flow_of
from fleet.domain.priority import Priority
from fleet.planning.plan import Stop, StopKind, assign_compartments
from fleet.planning.problem import Task, TravelTime, VehicleState, fits_vehicle, grams

LATENESS_COST_PER_S: Mapping[Priority, float] = {
    Priority.STAT: 1000.0,
    Priority.URGENT: 100.0,
    Priority.ROUTINE: 10.0,
}
"""Cost per second late against `needed_by`; the same as `fleet.planning.solver`'s (a test
checks), repeated here so that this module does not import OR-Tools."""

ETA_COST_PER_S = 1.0
"""Default cost per second between `now` and the new task's delivery (see the module docstring)."""

_INF = math.inf

_WINDOWS = ("pickup_earliest", "pickup_latest", "dropoff_earliest", "dropoff_latest")
"""Hard time-window fields a `Task` may carry (for the public benchmarks); not supported here."""


class OrderFacts(Protocol):
    """What the insertion needs to know about an order already in a route.

    `fleet.domain.order.Order`, `Task` and `OnboardTask` all have these attributes, so the core
    can pass its own order table as it is. Optional attributes, read when present: `weight_kg`
    (0.0 when absent) and `pinned_compartment` (None when absent), as on `Task`.
    """

    @property
    def quantity(self) -> int: ...

    @property
    def cargo_class(self) -> CargoClass: ...

    @property
    def priority(self) -> Priority: ...

    @property
    def needed_by(self) -> float | None: ...


@dataclass(frozen=True)
class VehicleRoute:
    """What the dispatcher knows of one robot right now.

    - `vehicle`: where and when the robot is free after the stop it is committed to (its current
      stop), and what it will carry then (`onboard`), exactly as in `Snapshot.vehicles`;
    - `stops`: its planned future stops after that, in order (may be empty). Every order id in
      them must be known to the `orders` mapping given to `insert_task` or be on board.
    """

    vehicle: VehicleState
    stops: tuple[Stop, ...] = ()


@dataclass(frozen=True)
class Insertion:
    """The cheapest feasible place for a new task.

    - `robot_id`: the robot that takes it;
    - `stops`: that robot's new future stops with the task inserted, all times recomputed;
    - `eta`: estimated arrival at the task's drop-off (absolute seconds);
    - `pickup_eta`: estimated arrival at its pickup;
    - `added_cost_s`: the cost the insertion adds (see the module docstring);
    - `compartments`: for a robot with a compartment rule (`VehicleState.compartments`), order id
      -> compartment index for every order on the new route and on board, recomputed for the
      whole route by `fleet.planning.plan.assign_compartments` (known onboard compartments and
      pinned ones kept; orders not yet picked up may move); empty for other robots.
    """

    robot_id: str
    stops: tuple[Stop, ...]
    eta: float
    pickup_eta: float
    added_cost_s: float
    compartments: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Choice:
    """The best candidate found so far (allocated only when the best improves)."""

    cost: float
    route: int  # index into `routes`
    pickup_gap: int  # new pickup stop before stops[pickup_gap]; -1 when merged
    pickup_merge: int  # merged into stops[pickup_merge]; -1 when a new stop
    drop_gap: int
    drop_merge: int
    eta: float


def insert_task(
    task: Task,
    routes: Sequence[VehicleRoute],
    travel: TravelTime,
    now: float,
    orders: Mapping[str, OrderFacts],
    *,
    eta_cost_per_s: float = ETA_COST_PER_S,
) -> Insertion | None:
    """The cheapest feasible insertion of `task` into one of `routes`, or None if none can take it.

    `travel(a, b, flow, speed)` is the building's travel time (`BuildingGraph.travel_time`);
    `orders` maps the order ids found in the routes' stops to their quantity, cargo class,
    priority and needed-by (orders on board may be left out: `vehicle.onboard` describes them).
    Ties go to the robot listed first. Raises ValueError for a task with a non-positive quantity
    or a bad service time, and for a route naming an order that neither `orders` nor the
    vehicle's `onboard` knows.
    """
    if task.quantity < 1:
        raise ValueError(f"task.quantity: must be at least 1 for {task.order_id!r}")
    for name, service in (
        ("pickup_service_s", task.pickup_service_s),
        ("dropoff_service_s", task.dropoff_service_s),
    ):
        if not (service >= 0 and math.isfinite(service)):
            raise ValueError(f"task.{name}: must be finite and >= 0 for {task.order_id!r}")

    for name in _WINDOWS:
        if getattr(task, name, None) is not None:
            raise ValueError(f"task.{name}: hard time windows are not supported by the insertion")
    if not (task.weight_kg >= 0 and math.isfinite(task.weight_kg)):
        raise ValueError(f"task.weight_kg: must be finite and >= 0 for {task.order_id!r}")
    if task.pinned_compartment is not None and (
        task.pinned_robot is None or task.pinned_compartment < 0
    ):
        raise ValueError(
            f"task.pinned_compartment: needs pinned_robot and must be >= 0 for {task.order_id!r}"
        )
    if not (eta_cost_per_s >= 0 and math.isfinite(eta_cost_per_s)):
        raise ValueError("eta_cost_per_s: must be finite and >= 0")
    cache: dict[tuple[str, str, Flow, float], float] = {}

    def tt(a: str, b: str, flow: Flow, speed: float) -> float:
        if a == b:
            return 0.0
        key = (a, b, flow, speed)
        value = cache.get(key)
        if value is None:
            value = travel(a, b, flow, speed)
            if math.isnan(value) or value < 0:
                raise ValueError(f"travel({a!r}, {b!r}, {flow}, {speed}) returned {value}")
            cache[key] = value
        return value

    cargo = task.cargo_class
    cargo_flow = flow_of(cargo)
    p_node, d_node = task.pickup_node, task.dropoff_node
    w_task = LATENESS_COST_PER_S[task.priority]
    nb_task = task.needed_by

    def delivery_cost(eta: float) -> float:
        late = 0.0 if nb_task is None or eta <= nb_task else w_task * (eta - nb_task)
        return eta_cost_per_s * (eta - now) + late

    # Lower bound per robot: the earliest it could possibly deliver (start -> P -> D).
    candidates: list[tuple[float, int]] = []
    for index, route in enumerate(routes):
        v = route.vehicle
        if (
            cargo not in v.cargo_classes
            or cargo_flow is not v.flow
            or task.quantity > v.capacity_slots
            or v.locked
            or getattr(v, "end_node", None) is not None
            or not fits_vehicle(v, task)
        ):
            continue
        to_p = tt(v.start_node, p_node, v.flow, v.speed_m_s)
        p_to_d = tt(p_node, d_node, v.flow, v.speed_m_s)
        if to_p == _INF or p_to_d == _INF:
            continue
        at_p = max(max(now, v.available_at) + to_p, _charging_wait(v, now, task.priority))
        earliest = at_p + task.pickup_service_s + p_to_d
        candidates.append((delivery_cost(earliest), index))
    candidates.sort()

    best: _Choice | None = None
    for bound, index in candidates:
        if best is not None and bound >= best.cost:
            break
        search = _best_in_route_exact if routes[index].vehicle.charging_at(now) else _best_in_route
        found = search(task, routes[index], index, tt, now, orders, delivery_cost, best)
        if found is not None:
            best = found
    if best is None:
        return None
    return _build(task, routes[best.route], best, tt, now, orders)


def retime(
    vehicle: VehicleState, stops: Sequence[Stop], travel: TravelTime, now: float
) -> tuple[Stop, ...]:
    """`stops` with arrival and departure recomputed from the vehicle's start, services kept.

    Handy after removing an order from a route (cancelled, or taken by another robot). A stop
    whose service cannot be read (non-finite times) keeps a service of 0.
    """
    t = max(now, vehicle.available_at)
    here = vehicle.start_node
    out: list[Stop] = []
    for stop in stops:
        leg = 0.0 if stop.node == here else travel(here, stop.node, vehicle.flow, vehicle.speed_m_s)
        t += leg
        out.append(Stop(stop.node, stop.kind, stop.order_ids, t, t + _service(stop)))
        t += _service(stop)
        here = stop.node
    return tuple(out)


def without_orders(stops: Sequence[Stop], drop: Callable[[str], bool]) -> tuple[Stop, ...]:
    """`stops` without the order ids for which `drop(order_id)` is true.

    Stops left empty disappear (CHARGE stops stay); two stops of one kind at one node that become
    neighbours merge (the longer service is kept). Times are not recomputed (`insert_task`
    recomputes them anyway; use `retime` otherwise). For the core: drop orders cancelled,
    finished or re-assigned since the plan was made before passing a robot's future stops to
    `insert_task`.
    """
    kept: list[Stop] = []
    for stop in stops:
        if stop.kind is StopKind.CHARGE:
            kept.append(stop)  # a charging stop has no orders and stays
            continue
        ids = tuple(oid for oid in stop.order_ids if not drop(oid))
        if not ids:
            continue
        last = kept[-1] if kept else None
        if last is not None and last.node == stop.node and last.kind is stop.kind:
            service = max(_service(last), _service(stop))
            merged = last.order_ids + ids
            kept[-1] = Stop(last.node, last.kind, merged, last.arrival, last.arrival + service)
        elif ids == stop.order_ids:
            kept.append(stop)
        else:
            kept.append(Stop(stop.node, stop.kind, ids, stop.arrival, stop.departure))
    return tuple(kept)


def _service(stop: Stop) -> float:
    service = stop.departure - stop.arrival
    return service if 0 <= service < _INF else 0.0


def _best_in_route(
    task: Task,
    route: VehicleRoute,
    route_index: int,
    tt: Callable[[str, str, Flow, float], float],
    now: float,
    orders: Mapping[str, OrderFacts],
    delivery_cost: Callable[[float], float],
    best: _Choice | None,
) -> _Choice | None:
    """The cheapest insertion into this route if cheaper than `best`, else None."""
    v = route.vehicle
    stops = route.stops
    n = len(stops)
    flow, speed = v.flow, v.speed_m_s
    p_node, d_node = task.pickup_node, task.dropoff_node
    sp, sd = task.pickup_service_s, task.dropoff_service_s
    q = task.quantity
    is_drug = task.cargo_class is CargoClass.CONTROLLED_DRUG
    cap = v.capacity_slots
    payload = None if v.max_payload_kg is None else grams(v.max_payload_kg)
    wq = grams(task.weight_kg)
    compartments = v.compartments
    pinned_task = task.pinned_compartment is not None
    t0 = max(now, v.available_at)

    # Baseline times. legs[k]: travel into stops[k]; legs[n] = 0 (the open end).
    nodes = [s.node for s in stops]
    serv = [_service(s) for s in stops]
    legs = [0.0] * (n + 1)
    arr = [0.0] * n
    dep = [0.0] * n
    here, t = v.start_node, t0
    for k in range(n):
        leg = tt(here, nodes[k], flow, speed)
        if leg == _INF:
            return None  # the plan is already broken for this robot; leave it to the solver
        legs[k] = leg
        t += leg
        arr[k] = t
        t += serv[k]
        dep[k] = t
        here = nodes[k]

    # Battery, when modelled: e_dep[k] is the charge when leaving for stops[k] (k = n: at the
    # end), e_arr[k] on arrival there, low[k] the lowest arrival charge from stops[k] on. Extra
    # driving lowers every later charge by drain x its time, also past a CHARGE stop (whose
    # charging time is kept; counting it so is safe even where that charge was capped at 100 %).
    drain = v.drain_pct_per_s if v.battery_modelled else 0.0
    reserve = v.reserve_pct
    e_dep = [_INF] * (n + 1)
    e_arr = [_INF] * n
    low = [_INF] * (n + 1)
    if drain:
        e = v.battery_pct
        for k in range(n):
            e_dep[k] = e
            e -= drain * legs[k]
            e_arr[k] = e
            if stops[k].kind is StopKind.CHARGE:
                e = min(100.0, e + v.charge_pct_per_s * serv[k])
        e_dep[n] = e
        for k in range(n - 1, -1, -1):
            low[k] = min(e_arr[k], low[k + 1])

    # Load profile, per segment: segment k runs into stops[k] (segment n: after the last stop).
    onboard = {o.order_id: o for o in v.onboard}
    load = v.onboard_load
    count = len(v.onboard)
    drugs = sum(1 for o in v.onboard if o.cargo_class is CargoClass.CONTROLLED_DRUG)
    carried_g = v.onboard_grams
    ok = [False] * (n + 1)  # may the task be on board in that segment?
    empty = [False] * (n + 1)  # is nothing on board in that segment? (pinned pickups)
    after_pinned = False  # did the previous stop pick up a pinned-compartment order?
    late_items: list[tuple[int, float, float]] = []  # (stop, needed_by, weight) of drop-offs
    for k in range(n + 1):
        ok[k] = (
            load + q <= cap
            and (count == 0 if is_drug else drugs == 0)
            and (payload is None or carried_g + wq <= payload)
            and (compartments is None or count < compartments)
            and not after_pinned
        )
        empty[k] = count == 0
        if k == n:
            break
        stop = stops[k]
        sign = 1 if stop.kind is StopKind.PICKUP else -1
        after_pinned = False
        for oid in stop.order_ids:
            facts: OrderFacts | None = orders.get(oid)
            if facts is None:
                facts = onboard.get(oid)
            if facts is None:
                raise ValueError(f"routes: order {oid!r} on robot {v.robot_id!r} is unknown")
            load += sign * facts.quantity
            count += sign
            carried_g += sign * grams(getattr(facts, "weight_kg", 0.0))
            if sign > 0 and getattr(facts, "pinned_compartment", None) is not None:
                after_pinned = True
            if facts.cargo_class is CargoClass.CONTROLLED_DRUG:
                drugs += sign
            if sign < 0 and facts.needed_by is not None:
                late_items.append((k, facts.needed_by, LATENESS_COST_PER_S[facts.priority]))

    # Lateness added downstream of a delay: rate[p] = weight of orders at stops >= p already
    # late (they lose one cost unit per second of delay each), slack[p] = the smallest delay
    # that makes another one late. Below the slack the added lateness is rate * delay.
    rate = [0.0] * (n + 1)
    slack = [_INF] * (n + 1)
    for k, needed_by, weight in late_items:
        if arr[k] >= needed_by:
            rate[k] += weight
        else:
            slack[k] = min(slack[k], needed_by - arr[k])
    for k in range(n - 1, -1, -1):
        rate[k] += rate[k + 1]
        slack[k] = min(slack[k], slack[k + 1])

    def added_lateness(p: int, delay: float) -> float:
        """Lateness added to the orders dropped at stops >= p when they all arrive `delay` later."""
        if delay <= 0 or p >= n:
            return 0.0
        if delay <= slack[p]:
            return rate[p] * delay
        total = 0.0
        for k, needed_by, weight in late_items:
            if k >= p:
                before = arr[k] - needed_by
                after = before + delay
                if after > 0:
                    total += weight * (after if before < 0 else delay)
        return total

    best_cost = best.cost if best is not None else _INF
    choice: _Choice | None = None
    p_to_d = tt(p_node, d_node, flow, speed)
    p_is_stop = [stops[k].kind is StopKind.PICKUP and nodes[k] == p_node for k in range(n)]
    d_is_stop = [stops[k].kind is StopKind.DROPOFF and nodes[k] == d_node for k in range(n)]
    p_is_stop.append(False)
    d_is_stop.append(False)
    # prev_dep[k] / prev_node[k]: when and where the robot leaves for stops[k] (k = n: the end).
    prev_dep = [t0, *dep]
    prev_node = [v.start_node, *nodes]

    def drops(
        first: int,
        new_from: int,
        delayed_from: int,
        delay1: float,
        pickup_gap: int,
        merge: int,
        drive1: float = 0.0,
    ) -> None:
        """Try every drop-off once the pickup is placed; keep the best in `choice`.

        The task is on board from the segment before stops[first]; new drop-off stops are tried
        before stops[j] for j >= new_from; the stops from `delayed_from` on are already `delay1`
        later because of the pickup, `drive1` of it driving (for the battery).
        """
        nonlocal best_cost, choice
        between = _INF  # the lowest arrival charge at stops[delayed_from:j]
        for j in range(first, n + 1):
            if j > first and j - 1 >= delayed_from:
                between = min(between, e_arr[j - 1])
            if not ok[j]:
                break  # on board through this segment is not allowed: no later drop-off either
            if drain and between - drain * drive1 < reserve:
                break  # the stops before this drop-off would already go below the reserve
            base = prev_dep[j] + delay1  # every drop-off from here on arrives after this
            if delay1 + delivery_cost(base) >= best_cost:
                break
            shifted = added_lateness(delayed_from, delay1) - added_lateness(j, delay1)
            # A new drop-off stop before stops[j] (not next to a drop-off stop at the same node:
            # merging into that one is never worse).
            if j >= new_from and not (d_is_stop[j - 1] or d_is_stop[j]):
                to_d = tt(nodes[j - 1], d_node, flow, speed)
                eta = base + to_d
                after = tt(d_node, nodes[j], flow, speed) if j < n else 0.0
                delay2 = to_d + sd + after - legs[j]
                drive = drive1 + to_d + after - legs[j]
                if delay2 < _INF and (
                    not drain
                    or (
                        e_dep[j] - drain * (drive1 + to_d) >= reserve
                        and low[j] - drain * drive >= reserve
                    )
                ):
                    total = delay1 + delay2
                    cost = total + shifted + added_lateness(j, total) + delivery_cost(eta)
                    if cost < best_cost:
                        best_cost = cost
                        choice = _Choice(cost, route_index, pickup_gap, merge, j, -1, eta)
            # Merge the drop-off into stops[j], a drop-off at the same node.
            if d_is_stop[j] and (not drain or low[j] - drain * drive1 >= reserve):
                eta = arr[j] + delay1
                total = delay1 + max(0.0, sd - serv[j])
                cost = (
                    total
                    + shifted
                    + added_lateness(j, delay1)
                    - added_lateness(j + 1, delay1)
                    + added_lateness(j + 1, total)
                    + delivery_cost(eta)
                )
                if cost < best_cost:
                    best_cost = cost
                    choice = _Choice(cost, route_index, pickup_gap, merge, -1, j, eta)

    for i in range(n + 1):
        # Every pickup from here on is reached after prev_dep[i]: bound the rest of the route.
        if delivery_cost(prev_dep[i] + sp + p_to_d) >= best_cost:
            break
        # Option A: a new pickup stop before stops[i]. Right after a pickup stop at the same node
        # merging into that one is never worse; right before one too, unless the drop-off comes
        # in between.
        if ok[i] and (empty[i] or not pinned_task) and not (i > 0 and p_is_stop[i - 1]):
            to_p = tt(prev_node[i], p_node, flow, speed)
            if to_p < _INF and (not drain or e_dep[i] - drain * to_p >= reserve):
                # The drop-off right after the pickup, both before stops[i].
                if not d_is_stop[i]:
                    eta = prev_dep[i] + to_p + sp + p_to_d
                    after = tt(d_node, nodes[i], flow, speed) if i < n else 0.0
                    delay = to_p + sp + p_to_d + sd + after - legs[i]
                    drive = to_p + p_to_d + after - legs[i]
                    if delay < _INF and (
                        not drain
                        or (
                            e_dep[i] - drain * (to_p + p_to_d) >= reserve
                            and low[i] - drain * drive >= reserve
                        )
                    ):
                        cost = delay + added_lateness(i, delay) + delivery_cost(eta)
                        if cost < best_cost:
                            best_cost = cost
                            choice = _Choice(cost, route_index, i, -1, i, -1, eta)
                if i < n and not p_is_stop[i]:
                    drive1 = to_p + tt(p_node, nodes[i], flow, speed) - legs[i]
                    delay1 = drive1 + sp
                    if delay1 < _INF:
                        drops(i, i + 1, i, delay1, i, -1, drive1)
        # Option B: merge the pickup into stops[i], a pickup at the same node. (A pinned task
        # never merges: the stop's own orders would be loaded before it.)
        if p_is_stop[i] and not pinned_task:
            drops(i + 1, i + 1, i + 1, max(0.0, sp - serv[i]), -1, i)
    return choice


def _build(
    task: Task,
    route: VehicleRoute,
    choice: _Choice,
    tt: Callable[[str, str, Flow, float], float],
    now: float,
    orders: Mapping[str, OrderFacts],
) -> Insertion:
    """The winner's stops, with the task inserted and every time recomputed."""
    v = route.vehicle
    oid = task.order_id
    items = _apply(task, route.stops, choice)
    facts = _facts(task, v, orders)
    t = max(now, v.available_at)
    here = v.start_node
    stops: list[Stop] = []
    eta = pickup_eta = _INF
    for node, kind, ids, service in items:
        t += tt(here, node, v.flow, v.speed_m_s)
        if kind is StopKind.PICKUP:
            t = max(t, _stop_wait(v, now, ids, facts))
        stops.append(Stop(node, kind, ids, t, t + service))
        if oid in ids:
            if kind is StopKind.PICKUP:
                pickup_eta = t
            else:
                eta = t
        t += service
        here = node
    compartments: dict[str, int] = {}
    if v.compartments is not None:
        pinned = {
            order_id: c
            for order_id, facts_ in orders.items()
            if (c := getattr(facts_, "pinned_compartment", None)) is not None
        }
        if task.pinned_compartment is not None:
            pinned[oid] = task.pinned_compartment
        onboard = [(o.order_id, o.compartment) for o in v.onboard]
        compartments = assign_compartments(v.compartments, onboard, stops, pinned) or {}
    return Insertion(v.robot_id, tuple(stops), eta, pickup_eta, choice.cost, compartments)


_Item = tuple[str, StopKind, tuple[str, ...], float]  # node, kind, order ids, service


def _apply(task: Task, stops: Sequence[Stop], choice: _Choice) -> list[_Item]:
    """The route's stops as items with the task inserted where `choice` says."""
    items = [(s.node, s.kind, s.order_ids, _service(s)) for s in stops]
    oid = task.order_id
    # The drop-off first, so that the pickup's index (into the original stops) still holds.
    if choice.drop_merge >= 0:
        node, kind, ids, service = items[choice.drop_merge]
        items[choice.drop_merge] = (node, kind, (*ids, oid), max(service, task.dropoff_service_s))
    else:
        items.insert(
            choice.drop_gap, (task.dropoff_node, StopKind.DROPOFF, (oid,), task.dropoff_service_s)
        )
    if choice.pickup_merge >= 0:
        node, kind, ids, service = items[choice.pickup_merge]
        items[choice.pickup_merge] = (node, kind, (*ids, oid), max(service, task.pickup_service_s))
    else:
        items.insert(
            choice.pickup_gap, (task.pickup_node, StopKind.PICKUP, (oid,), task.pickup_service_s)
        )
    return items


def _facts(task: Task, v: VehicleState, orders: Mapping[str, OrderFacts]) -> _FactsOf:
    """Order id -> its facts: the new task, the routes' orders, then what is on board."""
    onboard = {o.order_id: o for o in v.onboard}

    def facts_of(order_id: str) -> OrderFacts:
        if order_id == task.order_id:
            return task
        found: OrderFacts | None = orders.get(order_id)
        if found is None:
            found = onboard.get(order_id)
        if found is None:
            raise ValueError(f"routes: order {order_id!r} on robot {v.robot_id!r} is unknown")
        return found

    return facts_of


_FactsOf = Callable[[str], OrderFacts]


def _charging_wait(v: VehicleState, now: float, priority: Priority) -> float:
    """The earliest a pickup of `priority` may start on `v`: `charging_until` unless STAT."""
    if priority is Priority.STAT or not v.charging_at(now):
        return -_INF
    assert v.charging_until is not None  # charging_at says so
    return v.charging_until


def _stop_wait(v: VehicleState, now: float, ids: Sequence[str], facts: _FactsOf) -> float:
    """The earliest a pickup stop loading `ids` may start on `v` (see `_charging_wait`)."""
    if not v.charging_at(now):
        return -_INF
    return max((_charging_wait(v, now, facts(oid).priority) for oid in ids), default=-_INF)


def _walk(
    v: VehicleState,
    items: Sequence[_Item],
    tt: Callable[[str, str, Flow, float], float],
    now: float,
    facts: _FactsOf,
) -> tuple[list[float], float] | None:
    """Arrival at each item and the end time, with every rule checked from scratch; None when a
    rule is broken: slots, weight, compartments, a controlled drug alone, a pinned compartment
    loaded into an empty robot, the battery reserve, or an unreachable stop. Pickups of non-STAT
    orders on a charging robot wait until `charging_until`."""
    t = max(now, v.available_at)
    here = v.start_node
    aboard: dict[str, OrderFacts] = {o.order_id: o for o in v.onboard}
    battery = v.battery_pct
    payload = None if v.max_payload_kg is None else grams(v.max_payload_kg)
    arrivals: list[float] = []
    for node, kind, ids, service in items:
        leg = tt(here, node, v.flow, v.speed_m_s)
        if leg == _INF:
            return None
        t += leg
        if v.battery_modelled:
            battery -= v.drain_pct_per_s * leg
            if battery < v.reserve_pct - 1e-9:
                return None
        if kind is StopKind.PICKUP:
            t = max(t, _stop_wait(v, now, ids, facts))
            for oid in ids:
                if aboard and getattr(facts(oid), "pinned_compartment", None) is not None:
                    return None  # loaded in stop order, as the solver's rule has it
                aboard[oid] = facts(oid)
        elif kind is StopKind.DROPOFF:
            for oid in ids:
                aboard.pop(oid, None)
        else:  # CHARGE
            battery = min(100.0, battery + v.charge_pct_per_s * service)
        arrivals.append(t)
        t += service
        here = node
        loaded = aboard.values()
        if (
            sum(f.quantity for f in loaded) > v.capacity_slots
            or (payload is not None and sum(_grams(f) for f in loaded) > payload)
            or (v.compartments is not None and len(aboard) > v.compartments)
            or (
                len(aboard) > 1 and any(f.cargo_class is CargoClass.CONTROLLED_DRUG for f in loaded)
            )
        ):
            return None
    return arrivals, t


def _grams(facts: OrderFacts) -> int:
    return grams(getattr(facts, "weight_kg", 0.0))


def _best_in_route_exact(
    task: Task,
    route: VehicleRoute,
    route_index: int,
    tt: Callable[[str, str, Flow, float], float],
    now: float,
    orders: Mapping[str, OrderFacts],
    delivery_cost: Callable[[float], float],
    best: _Choice | None,
) -> _Choice | None:
    """Like `_best_in_route`, by simulating every candidate from scratch (`_walk`).

    O(n^3) for n stops, so only used for robots `_best_in_route` cannot model: a robot on its
    charger, whose non-STAT pickups wait until `charging_until` (a wait absorbs delays, which
    the incremental bookkeeping of `_best_in_route` does not).
    """
    v = route.vehicle
    stops = route.stops
    n = len(stops)
    facts = _facts(task, v, orders)
    base_items = [(s.node, s.kind, s.order_ids, _service(s)) for s in stops]
    base = _walk(v, base_items, tt, now, facts)
    if base is None:
        return None  # the plan already breaks a rule for this robot; leave it to the solver
    base_late = _others_lateness(base_items, base[0], facts, task.order_id)
    best_cost = best.cost if best is not None else _INF
    choice: _Choice | None = None
    p_node, d_node = task.pickup_node, task.dropoff_node
    pickups = [(i, -1) for i in range(n + 1)]
    pickups += [
        (-1, k) for k in range(n) if stops[k].kind is StopKind.PICKUP and stops[k].node == p_node
    ]
    for gap, merge in pickups:
        after = gap if merge < 0 else merge + 1  # the drop-off goes at or after this stop
        drops = [(j, -1) for j in range(after, n + 1)]
        drops += [
            (-1, m)
            for m in range(after, n)
            if stops[m].kind is StopKind.DROPOFF and stops[m].node == d_node
        ]
        for drop_gap, drop_merge in drops:
            trial = _Choice(0.0, route_index, gap, merge, drop_gap, drop_merge, 0.0)
            items = _apply(task, stops, trial)
            walked = _walk(v, items, tt, now, facts)
            if walked is None:
                continue
            arrivals, end = walked
            eta = next(
                a
                for a, (_, kind, ids, _) in zip(arrivals, items, strict=True)
                if kind is StopKind.DROPOFF and task.order_id in ids
            )
            late = _others_lateness(items, arrivals, facts, task.order_id)
            cost = (end - base[1]) + (late - base_late) + delivery_cost(eta)
            if cost < best_cost:
                best_cost = cost
                choice = dataclasses.replace(trial, cost=cost, eta=eta)
    return choice


def _others_lateness(
    items: Sequence[_Item], arrivals: Sequence[float], facts: _FactsOf, skip: str
) -> float:
    """Weighted lateness of every drop-off on the route but `skip`'s."""
    total = 0.0
    for (_, kind, ids, _), arrival in zip(items, arrivals, strict=True):
        if kind is not StopKind.DROPOFF:
            continue
        for oid in ids:
            if oid == skip:
                continue
            f = facts(oid)
            if f.needed_by is not None and arrival > f.needed_by:
                total += LATENESS_COST_PER_S[f.priority] * (arrival - f.needed_by)
    return total
