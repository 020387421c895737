"""Lift, door and traffic faults in the digital twin, one scenario each (issue 4).

Every scenario runs the real dispatcher core against simulated robots, lift and door controllers
speaking fleet.v1, on the Traffic Test Block (tests/data/maps/traffic_block.yaml): two lifts side
by side, an operating room behind one door, a one-robot corridor with narrow doorways at both
ends. Each ends with the world's own count of conflicts and safety violations at zero.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from fleet.building.loader import load_building
from fleet.building.model import Building
from fleet.dispatch import messages as m
from fleet.dispatch.core import CoreConfig
from fleet.domain.cargo import CargoClass
from fleet.domain.errors import InvalidArgument
from fleet.domain.order import OrderState
from fleet.planning.solver import solve
from fleet.traffic.lift_sessions import SessionState
from fleet.v1 import infrastructure_pb2 as ipb
from simulators.fast import CLEAN_CLASSES, FastTwin
from simulators.robot import RobotSpec

MAP = Path(__file__).parents[1] / "data" / "maps" / "traffic_block.yaml"
HOUR = 3600.0


@pytest.fixture(scope="module")
def block() -> Building:
    return load_building(MAP)


def make_twin(building: Building, *robots: tuple[str, str], **config: float) -> FastTwin:
    """A started twin with clean robots (id, start node); no battery model."""
    cfg = CoreConfig(finished_retention_s=None, battery_drain_pct_per_s=0.0, **config)  # type: ignore[arg-type]
    t = FastTwin(
        building,
        # One order per trip, so that several robots are on the move at once.
        [RobotSpec(rid, CLEAN_CLASSES, node, capacity_slots=1) for rid, node in robots],
        record_events=True,
        config=cfg,
        solver=functools.partial(solve, time_limit_s=1.0, seed=1),
    )
    t.start()
    t.run_until(t.clock.now() + 1)
    return t


def place(t: FastTwin, pickup: str, dropoff: str) -> str:
    created = t.handle(m.CreateOrder(pickup, dropoff, CargoClass.STERILE, 1))
    assert created is not None
    return created.id


def run_until(t: FastTwin, seconds: float, stop: Callable[[], bool]) -> None:
    t.run_until(t.clock.now() + seconds, stop=stop)
    assert stop(), "the situation the scenario needs never came about"


def sound(t: FastTwin) -> None:
    """What an observer in the corridors must never see, and the dispatcher's own books."""
    assert t.world.violations == []
    assert t.world.conflicts == 0
    assert t.core.traffic.over_capacity() == []
    assert t.core.session_errors == []
    assert t.core.deadlocks_unresolved == 0


def entered(t: FastTwin, robot: str, after: float = 0.0) -> list[str]:
    """The lifts `robot` drove into, in order."""
    return [
        e.what.split()[2]
        for e in t.world.events
        if e.actor == robot and e.what.startswith("enter lift") and e.at >= after
    ]


def alerts(t: FastTwin, code: str) -> list[m.Alert]:
    return [a for a in t.core.alerts if a.code == code]


def waiting_for_lift(t: FastTwin, lift: str) -> list[str]:
    """Robots waiting for (not riding in) the car."""
    return sorted(
        rid
        for rid, run in t.core.robots.items()
        if run.waiting is not None and run.waiting.resource == f"lift:{lift}" and not run.in_lift
    )


