"""The digital twin's door and lift controllers: sessions, leases, acks, faults, modes and the
fire alarm, driven directly under a virtual clock with the messages they send collected."""

from __future__ import annotations

import dataclasses

import pytest

from fleet.building.model import Building, DoorKind
from fleet.clock import ManualClock
from fleet.v1 import infrastructure_pb2 as ipb
from simulators.infrastructure import SimDoorController, SimLiftController
from simulators.scheduling import VirtualLoop
from simulators.world import World

FIRE_DOOR = "D-L2-FIRE"
PLAIN_DOOR = "D-OR-01"
CLEAN = "LIFT-CLEAN"  # starts at L1
DIRTY = "LIFT-DIRTY"  # starts at B1
RECALL = "L1"


@pytest.fixture
def building(demo_building: Building) -> Building:
    """The demo hospital with one fire door and the recall levels these tests expect, set
    here so the tests do not depend on how the map spells them."""
    doors = dict(demo_building.doors)
    doors[FIRE_DOOR] = dataclasses.replace(doors[FIRE_DOOR], kind=DoorKind.FIRE)
    lifts = {
        name: dataclasses.replace(lift, recall_level=RECALL)
        for name, lift in demo_building.lifts.items()
    }
    return dataclasses.replace(demo_building, doors=doors, lifts=lifts)


class Rig:
    """Both controllers on one virtual loop; what they send is kept in `sent`."""

    def __init__(self, building: Building, heartbeat_s: float = 0.0) -> None:
        self.clock = ManualClock(0.0)
        self.loop = VirtualLoop(self.clock)
        self.world = World(building, record_events=True)
        self.sent: list[ipb.InfrastructureMessage] = []
        self.lifts = SimLiftController(
            "lifts-1", building, self.world, self.loop, self.sent.append, heartbeat_s=heartbeat_s
        )
        self.doors = SimDoorController(
            "doors-1", building, self.world, self.loop, self.sent.append, heartbeat_s=heartbeat_s
        )

    def run(self, seconds: float) -> None:
        self.loop.run_until(self.clock.now() + seconds)

    def lift(
        self,
        action: int,
        session: str,
        level: str = "",
        lift: str = CLEAN,
        lease_s: float = 0.0,
        robot: str = "AMR-01",
    ) -> None:
        self.lifts.receive(
            ipb.InfrastructureCommand(
                lift=ipb.LiftRequest(
                    lift_id=lift,
                    session_id=session,
                    robot_id=robot,
                    action=action,  # type: ignore[arg-type]
                    level=level,
                    lease_s=lease_s,
                )
            )
        )

    def door(self, action: int, session: str, door: str = PLAIN_DOOR) -> None:
        self.doors.receive(
            ipb.InfrastructureCommand(
                door=ipb.DoorRequest(
                    door_id=door,
                    session_id=session,
                    robot_id="AMR-01",
                    action=action,  # type: ignore[arg-type]
                )
            )
        )

    def take(self) -> list[ipb.InfrastructureMessage]:
        """What was sent since the last take."""
        out, self.sent[:] = list(self.sent), []
        return out

    def acks(self) -> list[tuple[str, str, bool, str]]:
        """The acks sent so far (device, session, accepted, reason); they stay in `sent`."""
        return [
            (a.ack.device_id, a.ack.session_id, a.ack.accepted, a.ack.reason)
            for a in self.sent
            if a.WhichOneof("msg") == "ack"
        ]

    def lift_states(self, lift: str = CLEAN) -> list[ipb.LiftState]:
        return [
            s.lift_state
            for s in self.sent
            if s.WhichOneof("msg") == "lift_state" and s.lift_state.lift_id == lift
        ]

    def door_states(self, door: str) -> list[ipb.DoorState]:
        return [
            s.door_state
            for s in self.sent
            if s.WhichOneof("msg") == "door_state" and s.door_state.door_id == door
        ]

    def car(self, lift: str = CLEAN) -> ipb.LiftState:
        """The car's last reported state."""
        return self.lift_states(lift)[-1]


CALL, GO_TO, RELEASE, RENEW = (
    ipb.LIFT_ACTION_CALL,
    ipb.LIFT_ACTION_GO_TO,
    ipb.LIFT_ACTION_RELEASE,
    ipb.LIFT_ACTION_RENEW,
)


