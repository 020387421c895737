"""The dispatcher core driving simulated robots, doors and lifts under a virtual clock."""

from __future__ import annotations

import pytest

from fleet.building.model import Building
from fleet.dispatch.messages import CancelOrder
from fleet.domain.cargo import CargoClass
from fleet.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from fleet.domain.order import OrderState
from fleet.domain.priority import Priority
from tests.unit.twin_helpers import clean_robot, dirty_robot, order, twin


def _kinds(records: list[str], wanted: set[str]) -> list[str]:
    return [r for r in records if r in wanted]


def test_warehouse_to_or_crosses_doors_and_rides_a_lift(demo_building: Building) -> None:
    t = twin(demo_building, clean_robot("AMR-01"))
    created = t.handle(order("WH-PORT-1", "OR-03"))
    assert created is not None
    t.run_until(t.clock.now() + 3600, stop_when_done=True)

    done = t.core.orders[created.id]
    assert done.state is OrderState.DELIVERED
    assert done.robot_id == "AMR-01"
    assert [e.state for e in done.history] == [
        OrderState.PENDING,
        OrderState.ASSIGNED,
        OrderState.PICKED_UP,
        OrderState.DELIVERED,
    ]
    kinds = [r.kind for r in t.core.step_log if r.robot_id == "AMR-01"]
    # The lift ride, in the dispatcher's own record.
    lift = _kinds(kinds, {"LIFT_CALL", "LIFT_ENTER", "LIFT_RIDE", "LIFT_EXIT", "LIFT_RELEASE"})
    assert lift[:5] == ["LIFT_CALL", "LIFT_ENTER", "LIFT_RIDE", "LIFT_EXIT", "LIFT_RELEASE"]
    # Every door: opened, passed, closed, in that order and never interleaved.
    log = [r for r in t.core.step_log if r.robot_id == "AMR-01"]
    door_steps = [
        (r.kind, r.what)
        for r in log
        if r.kind in ("DOOR_OPEN", "DOOR_CLOSE") or (r.kind == "MOVE" and "door" in r.what)
    ]
    assert door_steps, "the route to an OR must cross an access-controlled door"
    for i in range(0, len(door_steps), 3):
        (k1, _), (k2, w2), (k3, _) = door_steps[i : i + 3]
        assert (k1, k2, k3) == ("DOOR_OPEN", "MOVE", "DOOR_CLOSE")
        assert "through door" in w2
    # The physical world agrees: the door was open when the robot drove through it.
    assert t.world.violations == []
    assert t.world.conflicts == 0
    assert t.world.lift_rides >= 1
    assert t.world.door_passes >= 1
    events = [(e.actor, e.what) for e in t.world.events]
    first_pass = next(i for i, (a, w) in enumerate(events) if w.startswith("pass door"))
    door = events[first_pass][1].removeprefix("pass door ")
    opened = max(i for i, e in enumerate(events[:first_pass]) if e == (door, "open"))
    closed = next(i for i, e in enumerate(events) if i > first_pass and e == (door, "closed"))
    assert opened < first_pass < closed


def test_eta_is_given_at_assignment_and_is_truthful(demo_building: Building) -> None:
    t = twin(demo_building, clean_robot("AMR-01"))
    created = t.handle(order("WH-PORT-1", "OR-05"))
    assert created is not None
    t.run_until(t.clock.now() + 0.001)
    assigned = t.core.orders[created.id]
    assert assigned.state is OrderState.ASSIGNED
    assert assigned.eta is not None
    eta = assigned.eta
    t.run_until(t.clock.now() + 3600, stop_when_done=True)
    delivered_at = t.core.orders[created.id].delivered_at
    assert delivered_at is not None
    # The estimate uses the map's expected lift wait; reality may differ by a few minutes.
    assert abs(delivered_at - eta) < 300


def test_waste_goes_only_on_waste_robots_and_dirty_lift(demo_building: Building) -> None:
    t = twin(demo_building, clean_robot("AMR-01"), dirty_robot("WST-01"))
    created = t.handle(order("SOILED-UTIL-1", "WASTE-STATION", CargoClass.WASTE))
    assert created is not None
    t.run_until(t.clock.now() + 3600, stop_when_done=True)
    done = t.core.orders[created.id]
    assert done.state is OrderState.DELIVERED
    assert done.robot_id == "WST-01"
    rides = [r.what for r in t.core.step_log if r.kind == "LIFT_RIDE"]
    assert rides and all("LIFT-DIRTY" in w for w in rides)


def test_bad_orders_are_rejected_naming_the_field_and_change_nothing(
    demo_building: Building,
) -> None:
    t = twin(demo_building, clean_robot("AMR-01"))
    cases = [
        (order(pickup=""), "pickup_station"),
        (order(pickup="NOWHERE"), "pickup_station"),
        (order(dropoff="OR-99"), "dropoff_station"),
        (order(dropoff="WH-PORT-1"), "dropoff_station"),
        (order(cargo=None), "cargo_class"),
        (order(quantity=0), "quantity"),
        (order(quantity=-3), "quantity"),
        (order(needed_by=t.clock.now() - 60), "needed_by"),
        # No dirty-flow route reaches an OR: waste cannot be sent there.
        (order("SOILED-UTIL-1", "OR-01", CargoClass.WASTE), "dropoff_station"),
    ]
    for cmd, field in cases:
        with pytest.raises(InvalidArgument) as err:
            t.handle(cmd)
        assert err.value.field == field
    assert t.core.orders == {}
    assert t.store.list_orders() == []


