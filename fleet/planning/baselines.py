"""Baseline dispatchers: what today's open-source fleet managers do, for honest comparison.

Both have the signature of `fleet.planning.solve` (`(problem, time_limit_s, seed) -> Plan`), so
the dispatcher core and the digital twin run them unchanged. Both are pure and deterministic:
no I/O, no clock, no randomness (`time_limit_s` and `seed` are accepted and ignored).

- `greedy_earliest_finish`, after Open-RMF's task auction: the tasks are taken in order of
  creation (`created_at`, then order id) and each goes to the allowed robot that would *finish* it
  earliest when it is appended to the end of that robot's queue. A queue is strictly sequential:
  first the deliveries of what is on board (in the order given), then one task after another,
  pickup then delivery; nothing is reordered and no trip is shared. The core re-plans on every
  new order and every delivery and sends the tasks not yet started again, so, as in Open-RMF,
  where the fleet adapter re-bids the pending queue, an order keeps its place in creation order
  but may move to another robot that would now finish it earlier.
- `nearest_idle`, after openTCS's default dispatcher: only idle robots (nothing on board, nothing
  committed, free now) get work, one task each: the nearest (travel time to the pickup) of the
  allowed idle robots. Tasks are taken by priority (STAT, URGENT, ROUTINE), then creation time,
  then id. openTCS orders its candidates by configurable keys (deadline-first keys are common),
  then by age, then by name; our needed-by times follow the priority (STAT is due soonest), so
  priority-then-age is the faithful and simplest reading for a hospital. Tasks without an idle
  robot stay unassigned; the core re-plans when a robot delivers, and they are placed then. Busy
  robots just deliver what they carry, in the order given.

Times follow `fleet.planning.solver` exactly: a robot starts at
`now + seconds_up(available_at - now)` (never before `now`), and the arrival at the next stop is
the arrival at the previous one plus its service time rounded up to whole seconds plus the
integer travel time of the robot's class. Consecutive visits of one kind to one node merge into a
stop whose departure is its arrival plus the longest exact service time. `eta` has every order on
a route (its drop-off arrival); `cost` is travel and service seconds plus the solver's lateness
cost plus its drop penalty per unassigned task, so it reads like the solver's objective.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fleet.domain.priority import Priority
from fleet.planning.plan import Plan, RoutePlan, Stop, StopKind
from fleet.planning.problem import HORIZON_S, UNREACHABLE, Problem, Task, seconds_up

# The solver's weights, repeated so a change there cannot silently change these baselines.
_LATENESS_COST_PER_S = {Priority.STAT: 1000, Priority.URGENT: 100, Priority.ROUTINE: 10}
_DROP_PENALTY = {Priority.STAT: 10**12, Priority.URGENT: 10**11, Priority.ROUTINE: 10**10}


@dataclass(frozen=True)
class _Visit:
    """One pickup or drop-off of one order, at its arrival time."""

    location: int
    kind: StopKind
    order_id: str
    arrival: float
    service_exact_s: float


@dataclass
class _Queue:
    """A robot's sequential queue as it is built: where and when it will be free."""

    here: int  # row in the travel matrix
    clock: float  # absolute arrival time at `here` (service at `here` not yet added)
    service_s: int  # service at `here`, rounded up, still to be done before leaving
    visits: list[_Visit]
    cost: int = 0

    def leg(self, travel: Sequence[Sequence[int]], to: int) -> float:
        """Arrival at `to` if the robot goes there next (`math.inf` when unreachable)."""
        if math.isinf(self.clock):
            return math.inf
        seconds = travel[self.here][to]
        return math.inf if seconds >= UNREACHABLE else self.clock + self.service_s + seconds

    def go(
        self,
        travel: Sequence[Sequence[int]],
        to: int,
        kind: StopKind,
        order_id: str,
        service_exact_s: float,
    ) -> None:
        """Append the visit; an unreachable one (and all after it) arrives at infinity."""
        arrival = self.leg(travel, to)
        if not math.isinf(arrival):
            self.cost += self.service_s + travel[self.here][to]
        self.visits.append(_Visit(to, kind, order_id, arrival, service_exact_s))
        self.here, self.clock, self.service_s = to, arrival, seconds_up(service_exact_s)