def test_lift_out_of_service_with_robots_queued(block: Building) -> None:
    t = make_twin(block, ("R1", "L1-PARK-1"), ("R2", "L1-PARK-2"), ("R3", "L1-PARK-3"))
    ids = [place(t, "DOCK", "WARD") for _ in range(3)]
    # The car the robots use: break it while one of them waits for it.
    run_until(t, HOUR, lambda: any(waiting_for_lift(t, lift) for lift in ("LIFT-A", "LIFT-B")))
    broken = next(lift for lift in ("LIFT-A", "LIFT-B") if waiting_for_lift(t, lift))
    other = {"LIFT-A": "LIFT-B", "LIFT-B": "LIFT-A"}[broken]
    queued = waiting_for_lift(t, broken)
    broke_at = t.clock.now()
    t.lifts.set_mode(broken, ipb.LIFT_MODE_OUT_OF_SERVICE, "door sensor replaced")

    t.run_until(t.clock.now() + 2 * HOUR, stop_when_done=True)

    assert [t.core.orders[i].state for i in ids] == [OrderState.DELIVERED] * 3
    # Nobody drove into the broken car after it broke; the queued robots took the other one.
    assert [r for r in ("R1", "R2", "R3") if broken in entered(t, r, after=broke_at)] == []
    for rid in queued:
        assert other in entered(t, rid, after=broke_at)
    # They were told why: the alert names the lift, the reason and the robots it held up, and
    # each queued robot's re-route says what closed.
    (alert,) = alerts(t, "LIFT_OUT_OF_SERVICE")
    assert alert.subject == broken and "door sensor replaced" in alert.message
    assert set(queued) <= set(alert.robots)
    for rid in queued:
        reroutes = [r for r in t.core.step_log if r.kind == "REROUTE" and r.robot_id == rid]
        assert reroutes and broken in reroutes[0].what and "out of service" in reroutes[0].what
    sound(t)


def test_fire_recall_with_a_robot_in_the_car(block: Building) -> None:
    t = make_twin(block, ("R1", "L1-PARK-1"))
    oid = place(t, "DOCK", "WARD")
    run_until(
        t, HOUR, lambda: t.core.robots["R1"].in_lift != "" and t.robots["R1"].lift is not None
    )
    car = t.core.robots["R1"].in_lift
    run_until(t, 120, lambda: t.lifts.cars[car].door == ipb.LIFT_DOOR_MOVING)
    alarm_at = t.clock.now()
    t.doors.fire_alarm(True, "smoke detector L2 east")
    t.lifts.fire_alarm(True)
    t.run_until(t.clock.now() + 20 * 60)

    # The car went back to its recall level and let the robot out there; with every car recalled
    # it has no way up, so it waits where it is and the operations centre is told.
    run = t.core.robots["R1"]
    assert t.robots["R1"].lift is None
    assert block.level_of(t.robots["R1"].node) == "L1"
    assert t.core.orders[oid].state is OrderState.PICKED_UP
    assert run.waiting is not None and run.waiting.kind == "blocked"
    assert alerts(t, "FIRE_ALARM") and alerts(t, "ROBOT_BLOCKED")
    exits = [e for e in t.world.events if e.actor == "R1" and e.what.startswith("exit lift")]
    assert exits and exits[-1].what.endswith("at L1") and exits[-1].at > alarm_at
    (session,) = [s for s in t.core.lift_sessions.sessions() if s.exit_level == "L1"]
    assert session.state is SessionState.RELEASED and session.robot == "R1"

    cleared_at = t.clock.now()
    t.lifts.fire_alarm(False)
    t.doors.fire_alarm(False)
    t.run_until(t.clock.now() + HOUR, stop_when_done=True)

    order = t.core.orders[oid]
    assert order.state is OrderState.DELIVERED and (order.delivered_at or 0) > cleared_at
    active = {a.code for a in t.core.active_alerts()}
    assert not active & {"FIRE_ALARM", "ROBOT_BLOCKED", "LIFT_FIRE_RECALL"}
    sound(t)