def open_at(state: ipb.LiftState, level: str, session: str) -> bool:
    return (
        state.current_level == level
        and state.door == ipb.LIFT_DOOR_OPEN
        and state.session_id == session
        and not state.destination_level
    )


# ---- lifts: sessions, acks, leases -------------------------------------------------------------


def test_a_repeated_call_changes_nothing_but_the_lease(building: Building) -> None:
    rig = Rig(building)
    rig.lift(CALL, "s1", "B1", lease_s=60)
    assert rig.acks() == [(CLEAN, "s1", True, "")]
    rig.run(30)
    assert open_at(rig.car(), "B1", "s1")
    assert rig.world.lifts[CLEAN].session_id == "s1" and rig.world.lifts[CLEAN].door_open
    rig.run(20)  # the lease has 10 s left
    rig.take()
    # The dispatcher repeats its call (a lost answer), even with another level: nothing moves.
    rig.lift(CALL, "s1", "L2", lease_s=60)
    assert rig.car().lease_remaining_s == pytest.approx(60)  # renewed, and confirmed
    rig.run(50)
    assert rig.acks() == []  # no second ack for the same session, and no expiry
    assert len(rig.lift_states()) == 1  # one confirming report, nothing else happened
    assert open_at(rig.car(), "B1", "s1")


def test_a_lease_that_runs_out_frees_the_car_for_the_next_call(building: Building) -> None:
    rig = Rig(building)
    rig.lift(CALL, "s1", "B1", lease_s=40)
    rig.lift(CALL, "s2", "L2", lease_s=40, robot="AMR-02")
    assert rig.acks() == [(CLEAN, "s1", True, "")]  # s2 waits; it is answered when served
    rig.run(39)
    assert rig.car().session_id == "s1"
    rig.run(2)  # s1 sent nothing for 40 s: its lease ran out
    assert rig.acks()[1:] == [(CLEAN, "s1", False, "lease expired"), (CLEAN, "s2", True, "")]
    assert rig.world.lifts[CLEAN].session_id != "s1"
    rig.run(30)
    assert open_at(rig.car(), "L2", "s2")
    assert rig.world.lifts[CLEAN].session_id == "s2"
    assert 0 < rig.car().lease_remaining_s < 40


def test_renewing_keeps_the_session(building: Building) -> None:
    rig = Rig(building)
    rig.lift(CALL, "s1", "B1", lease_s=10)
    for _ in range(6):
        rig.run(8)
        rig.lift(RENEW, "s1", lease_s=10)
    assert rig.clock.now() == pytest.approx(48)
    assert rig.acks() == [(CLEAN, "s1", True, "")]
    assert open_at(rig.car(), "B1", "s1")
    # A session that does not hold the car cannot renew or send it anywhere.
    rig.lift(RENEW, "ghost", lease_s=10)
    rig.lift(GO_TO, "ghost", "L2")
    assert rig.acks()[1:] == [
        (CLEAN, "ghost", False, "no such session"),
        (CLEAN, "ghost", False, "the session does not hold the car"),
    ]
    rig.run(10.5)  # no more renewals
    assert rig.acks()[-1] == (CLEAN, "s1", False, "lease expired")
    rig.run(10)
    assert rig.car().session_id == "" and rig.car().door == ipb.LIFT_DOOR_CLOSED
    assert rig.car().lease_remaining_s == 0


def test_no_lease_lasts_until_release(building: Building) -> None:
    rig = Rig(building)
    rig.lift(CALL, "s1", "B1")
    rig.run(3600)
    assert open_at(rig.car(), "B1", "s1")
    assert rig.car().lease_remaining_s == 0
    rig.lift(RELEASE, "s1")
    rig.run(10)
    assert rig.car().session_id == "" and rig.car().door == ipb.LIFT_DOOR_CLOSED
    assert not rig.world.lifts[CLEAN].door_open


# ---- lifts: modes ------------------------------------------------------------------------------


