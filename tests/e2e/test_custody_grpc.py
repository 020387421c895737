"""Issue 5, end to end in the simulator over gRPC: a controlled-drug request from OR 3 is
approved, picked, verified, loaded, delivered by a robot through a lift, received with a correct
blind count, partly administered, the residual wasted with a witness, and the unused units and
the empty ampoules come back on the same robot; the day's register balances and
`fleet custody verify` passes.

The service runs as `fleet serve --custody` would (`Service` with `Settings(custody=True)`), the
robot is a simulated vendor robot on its own RobotGateway stream (`LiveTwin`), and the test
plays the people purely through CustodyService: the pharmacy and OR systems learn when a robot
waits for them from `CustodyCase.waiting_robot`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import grpc
import grpc.aio
import pytest

from fleet.bootstrap import Service
from fleet.cli import main
from fleet.config import METRICS_OFF, Settings
from fleet.custody.catalogue import load_catalogue
from fleet.custody.register import day_register
from fleet.custody.setup import CustodySources, load_vault_stock
from fleet.store.ledger import connect_ledger
from fleet.v1 import custody_pb2, custody_pb2_grpc, orders_pb2, orders_pb2_grpc
from simulators.custody_day import staff_pins
from simulators.fast import CLEAN_CLASSES
from simulators.live import LiveTwin
from simulators.robot import RobotSpec
from tests.conftest import DEMO_MAP

SCALE = 60.0
WAIT_S = 40.0  # wall seconds a robot may take to reach the next station
FENTANYL = "86999900000101"  # fentanyl 0.1 mg ampoule: every unit used leaves an empty ampoule
ROBOT = "AMR-01"
OR3 = "OR-03"
PHARMACY = "PHARMACY"
PICKUP = custody_pb2.SECURE_STOP_KIND_PICKUP
DROPOFF = custody_pb2.SECURE_STOP_KIND_DROPOFF
PINS = staff_pins()


def creds(staff_id: str) -> custody_pb2.Credentials:
    badge, pin = PINS[staff_id]
    return custody_pb2.Credentials(badge=badge, pin=pin)


def lot_counts(counts: dict[str, int]) -> list[custody_pb2.LotCount]:
    return [custody_pb2.LotCount(lot=lot, units=n) for lot, n in counts.items()]


def fefo_pick(drug_code: str, units: int, today: date) -> dict[str, int]:
    """What the pharmacist takes from the vault: first expiry first out, expired lots left."""
    sources = CustodySources()
    stock = load_vault_stock(sources.stock, load_catalogue(sources.catalogue))
    picked: dict[str, int] = {}
    for lot in stock.lots(drug_code):
        if units == 0:
            break
        if lot.lot.expired(today):
            continue
        take = min(units, lot.on_hand)
        picked[lot.lot.lot] = take
        units -= take
    assert units == 0, f"the demo vault is short of {drug_code}"
    return picked


async def wait_for_robot(
    stub: custody_pb2_grpc.CustodyServiceStub, case_id: str, kind: int, station: str
) -> custody_pb2.CustodyCase:
    """Poll the case until a robot waits with it at `station` for `kind`; fail naming what the
    case looked like."""
    deadline = time.monotonic() + WAIT_S
    case = custody_pb2.CustodyCase()
    while time.monotonic() < deadline:
        case = await stub.GetCase(custody_pb2.GetCaseRequest(case_id=case_id), timeout=5)
        w = case.waiting_robot
        if case.HasField("waiting_robot") and w.kind == kind and w.station == station:
            return case
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"no robot waited at {station} ({custody_pb2.SecureStopKind.Name(kind)}) for {case_id} "
        f"within {WAIT_S} s: case {custody_pb2.CaseState.Name(case.state)}, waiting "
        f"{case.waiting_robot if case.HasField('waiting_robot') else 'none'}"
    )


async def wait_until(what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def rode_lift(events: list[tuple[str, str]], robot: str, lift: str, start: str, to: str) -> bool:
    """The robot entered the lift at `start` and left it at `to`, in that order."""
    entered = [i for i, e in enumerate(events) if e == (robot, f"enter lift {lift} at {start}")]
    left = [i for i, e in enumerate(events) if e == (robot, f"exit lift {lift} at {to}")]
    return any(j > i for i in entered for j in left)


async def test_or3_case_end_to_end_over_grpc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    settings = Settings(
        map_path=DEMO_MAP,
        database_url=url,
        grpc_port=0,
        metrics_port=METRICS_OFF,
        time_scale=SCALE,
        solve_time_limit_s=0.5,
        log_level="WARNING",
        custody=True,
        custody_fast_pins=True,
    )
    service = Service(settings)
    await service.start()
    target = f"127.0.0.1:{service.grpc_port}"
    clock = service.core.clock
    # One material robot with lockable compartments, starting in the basement: the pharmacy is
    # on B1 and OR 3 on L1, so it rides the clean lift both ways.
    spec = RobotSpec(ROBOT, CLEAN_CLASSES, "B1-CHARGER-1", compartments=4)
    twin = LiveTwin(service.core.building, [spec], target, clock, SCALE)
    await twin.start()
    channel = grpc.aio.insecure_channel(target)
    stub = custody_pb2_grpc.CustodyServiceStub(channel)
    orders = orders_pb2_grpc.OrderServiceStub(channel)
    try:
        await wait_until(
            "the robot's hello",
            lambda: (run := service.core.robots.get(ROBOT)) is not None and run.connected,
        )
        today = datetime.fromtimestamp(clock.now(), UTC).date()

        # -- the OR requests, the pharmacy approves, picks and verifies: the robot is called --
        requested = await stub.Request(
            custody_pb2.RequestCaseRequest(
                requester=creds("an-wang"),
                prescription_no=f"麻精一-{today:%Y%m%d}-0003",
                patient_ref="P-0042",
                case_ref=f"SURG-{today:%Y%m%d}-OR03-001",
                or_station=OR3,
                drug_code=FENTANYL,
                quantity=5,
                alternates=["an-garcia"],
            ),
            timeout=5,
        )
        case_id = requested.custody_case.id
        assert requested.custody_case.state == custody_pb2.CASE_STATE_REQUESTED
        await stub.Approve(
            custody_pb2.ApproveRequest(case_id=case_id, pharmacist=creds("ph-chen")), timeout=5
        )
        picked = fefo_pick(FENTANYL, 5, today)
        await stub.Pick(
            custody_pb2.PickRequest(
                case_id=case_id, picker=creds("ph-chen"), scanned=lot_counts(picked)
            ),
            timeout=5,
        )
        verified = await stub.Verify(
            custody_pb2.VerifyRequest(case_id=case_id, verifier=creds("ph-okafor")), timeout=5
        )
        assert verified.custody_case.state == custody_pb2.CASE_STATE_VERIFIED
        # The second pharmacist's check called a robot: the case's order is in the fleet.
        trip = service.custody_desk.trip_of(case_id) if service.custody_desk else None
        assert trip is not None, "Verify placed no order"
        outbound = await orders.GetOrder(orders_pb2.GetOrderRequest(order_id=trip.order_id))
        assert outbound.pickup_station == PHARMACY and outbound.dropoff_station == OR3

        # -- the robot waits at the hatch: the pharmacist loads and seals --------------------
        at_hatch = await wait_for_robot(stub, case_id, PICKUP, PHARMACY)
        robot = at_hatch.waiting_robot
        assert robot.robot_id == ROBOT and robot.compartment >= 1
        assert robot.order_id == trip.order_id
        # A compartment other than the one the robot holds open is refused, naming both.
        wrong = robot.compartment % 4 + 1
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Load(
                custody_pb2.LoadRequest(
                    case_id=case_id,
                    loader=creds("ph-chen"),
                    robot_id=ROBOT,
                    compartment=wrong,
                    seal_id="SEAL-OUT-0001",
                ),
                timeout=5,
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = refused.value.details() or ""
        assert f"compartment {wrong}" in details
        assert f"compartment {robot.compartment}" in details
        loaded = await stub.Load(
            custody_pb2.LoadRequest(
                case_id=case_id,
                loader=creds("ph-chen"),
                robot_id=robot.robot_id,
                compartment=robot.compartment,
                seal_id="SEAL-OUT-0001",
            ),
            timeout=5,
        )
        assert loaded.custody_case.state == custody_pb2.CASE_STATE_LOADED
        compartment = robot.compartment

        # -- through the lift to OR 3: the recipient opens, counts blind, receives ------------
        at_or = await wait_for_robot(stub, case_id, DROPOFF, OR3)
        assert at_or.state == custody_pb2.CASE_STATE_AWAITING_RECIPIENT
        assert at_or.waiting_robot.robot_id == ROBOT
        assert at_or.waiting_robot.compartment == compartment
        events = [(e.actor, e.what) for e in twin.world.events]
        assert rode_lift(events, ROBOT, "LIFT-CLEAN", "B1", "L1"), "no ride up the clean lift"
        grant = await stub.OpenCompartment(
            custody_pb2.OpenCompartmentRequest(case_id=case_id, recipient=creds("an-wang")),
            timeout=5,
        )
        assert grant.robot_id == ROBOT and grant.compartment == compartment
        assert grant.staff_id == "an-wang"
        received = await stub.Receive(
            custody_pb2.ReceiveRequest(
                case_id=case_id,
                recipient=creds("an-wang"),
                blind_count=lot_counts(picked),
                seal_id_seen="SEAL-OUT-0001",
            ),
            timeout=5,
        )
        assert received.custody_case.state == custody_pb2.CASE_STATE_RECEIVED
        assert not received.opened, "a correct blind count opened a discrepancy"
        await stub.StoreInOr(
            custody_pb2.StoreInOrRequest(case_id=case_id, holder=creds("an-wang")), timeout=5
        )

        # -- surgery: 3 given, 1 wasted before a witness, 1 unused; 4 empty ampoules ----------
        (lot,) = picked  # five units fit in the first usable lot
        await stub.Administer(
            custody_pb2.AdministerRequest(
                case_id=case_id,
                anesthesiologist=creds("an-wang"),
                lot=lot,
                quantity=3,
                patient_ref="P-0042",
            ),
            timeout=5,
        )
        await stub.Waste(
            custody_pb2.WasteRequest(
                case_id=case_id,
                actor=creds("an-wang"),
                witness=creds("orn-zhang"),
                lot=lot,
                quantity=1,
                residual="residual of the opened ampoule",
            ),
            timeout=5,
        )
        reconciled = await stub.Reconcile(
            custody_pb2.ReconcileRequest(
                case_id=case_id,
                actor=creds("an-wang"),
                witness=creds("orn-zhang"),
                unused_by_lot=lot_counts({lot: 1}),
                empty_containers_by_lot=lot_counts({lot: 4}),
            ),
            timeout=5,
        )
        assert reconciled.custody_case.state == custody_pb2.CASE_STATE_RECONCILIATION_SUBMITTED
        assert not reconciled.opened

        # -- the same robot comes back for the return (same compartment, new seal) ------------
        for_return = await wait_for_robot(stub, case_id, PICKUP, OR3)
        assert for_return.waiting_robot.robot_id == ROBOT
        assert for_return.waiting_robot.compartment == compartment
        return_order = for_return.waiting_robot.order_id
        assert return_order != trip.order_id
        await stub.LoadReturn(
            custody_pb2.LoadReturnRequest(
                case_id=case_id,
                loader=creds("an-wang"),
                robot_id=ROBOT,
                compartment=compartment,
                seal_id="SEAL-RET-0001",
            ),
            timeout=5,
        )

        # -- back at the pharmacy: two pharmacists count it in; the case closes ----------------
        back = await wait_for_robot(stub, case_id, DROPOFF, PHARMACY)
        assert back.state == custody_pb2.CASE_STATE_RETURN_IN_TRANSIT
        events = [(e.actor, e.what) for e in twin.world.events]
        assert rode_lift(events, ROBOT, "LIFT-CLEAN", "L1", "B1"), "no ride down the clean lift"
        closed = await stub.ReturnReceive(
            custody_pb2.ReturnReceiveRequest(
                case_id=case_id,
                pharmacist=creds("ph-chen"),
                witness=creds("ph-okafor"),
                blind_count_unused=lot_counts({lot: 1}),
                blind_count_empties=lot_counts({lot: 4}),
                seal_id_seen="SEAL-RET-0001",
            ),
            timeout=5,
        )
        assert closed.custody_case.state == custody_pb2.CASE_STATE_CLOSED, closed.custody_case
        assert not closed.opened
        (account,) = closed.custody_case.lots
        assert (account.issued, account.administered, account.wasted) == (5, 3, 1)
        assert (account.returned_unused, account.empties_returned, account.held) == (1, 4, 0)

        # The compartment opened for the pharmacist: the robot delivers the return and is free.
        async def return_delivered() -> None:
            while True:
                o = await orders.GetOrder(orders_pb2.GetOrderRequest(order_id=return_order))
                if o.state == orders_pb2.ORDER_STATE_DELIVERED:
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(return_delivered(), WAIT_S)
        done = await orders.GetOrder(orders_pb2.GetOrderRequest(order_id=trip.order_id))
        assert done.state == orders_pb2.ORDER_STATE_DELIVERED
        final = await stub.GetCase(custody_pb2.GetCaseRequest(case_id=case_id), timeout=5)
        assert not final.HasField("waiting_robot")
    finally:
        await channel.close(None)
        await twin.stop()
        await service.stop(grace=0.2)

    assert twin.world.conflicts == 0 and twin.world.violations == []

    # -- the register of every day the ledger covers balances; the chain verifies ------------
    catalogue = load_catalogue(CustodySources().catalogue)
    ledger = connect_ledger(url)
    try:
        events_on_ledger = list(ledger.iter_events())
    finally:
        ledger.close()
    assert events_on_ledger, "nothing reached the ledger"
    days = sorted({datetime.fromtimestamp(e.occurred_at, UTC).date() for e in events_on_ledger})
    for day in days:
        register = day_register(events_on_ledger, catalogue, day)
        assert register.balanced, register.problems()
    capsys.readouterr()
    assert main(["custody", "report", "--db", url, "--date", days[-1].isoformat()]) == 0
    report = capsys.readouterr().out
    assert FENTANYL in report or lot in report, report
    assert main(["custody", "verify", "--db", url]) == 0, capsys.readouterr().err