def _start(problem: Problem) -> list[_Queue]:
    """Every robot's queue with its onboard deliveries, in the order given."""
    where = problem.location_index()
    queues: list[_Queue] = []
    for v, vehicle in enumerate(problem.vehicles):
        offset = min(HORIZON_S, max(0, seconds_up(vehicle.available_at - problem.now)))
        queue = _Queue(where[vehicle.start_node], problem.now + offset, 0, [])
        travel = problem.travel_s[problem.vehicle_class[v]]
        for order in vehicle.onboard:
            queue.go(
                travel,
                where[order.dropoff_node],
                StopKind.DROPOFF,
                order.order_id,
                order.dropoff_service_s,
            )
        queues.append(queue)
    return queues


def _finish_if_appended(
    problem: Problem, queue: _Queue, v: int, task: Task, where: dict[str, int]
) -> float:
    """When robot `v` would finish delivering `task` appended to its queue (inf: it cannot)."""
    travel = problem.travel_s[problem.vehicle_class[v]]
    pickup = queue.leg(travel, where[task.pickup_node])
    if math.isinf(pickup):
        return math.inf
    seconds = travel[where[task.pickup_node]][where[task.dropoff_node]]
    if seconds >= UNREACHABLE:
        return math.inf
    return pickup + seconds_up(task.pickup_service_s) + seconds


def _append(problem: Problem, queue: _Queue, v: int, task: Task, where: dict[str, int]) -> None:
    travel = problem.travel_s[problem.vehicle_class[v]]
    queue.go(travel, where[task.pickup_node], StopKind.PICKUP, task.order_id, task.pickup_service_s)
    queue.go(
        travel, where[task.dropoff_node], StopKind.DROPOFF, task.order_id, task.dropoff_service_s
    )


def greedy_earliest_finish(problem: Problem, time_limit_s: float = 0.0, seed: int = 0) -> Plan:
    """Open-RMF-style auction: each task, in creation order, to the robot finishing it first.

    Ties go to the robot listed first in the problem. See the module docstring.
    """
    del time_limit_s, seed  # nothing to search, nothing random
    where = problem.location_index()
    queues = _start(problem)
    unassigned: list[str] = []
    for k in sorted(range(len(problem.tasks)), key=lambda k: _creation_key(problem.tasks[k])):
        task = problem.tasks[k]
        best, best_finish = -1, math.inf
        for v in problem.allowed_vehicles[k]:
            finish = _finish_if_appended(problem, queues[v], v, task, where)
            if finish < best_finish:
                best, best_finish = v, finish
        if best < 0:
            unassigned.append(task.order_id)
        else:
            _append(problem, queues[best], best, task, where)
    return _plan(problem, queues, unassigned)


def nearest_idle(problem: Problem, time_limit_s: float = 0.0, seed: int = 0) -> Plan:
    """openTCS-style: each task, by priority then age, to the nearest idle allowed robot.

    A robot is idle when it has nothing on board or committed and is free now (a robot still
    finishing its last drop-off is not idle yet; the core re-plans when it is done). It takes one
    task. Ties go to the robot listed first. See the module docstring.
    """
    del time_limit_s, seed  # nothing to search, nothing random
    where = problem.location_index()
    queues = _start(problem)
    idle = {
        v
        for v, vehicle in enumerate(problem.vehicles)
        if not vehicle.onboard and vehicle.available_at <= problem.now
    }
    unassigned: list[str] = []
    order = sorted(
        range(len(problem.tasks)),
        key=lambda k: (problem.tasks[k].priority.rank, *_creation_key(problem.tasks[k])),
    )
    for k in order:
        task = problem.tasks[k]
        pickup = where[task.pickup_node]
        best, best_time = -1, math.inf
        for v in problem.allowed_vehicles[k]:
            if v not in idle:
                continue
            travel = problem.travel_s[problem.vehicle_class[v]]
            seconds = travel[queues[v].here][pickup]
            if seconds >= UNREACHABLE or travel[pickup][where[task.dropoff_node]] >= UNREACHABLE:
                continue
            if seconds < best_time:
                best, best_time = v, seconds
        if best < 0:
            unassigned.append(task.order_id)
        else:
            idle.discard(best)
            _append(problem, queues[best], best, task, where)
    return _plan(problem, queues, unassigned)


