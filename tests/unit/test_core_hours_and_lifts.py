"""The core plans with station opening hours and with the lift waits it has observed."""

from __future__ import annotations

import dataclasses

from fleet.building.hours import OpeningHours
from fleet.building.model import Building
from fleet.domain.order import OrderState
from simulators.fast import SIM_EPOCH
from tests.unit.twin_helpers import clean_robot, order, twin

HOUR = 3600.0


def _with_hours(building: Building, station: str, hours: OpeningHours) -> Building:
    stations = dict(building.stations)
    stations[station] = dataclasses.replace(stations[station], opening_hours=hours)
    return dataclasses.replace(building, stations=stations)


def test_order_to_a_closed_station_waits_until_it_opens(demo_building: Building) -> None:
    # The twin's day starts on a Monday at 07:00 UTC; the ward opens at 08:00.
    ward = _with_hours(demo_building, "WARD-B", OpeningHours.daily([(8 * HOUR, 20 * HOUR)]))
    t = twin(ward, clean_robot("AMR-01"))
    assert t.clock.now() < SIM_EPOCH + HOUR
    created = t.handle(order("WH-PORT-1", "WARD-B"))
    assert created is not None
    # No first answer: nobody is sent to a closed station to wait there.
    assert created.state is OrderState.PENDING
    t.run_until(SIM_EPOCH + 0.5 * HOUR)
    assert t.core.orders[created.id].state is OrderState.PENDING
    snap, _ = t.core.snapshot()
    assert created.id not in {task.order_id for task in snap.tasks}

    t.run_until(SIM_EPOCH + 3 * HOUR, stop_when_done=True)
    done = t.core.orders[created.id]
    assert done.state is OrderState.DELIVERED
    assert done.picked_up_at is not None and done.picked_up_at >= SIM_EPOCH + HOUR


def test_order_that_cannot_reach_a_station_before_it_closes_stays_pending(
    demo_building: Building,
) -> None:
    # The OR's store closes at 07:02, too soon for any robot to get there from the basement.
    closing = _with_hours(demo_building, "OR-03", OpeningHours.daily([(6 * HOUR, 7 * HOUR + 120)]))
    t = twin(closing, clean_robot("AMR-01"))
    created = t.handle(order("WH-PORT-1", "OR-03"))
    assert created is not None and created.state is OrderState.PENDING
    t.run_until(t.clock.now() + 60)
    assert t.core.orders[created.id].state is OrderState.PENDING
    assert not t.core.robots["AMR-01"].future


def test_lift_waits_are_learned_and_planned_with(demo_building: Building) -> None:
    t = twin(demo_building, clean_robot("AMR-01"))
    for _ in range(4):  # one at a time, so that every trip rides the lift
        t.handle(order("WH-PORT-1", "OR-03"))
        t.run_until(t.clock.now() + HOUR, stop_when_done=True)
        t.handle(order("OR-04", "WH-PORT-2"))
        t.run_until(t.clock.now() + HOUR, stop_when_done=True)
    assert all(o.state is OrderState.DELIVERED for o in t.core.orders.values())
    rides = [r for r in t.core.step_log if r.kind == "LIFT_CALL"]
    assert rides, "deliveries between the basement and the OR floor ride a lift"
    counted = sum(t.core.lift_waits.observations(name) for name in demo_building.lifts)
    assert counted == len(rides)
    for name in demo_building.lifts:
        # What the graph plans with is what the traffic layer learned (or the map's prior).
        assert t.core.graph.lift_waits[name] == t.core.lift_waits.estimate(name)
    learned = [name for name in demo_building.lifts if t.core.lift_waits.learned(name)]
    assert learned, counted
    # The twin's cars answer faster or slower than the map's guess: the travel times moved.
    assert any(
        t.core.lift_waits.estimate(n) != demo_building.lifts[n].expected_wait_s for n in learned
    )