def test_door_stuck_closed_on_the_only_route(block: Building) -> None:
    t = make_twin(block, ("R1", "L1-PARK-1"))
    oid = place(t, "DOCK", "OR-1")
    run_until(t, HOUR, lambda: t.core.orders[oid].state is OrderState.PICKED_UP)
    t.doors.set_fault("D-OR", ipb.DOOR_MODE_FAULT, "motor fault")
    t.run_until(t.clock.now() + 30 * 60)

    # Paused short of the door, with an alert naming the door and the robot.
    run = t.core.robots["R1"]
    assert t.core.orders[oid].state is OrderState.PICKED_UP
    assert run.waiting is not None and run.waiting.kind == "blocked"
    assert "D-OR" in run.waiting.resource
    (blocked,) = alerts(t, "ROBOT_BLOCKED")
    assert blocked.robots == ("R1",) and "D-OR" in blocked.message
    assert alerts(t, "DOOR_FAULT")[0].subject == "D-OR"
    assert not any(e.what == "pass door D-OR" for e in t.world.events)

    reopened_at = t.clock.now()
    t.doors.clear_fault("D-OR")
    t.run_until(t.clock.now() + HOUR, stop_when_done=True)

    order = t.core.orders[oid]
    assert order.state is OrderState.DELIVERED and (order.delivered_at or 0) > reopened_at
    assert not {a.code for a in t.core.active_alerts()} & {"ROBOT_BLOCKED", "DOOR_FAULT"}
    sound(t)


def test_a_lift_lease_that_expires_frees_the_car(block: Building) -> None:
    # A dispatcher that died left both cars serving its sessions; they were never released.
    t = make_twin(block, ("R1", "L1-PARK-1"), lift_lease_s=20.0)
    for lift in ("LIFT-A", "LIFT-B"):
        t.lifts.receive(
            ipb.InfrastructureCommand(
                lift=ipb.LiftRequest(
                    lift_id=lift,
                    session_id=f"dead-dispatcher/{lift}",
                    robot_id="GONE",
                    action=ipb.LIFT_ACTION_CALL,
                    level="L2",
                    lease_s=240.0,
                )
            )
        )
    started = t.clock.now()
    oid = place(t, "DOCK", "WARD")
    t.run_until(t.clock.now() + 2 * HOUR, stop_when_done=True)

    assert t.core.orders[oid].state is OrderState.DELIVERED
    first_entry = min(
        e.at for e in t.world.events if e.actor == "R1" and e.what.startswith("enter lift")
    )
    assert (
        first_entry >= started + 240
    )  # the stale sessions held the cars until their leases ran out
    # Our own sessions, on a 20 s lease, were renewed through a ride longer than that and never
    # expired.
    ours = [s for s in t.core.lift_sessions.sessions() if s.robot == "R1"]
    assert ours and all(s.state is not SessionState.EXPIRED for s in ours)
    renewals = [r for r in t.lifts.requests if r[2] == "LIFT_ACTION_RENEW"]
    assert renewals
    sound(t)


def test_robot_offline_inside_a_lift_lobby(block: Building) -> None:
    t = make_twin(block, ("R1", "L1-PARK-1"), ("R2", "L1-PARK-3"))
    first = place(t, "DOCK", "WARD")
    lobbies = {"L2-LA": "LIFT-A", "L2-LB": "LIFT-B"}
    sim = t.robots["R1"]
    # R1 rides up and dies in the lobby it came out into.
    run_until(t, HOUR, lambda: sim.node in lobbies and sim.lift is None and sim._step is None)
    dead_lobby = sim.node
    sim.disconnect()
    died = t.clock.now()
    second = place(t, "DOCK", "WARD")
    t.run_until(t.clock.now() + 2 * HOUR, stop_when_done=True)

    assert t.core.orders[second].state is OrderState.DELIVERED
    assert t.core.orders[first].state is OrderState.FAILED
    assert "offline" in t.core.orders[first].failure_reason
    # R2 went up the other lift: the dead robot stands in front of the first one's door.
    assert entered(t, "R2", after=died) == [
        {"LIFT-A": "LIFT-B", "LIFT-B": "LIFT-A"}[lobbies[dead_lobby]]
    ]
    (blocking,) = alerts(t, "ROBOT_BLOCKING")
    assert blocking.subject == "R1" and dead_lobby in blocking.message
    # No car is held for a robot that is gone.
    assert all(not s.live for s in t.core.lift_sessions.sessions() if s.robot == "R1")
    assert all(not h for h in (t.core.traffic.holders(f"lift:{x}") for x in lobbies.values()))
    sound(t)


