"""Late commitment: ROUTINE orders with time to spare wait, so later orders can share the trip."""

from __future__ import annotations

from fleet.building.model import Building
from fleet.domain.order import OrderState
from fleet.domain.priority import Priority
from fleet.planning.deferral import deferred_pickup
from simulators.fast import FastTwin, twin_config
from tests.unit.twin_helpers import clean_robot, order

MARGIN = 45 * 60.0


def test_only_routine_orders_with_slack_are_held() -> None:
    def held(priority: Priority, needed_by: float | None, margin: float | None = MARGIN) -> bool:
        return (
            deferred_pickup(
                priority=priority, needed_by=needed_by, now=0.0, direct_s=300.0, margin_s=margin
            )
            is not None
        )

    assert deferred_pickup(
        priority=Priority.ROUTINE, needed_by=7200.0, now=0.0, direct_s=300.0, margin_s=MARGIN
    ) == (7200.0 - MARGIN - 300.0)
    assert not held(Priority.STAT, 7200.0)
    assert not held(Priority.URGENT, 7200.0)
    assert not held(Priority.ROUTINE, None)
    assert not held(Priority.ROUTINE, 7200.0, margin=None)
    assert not held(Priority.ROUTINE, 7200.0, margin=0.0)
    assert not held(Priority.ROUTINE, MARGIN + 300.0)  # no time to spare: go now
    assert held(Priority.ROUTINE, MARGIN + 301.0)


def _twin(building: Building) -> FastTwin:
    t = FastTwin(building, [clean_robot("AMR-01")], config=twin_config("optimizer", MARGIN))
    t.start()
    t.run_until(t.clock.now() + 1)
    return t


def _pickups(t: FastTwin) -> list[tuple[float, tuple[str, ...]]]:
    return [(r.at, r.order_ids) for r in t.core.step_log if r.kind == "PICKUP"]


def test_a_routine_order_needed_later_is_picked_up_late_and_delivered_on_time(
    demo_building: Building,
) -> None:
    t = _twin(demo_building)
    now = t.clock.now()
    needed_by = now + 3 * 3600
    created = t.handle(order("WH-PORT-1", "OR-03", needed_by=needed_by))
    # Scheduled: no robot yet (it is chosen shortly before the pickup), but an ETA at once,
    # the deferral margin before it is needed.
    assert created is not None and created.state is OrderState.PENDING
    assert created.eta == needed_by - MARGIN
    earliest = t.core._deferred(created, now)
    assert earliest is not None and now + 3600 < earliest < needed_by - MARGIN
    t.run_until(earliest - t.core.config.defer_lookahead_s - 60)
    assert t.core.orders[created.id].state is OrderState.PENDING
    t.run_until(earliest - 60)
    assert t.core.orders[created.id].state is OrderState.ASSIGNED  # planned, robot held
    assert not _pickups(t)
    t.run_until(now + 4 * 3600, stop_when_done=True)
    done = t.core.orders[created.id]
    assert done.state is OrderState.DELIVERED
    assert done.delivered_at is not None and done.delivered_at <= needed_by
    (picked_at, _), *_ = _pickups(t)
    assert picked_at >= earliest


def test_a_held_robot_takes_a_stat_order_at_once(demo_building: Building) -> None:
    t = _twin(demo_building)
    now = t.clock.now()
    routine = t.handle(order("WH-PORT-1", "OR-03", needed_by=now + 3 * 3600))
    t.run_until(now + 600)
    stat = t.handle(order("WH-PORT-1", "OR-05", priority=Priority.STAT))
    assert routine is not None and stat is not None
    t.run_until(now + 5 * 3600, stop_when_done=True)
    s, r = t.core.orders[stat.id], t.core.orders[routine.id]
    assert s.state is OrderState.DELIVERED and r.state is OrderState.DELIVERED
    assert s.delivered_at is not None and s.delivered_at - s.created_at < 900
    assert r.delivered_at is not None and r.needed_by is not None
    assert r.delivered_at <= r.needed_by


def test_orders_placed_apart_share_one_trip(demo_building: Building) -> None:
    t = _twin(demo_building)
    now = t.clock.now()
    first = t.handle(order("WH-PORT-1", "OR-03", needed_by=now + 3 * 3600))
    t.run_until(now + 1200)
    second = t.handle(order("WH-PORT-1", "OR-04", needed_by=now + 3 * 3600 + 300))
    assert first is not None and second is not None
    t.run_until(now + 5 * 3600, stop_when_done=True)
    for o in (first, second):
        assert t.core.orders[o.id].state is OrderState.DELIVERED
    # One trip: both on board before the first drop-off. Without late commitment the robot
    # would have left with the first long before the second was ordered.
    log = [(r.kind, set(r.order_ids)) for r in t.core.step_log if r.kind in ("PICKUP", "DROPOFF")]
    first_drop = [kind for kind, _ in log].index("DROPOFF")
    loaded = set().union(*(ids for kind, ids in log[:first_drop] if kind == "PICKUP"))
    assert loaded == {first.id, second.id}


def test_without_late_commitment_the_robot_leaves_at_once(demo_building: Building) -> None:
    t = FastTwin(demo_building, [clean_robot("AMR-01")], config=twin_config("optimizer", None))
    t.start()
    t.run_until(t.clock.now() + 1)
    now = t.clock.now()
    created = t.handle(order("WH-PORT-1", "OR-03", needed_by=now + 3 * 3600))
    assert created is not None
    t.run_until(now + 1800)
    assert [ids for _, ids in _pickups(t)] == [(created.id,)]