def _creation_key(task: Task) -> tuple[float, str]:
    return (task.created_at, task.order_id)


def _plan(problem: Problem, queues: list[_Queue], unassigned: list[str]) -> Plan:
    routes: dict[str, RoutePlan] = {}
    eta: dict[str, float] = {}
    cost = 0
    lateness = _lateness_weights(problem)
    for vehicle, queue in zip(problem.vehicles, queues, strict=True):
        stops = _merge(problem, queue.visits)
        routes[vehicle.robot_id] = RoutePlan(vehicle.robot_id, stops)
        for stop in stops:
            if stop.kind is StopKind.DROPOFF:
                for order_id in stop.order_ids:
                    eta[order_id] = stop.arrival
        cost += queue.cost
        for visit in queue.visits:
            if visit.kind is StopKind.DROPOFF and visit.order_id in lateness:
                needed_by, weight = lateness[visit.order_id]
                late = visit.arrival - problem.now - max(0, math.floor(needed_by - problem.now))
                if late > 0:
                    cost += weight * (HORIZON_S if math.isinf(late) else math.ceil(late))
    priority = {t.order_id: t.priority for t in problem.tasks}
    cost += sum(2 * _DROP_PENALTY[priority[order_id]] for order_id in unassigned)
    # Unassigned in the problem's task order, as the solver reports them.
    missing = set(unassigned)
    ordered = tuple(t.order_id for t in problem.tasks if t.order_id in missing)
    return Plan(routes, ordered, eta, cost)


def _lateness_weights(problem: Problem) -> dict[str, tuple[float, int]]:
    """Order id -> (needed_by, cost per second late) for every order with a needed-by time."""
    out: dict[str, tuple[float, int]] = {}
    for t in problem.tasks:
        if t.needed_by is not None:
            out[t.order_id] = (t.needed_by, _LATENESS_COST_PER_S[t.priority])
    for vehicle in problem.vehicles:
        for o in vehicle.onboard:
            if o.needed_by is not None:
                out[o.order_id] = (o.needed_by, _LATENESS_COST_PER_S[o.priority])
    return out


def _merge(problem: Problem, visits: list[_Visit]) -> tuple[Stop, ...]:
    """Consecutive visits of one kind to one node become one stop (as the solver merges)."""
    stops: list[Stop] = []
    service = 0.0  # the longest exact service of the last stop's orders
    for visit in visits:
        name = problem.locations[visit.location]
        last = stops[-1] if stops else None
        if last is not None and last.node == name and last.kind is visit.kind:
            service = max(service, visit.service_exact_s)
            stops[-1] = Stop(
                name,
                visit.kind,
                (*last.order_ids, visit.order_id),
                last.arrival,
                last.arrival + service,
            )
        else:
            service = visit.service_exact_s
            stops.append(
                Stop(name, visit.kind, (visit.order_id,), visit.arrival, visit.arrival + service)
            )
    return tuple(stops)


DISPATCHERS = {
    "greedy-earliest-finish": greedy_earliest_finish,
    "nearest-idle": nearest_idle,
}
"""Baseline name (as `fleet simulate --dispatcher` will spell it) -> dispatcher."""

__all__ = ["DISPATCHERS", "greedy_earliest_finish", "nearest_idle"]
