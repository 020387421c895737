"""Two speeds: a new order is answered at once by an insertion; the full plan follows.

The core is driven directly (no bus), so the order of events is exactly the one written here:
a snapshot, a new order while the "solve" runs, then the plan computed from that snapshot.
"""

from __future__ import annotations

import dataclasses

from fleet.building.model import Building
from fleet.dispatch.messages import Tick
from fleet.domain.order import OrderState
from fleet.domain.priority import Priority
from fleet.planning import StopKind, build_problem, solve
from tests.unit.twin_helpers import clean_robot, order, twin


def _pickups(stops: list[object], order_id: str) -> int:
    return sum(
        1
        for s in stops
        if getattr(s, "kind", None) is StopKind.PICKUP and order_id in getattr(s, "order_ids", ())
    )


def test_new_order_is_assigned_with_an_eta_before_any_solve(demo_building: Building) -> None:
    t = twin(demo_building, clean_robot("AMR-01"), clean_robot("AMR-02", "B1-CHARGER-2"))
    now = t.clock.now()
    created = t.core.handle(order("WH-PORT-1", "OR-03"))
    assert created is not None
    # The answer the nurse gets back already names a robot and an ETA.
    assert created.state is OrderState.ASSIGNED
    assert created.robot_id in ("AMR-01", "AMR-02")
    assert created.eta is not None and created.eta > now
    run = t.core.robots[created.robot_id]
    assert _pickups(list(run.future), created.id) == 1
    assert t.core.replan_requested  # the full re-optimization still follows
    # The robot starts no later than the next tick, even if no plan ever arrives.
    assert run.current_stop is None
    t.core.handle(Tick())
    assert run.current_stop is not None and created.id in run.current_stop.order_ids


def test_the_insertion_can_be_switched_off(demo_building: Building) -> None:
    t = twin(demo_building, clean_robot("AMR-01"))
    t.core.config = dataclasses.replace(t.core.config, insert_on_create=False)
    created = t.core.handle(order("WH-PORT-1", "OR-03"))
    assert created is not None and created.state is OrderState.PENDING
    assert created.eta is None


def test_order_placed_while_solving_survives_the_plan(demo_building: Building) -> None:
    t = twin(demo_building, clean_robot("AMR-01"), clean_robot("AMR-02", "B1-CHARGER-2"))
    first = t.core.handle(order("WH-PORT-1", "OR-03"))
    assert first is not None
    snap, epoch = t.core.snapshot()
    plan = solve(build_problem(snap, t.core.graph.travel_time), time_limit_s=1.0)
    # While the plan was being computed a STAT order arrived and got its first answer.
    late = t.core.handle(order("WH-PORT-2", "OR-05", priority=Priority.STAT))
    assert late is not None and late.state is OrderState.ASSIGNED
    assert late.id not in plan.assignment and late.id not in plan.unassigned

    assert t.core.apply_plan(plan, epoch)

    kept = t.core.orders[late.id]
    assert kept.state is OrderState.ASSIGNED, kept.history
    assert kept.eta is not None
    holder = t.core.robots[kept.robot_id or ""]
    in_route = holder.future + ([holder.current_stop] if holder.current_stop else [])
    assert _pickups(list(in_route), late.id) == 1
    # The plan's own order is where the plan put it.
    assert t.core.orders[first.id].robot_id == plan.assignment[first.id]
    # Nothing is lost: both orders are delivered.
    t.run_until(t.clock.now() + 3 * 3600, stop_when_done=True)
    assert t.core.orders[first.id].state is OrderState.DELIVERED
    assert t.core.orders[late.id].state is OrderState.DELIVERED


def test_plan_from_before_a_robot_moved_is_refused(demo_building: Building) -> None:
    t = twin(demo_building, clean_robot("AMR-01"))
    snap, epoch = t.core.snapshot()
    created = t.core.handle(order("WH-PORT-1", "OR-03"))
    assert created is not None
    t.core.handle(Tick())  # the robot starts on the insertion's answer: the fleet moved on
    plan = solve(build_problem(snap, t.core.graph.travel_time), time_limit_s=1.0)
    assert not t.core.apply_plan(plan, epoch)
    assert t.core.replan_requested
    assert t.core.orders[created.id].state is OrderState.ASSIGNED
