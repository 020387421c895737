"""`CustodyDesk`: people's robot-linked steps become fleet commands only when a robot really
waits, fleet reports move the case, and a trip that ends before loading is sent again. The
dispatcher core is a fake that records commands (the real one is in tests/e2e)."""

from __future__ import annotations

import itertools

import pytest

from fleet.custody.desk import CustodyDesk
from fleet.custody.lifecycle import CaseState, Leg
from fleet.dispatch import messages as m
from fleet.domain.cargo import CargoClass, Flow
from fleet.domain.errors import FailedPrecondition
from fleet.domain.order import Order, OrderEvent, OrderState
from fleet.domain.priority import Priority
from fleet.planning import Task, VehicleState, fits_vehicle
from tests.unit.test_custody_lifecycle import World


class FakeCore:
    """Takes commands; creates orders with sequential ids."""

    def __init__(self) -> None:
        self.commands: list[m.Inbound] = []
        self._ids = itertools.count(1)

    def submit(self, cmd: m.Inbound) -> Order | None:
        self.commands.append(cmd)
        if isinstance(cmd, m.CreateOrder):
            assert cmd.cargo_class is not None
            return Order(
                id=f"ORD-{next(self._ids)}",
                pickup_station=cmd.pickup_station,
                dropoff_station=cmd.dropoff_station,
                cargo_class=cmd.cargo_class,
                quantity=cmd.quantity,
                priority=cmd.priority,
                created_at=0.0,
                custody_case=cmd.custody_case,
                return_of=cmd.return_of,
            )
        return None


def stop(order: Order, kind: str, station: str, at: float, robot: str = "AMR-1") -> m.SecureStop:
    return m.SecureStop(at, robot, order.id, order.custody_case, kind, station, "node", 2)


def changed(order: Order, state: OrderState, at: float, why: str = "") -> Order:
    order.state = state
    order.robot_id = "AMR-1"
    order.failure_reason = why
    order.history.append(OrderEvent(at, state, why))
    return order


@pytest.fixture
def world() -> World:
    return World()


def verified_case(w: World) -> str:
    cid = w.request()
    w.approve(cid)
    w.pick(cid)
    w.verify(cid)
    return cid


def test_a_case_rides_only_when_a_robot_waits_and_each_step_tells_the_robot(world: World) -> None:
    w = world
    core = FakeCore()
    desk = CustodyDesk(w.book, core.submit, pharmacy_station="PHARMACY")
    cid = verified_case(w)
    order = desk.send(cid, now=w.tick())
    create = core.commands[-1]
    assert isinstance(create, m.CreateOrder)
    assert create.custody_case == cid and create.cargo_class is CargoClass.CONTROLLED_DRUG
    assert (create.pickup_station, create.dropoff_station) == ("PHARMACY", "OR-3")
    holder = w.case(cid).holder.removeprefix("person:")

    # Nobody is at the hatch yet: the pharmacist cannot load, and nothing is written.
    with pytest.raises(FailedPrecondition, match="no robot waits"):
        desk.load(cid, w.auth(holder), "S-1", now=w.tick())
    assert w.case(cid).state is CaseState.VERIFIED

    desk.on_secure_stop(stop(order, "PICKUP", "PHARMACY", w.tick()))
    with pytest.raises(FailedPrecondition, match="AMR-9"):
        desk.load(cid, w.auth(holder), "S-1", now=w.tick(), robot_id="AMR-9")
    desk.load(cid, w.auth(holder), "S-1", now=w.tick())
    assert core.commands[-1] == m.SealCompartment(order.id, "S-1")
    case = w.case(cid)
    assert case.state is CaseState.LOADED and (case.robot_id, case.compartment) == ("AMR-1", "2")

    desk.on_order(changed(order, OrderState.PICKED_UP, w.tick()))
    assert w.case(cid).state is CaseState.IN_TRANSIT
    desk.on_secure_stop(stop(order, "DROPOFF", "OR-3", w.tick(300)))
    assert w.case(cid).state is CaseState.AWAITING_RECIPIENT
    grant = desk.open_for_recipient(cid, w.auth("an1"), now=w.tick())
    opened = core.commands[-1]
    assert isinstance(opened, m.OpenCompartment)
    assert (opened.order_id, opened.staff_id) == (order.id, "an1") == (order.id, grant.staff_id)
    assert 0 < opened.open_for_s <= w.book.settings.open_window_s