def test_out_of_service_refuses_calls_and_ends_sessions_without_a_robot_inside(
    building: Building,
) -> None:
    rig = Rig(building)
    rig.lift(CALL, "s1", "B1")
    rig.lift(CALL, "s2", "L2")  # waiting behind s1
    rig.run(5)
    rig.lifts.set_mode(CLEAN, ipb.LIFT_MODE_OUT_OF_SERVICE, "maintenance")
    refused = (False, "out of service: maintenance")
    assert rig.acks()[1:] == [(CLEAN, "s2", *refused), (CLEAN, "s1", *refused)]
    rig.lift(CALL, "s3", "L1")
    assert rig.acks()[-1] == (CLEAN, "s3", *refused)
    rig.run(60)
    state = rig.car()
    assert state.mode == ipb.LIFT_MODE_OUT_OF_SERVICE
    assert state.fault_detail == "maintenance"
    assert state.session_id == "" and state.door == ipb.LIFT_DOOR_CLOSED
    # Back in service, it takes calls again.
    rig.lifts.set_mode(CLEAN, ipb.LIFT_MODE_NORMAL)
    rig.lift(CALL, "s4", "L1")
    assert rig.acks()[-1] == (CLEAN, "s4", True, "")
    assert rig.car().mode == ipb.LIFT_MODE_NORMAL and rig.car().fault_detail == ""


def test_out_of_service_lets_a_robot_inside_finish_its_ride(building: Building) -> None:
    rig = Rig(building)
    rig.lift(CALL, "s1", "B1", lift=DIRTY)
    rig.run(10)
    assert open_at(rig.car(DIRTY), "B1", "s1")
    assert rig.world.enter_lift(rig.clock.now(), DIRTY, "AMR-01", "B1", "s1") == ""
    rig.lifts.set_mode(DIRTY, ipb.LIFT_MODE_OUT_OF_SERVICE, "inspection")
    assert rig.car(DIRTY).session_id == "s1"
    rig.lift(GO_TO, "s1", "L2", lift=DIRTY)
    rig.run(60)
    state = rig.car(DIRTY)
    assert open_at(state, "L2", "s1") and state.mode == ipb.LIFT_MODE_OUT_OF_SERVICE
    rig.world.exit_lift(rig.clock.now(), DIRTY, "AMR-01")
    rig.lift(RELEASE, "s1", lift=DIRTY)
    rig.run(60)
    state = rig.car(DIRTY)
    assert state.session_id == "" and state.door == ipb.LIFT_DOOR_CLOSED
    assert state.current_level == "L2"  # it stops where the ride ended
    assert [a for a in rig.acks() if not a[2]] == []
    assert rig.world.violations == []


def test_fire_recall_takes_the_car_to_the_recall_level_and_lets_the_robot_out(
    building: Building,
) -> None:
    rig = Rig(building)
    rig.lift(CALL, "s1", "B1", lift=DIRTY)
    rig.run(10)
    rig.world.enter_lift(rig.clock.now(), DIRTY, "AMR-01", "B1", "s1")
    rig.lift(CALL, "s2", "L2", lift=DIRTY, robot="AMR-02")  # waits behind s1
    rig.lift(CALL, "s5", "B1", lift=CLEAN, robot="AMR-05")  # no robot inside CLEAN
    rig.lift(GO_TO, "s1", "L2", lift=DIRTY)  # the ride starts
    rig.run(5)
    rig.lifts.fire_alarm(True)
    assert (DIRTY, "s2", False, "fire recall") in rig.acks()
    assert (CLEAN, "s5", False, "fire recall") in rig.acks()
    rig.lift(CALL, "s3", "B1", lift=DIRTY)
    rig.lift(GO_TO, "s1", "L2", lift=DIRTY)  # the car goes to the recall level, nowhere else
    assert rig.acks()[-2:] == [
        (DIRTY, "s3", False, "fire recall"),
        (DIRTY, "s1", False, "fire recall"),
    ]
    rig.run(120)
    for lift, session in ((DIRTY, "s1"), (CLEAN, "")):
        state = rig.car(lift)
        assert state.mode == ipb.LIFT_MODE_FIRE_RECALL and state.fault_detail == "fire alarm"
        assert open_at(state, RECALL, session)
        truth = rig.world.lifts[lift]
        assert truth.level == RECALL and truth.door_open and truth.session_id == session
    # The car went there without stopping (its door never opened on the way).
    opened = [e.what for e in rig.world.events if e.actor == DIRTY and e.what.startswith("open")]
    assert opened == ["open at B1", f"open at {RECALL}"]
    assert rig.world.exit_lift(rig.clock.now(), DIRTY, "AMR-01") == RECALL
    rig.lift(RELEASE, "s1", lift=DIRTY)
    rig.run(30)
    assert open_at(rig.car(DIRTY), RECALL, "")  # it stays open at the recall level
    rig.lifts.fire_alarm(False)
    rig.run(30)
    for lift in (DIRTY, CLEAN):
        state = rig.car(lift)
        assert state.mode == ipb.LIFT_MODE_NORMAL and state.fault_detail == ""
        assert state.door == ipb.LIFT_DOOR_CLOSED
    rig.lift(CALL, "s6", "B1", lift=DIRTY)
    assert rig.acks()[-1] == (DIRTY, "s6", True, "")
    assert rig.world.violations == []


