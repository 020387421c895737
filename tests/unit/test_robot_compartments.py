"""The robot's side of controlled-drug custody: lockable compartments, seals, openings for an
authenticated recipient (simulators/compartments.py), the simulated robot that drives them over
the robot protocol (simulators/robot.py), and the protobuf translation (fleet/api/convert.py)."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fleet.api import convert
from fleet.building.model import Building
from fleet.clock import ManualClock
from fleet.dispatch import messages as m
from fleet.domain.cargo import CargoClass
from fleet.domain.errors import InvalidArgument
from fleet.traffic.steps import Step, StepKind
from fleet.v1 import robot_pb2
from simulators.compartments import Compartments
from simulators.robot import RobotSpec, SimRobot
from simulators.scheduling import VirtualLoop
from simulators.world import World

# ---- the pure model ----------------------------------------------------------------------------


def sealed_for_dropoff(now: float = 0.0) -> Compartments:
    """Compartment 2 loaded and sealed under SEAL-1 at a secure pickup, now at a secure
    drop-off of compartment 2."""
    c = Compartments(3, open_after_s=5.0, handling_s=20.0)
    c.start_step(now, "pickup", [2], secure=True)
    assert c.seal(now, 2, "SEAL-1")
    c.finish_step()
    c.start_step(now, "dropoff", [2], secure=True)
    return c


def test_compartments_start_unlocked_empty_and_unsealed() -> None:
    c = Compartments(2)
    assert c.status() == (
        m.CompartmentStatus(1, locked=False, seal_id="", seal_intact=True, open=False),
        m.CompartmentStatus(2, locked=False, seal_id="", seal_intact=True, open=False),
    )
    assert c.step_done() and c.next_event_at() is None
    with pytest.raises(ValueError):
        Compartments(-1)


def test_secure_pickup_waits_for_the_seal_of_its_compartment() -> None:
    c = Compartments(3)
    c.start_step(0.0, "pickup", [2], secure=True)
    assert c.secure_step == "pickup" and not c.step_done()
    c.advance(10_000.0)
    assert not c.step_done()  # no time limit: only a seal (or a cancel) ends it
    assert c.seal(1.0, 1, "SEAL-X")  # another compartment: locked, but not this step's
    assert not c.step_done()
    assert c.seal(2.0, 2, "SEAL-1")
    assert c.step_done()
    assert c[2].status() == m.CompartmentStatus(2, True, "SEAL-1", True, False)


def test_a_step_without_compartment_numbers_completes_on_any_one() -> None:
    c = Compartments(2)
    c.start_step(0.0, "pickup", [], secure=True)
    assert not c.step_done()
    assert c.seal(1.0, 2, "SEAL-1") and c.step_done()


def test_seal_refusals() -> None:
    c = Compartments(2)
    assert not c.seal(0.0, 3, "SEAL-1")  # no such compartment
    assert not c.seal(0.0, 0, "SEAL-1")
    assert not c.seal(0.0, 1, "")  # no seal id
    assert c.seal(0.0, 1, "SEAL-1")
    assert c.seal(1.0, 1, "SEAL-1")  # the same seal again: a no-op, accepted
    assert not c.seal(2.0, 1, "SEAL-2")  # no seal swap on an intact seal
    assert c[1].seal_id == "SEAL-1" and c[1].seal_intact
    assert len(c.refused) == 4
    assert all("refused" in line for line in c.refused)


def test_never_opens_without_open_for_the_right_compartment() -> None:
    c = sealed_for_dropoff()
    assert c[2].locked and not c.step_done()
    c.advance(3600.0)
    assert c[2].locked and not c[2].open and not c.step_done()
    # Another compartment, no grant, no person, no time, a dead time: all refused.
    assert not c.open_for(10.0, 1, "G-1", "NURSE-1", 60.0)
    assert not c.open_for(10.0, 2, "", "NURSE-1", 60.0)
    assert not c.open_for(10.0, 2, "G-1", "", 60.0)
    assert not c.open_for(10.0, 2, "G-1", "NURSE-1", 0.0)
    assert not c.open_for(10.0, 2, "G-1", "NURSE-1", float("nan"))
    assert not c.open_for(10.0, 7, "G-1", "NURSE-1", 60.0)
    assert c.next_event_at() is None
    c.advance(10_000.0)
    assert all(not s.open for s in c.status())
    assert c[2].locked and c[2].seal_intact and not c.step_done()
    assert len(c.refused) == 6


def test_open_outside_a_secure_dropoff_is_refused() -> None:
    c = Compartments(2)
    assert c.seal(0.0, 1, "SEAL-1")
    assert not c.open_for(1.0, 1, "G-1", "NURSE-1", 60.0)  # no step at all
    c.start_step(2.0, "pickup", [1], secure=True)
    assert not c.open_for(3.0, 1, "G-1", "NURSE-1", 60.0)  # a pickup is not a drop-off
    c.cancel_step(4.0)
    c.start_step(5.0, "dropoff", [1], secure=False)
    assert not c.open_for(6.0, 1, "G-1", "NURSE-1", 60.0)  # nor is a non-secure drop-off
    assert c[1].sealed and not c[1].open


def test_opening_breaks_the_seal_and_the_compartment_relocks_when_closed() -> None:
    c = sealed_for_dropoff()
    assert c.open_for(100.0, 2, "G-1", "NURSE-1", 60.0)
    assert not c[2].locked and not c[2].open and c[2].seal_intact  # unlocked, not yet opened
    assert c.next_event_at() == 105.0
    c.advance(105.0)
    assert c[2].open and not c[2].seal_intact and c[2].seal_id == "SEAL-1"
    assert not c.step_done()
    c.advance(124.0)
    assert c[2].open  # the person is still taking the drugs out
    c.advance(125.0)
    assert c[2].status() == m.CompartmentStatus(2, True, "SEAL-1", False, False)
    assert c.step_done() and c.next_event_at() is None
    # The same grant cannot open it again at this drop-off.
    assert not c.open_for(126.0, 2, "G-1", "NURSE-1", 60.0)
    assert c[2].locked


def test_the_grant_runs_out_before_anybody_opens() -> None:
    c = sealed_for_dropoff()
    c.open_after_s = 30.0
    assert c.open_for(0.0, 2, "G-1", "NURSE-1", 10.0)
    assert not c[2].locked
    c.advance(10.0)
    assert c[2].locked and not c[2].open and c[2].seal_intact
    assert not c.step_done() and c.secure_step == "dropoff"  # still waiting
    c.open_after_s = 5.0
    assert c.open_for(20.0, 2, "G-2", "NURSE-2", 10.0)  # a second grant may follow
    c.advance(60.0)
    assert c.step_done() and c[2].locked and not c[2].seal_intact


def test_an_absent_recipient_never_opens() -> None:
    c = sealed_for_dropoff()
    c.recipient_present = False
    assert c.open_for(0.0, 2, "G-1", "NURSE-1", 120.0)
    c.advance(119.0)
    assert not c[2].locked and not c[2].open  # unlocked, waiting for somebody
    c.advance(120.0)
    assert c[2].sealed and not c.step_done()


def test_tamper_breaks_the_seal_without_opening() -> None:
    c = sealed_for_dropoff()
    c.tamper(50.0, 2, "tag torn")
    assert c[2].status() == m.CompartmentStatus(2, True, "SEAL-1", False, False)
    assert any("tag torn" in note for note in c.notes)
    c.tamper(51.0, 1)  # an unsealed compartment has no seal to break
    assert c[1].seal_intact


def test_cancel_of_a_secure_dropoff_leaves_it_locked_and_sealed() -> None:
    c = sealed_for_dropoff()
    assert c.open_for(0.0, 2, "G-1", "NURSE-1", 60.0)  # unlocked; nobody opened it yet
    c.cancel_step(2.0)
    assert c[2].status() == m.CompartmentStatus(2, True, "SEAL-1", True, False)
    assert c.grants == {} and c.next_event_at() is None and c.step_done()
    c.advance(1000.0)
    assert c[2].sealed
    assert not c.open_for(3.0, 2, "G-1", "NURSE-1", 60.0)  # the step is gone


def test_cancel_of_a_secure_pickup_locks_its_unsealed_compartment() -> None:
    c = Compartments(2)
    c.start_step(0.0, "pickup", [1], secure=True)
    c.cancel_step(1.0)
    assert c[1].status() == m.CompartmentStatus(1, True, "", True, False)
    # The next pickup unlocks it for loading again.
    c.start_step(2.0, "pickup", [1], secure=False)
    assert not c[1].locked


def test_a_door_open_when_the_step_is_cancelled_relocks_once_closed() -> None:
    c = sealed_for_dropoff()
    assert c.open_for(0.0, 2, "G-1", "NURSE-1", 60.0)
    c.advance(5.0)
    assert c[2].open
    c.cancel_step(6.0)
    assert c[2].open  # nobody slams a door on a hand
    c.advance(25.0)
    assert c[2].locked and not c[2].open and c.grants == {}


def test_a_robot_in_fault_never_opens() -> None:
    c = sealed_for_dropoff()
    assert c.open_for(0.0, 2, "G-1", "NURSE-1", 60.0)
    c.fault(1.0)
    assert c[2].sealed and c.grants == {}
    assert not c.open_for(2.0, 2, "G-2", "NURSE-1", 60.0)
    c.advance(1000.0)
    assert c[2].sealed
    c.clear_fault()
    assert c.open_for(1001.0, 2, "G-3", "NURSE-1", 60.0)
    c.advance(1100.0)
    assert c.step_done() and not c[2].seal_intact


def test_pickups_never_unlock_a_sealed_compartment_and_plain_dropoffs_never_open() -> None:
    c = Compartments(2)
    assert c.seal(0.0, 1, "SEAL-1")
    c.start_step(1.0, "pickup", [1], secure=False)
    assert c[1].sealed
    c.start_step(2.0, "dropoff", [1], secure=False)
    assert c[1].sealed and c.step_done()
    assert len(c.refused) == 2
    # A broken seal (after the drug was handed over): the return leg may load it again.
    c[1].seal_intact = False
    c.start_step(3.0, "pickup", [1], secure=True)
    assert not c[1].locked
    assert c.seal(4.0, 1, "SEAL-2") and c.step_done()
    assert c[1].status() == m.CompartmentStatus(1, True, "SEAL-2", True, False)


# Random sequences of everything that can happen to the compartments.
_ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "pickup",
                "spickup",
                "dropoff",
                "sdropoff",
                "seal",
                "open",
                "bad_open",
                "cancel",
                "finish",
                "tamper",
                "fault",
                "clear",
                "wait",
                "absent",
            ]
        ),
        st.integers(1, 3),
        st.floats(0.0, 40.0),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(_ACTIONS)
@example([("seal", 1, 0.0), ("tamper", 1, 1.0), ("pickup", 1, 1.0)])
@example([("seal", 2, 0.0), ("sdropoff", 2, 1.0), ("open", 2, 30.0), ("wait", 1, 40.0)])
def test_a_compartment_opens_only_under_a_grant_and_never_with_an_intact_seal(
    actions: list[tuple[str, int, float]],
) -> None:
    c = Compartments(3, open_after_s=5.0, handling_s=10.0)
    now = 0.0
    for kind, n, dt in actions:
        now += dt
        c.advance(now)
        if kind in ("pickup", "spickup", "dropoff", "sdropoff"):
            c.start_step(
                now, "pickup" if "pickup" in kind else "dropoff", [n], secure=kind.startswith("s")
            )
        elif kind == "seal":
            c.seal(now, n, f"SEAL-{n}-{now:.0f}")
        elif kind == "open":
            c.open_for(now, n, "G", "NURSE", dt or 1.0)
        elif kind == "bad_open":
            before = c.status()
            assert not c.open_for(now, n, "", "NURSE", 30.0)
            assert c.status() == before
        elif kind == "cancel":
            c.cancel_step(now)
        elif kind == "finish" and c.step_done():
            c.finish_step()
        elif kind == "tamper":
            c.tamper(now, n)
        elif kind == "fault":
            c.fault(now)
        elif kind == "clear":
            c.clear_fault()
        elif kind == "absent":
            c.recipient_present = not c.recipient_present
        for s in c.status():
            # Open, or unlocked under an intact seal: only ever through a grant for it.
            if s.open or (s.seal_id and s.seal_intact and not s.locked):
                assert s.number in c.grants
            if s.open:
                assert not s.locked
                if s.seal_id:
                    assert not s.seal_intact
            if c.faulted:
                g = c.grants.get(s.number)
                assert g is None or g.closes_at is not None  # no unused grant in fault


# ---- the translation ---------------------------------------------------------------------------


def test_secure_steps_and_custody_actions_on_the_wire(demo_building: Building) -> None:
    step = Step(
        StepKind.DROPOFF,
        station="OR-03",
        order_ids=("ORD-1",),
        quantity=1,
        compartments=(("ORD-1", 1),),
        secure=True,
    )
    wire = convert.dispatcher_message_to_pb(m.SendStep("AMR-01", 7, step), demo_building)
    assert wire.step.dropoff.secure and wire.step.dropoff.compartments[0].compartment == 2
    plain = Step(StepKind.PICKUP, station="PHARMACY", order_ids=("ORD-1",), quantity=1)
    wire = convert.dispatcher_message_to_pb(m.SendStep("AMR-01", 8, plain), demo_building)
    assert wire.step.WhichOneof("kind") == "pickup" and not wire.step.pickup.secure

    seal = m.SendInstantAction(
        "AMR-01", 9, m.InstantKind.SEAL_COMPARTMENT, "loaded", compartment=2, seal_id="SEAL-1"
    )
    pb = convert.dispatcher_message_to_pb(seal, demo_building).action
    assert pb.type == robot_pb2.INSTANT_ACTION_TYPE_SEAL_COMPARTMENT
    assert (pb.compartment, pb.seal_id, pb.grant_id) == (2, "SEAL-1", "")
    assert convert.instant_action_from_pb(pb, "AMR-01") == seal

    grant = m.SendInstantAction(
        "AMR-01",
        10,
        m.InstantKind.OPEN_COMPARTMENT,
        compartment=2,
        grant_id="G-1",
        staff_id="NURSE-1",
        open_for_s=90.0,
    )
    pb = convert.dispatcher_message_to_pb(grant, demo_building).action
    assert pb.type == robot_pb2.INSTANT_ACTION_TYPE_OPEN_COMPARTMENT
    assert (pb.compartment, pb.grant_id, pb.staff_id, pb.open_for_s) == (2, "G-1", "NURSE-1", 90)
    assert convert.instant_action_from_pb(pb, "AMR-01") == grant

    cancel = m.SendInstantAction("AMR-01", 11, m.InstantKind.CANCEL_STEP, "nobody came")
    pb = convert.dispatcher_message_to_pb(cancel, demo_building).action
    assert pb.type == robot_pb2.INSTANT_ACTION_TYPE_CANCEL_STEP and pb.compartment == 0


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"type": 99}, "action.type"),
        ({"type": robot_pb2.INSTANT_ACTION_TYPE_SEAL_COMPARTMENT, "seal_id": "S"}, "compartment"),
        ({"type": robot_pb2.INSTANT_ACTION_TYPE_SEAL_COMPARTMENT, "compartment": 1}, "seal_id"),
        ({"type": robot_pb2.INSTANT_ACTION_TYPE_OPEN_COMPARTMENT, "compartment": 1}, "grant_id"),
        (
            {
                "type": robot_pb2.INSTANT_ACTION_TYPE_OPEN_COMPARTMENT,
                "compartment": 1,
                "grant_id": "G",
            },
            "staff_id",
        ),
        (
            {
                "type": robot_pb2.INSTANT_ACTION_TYPE_OPEN_COMPARTMENT,
                "compartment": 1,
                "grant_id": "G",
                "staff_id": "N",
            },
            "open_for_s",
        ),
    ],
)
def test_incomplete_custody_actions_name_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        convert.instant_action_from_pb(robot_pb2.InstantAction(**fields), "AMR-01")  # type: ignore[arg-type]
    assert caught.value.field.endswith(field)


def state_with(*compartments: robot_pb2.CompartmentStatus) -> robot_pb2.RobotMessage:
    return robot_pb2.RobotMessage(
        state=robot_pb2.RobotState(robot_id="AMR-01", compartments=list(compartments))
    )


def test_compartment_states_from_the_wire() -> None:
    msg = state_with(
        robot_pb2.CompartmentStatus(number=2, locked=True, seal_id="SEAL-1", seal_intact=True),
        robot_pb2.CompartmentStatus(number=1),
        robot_pb2.CompartmentStatus(number=3, locked=True, seal_id="SEAL-0"),
    )
    report = convert.robot_message_from_pb(msg, "AMR-01", 3)
    assert isinstance(report, m.RobotStateReport)
    assert report.compartments == (
        m.CompartmentStatus(1, locked=False, seal_id="", seal_intact=True, open=False),
        m.CompartmentStatus(2, locked=True, seal_id="SEAL-1", seal_intact=True, open=False),
        # A sealed compartment that does not say its seal is intact counts as broken.
        m.CompartmentStatus(3, locked=True, seal_id="SEAL-0", seal_intact=False, open=False),
    )
    no_compartments = convert.robot_message_from_pb(state_with(), "AMR-01")
    assert isinstance(no_compartments, m.RobotStateReport)
    assert no_compartments.compartments == ()
    for c in report.compartments:
        assert convert.compartments_from_pb([convert.compartment_status_to_pb(c)]) == (c,)


@pytest.mark.parametrize(
    ("statuses", "count", "field"),
    [
        ([robot_pb2.CompartmentStatus(number=0)], None, "state.compartments[0].number"),
        ([robot_pb2.CompartmentStatus(number=-1)], 4, "state.compartments[0].number"),
        ([robot_pb2.CompartmentStatus(number=5)], 4, "state.compartments[0].number"),
        (
            [robot_pb2.CompartmentStatus(number=1), robot_pb2.CompartmentStatus(number=1)],
            4,
            "state.compartments[1].number",
        ),
        (
            [robot_pb2.CompartmentStatus(number=2, locked=True, open=True)],
            4,
            "state.compartments[0].locked",
        ),
    ],
)
def test_bad_compartment_states_name_the_field(
    statuses: list[robot_pb2.CompartmentStatus], count: int | None, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        convert.robot_message_from_pb(state_with(*statuses), "AMR-01", count)
    assert caught.value.field == field


# ---- the simulated robot -----------------------------------------------------------------------


class Robot:
    """A SimRobot at the pharmacy on a virtual clock, with what it sent."""

    def __init__(self, building: Building, compartments: int = 3) -> None:
        self.loop = VirtualLoop(ManualClock(0.0))
        self.sent: list[robot_pb2.RobotMessage] = []
        spec = RobotSpec(
            "AMR-C1",
            frozenset({CargoClass.CONTROLLED_DRUG}),
            "B1-PHARMACY",
            compartments=compartments,
        )
        self.robot = SimRobot(spec, building, World(building), self.loop, self.sent.append)
        self.building = building
        self.robot.connect()
        self._action = 0

    def run(self, seconds: float) -> None:
        self.loop.run_until(self.loop.now() + seconds)

    def step(self, step_id: int, step: Step) -> None:
        out = m.SendStep("AMR-C1", step_id, step)
        self.robot.receive(convert.dispatcher_message_to_pb(out, self.building))

    def action(self, kind: m.InstantKind, **fields: object) -> None:
        self._action += 1
        out = m.SendInstantAction("AMR-C1", self._action, kind, **fields)  # type: ignore[arg-type]
        self.robot.receive(convert.dispatcher_message_to_pb(out, self.building))

    def outcomes(self, step_id: int) -> list[int]:
        return [
            msg.progress.status
            for msg in self.sent
            if msg.WhichOneof("msg") == "progress" and msg.progress.step_id == step_id
        ]

    def last_compartments(self) -> list[robot_pb2.CompartmentStatus]:
        states = [msg.state for msg in self.sent if msg.WhichOneof("msg") == "state"]
        return list(states[-1].compartments)


STARTED, COMPLETED, FAILED = (
    robot_pb2.STEP_STATUS_STARTED,
    robot_pb2.STEP_STATUS_COMPLETED,
    robot_pb2.STEP_STATUS_FAILED,
)


def secure(kind: StepKind, index: int = 1, station: str = "PHARMACY") -> Step:
    return Step(
        kind,
        station=station,
        order_ids=("ORD-1",),
        quantity=1,
        compartments=(("ORD-1", index),),
        secure=True,
    )


def test_the_simulated_robot_seals_carries_and_opens_for_the_recipient(
    demo_building: Building,
) -> None:
    r = Robot(demo_building)
    r.step(1, secure(StepKind.PICKUP))
    r.run(600.0)  # long past the station's service time
    assert r.outcomes(1) == [STARTED]
    r.action(m.InstantKind.SEAL_COMPARTMENT, compartment=2, seal_id="SEAL-1")
    r.run(1.0)
    assert r.outcomes(1) == [STARTED, COMPLETED]
    assert r.robot.carrying == ["ORD-1"] and r.robot.compartments == {2: "ORD-1"}
    sealed = robot_pb2.CompartmentStatus(number=2, locked=True, seal_id="SEAL-1", seal_intact=True)
    assert r.last_compartments()[1] == sealed

    r.step(2, secure(StepKind.DROPOFF))
    r.run(600.0)
    assert r.outcomes(2) == [STARTED] and r.last_compartments()[1] == sealed
    r.action(  # the wrong compartment: refused, nothing opens
        m.InstantKind.OPEN_COMPARTMENT,
        compartment=1,
        grant_id="G-1",
        staff_id="NURSE-1",
        open_for_s=60.0,
    )
    r.action(  # nobody named: refused by the robot's own check of the message
        m.InstantKind.OPEN_COMPARTMENT, compartment=2, grant_id="G-1", open_for_s=60.0
    )
    r.run(60.0)
    assert r.outcomes(2) == [STARTED] and r.last_compartments()[1] == sealed
    assert len(r.robot.locks.refused) == 2 and "action.staff_id" in r.robot.locks.refused[1]
    r.action(
        m.InstantKind.OPEN_COMPARTMENT,
        compartment=2,
        grant_id="G-1",
        staff_id="NURSE-1",
        open_for_s=60.0,
    )
    r.run(100.0)
    assert r.outcomes(2) == [STARTED, COMPLETED]
    assert r.robot.carrying == [] and r.robot.compartments == {}
    states = [
        next(c for c in msg.state.compartments if c.number == 2)
        for msg in r.sent
        if msg.WhichOneof("msg") == "state"
    ]
    assert robot_pb2.CompartmentStatus(number=2, seal_id="SEAL-1", open=True) in states
    assert r.last_compartments()[1] == robot_pb2.CompartmentStatus(
        number=2, locked=True, seal_id="SEAL-1", seal_intact=False
    )


def test_the_simulated_robot_reports_compartments_in_every_state(
    demo_building: Building,
) -> None:
    r = Robot(demo_building, compartments=2)
    r.run(60.0)
    states = [msg.state for msg in r.sent if msg.WhichOneof("msg") == "state"]
    assert states and all([c.number for c in s.compartments] == [1, 2] for s in states)
    bare = Robot(demo_building, compartments=0)
    bare.run(60.0)
    assert all(not msg.state.compartments for msg in bare.sent if msg.WhichOneof("msg") == "state")


def test_a_cancelled_secure_dropoff_stays_locked_and_sealed(demo_building: Building) -> None:
    r = Robot(demo_building)
    r.step(1, secure(StepKind.PICKUP))
    r.action(m.InstantKind.SEAL_COMPARTMENT, compartment=2, seal_id="SEAL-1")
    r.run(600.0)
    r.step(2, secure(StepKind.DROPOFF))
    r.robot.locks.recipient_present = False
    r.action(
        m.InstantKind.OPEN_COMPARTMENT,
        compartment=2,
        grant_id="G-1",
        staff_id="NURSE-1",
        open_for_s=300.0,
    )
    r.run(120.0)
    r.action(m.InstantKind.CANCEL_STEP, reason="nobody came")
    r.run(600.0)
    assert r.outcomes(2) == [STARTED]
    assert r.last_compartments()[1] == robot_pb2.CompartmentStatus(
        number=2, locked=True, seal_id="SEAL-1", seal_intact=True
    )
    # It takes the next step (back to the pharmacy, in reality).
    r.step(3, Step(StepKind.PICKUP, station="PHARMACY", order_ids=("ORD-2",), quantity=1))
    r.run(600.0)
    assert r.outcomes(3) == [STARTED, COMPLETED]


def test_a_robot_in_fault_keeps_its_compartments_locked(demo_building: Building) -> None:
    r = Robot(demo_building)
    r.step(1, secure(StepKind.PICKUP))
    r.action(m.InstantKind.SEAL_COMPARTMENT, compartment=2, seal_id="SEAL-1")
    r.run(600.0)
    r.step(2, secure(StepKind.DROPOFF))
    r.robot.locks.open_after_s = 60.0
    r.action(
        m.InstantKind.OPEN_COMPARTMENT,
        compartment=2,
        grant_id="G-1",
        staff_id="NURSE-1",
        open_for_s=300.0,
    )
    r.run(10.0)
    r.robot.inject_fault("drive motor")
    states = [msg.state for msg in r.sent if msg.WhichOneof("msg") == "state"]
    assert states[-1].mode == robot_pb2.ROBOT_MODE_FAULT
    assert list(states[-1].errors) == ["drive motor"]
    r.action(
        m.InstantKind.OPEN_COMPARTMENT,
        compartment=2,
        grant_id="G-2",
        staff_id="NURSE-1",
        open_for_s=300.0,
    )
    r.run(600.0)
    assert r.outcomes(2) == [STARTED]
    assert r.last_compartments()[1] == robot_pb2.CompartmentStatus(
        number=2, locked=True, seal_id="SEAL-1", seal_intact=True
    )
    r.step(3, secure(StepKind.DROPOFF))
    assert r.outcomes(3) == [FAILED]
    # Recovered on site: the drop-off is sent again and the recipient gets the drugs.
    r.robot.clear_fault()
    r.step(4, secure(StepKind.DROPOFF))
    r.robot.locks.open_after_s = 5.0
    r.action(
        m.InstantKind.OPEN_COMPARTMENT,
        compartment=2,
        grant_id="G-3",
        staff_id="NURSE-1",
        open_for_s=300.0,
    )
    r.run(600.0)
    assert r.outcomes(4) == [STARTED, COMPLETED]


def test_tampering_is_reported_in_the_next_state(demo_building: Building) -> None:
    r = Robot(demo_building)
    r.step(1, secure(StepKind.PICKUP))
    r.action(m.InstantKind.SEAL_COMPARTMENT, compartment=2, seal_id="SEAL-1")
    r.run(600.0)
    r.robot.tamper(2, "forced with a screwdriver")
    assert r.last_compartments()[1] == robot_pb2.CompartmentStatus(
        number=2, locked=True, seal_id="SEAL-1", seal_intact=False
    )


def test_non_secure_steps_complete_as_before(demo_building: Building) -> None:
    r = Robot(demo_building)
    service_s = demo_building.stations["PHARMACY"].service_time_s
    plain = Step(
        StepKind.PICKUP,
        station="PHARMACY",
        order_ids=("ORD-1",),
        quantity=1,
        compartments=(("ORD-1", 0),),
    )
    r.step(1, plain)
    r.run(service_s - 1)
    assert r.outcomes(1) == [STARTED]
    r.run(1.0)
    assert r.outcomes(1) == [STARTED, COMPLETED]
    assert [c.locked for c in r.last_compartments()] == [False, False, False]


def test_recovery_on_site_empties_the_compartment_and_breaks_its_seal(
    demo_building: Building,
) -> None:
    c = sealed_for_dropoff()
    c.fault(0.0)
    c.recover(10.0, [2], "by ph-chen and log-novak")
    assert c[2].status() == m.CompartmentStatus(2, True, "SEAL-1", False, False)

    r = Robot(demo_building)
    r.step(1, secure(StepKind.PICKUP))
    r.action(m.InstantKind.SEAL_COMPARTMENT, compartment=2, seal_id="SEAL-1")
    r.run(600.0)
    r.robot.disconnect()  # it dies in a corridor with the drugs on board
    r.robot.forget_cargo()  # two people take them out
    assert r.robot.carrying == [] and r.robot.compartments == {}
    r.robot.connect()  # repaired
    r.step(2, secure(StepKind.PICKUP))  # the same compartment loads again, under a new seal
    r.action(m.InstantKind.SEAL_COMPARTMENT, compartment=2, seal_id="SEAL-2")
    r.run(600.0)
    assert r.outcomes(2) == [STARTED, COMPLETED] and r.robot.locks.refused == []
    assert r.last_compartments()[1] == robot_pb2.CompartmentStatus(
        number=2, locked=True, seal_id="SEAL-2", seal_intact=True
    )