def test_cancel_pending_then_cancel_again_and_cancel_delivered(demo_building: Building) -> None:
    t = twin(demo_building)  # no robots: the order stays pending
    created = t.handle(order())
    assert created is not None
    cancelled = t.handle(CancelOrder(created.id, "not needed"))
    assert cancelled is not None and cancelled.state is OrderState.CANCELLED
    with pytest.raises(FailedPrecondition):
        t.handle(CancelOrder(created.id))
    with pytest.raises(NotFound):
        t.handle(CancelOrder("ORD-999999"))

    t2 = twin(demo_building, clean_robot("AMR-01"))
    delivered = t2.handle(order())
    assert delivered is not None
    t2.run_until(t2.clock.now() + 3600, stop_when_done=True)
    with pytest.raises(FailedPrecondition):
        t2.handle(CancelOrder(delivered.id))


def test_stat_order_is_served_before_routine_ones(demo_building: Building) -> None:
    t = twin(demo_building, clean_robot("AMR-01"))
    now = t.clock.now()
    routine = [t.handle(order("WH-PORT-1", f"OR-0{i}", needed_by=now + 7200)) for i in (1, 2, 4)]
    stat = t.handle(order("WH-PORT-2", "OR-08", priority=Priority.STAT, needed_by=now + 900))
    assert stat is not None and all(r is not None for r in routine)
    t.run_until(now + 4 * 3600, stop_when_done=True)
    stat_done = t.core.orders[stat.id].delivered_at
    assert stat_done is not None and stat_done <= now + 900
    assert t.core.orders[stat.id].on_time


def test_offline_robot_loses_unpicked_work_to_another_robot(demo_building: Building) -> None:
    t = twin(demo_building, clean_robot("AMR-01", "B1-CHARGER-1"))
    created = t.handle(order("WH-PORT-1", "OR-02"))
    assert created is not None
    t.run_until(t.clock.now() + 5)
    assert t.core.orders[created.id].robot_id == "AMR-01"
    # The robot's radio dies before it reaches the warehouse port.
    t.robots["AMR-01"].disconnect()
    t.run_until(t.clock.now() + t.core.config.offline_timeout_s + 2 * 5.0)
    assert t.core.robots["AMR-01"].robot.mode.value == "OFFLINE"
    back = t.core.orders[created.id]
    assert back.state is OrderState.PENDING
    assert "offline" in back.history[-1].detail
    # A second robot joins and takes the order over.
    from simulators.robot import SimRobot

    spec = clean_robot("AMR-02", "B1-CHARGER-2")
    t._add_robot(spec)
    robot: SimRobot = t.robots["AMR-02"]
    robot.connect()
    t.run_until(t.clock.now() + 3600, stop_when_done=True)
    done = t.core.orders[created.id]
    assert done.state is OrderState.DELIVERED and done.robot_id == "AMR-02"


def test_offline_robot_with_cargo_on_board_fails_the_order_with_a_reason(
    demo_building: Building,
) -> None:
    t = twin(demo_building, clean_robot("AMR-01"))
    created = t.handle(order("WH-PORT-1", "WARD-B"))
    assert created is not None
    while t.core.orders[created.id].state is not OrderState.PICKED_UP:
        t.run_until(t.clock.now() + 5)
    t.robots["AMR-01"].disconnect()
    t.run_until(t.clock.now() + 60)
    failed = t.core.orders[created.id]
    assert failed.state is OrderState.FAILED
    assert "offline" in failed.failure_reason and "on board" in failed.failure_reason
    # Whatever it held is given back: no door or lift stays reserved for a dead robot.
    assert not [r for r in t.core.traffic.held_by("AMR-01") if not r.startswith("node:")]


def test_unknown_order_id_is_not_found(demo_building: Building) -> None:
    t = twin(demo_building)
    with pytest.raises(NotFound):
        t.core.get_order("ORD-000123")
    with pytest.raises(InvalidArgument):
        t.core.get_order("")


def test_finished_orders_leave_memory_but_stay_readable(demo_building: Building) -> None:
    from fleet.dispatch.core import CoreConfig
    from simulators.fast import FastTwin

    t = FastTwin(
        demo_building, [clean_robot("AMR-01")], config=CoreConfig(finished_retention_s=60.0)
    )
    t.start()
    created = t.handle(order("WH-PORT-1", "OR-01"))
    assert created is not None
    t.run_until(t.clock.now() + 3600, stop_when_done=True)
    assert t.core.orders[created.id].state is OrderState.DELIVERED
    t.run_until(t.clock.now() + 120)
    assert created.id not in t.core.orders
    again = t.core.get_order(created.id)  # from the store
    assert again.state is OrderState.DELIVERED and again.history[-1].state is OrderState.DELIVERED