def test_fire_alarm_returns_an_out_of_service_car_to_out_of_service(building: Building) -> None:
    rig = Rig(building)
    rig.lifts.set_mode(CLEAN, ipb.LIFT_MODE_OUT_OF_SERVICE, "maintenance")
    rig.lifts.fire_alarm(True, "zone 3")
    assert rig.car().mode == ipb.LIFT_MODE_FIRE_RECALL and rig.car().fault_detail == "zone 3"
    rig.lifts.fire_alarm(False)
    assert rig.car().mode == ipb.LIFT_MODE_OUT_OF_SERVICE
    assert rig.car().fault_detail == "maintenance"


def test_an_offline_car_is_reported_once_then_not_until_it_is_back(building: Building) -> None:
    rig = Rig(building, heartbeat_s=5)
    rig.lifts.connect()
    rig.run(12)
    assert len(rig.lift_states(CLEAN)) == 3  # at connect and every 5 s
    rig.take()
    rig.lifts.set_mode(CLEAN, ipb.LIFT_MODE_OFFLINE, "no contact with the car")
    states = rig.lift_states(CLEAN)
    assert [(s.mode, s.fault_detail) for s in states] == [
        (ipb.LIFT_MODE_OFFLINE, "no contact with the car")
    ]
    rig.take()
    rig.lift(CALL, "s1", "B1")  # ignored: no ack, no movement
    rig.run(30)
    assert rig.lift_states(CLEAN) == [] and rig.acks() == []
    assert len(rig.lift_states(DIRTY)) == 6  # the other car is still reported
    rig.lifts.set_mode(CLEAN, ipb.LIFT_MODE_NORMAL)
    assert rig.car().mode == ipb.LIFT_MODE_NORMAL
    assert rig.car().current_level == "L1" and rig.car().session_id == ""


def test_a_lease_that_ran_out_while_offline_is_dropped_when_the_car_is_back(
    building: Building,
) -> None:
    rig = Rig(building)
    rig.lift(CALL, "s1", "B1", lease_s=20)
    rig.run(5)
    rig.lifts.set_mode(CLEAN, ipb.LIFT_MODE_OFFLINE)
    rig.run(60)
    assert rig.acks() == [(CLEAN, "s1", True, "")]
    rig.lifts.set_mode(CLEAN, ipb.LIFT_MODE_NORMAL)
    assert rig.acks()[-1] == (CLEAN, "s1", False, "lease expired")
    assert rig.car().session_id == ""


# ---- doors -------------------------------------------------------------------------------------


def test_a_faulted_door_is_stuck_closed_and_refuses_to_open_until_cleared(
    building: Building,
) -> None:
    rig = Rig(building)
    rig.door(ipb.DOOR_ACTION_OPEN, "d1")
    rig.door(ipb.DOOR_ACTION_OPEN, "d1")  # a repeat: no second ack
    rig.run(10)
    assert rig.acks() == [(PLAIN_DOOR, "d1", True, "")]
    assert rig.door_states(PLAIN_DOOR)[-1].mode == ipb.DOOR_MODE_OPEN
    assert rig.world.doors[PLAIN_DOOR].open
    rig.doors.set_fault(PLAIN_DOOR, ipb.DOOR_MODE_FAULT, "motor overcurrent")
    assert not rig.world.doors[PLAIN_DOOR].open
    assert rig.acks()[-1] == (PLAIN_DOOR, "d1", False, "door fault: motor overcurrent")
    state = rig.door_states(PLAIN_DOOR)[-1]
    assert (state.mode, state.fault_detail, state.session_id) == (
        ipb.DOOR_MODE_FAULT,
        "motor overcurrent",
        "",
    )
    rig.door(ipb.DOOR_ACTION_OPEN, "d2")
    rig.run(10)
    assert rig.acks()[-1] == (PLAIN_DOOR, "d2", False, "door fault: motor overcurrent")
    assert not rig.world.doors[PLAIN_DOOR].open
    rig.doors.clear_fault(PLAIN_DOOR)
    state = rig.door_states(PLAIN_DOOR)[-1]
    assert (state.mode, state.fault_detail) == (ipb.DOOR_MODE_CLOSED, "")
    rig.door(ipb.DOOR_ACTION_OPEN, "d3")
    rig.run(10)
    assert rig.acks()[-1] == (PLAIN_DOOR, "d3", True, "")
    assert rig.world.doors[PLAIN_DOOR].open