def test_robot_offline_as_the_car_is_sent_for_it_keeps_the_car_closed(block: Building) -> None:
    # R1 goes silent in the lobby just as it is told to drive into the car: it may be in the
    # car or not, so the car stays held for it and routes avoid that lift.
    t = make_twin(block, ("R1", "L1-PARK-1"), ("R2", "L1-PARK-3"))
    place(t, "DOCK", "WARD")
    sim = t.robots["R1"]
    run_until(
        t, HOUR, lambda: sim.node in ("L1-LA", "L1-LB") and sim.lift is None and sim._step is None
    )
    lift = {"L1-LA": "LIFT-A", "L1-LB": "LIFT-B"}[sim.node]
    sim.disconnect()
    died = t.clock.now()
    second = place(t, "DOCK", "WARD")
    t.run_until(t.clock.now() + 2 * HOUR, stop_when_done=True)

    assert t.core.orders[second].state is OrderState.DELIVERED
    assert lift not in entered(t, "R2", after=died)
    assert t.core.traffic.holders(f"lift:{lift}") == ("R1",)
    sound(t)


def test_head_on_in_a_one_robot_corridor(block: Building) -> None:
    # Each robot stands in the narrow doorway at one end of the corridor; each must cross it.
    t = make_twin(block, ("WEST", "L1-W-END"), ("EAST", "L1-E-END"))
    to_east = place(t, "DOCK", "EAST-STORE")
    to_west = place(t, "EAST-STORE", "DOCK")
    t.run_until(t.clock.now() + 2 * HOUR, stop_when_done=True)

    assert t.core.orders[to_east].state is OrderState.DELIVERED
    assert t.core.orders[to_west].state is OrderState.DELIVERED
    assert t.core.deadlocks_resolved >= 1
    backs = [r for r in t.core.step_log if r.kind == "BACK_OFF"]
    assert backs and "deadlock" in backs[0].what
    sound(t)