def test_a_robot_dying_with_the_drugs_is_a_fault_of_the_case(world: World) -> None:
    w = world
    core = FakeCore()
    desk = CustodyDesk(w.book, core.submit)
    cid = verified_case(w)
    order = desk.send(cid, now=w.tick())
    desk.on_secure_stop(stop(order, "PICKUP", "PHARMACY", w.tick()))
    desk.load(cid, w.auth(w.case(cid).holder.removeprefix("person:")), "S-1", now=w.tick())
    desk.on_order(changed(order, OrderState.PICKED_UP, w.tick()))
    desk.on_order(changed(order, OrderState.FAILED, w.tick(), "robot AMR-1 went offline"))
    case = w.case(cid)
    # Recovery starts at once: two people must come; custody stays with the compartment.
    assert case.state is CaseState.RECOVERY_PENDING
    assert [h.step for h in case.history][-2:] == ["robot_fault", "start_recovery"]
    assert case.custodian == "compartment:AMR-1/2"
    assert "offline" in case.fault_detail
    # The operators hear of it at the desk's next tick (not inside the fleet's report).
    assert not any(isinstance(c, m.RaiseAlert) for c in core.commands)
    desk.tick(w.tick())
    (alert,) = [c for c in core.commands if isinstance(c, m.RaiseAlert)]
    assert alert.code == "CUSTODY_ROBOT_FAULT" and alert.subject == cid
    assert alert.severity is m.AlertSeverity.CRITICAL and "AMR-1" in alert.message


def test_a_trip_that_ends_before_loading_is_sent_again(world: World) -> None:
    w = world
    core = FakeCore()
    desk = CustodyDesk(w.book, core.submit)
    cid = verified_case(w)
    first = desk.send(cid, now=w.tick())
    desk.on_order(changed(first, OrderState.FAILED, w.tick(), "robot went offline"))
    assert w.case(cid).state is CaseState.VERIFIED  # the drugs never left the pharmacist
    assert desk.tick(w.tick()) == [cid]
    again = core.commands[-1]
    assert isinstance(again, m.CreateOrder) and again.custody_case == cid
    trip = desk.trip_of(cid)
    assert trip is not None and trip.order_id != first.id and trip.leg is Leg.OUTBOUND
    assert desk.tick(w.tick()) == []  # once


def test_nobody_comes_the_robot_is_sent_back_to_the_pharmacy(world: World) -> None:
    w = world
    core = FakeCore()
    desk = CustodyDesk(w.book, core.submit)
    cid = verified_case(w)
    order = desk.send(cid, now=w.tick())
    desk.on_secure_stop(stop(order, "PICKUP", "PHARMACY", w.tick()))
    desk.load(cid, w.auth(w.case(cid).holder.removeprefix("person:")), "S-1", now=w.tick())
    desk.on_order(changed(order, OrderState.PICKED_UP, w.tick()))
    desk.on_secure_stop(stop(order, "DROPOFF", "OR-3", w.tick(300)))
    settings = w.book.settings
    desk.tick(w.tick(settings.recipient_timeout_s + 1))
    assert w.case(cid).state is CaseState.ALT_RECIPIENT_PAGED
    desk.tick(w.tick(settings.alt_timeout_s + 1))
    assert w.case(cid).state is CaseState.RETURNING_TO_PHARMACY
    assert core.commands[-1] == m.RedirectOrder(
        order.id, "PHARMACY", f"nobody received custody case {cid}: back to the pharmacy"
    )


def _vehicle(compartments: int | None, full: bool = False) -> VehicleState:
    return VehicleState(
        robot_id="AMR-1",
        start_node="A",
        available_at=0.0,
        capacity_slots=4,
        speed_m_s=1.0,
        cargo_classes=frozenset({CargoClass.CONTROLLED_DRUG}),
        flow=Flow.CLEAN,
        compartments=compartments,
        custody_full=full,
    )


def _task(custody: bool, pinned: bool = False) -> Task:
    return Task(
        order_id="O",
        pickup_node="A",
        dropoff_node="B",
        cargo_class=CargoClass.CONTROLLED_DRUG,
        quantity=1,
        priority=Priority.URGENT,
        created_at=0.0,
        needed_by=None,
        pickup_service_s=0.0,
        dropoff_service_s=0.0,
        custody=custody,
        pinned_robot="AMR-1" if pinned else None,
        pinned_compartment=1 if pinned else None,
    )


def test_a_custody_case_needs_a_free_lockable_compartment() -> None:
    assert fits_vehicle(_vehicle(4), _task(custody=True))
    assert not fits_vehicle(_vehicle(None), _task(custody=True))  # no lockable compartment
    assert not fits_vehicle(_vehicle(0), _task(custody=True))
    assert not fits_vehicle(_vehicle(4, full=True), _task(custody=True))  # all kept for returns
    assert fits_vehicle(_vehicle(4, full=True), _task(custody=True, pinned=True))  # its own
    assert fits_vehicle(_vehicle(None), _task(custody=False))  # other orders as before