def test_a_blocked_door_interrupts_its_opening(building: Building) -> None:
    rig = Rig(building)
    rig.door(ipb.DOOR_ACTION_OPEN, "d1")
    rig.run(1)  # still opening
    rig.doors.set_fault(PLAIN_DOOR, ipb.DOOR_MODE_BLOCKED, "trolley in the way")
    rig.run(10)
    assert not rig.world.doors[PLAIN_DOOR].open
    assert rig.door_states(PLAIN_DOOR)[-1].mode == ipb.DOOR_MODE_BLOCKED
    with pytest.raises(ValueError):
        rig.doors.set_fault(PLAIN_DOOR, ipb.DOOR_MODE_OPEN)


def test_an_offline_door_is_reported_once(building: Building) -> None:
    rig = Rig(building, heartbeat_s=5)
    rig.doors.connect()
    rig.doors.set_fault(PLAIN_DOOR, ipb.DOOR_MODE_OFFLINE, "no contact")
    rig.take()
    rig.run(20)
    assert rig.door_states(PLAIN_DOOR) == []
    assert len(rig.door_states(FIRE_DOOR)) == 4
    rig.doors.clear_fault(PLAIN_DOOR)
    assert rig.door_states(PLAIN_DOOR)[-1].mode == ipb.DOOR_MODE_CLOSED


def test_the_fire_alarm_closes_fire_doors_only(building: Building) -> None:
    rig = Rig(building)
    rig.door(ipb.DOOR_ACTION_OPEN, "f1", door=FIRE_DOOR)
    rig.door(ipb.DOOR_ACTION_OPEN, "p1", door=PLAIN_DOOR)
    rig.run(10)
    assert rig.world.doors[FIRE_DOOR].open and rig.world.doors[PLAIN_DOOR].open
    rig.take()
    rig.doors.fire_alarm(True, "zone 3 smoke detector")
    alarm = rig.sent[0]
    assert alarm.WhichOneof("msg") == "fire_alarm"
    assert (alarm.fire_alarm.active, alarm.fire_alarm.detail) == (True, "zone 3 smoke detector")
    assert rig.acks() == [(FIRE_DOOR, "f1", False, "fire alarm")]
    assert not rig.world.doors[FIRE_DOOR].open  # closing at once
    rig.door(ipb.DOOR_ACTION_OPEN, "f2", door=FIRE_DOOR)
    rig.door(ipb.DOOR_ACTION_OPEN, "p2", door=PLAIN_DOOR)
    rig.run(10)
    assert rig.acks()[1:] == [(FIRE_DOOR, "f2", False, "fire alarm"), (PLAIN_DOOR, "p2", True, "")]
    assert rig.door_states(FIRE_DOOR)[-1].mode == ipb.DOOR_MODE_CLOSED
    assert rig.door_states(FIRE_DOOR)[-1].session_id == ""
    assert rig.world.doors[PLAIN_DOOR].open  # other doors work as usual
    rig.take()
    rig.doors.fire_alarm(False)
    assert rig.sent[0].fire_alarm.active is False
    rig.door(ipb.DOOR_ACTION_OPEN, "f3", door=FIRE_DOOR)
    rig.run(10)
    assert rig.acks() == [(FIRE_DOOR, "f3", True, "")]
    assert rig.world.doors[FIRE_DOOR].open