def test_operator_pauses_and_resumes_robots_and_closes_and_reopens_the_way(
    block: Building,
) -> None:
    t = make_twin(block, ("R1", "L1-PARK-1"), ("R2", "L1-PARK-3"))
    carried = place(t, "DOCK", "WARD")
    run_until(t, HOUR, lambda: t.core.orders[carried].state is OrderState.PICKED_UP)
    carrier = t.core.orders[carried].robot_id or ""
    other = "R2" if carrier == "R1" else "R1"

    # Pause the robot with goods on board: it stops and keeps them; nothing else moves it.
    t.handle(m.OperatorCommand(m.OperatorAction.PAUSE_ROBOT, carrier, "spill in corridor", "ops"))
    node, metres = t.robots[carrier].node, t.world.distance_m
    t.run_until(t.clock.now() + 600)
    assert t.core.orders[carried].state is OrderState.PICKED_UP
    assert t.robots[carrier].node == node and t.world.distance_m <= metres + 30
    (paused,) = alerts(t, "ROBOT_PAUSED")
    assert paused.robots == (carrier,) and "spill in corridor" in paused.message
    # Pause every robot: a new order waits, and nobody is given it until the fleet resumes.
    t.handle(m.OperatorCommand(m.OperatorAction.PAUSE_ROBOT, "", "fire drill", "ops"))
    waiting = place(t, "DOCK", "WARD")
    t.run_until(t.clock.now() + 300)
    assert t.core.orders[waiting].state is OrderState.PENDING
    t.handle(m.OperatorCommand(m.OperatorAction.RESUME_ROBOT, "", "", "ops"))
    t.run_until(t.clock.now() + HOUR, stop_when_done=True)
    assert t.core.orders[carried].state is OrderState.DELIVERED
    assert t.core.orders[waiting].state is OrderState.DELIVERED

    # Close the only lane from the dock to the lifts (and one lift) once the next delivery is on
    # board: its robot waits, blocked, with an alert; an order placed meanwhile waits PENDING.
    # Reopening the lane lets both through, by the lift still open.
    third = place(t, "DOCK", "WARD")
    run_until(t, HOUR, lambda: t.core.orders[third].state is OrderState.PICKED_UP)
    closed_at = t.clock.now()
    t.handle(m.OperatorCommand(m.OperatorAction.CLOSE_LANE, "L1-C-1--L1-C-2", "wet floor", "ops"))
    t.handle(m.OperatorCommand(m.OperatorAction.CLOSE_LIFT, "LIFT-B", "inspection", "ops"))
    fourth = place(t, "DOCK", "WARD")
    t.run_until(t.clock.now() + 900)
    assert t.core.orders[third].state is OrderState.PICKED_UP
    assert t.core.orders[fourth].state is OrderState.PENDING
    blocked = [r for r in t.core.robots.values() if r.waiting and r.waiting.kind == "blocked"]
    assert [r.robot.id for r in blocked] == [t.core.orders[third].robot_id]
    assert alerts(t, "LANE_CLOSED_BY_OPERATOR") and alerts(t, "ROBOT_BLOCKED")
    t.handle(m.OperatorCommand(m.OperatorAction.REOPEN_LANE, "L1-C-1--L1-C-2", "", "ops"))
    t.run_until(t.clock.now() + HOUR, stop_when_done=True)
    assert t.core.orders[third].state is OrderState.DELIVERED
    assert t.core.orders[fourth].state is OrderState.DELIVERED
    assert all("LIFT-B" not in entered(t, r, after=closed_at) for r in (carrier, other))
    t.handle(m.OperatorCommand(m.OperatorAction.REOPEN_LIFT, "LIFT-B", "", "ops"))
    assert not {a.code for a in t.core.active_alerts()} & {
        "ROBOT_PAUSED",
        "ROBOT_BLOCKED",
        "LANE_CLOSED_BY_OPERATOR",
        "LIFT_CLOSED_BY_OPERATOR",
    }
    with pytest.raises(InvalidArgument, match="unknown lane"):
        t.handle(m.OperatorCommand(m.OperatorAction.CLOSE_LANE, "L1-C-1--L2-C-2"))
    sound(t)


def test_an_idle_robot_leaves_a_docking_hatch_free() -> None:
    # The demo hospital's pharmacy hatch is a one-robot spot whose only way out is the door the
    # next robot queues for: a robot that finished there with nothing to do must not stay.
    hospital = load_building(Path(__file__).parents[2] / "maps" / "demo_hospital.yaml")
    t = make_twin(hospital, ("FIRST", "B1-C-04"), ("SECOND", "B1-PARK-3"))
    first = t.handle(m.CreateOrder("WH-PORT-1", "PHARMACY", CargoClass.CLEAN, 1))
    assert first is not None
    t.run_until(t.clock.now() + HOUR, stop_when_done=True)
    assert t.core.orders[first.id].state is OrderState.DELIVERED
    t.run_until(t.clock.now() + 120)
    assert t.core.robots[first.robot_id or ""].robot.node != "B1-PHARMACY"
    assert any(
        r.kind == "BACK_OFF" and "one-robot spot" in r.what and r.robot_id == first.robot_id
        for r in t.core.step_log
    )
    # Both robots now take turns at the hatch, and nobody waits for an idle robot.
    later = [place(t, "PHARMACY", f"OR-0{i}") for i in (1, 2)]
    t.run_until(t.clock.now() + 2 * HOUR, stop_when_done=True)
    assert all(t.core.orders[o].state is OrderState.DELIVERED for o in later)
    t.run_until(t.clock.now() + 120)
    assert all(run.robot.node != "B1-PHARMACY" for run in t.core.robots.values())
    sound(t)
