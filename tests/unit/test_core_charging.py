"""Battery and charging in the running dispatcher: charging planned into routes, STAT first."""

from __future__ import annotations

import dataclasses

from fleet.building.model import Building
from fleet.domain.order import OrderState
from fleet.domain.priority import Priority
from simulators.fast import CLEAN_CLASSES, FastTwin
from simulators.robot import RobotSpec
from tests.unit.twin_helpers import order, twin

RESERVE = 20.0


def _robot(battery: float, node: str = "B1-CHARGER-1") -> RobotSpec:
    return RobotSpec("AMR-01", CLEAN_CLASSES, node, battery_percent=battery)


def _battery_log(t: FastTwin) -> list[str]:
    return [e.what for e in t.world.events if e.what.startswith("charged to")]


def test_robot_that_would_fall_below_its_reserve_charges_first(demo_building: Building) -> None:
    # 21 %: a trip to an OR and back would take it below the 20 % reserve.
    t = twin(demo_building, _robot(21.0, "L1-STERILE-CORE"))
    created = t.handle(order("WH-PORT-1", "OR-03"))
    assert created is not None
    t.run_until(t.clock.now() + 3 * 3600, stop_when_done=True)
    done = t.core.orders[created.id]
    assert done.state is OrderState.DELIVERED, done.history
    kinds = [r.kind for r in t.core.step_log if r.robot_id == "AMR-01"]
    assert "CHARGE" in kinds
    # It charged before it picked the goods up, and never ran below its reserve.
    assert kinds.index("CHARGE") < kinds.index("PICKUP")
    robot = t.robots["AMR-01"]
    assert robot.battery >= RESERVE
    assert _battery_log(t)


def test_robot_below_its_reserve_goes_to_charge_by_itself(demo_building: Building) -> None:
    t = twin(demo_building, _robot(12.0, "L1-STERILE-CORE"))
    t.run_until(t.clock.now() + 3600)
    kinds = [r.kind for r in t.core.step_log if r.robot_id == "AMR-01"]
    assert "CHARGE" in kinds
    assert t.robots["AMR-01"].battery > 12.0


def test_idle_robot_tops_up_at_its_charger_and_leaves_for_work(demo_building: Building) -> None:
    t = twin(demo_building, _robot(60.0, "B1-CHARGER-1"))
    t.run_until(t.clock.now() + 300)
    assert t.core.robots["AMR-01"].topping_up
    created = t.handle(order("WH-PORT-1", "OR-03"))
    assert created is not None
    t.run_until(t.clock.now() + 1)
    assert "PREEMPT" in [r.kind for r in t.core.step_log if r.robot_id == "AMR-01"]
    t.run_until(t.clock.now() + 3600, stop_when_done=True)
    assert t.core.orders[created.id].state is OrderState.DELIVERED
    assert t.robots["AMR-01"].battery > 60.0 - 10.0


def test_stat_order_cuts_charging_short(demo_building: Building) -> None:
    t = twin(demo_building, _robot(12.0, "B1-CHARGER-1"))
    t.run_until(t.clock.now() + 600)  # charged what it needed, now topping up while idle
    run = t.core.robots["AMR-01"]
    assert run.in_flight is not None and run.in_flight[1].kind.value == "CHARGE"
    assert run.topping_up
    assert t.robots["AMR-01"].battery_now() > RESERVE + 5
    stat = t.handle(order("WH-PORT-1", "OR-03", priority=Priority.STAT))
    assert stat is not None
    t.run_until(t.clock.now() + 1)
    kinds = [r.kind for r in t.core.step_log if r.robot_id == "AMR-01"]
    assert "PREEMPT" in kinds
    t.run_until(t.clock.now() + 3600, stop_when_done=True)
    done = t.core.orders[stat.id]
    assert done.state is OrderState.DELIVERED
    assert done.delivered_at is not None and done.delivered_at - done.created_at < 900


def test_routine_order_waits_for_a_planned_charge(demo_building: Building) -> None:
    t = twin(demo_building, _robot(12.0, "B1-CHARGER-1"))
    t.run_until(t.clock.now() + 30)  # the charge the plan needs before any work
    run = t.core.robots["AMR-01"]
    assert run.in_flight is not None and run.in_flight[1].kind.value == "CHARGE"
    assert not run.topping_up
    routine = t.handle(order("WH-PORT-1", "OR-03"))
    assert routine is not None
    t.run_until(t.clock.now() + 1)
    kinds = [r.kind for r in t.core.step_log if r.robot_id == "AMR-01"]
    assert "PREEMPT" not in kinds
    t.run_until(t.clock.now() + 3 * 3600, stop_when_done=True)
    assert t.core.orders[routine.id].state is OrderState.DELIVERED


def test_battery_model_can_be_switched_off(demo_building: Building) -> None:
    t = twin(demo_building, _robot(12.0, "L1-STERILE-CORE"))
    t.core.config = dataclasses.replace(t.core.config, battery_drain_pct_per_s=0.0)
    created = t.handle(order("WH-PORT-1", "OR-03"))
    assert created is not None
    t.run_until(t.clock.now() + 3600, stop_when_done=True)
    kinds = [r.kind for r in t.core.step_log if r.robot_id == "AMR-01"]
    assert t.core.orders[created.id].state is OrderState.DELIVERED
    assert kinds.count("CHARGE") <= 1  # at most the charge planned before the switch
