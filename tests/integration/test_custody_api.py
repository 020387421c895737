"""CustodyService end to end: a real gRPC server on a loopback port, a grpc.aio client, the
demo catalogue, staff and vault stock, and the ledger in a SQLite file.

The authorization rules of issue 5 over the wire (a nurse cannot approve, nobody is their own
second checker or witness, a wrong PIN is refused and repeated ones lock the credential, an
expired lot cannot be picked, a compartment opens only for the recipient's two factors); a full
case from the OR 3 request to CLOSED, with the unit's chain of holders, a verified ledger and a
balanced register; and bad input named by field. The robot's own steps (depart, arrive,
await_recipient) are driven through the runner, as the dispatcher will.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fleet.api.custody_servicer import (
    CustodyServicer,
    LockedCustodyRunner,
    open_custody_runner,
)
from fleet.api.server import CUSTODY_SERVICE_NAME, SERVICE_NAMES, build_server
from fleet.building.graph import BuildingGraph
from fleet.building.loader import load_building
from fleet.clock import ManualClock
from fleet.config import Settings
from fleet.custody.catalogue import load_catalogue
from fleet.custody.lifecycle import CaseState, CustodyBook
from fleet.custody.people import PinHashing
from fleet.custody.register import day_register
from fleet.custody.setup import CustodySources, StockFileError, load_vault_stock
from fleet.dispatch.bus import AsyncBus
from fleet.dispatch.core import CoreConfig, FleetCore
from fleet.store import open_store
from fleet.store.ledger import connect_ledger
from fleet.v1 import custody_pb2, custody_pb2_grpc
from tests.integration.test_grpc_api import MAP, STEP_TIMEOUT_S, expect_error

T0 = datetime(2026, 11, 27, 8, 30, tzinfo=UTC).timestamp()
FAST = PinHashing(cost=(16, 1, 1))  # the demo PINs hashed cheaply: the tests stay fast
SOURCES = CustodySources()
FENTANYL = "86999900000101"
EXPIRED_LOT = "F2609"  # expired 2026-09-30, still in the demo vault
GOOD_LOT = "F2706"  # the first usable lot, first-expiry-first-out
OR3 = "L1-OR-03"
PATIENT = "P-0042"


def staff_credentials() -> dict[str, tuple[str, str]]:
    """staff id -> (badge, PIN) from the demo staff file."""
    data = yaml.safe_load(SOURCES.staff.read_text(encoding="utf-8"))
    return {p["id"]: (p["badge"], p["pin"]) for p in data["staff"]}


CREDS = staff_credentials()


def creds(staff_id: str, pin: str | None = None) -> custody_pb2.Credentials:
    badge, right = CREDS[staff_id]
    return custody_pb2.Credentials(badge=badge, pin=right if pin is None else pin)


def wrong_pin(staff_id: str) -> str:
    right = CREDS[staff_id][1]
    return "2468" if right != "2468" else "1357"


def counts(**by_lot: int) -> list[custody_pb2.LotCount]:
    return [custody_pb2.LotCount(lot=lot, units=n) for lot, n in by_lot.items()]


@dataclass
class Desk:
    """The client side of a test: the stub, and the runner and clock behind the server."""

    stub: custody_pb2_grpc.CustodyServiceStub
    runner: LockedCustodyRunner
    clock: ManualClock
    url: str

    def tick(self, dt: float = 30.0) -> None:
        self.clock.advance_to(self.clock.now() + dt)

    async def call(self, rpc: Callable[..., Any], request: Any) -> Any:
        self.tick()
        return await rpc(request, timeout=STEP_TIMEOUT_S)

    async def refused(
        self, code: grpc.StatusCode, rpc: Callable[..., Any], request: Any, field: str | None = None
    ) -> str:
        """`rpc(request)` fails with `code` and changes nothing: no ledger event, no case."""
        before = await self.runner.run(lambda book, now: (book.cases(), book.stock.snapshot()))
        head = connect_ledger(self.url)
        try:
            seq = head.head().seq
            self.tick()
            details = await expect_error(
                code, functools.partial(rpc, request, timeout=STEP_TIMEOUT_S), field=field
            )
            assert head.head().seq == seq
        finally:
            head.close()
        after = await self.runner.run(lambda book, now: (book.cases(), book.stock.snapshot()))
        assert after == before
        return details

    async def robot(self, step: Callable[[CustodyBook, float], Any], dt: float = 60.0) -> None:
        """A robot-linked step, as the dispatcher drives it."""
        self.tick(dt)
        await self.runner.run(step)

    # -- the happy-path steps -------------------------------------------------------------------

    async def request(self, requester: str = "an-wang", **kw: Any) -> str:
        args: dict[str, Any] = {
            "requester": creds(requester),
            "prescription_no": "麻精一-2026-000123",
            "patient_ref": PATIENT,
            "case_ref": "SURG-20261127-03",
            "or_station": OR3,
            "drug_code": FENTANYL,
            "quantity": 5,
            "alternates": ["orn-zhang"],
        }
        args.update(kw)
        response = await self.call(self.stub.Request, custody_pb2.RequestCaseRequest(**args))
        assert response.custody_case.state == custody_pb2.CASE_STATE_REQUESTED
        return str(response.custody_case.id)

    async def approve(self, case_id: str, who: str = "ph-chen") -> None:
        await self.call(
            self.stub.Approve, custody_pb2.ApproveRequest(case_id=case_id, pharmacist=creds(who))
        )

    async def pick(self, case_id: str, who: str = "ph-chen", lot: str = GOOD_LOT) -> None:
        await self.call(
            self.stub.Pick,
            custody_pb2.PickRequest(case_id=case_id, picker=creds(who), scanned=counts(**{lot: 5})),
        )

    async def verify(self, case_id: str, who: str = "ph-okafor") -> None:
        await self.call(
            self.stub.Verify, custody_pb2.VerifyRequest(case_id=case_id, verifier=creds(who))
        )

    async def load(self, case_id: str, seal: str = "SEAL-0001") -> None:
        await self.call(
            self.stub.Load,
            custody_pb2.LoadRequest(
                case_id=case_id,
                loader=creds("ph-chen"),
                robot_id="AMR-07",
                compartment=2,
                seal_id=seal,
            ),
        )

    async def travel(self, case_id: str) -> None:
        await self.robot(lambda book, now: book.depart(case_id, now=now))
        await self.robot(lambda book, now: book.arrive(case_id, now=now), dt=300)
        await self.robot(lambda book, now: book.await_recipient(case_id, now=now), dt=5)

    async def to_awaiting_recipient(self) -> str:
        case_id = await self.request()
        await self.approve(case_id)
        await self.pick(case_id)
        await self.verify(case_id)
        await self.load(case_id)
        await self.travel(case_id)
        return case_id

    async def to_or_custody(self) -> str:
        case_id = await self.to_awaiting_recipient()
        await self.call(
            self.stub.OpenCompartment,
            custody_pb2.OpenCompartmentRequest(case_id=case_id, recipient=creds("an-wang")),
        )
        await self.call(
            self.stub.Receive,
            custody_pb2.ReceiveRequest(
                case_id=case_id, recipient=creds("an-wang"), blind_count=counts(F2706=5)
            ),
        )
        await self.call(
            self.stub.StoreInOr,
            custody_pb2.StoreInOrRequest(case_id=case_id, holder=creds("an-wang")),
        )
        return case_id

    async def case(self, case_id: str) -> custody_pb2.CustodyCase:
        return await self.stub.GetCase(
            custody_pb2.GetCaseRequest(case_id=case_id), timeout=STEP_TIMEOUT_S
        )


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[LockedCustodyRunner]:
    clock = ManualClock(T0)
    r = open_custody_runner(SOURCES, f"sqlite:///{tmp_path / 'ledger.db'}", clock, hashing=FAST)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
async def desk(runner: LockedCustodyRunner, tmp_path: Path) -> AsyncIterator[Desk]:
    server = grpc.aio.server()
    custody_pb2_grpc.add_CustodyServiceServicer_to_server(CustodyServicer(runner), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        assert isinstance(runner.clock, ManualClock)
        yield Desk(
            custody_pb2_grpc.CustodyServiceStub(channel),
            runner,
            runner.clock,
            f"sqlite:///{tmp_path / 'ledger.db'}",
        )
    finally:
        await channel.close(None)
        await server.stop(0)


# ---- authorization over the wire ---------------------------------------------------------------


async def test_a_nurse_cannot_approve(desk: Desk) -> None:
    case_id = await desk.request()
    details = await desk.refused(
        grpc.StatusCode.PERMISSION_DENIED,
        desk.stub.Approve,
        custody_pb2.ApproveRequest(case_id=case_id, pharmacist=creds("orn-zhang")),
    )
    assert "approve" in details
    assert (await desk.case(case_id)).state == custody_pb2.CASE_STATE_REQUESTED


async def test_a_pharmacist_cannot_be_their_own_second_checker(desk: Desk) -> None:
    case_id = await desk.request()
    await desk.approve(case_id)
    await desk.pick(case_id, who="ph-chen")
    await desk.refused(
        grpc.StatusCode.PERMISSION_DENIED,
        desk.stub.Verify,
        custody_pb2.VerifyRequest(case_id=case_id, verifier=creds("ph-chen")),
    )
    await desk.verify(case_id, who="ph-okafor")
    assert (await desk.case(case_id)).verifier == "ph-okafor"


async def test_nobody_is_their_own_waste_witness(desk: Desk) -> None:
    case_id = await desk.to_or_custody()
    await desk.call(
        desk.stub.Administer,
        custody_pb2.AdministerRequest(
            case_id=case_id,
            anesthesiologist=creds("an-wang"),
            lot=GOOD_LOT,
            quantity=1,
            patient_ref=PATIENT,
        ),
    )
    details = await desk.refused(
        grpc.StatusCode.PERMISSION_DENIED,
        desk.stub.Waste,
        custody_pb2.WasteRequest(
            case_id=case_id,
            actor=creds("an-wang"),
            witness=creds("an-wang"),
            lot=GOOD_LOT,
            quantity=1,
        ),
    )
    assert "own second person" in details


async def test_a_wrong_pin_is_refused_and_repeated_ones_lock_the_credential(desk: Desk) -> None:
    case_id = await desk.request()
    bad = custody_pb2.ApproveRequest(
        case_id=case_id, pharmacist=creds("ph-chen", pin=wrong_pin("ph-chen"))
    )
    max_failures = desk.runner.book.directory.max_failures
    for _ in range(max_failures - 1):
        details = await desk.refused(grpc.StatusCode.UNAUTHENTICATED, desk.stub.Approve, bad)
        assert "locked" not in details
    details = await desk.refused(grpc.StatusCode.UNAUTHENTICATED, desk.stub.Approve, bad)
    assert "locked until" in details
    # Locked: the right PIN is refused too, without being looked at.
    good = custody_pb2.ApproveRequest(case_id=case_id, pharmacist=creds("ph-chen"))
    details = await desk.refused(grpc.StatusCode.UNAUTHENTICATED, desk.stub.Approve, good)
    assert "locked until" in details
    # Another pharmacist is not affected.
    await desk.approve(case_id, who="ph-okafor")
    assert (await desk.case(case_id)).approved_by == "ph-okafor"


async def test_an_expired_lot_cannot_be_picked(desk: Desk) -> None:
    case_id = await desk.request()
    await desk.approve(case_id)
    details = await desk.refused(
        grpc.StatusCode.FAILED_PRECONDITION,
        desk.stub.Pick,
        custody_pb2.PickRequest(case_id=case_id, picker=creds("ph-chen"), scanned=counts(F2609=5)),
    )
    assert EXPIRED_LOT in details and "expired" in details
    await desk.pick(case_id, lot=GOOD_LOT)
    case = await desk.case(case_id)
    assert [lot.lot for lot in case.lots] == [GOOD_LOT]


async def test_the_compartment_opens_only_for_the_recipients_two_factors(desk: Desk) -> None:
    case_id = await desk.to_awaiting_recipient()
    recipient = "an-wang"
    open_rpc = desk.stub.OpenCompartment
    # A wrong PIN with the recipient's badge.
    await desk.refused(
        grpc.StatusCode.UNAUTHENTICATED,
        open_rpc,
        custody_pb2.OpenCompartmentRequest(
            case_id=case_id, recipient=creds(recipient, pin=wrong_pin(recipient))
        ),
    )
    # The badge alone: one factor is not enough.
    await desk.refused(
        grpc.StatusCode.INVALID_ARGUMENT,
        open_rpc,
        custody_pb2.OpenCompartmentRequest(
            case_id=case_id, recipient=custody_pb2.Credentials(badge=CREDS[recipient][0])
        ),
        field="recipient.pin",
    )
    # Someone else, with their own valid badge and PIN.
    details = await desk.refused(
        grpc.StatusCode.PERMISSION_DENIED,
        open_rpc,
        custody_pb2.OpenCompartmentRequest(case_id=case_id, recipient=creds("orn-muller")),
    )
    assert "an-wang" in details
    # No grant was issued, and the delivery cannot be taken without one.
    assert not (await desk.case(case_id)).HasField("grant")
    assert (await desk.runner.run(lambda book, now: book.case(case_id))).grants == []
    await desk.refused(
        grpc.StatusCode.FAILED_PRECONDITION,
        desk.stub.Receive,
        custody_pb2.ReceiveRequest(
            case_id=case_id, recipient=creds(recipient), blind_count=counts(F2706=5)
        ),
    )
    # The recipient's own two factors open it, for the open window.
    grant = await desk.call(
        open_rpc, custody_pb2.OpenCompartmentRequest(case_id=case_id, recipient=creds(recipient))
    )
    assert (grant.staff_id, grant.robot_id, grant.compartment) == (recipient, "AMR-07", 2)
    window = desk.runner.book.settings.open_window_s
    assert grant.expires_at.ToSeconds() - grant.opened_at.ToSeconds() == pytest.approx(window)


# ---- the whole case ----------------------------------------------------------------------------


async def test_a_full_case_from_or3_to_closed_over_grpc(desk: Desk) -> None:
    stub = desk.stub
    case_id = await desk.request(recipient="an-wang")
    await desk.approve(case_id, "ph-chen")
    await desk.pick(case_id, "ph-chen")
    await desk.verify(case_id, "ph-okafor")
    await desk.load(case_id, seal="SEAL-0001")
    await desk.travel(case_id)
    assert (await desk.case(case_id)).state == custody_pb2.CASE_STATE_AWAITING_RECIPIENT

    grant = await desk.call(
        stub.OpenCompartment,
        custody_pb2.OpenCompartmentRequest(case_id=case_id, recipient=creds("an-wang")),
    )
    assert grant.case_id == case_id
    received = await desk.call(
        stub.Receive,
        custody_pb2.ReceiveRequest(
            case_id=case_id,
            recipient=creds("an-wang"),
            blind_count=counts(F2706=5),
            seal_id_seen="SEAL-0001",
        ),
    )
    assert not received.opened
    assert received.custody_case.custodian == "person:an-wang"
    await desk.call(
        stub.StoreInOr, custody_pb2.StoreInOrRequest(case_id=case_id, holder=creds("an-wang"))
    )
    administered = await desk.call(
        stub.Administer,
        custody_pb2.AdministerRequest(
            case_id=case_id,
            anesthesiologist=creds("an-wang"),
            lot=GOOD_LOT,
            quantity=2,
            patient_ref=PATIENT,
        ),
    )
    assert [e.to_custodian for e in administered.events] == [f"patient:{PATIENT}"]
    wasted = await desk.call(
        stub.Waste,
        custody_pb2.WasteRequest(
            case_id=case_id,
            actor=creds("an-wang"),
            witness=creds("orn-zhang"),
            lot=GOOD_LOT,
            quantity=0,
            residual="0.5 ml",
        ),
    )
    assert wasted.events[0].witness == "orn-zhang"
    reconciled = await desk.call(
        stub.Reconcile,
        custody_pb2.ReconcileRequest(
            case_id=case_id,
            actor=creds("an-wang"),
            witness=creds("orn-zhang"),
            unused_by_lot=counts(F2706=3),
            empty_containers_by_lot=counts(F2706=2),
        ),
    )
    assert not reconciled.opened
    assert reconciled.custody_case.state == custody_pb2.CASE_STATE_RECONCILIATION_SUBMITTED
    await desk.call(
        stub.LoadReturn,
        custody_pb2.LoadReturnRequest(
            case_id=case_id,
            loader=creds("an-wang"),
            robot_id="AMR-07",
            compartment=2,
            seal_id="SEAL-0002",
        ),
    )
    desk.tick(600)  # the robot's way back (the book needs no robot step on the return leg)
    closed = await desk.call(
        stub.ReturnReceive,
        custody_pb2.ReturnReceiveRequest(
            case_id=case_id,
            pharmacist=creds("ph-lindqvist"),
            witness=creds("ph-okafor"),
            blind_count_unused=counts(F2706=3),
            blind_count_empties=counts(F2706=2),
            seal_id_seen="SEAL-0002",
        ),
    )
    case = closed.custody_case
    assert case.state == custody_pb2.CASE_STATE_CLOSED
    assert case.custodian == "vault:pharmacy" and case.HasField("closed_at")
    (lot,) = case.lots
    assert (lot.issued, lot.administered, lot.returned_unused, lot.held) == (5, 2, 3, 0)
    assert (lot.opened, lot.empties_returned) == (2, 2)
    listed = await stub.ListCases(
        custody_pb2.ListCasesRequest(states=[custody_pb2.CASE_STATE_CLOSED]),
        timeout=STEP_TIMEOUT_S,
    )
    assert [c.id for c in listed.cases] == [case_id]
    open_ds = await stub.ListDiscrepancies(
        custody_pb2.ListDiscrepanciesRequest(), timeout=STEP_TIMEOUT_S
    )
    assert list(open_ds.discrepancies) == []

    # Who held the lot's units when: the transfers of drug units, in ledger order.
    history = await stub.UnitHistory(
        custody_pb2.UnitHistoryRequest(drug_code=FENTANYL, lot=GOOD_LOT, case_id=case_id),
        timeout=STEP_TIMEOUT_S,
    )
    events = list(history.events)
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert all(e.prev_hash and e.hash for e in events)
    for before, after in itertools.pairwise(events):
        if after.seq == before.seq + 1:
            assert after.prev_hash == before.hash
    holders = [
        (e.event_type, e.from_custodian, e.to_custodian, e.quantity, e.actor, e.witness)
        for e in events
        if e.unit == "ampoule" and e.from_custodian != e.to_custodian
    ]
    assert holders == [
        ("ISSUE", "vault:pharmacy", "person:ph-chen", "5", "ph-chen", ""),
        ("LOAD", "person:ph-chen", "compartment:AMR-07/2", "5", "ph-chen", ""),
        ("RECEIVE", "compartment:AMR-07/2", "person:an-wang", "5", "an-wang", ""),
        ("ADMINISTER", "person:an-wang", f"patient:{PATIENT}", "2", "an-wang", ""),
        ("WASTE", "person:an-wang", "waste", "0", "an-wang", "orn-zhang"),
        ("RETURN", "person:an-wang", "compartment:AMR-07/2", "3", "an-wang", ""),
        (
            "RETURN_RECEIVE",
            "compartment:AMR-07/2",
            "vault:pharmacy",
            "3",
            "ph-lindqvist",
            "ph-okafor",
        ),
    ]
    issue = events[0]
    assert (issue.prescription, issue.order_id, issue.expiry) == (
        "麻精一-2026-000123",
        case_id,
        "2027-06-30",
    )
    assert list(issue.actor_auth) == ["badge", "pin"]
    load = next(e for e in events if e.event_type == "LOAD")
    assert (load.robot_id, load.compartment, load.seal_id) == ("AMR-07", "2", "SEAL-0001")
    receive = next(e for e in events if e.event_type == "RECEIVE")
    assert (receive.blind_count, receive.expected_count) == (5, 5)
    assert not issue.HasField("blind_count")
    # Without the case filter the lot's history is the same here (one case used it).
    everything = await stub.UnitHistory(
        custody_pb2.UnitHistoryRequest(drug_code=FENTANYL, lot=GOOD_LOT), timeout=STEP_TIMEOUT_S
    )
    assert [e.seq for e in everything.events] == [e.seq for e in events]

    # The ledger in the database verifies and the day's register balances.
    store = connect_ledger(desk.url)
    try:
        report = store.verify()
        assert report.ok, report.summary()
        assert report.records == len(events)
        register = day_register(
            store.iter_events(), load_catalogue(SOURCES.catalogue), date(2026, 11, 27), "UTC"
        )
    finally:
        store.close()
    assert register.balanced, register.problems()
    (line,) = [row for row in register.lines if row.lot == GOOD_LOT]
    assert (line.issued, line.administered, line.returned) == (5, 2, 3)
    assert desk.runner.book.stock.lot(FENTANYL, GOOD_LOT).on_hand == 38  # 40 - 5 + 3


# ---- bad input ---------------------------------------------------------------------------------


async def test_missing_fields_are_named(desk: Desk) -> None:
    stub = desk.stub
    case_id = await desk.request()
    INVALID = grpc.StatusCode.INVALID_ARGUMENT
    cases: list[tuple[Callable[..., Any], Any, str]] = [
        (stub.Approve, custody_pb2.ApproveRequest(pharmacist=creds("ph-chen")), "case_id"),
        (stub.Approve, custody_pb2.ApproveRequest(case_id=case_id), "pharmacist"),
        (
            stub.Approve,
            custody_pb2.ApproveRequest(
                case_id=case_id, pharmacist=custody_pb2.Credentials(pin="2580")
            ),
            "pharmacist.badge",
        ),
        (
            stub.Request,
            custody_pb2.RequestCaseRequest(
                requester=creds("an-wang"),
                patient_ref=PATIENT,
                case_ref="S-1",
                or_station=OR3,
                drug_code=FENTANYL,
                quantity=5,
            ),
            "prescription_no",
        ),
        (
            stub.Request,
            custody_pb2.RequestCaseRequest(
                requester=creds("an-wang"),
                prescription_no="RX-1",
                patient_ref=PATIENT,
                case_ref="S-1",
                or_station=OR3,
                drug_code=FENTANYL,
            ),
            "quantity",
        ),
        (
            stub.Request,
            custody_pb2.RequestCaseRequest(
                requester=creds("an-wang"),
                prescription_no="RX-1",
                patient_ref=PATIENT,
                case_ref="S-1",
                or_station=OR3,
                drug_code="00000000000000",
                quantity=1,
            ),
            "drug_code",
        ),
        (
            stub.Request,
            custody_pb2.RequestCaseRequest(
                prescription_no="RX-1",
                patient_ref=PATIENT,
                case_ref="S-1",
                or_station=OR3,
                drug_code=FENTANYL,
                quantity=1,
            ),
            "requester",
        ),
        (
            stub.Load,
            custody_pb2.LoadRequest(
                case_id=case_id, loader=creds("ph-chen"), robot_id="AMR-07", seal_id="S-9"
            ),
            "compartment",
        ),
        (
            stub.Receive,
            custody_pb2.ReceiveRequest(
                case_id=case_id,
                recipient=creds("an-wang"),
                blind_count=[*counts(F2706=2), *counts(F2706=3)],
            ),
            "blind_count",
        ),
        (
            stub.Resolve,
            custody_pb2.ResolveRequest(
                discrepancy_id="CD-000001-D1",
                resolver=creds("orn-zhang"),
                witness=creds("an-wang"),
            ),
            "reason_code",
        ),
        (
            stub.ListCases,
            custody_pb2.ListCasesRequest(states=[custody_pb2.CASE_STATE_UNSPECIFIED]),
            "states",
        ),
        (stub.UnitHistory, custody_pb2.UnitHistoryRequest(drug_code=FENTANYL), "lot"),
    ]
    for rpc, request, field in cases:
        await desk.refused(INVALID, rpc, request, field=field)
    assert (await desk.case(case_id)).state == custody_pb2.CASE_STATE_REQUESTED


async def test_unknown_cases_and_discrepancies_are_not_found(desk: Desk) -> None:
    stub = desk.stub
    NOT_FOUND = grpc.StatusCode.NOT_FOUND
    await expect_error(
        NOT_FOUND,
        lambda: stub.GetCase(custody_pb2.GetCaseRequest(case_id="CD-999999")),
    )
    details = await desk.refused(
        NOT_FOUND,
        stub.Approve,
        custody_pb2.ApproveRequest(case_id="CD-999999", pharmacist=creds("ph-chen")),
    )
    assert "CD-999999" in details
    await desk.refused(
        NOT_FOUND,
        stub.ApproveResolution,
        custody_pb2.ApproveResolutionRequest(
            discrepancy_id="CD-999999-D1", pharmacist=creds("ph-chen")
        ),
    )
    await desk.refused(
        NOT_FOUND,
        stub.UnitHistory,
        custody_pb2.UnitHistoryRequest(drug_code=FENTANYL, lot=GOOD_LOT, case_id="CD-999999"),
    )
    await desk.refused(
        NOT_FOUND,
        stub.ListDiscrepancies,
        custody_pb2.ListDiscrepanciesRequest(case_id="CD-999999"),
    )


async def test_a_step_in_the_wrong_state_names_the_case_and_its_state(desk: Desk) -> None:
    case_id = await desk.request()
    details = await desk.refused(
        grpc.StatusCode.FAILED_PRECONDITION,
        desk.stub.Verify,
        custody_pb2.VerifyRequest(case_id=case_id, verifier=creds("ph-okafor")),
    )
    assert case_id in details and CaseState.REQUESTED.value in details


async def test_a_count_that_does_not_match_opens_a_discrepancy(desk: Desk) -> None:
    case_id = await desk.to_awaiting_recipient()
    await desk.call(
        desk.stub.OpenCompartment,
        custody_pb2.OpenCompartmentRequest(case_id=case_id, recipient=creds("an-wang")),
    )
    received = await desk.call(
        desk.stub.Receive,
        custody_pb2.ReceiveRequest(
            case_id=case_id, recipient=creds("an-wang"), blind_count=counts(F2706=4)
        ),
    )
    (opened,) = received.opened
    assert (opened.expected, opened.counted, opened.lot) == (5, 4, GOOD_LOT)
    assert opened.state == custody_pb2.DISCREPANCY_STATE_OPEN
    listed = await desk.stub.ListDiscrepancies(
        custody_pb2.ListDiscrepanciesRequest(case_id=case_id), timeout=STEP_TIMEOUT_S
    )
    assert [d.id for d in listed.discrepancies] == [opened.id]
    # Proposed by the recipient with a witness, approved by a pharmacist: closed.
    await desk.call(
        desk.stub.Resolve,
        custody_pb2.ResolveRequest(
            discrepancy_id=opened.id,
            resolver=creds("an-wang"),
            witness=creds("orn-zhang"),
            reason_code=custody_pb2.RESOLUTION_CODE_COUNT_ERROR,
            note="recounted: 5",
        ),
    )
    approved = await desk.call(
        desk.stub.ApproveResolution,
        custody_pb2.ApproveResolutionRequest(discrepancy_id=opened.id, pharmacist=creds("ph-chen")),
    )
    assert [e.event_type for e in approved.events] == ["DISCREPANCY_RESOLVE"]
    listed = await desk.stub.ListDiscrepancies(
        custody_pb2.ListDiscrepanciesRequest(), timeout=STEP_TIMEOUT_S
    )
    assert list(listed.discrepancies) == []


# ---- the server's wiring -----------------------------------------------------------------------


async def test_build_server_serves_custody_only_when_given_a_runner(
    runner: LockedCustodyRunner, tmp_path: Path
) -> None:
    settings = Settings(
        map_path=MAP,
        database_url=f"sqlite:///{tmp_path / 'fleet.db'}",
        host="127.0.0.1",
        grpc_port=0,
        metrics_port=-1,
    )
    building = load_building(MAP)
    store = open_store(settings.database_url)
    core = FleetCore(building, BuildingGraph(building), store, runner.clock, CoreConfig())
    bus = AsyncBus(core, solve=lambda problem: None)  # type: ignore[arg-type,return-value]
    try:
        for custody in (None, runner):
            server = build_server(bus, core, settings, custody=custody)
            served = custody is not None
            assert server.services == (
                (*SERVICE_NAMES, CUSTODY_SERVICE_NAME) if served else SERVICE_NAMES
            )
            await server.start()
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
            try:
                assert (CUSTODY_SERVICE_NAME in await reflected(channel)) is served
                check = functools.partial(
                    health_pb2_grpc.HealthStub(channel).Check,
                    health_pb2.HealthCheckRequest(service=CUSTODY_SERVICE_NAME),
                    timeout=STEP_TIMEOUT_S,
                )
                if served:
                    assert (await check()).status == health_pb2.HealthCheckResponse.SERVING
                    listed = await custody_pb2_grpc.CustodyServiceStub(channel).ListCases(
                        custody_pb2.ListCasesRequest(), timeout=STEP_TIMEOUT_S
                    )
                    assert list(listed.cases) == []
                else:
                    await expect_error(grpc.StatusCode.NOT_FOUND, check)
            finally:
                await channel.close(None)
                await server.stop(0)
    finally:
        store.close()


async def reflected(channel: grpc.aio.Channel) -> list[str]:
    """The service names the server's reflection lists."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    names: list[str] = []
    async for response in stub.ServerReflectionInfo(iter([request])):
        names.extend(s.name for s in response.list_services_response.service)
    return names


async def test_a_robot_fault_recovered_by_two_people_and_carried_by_hand(desk: Desk) -> None:
    case_id = await desk.request()
    await desk.approve(case_id)
    await desk.pick(case_id)
    await desk.verify(case_id)
    await desk.load(case_id, seal="SEAL-0001")
    await desk.robot(lambda book, now: book.depart(case_id, now=now))
    await desk.robot(
        lambda book, now: book.robot_fault(
            case_id, now=now, detail="drive fault", location="L2-C-07"
        )
    )
    await desk.robot(lambda book, now: book.start_recovery(case_id, now=now), dt=300)
    # A logistics person may only be the second person of a recovery, not lead it.
    await desk.refused(
        grpc.StatusCode.PERMISSION_DENIED,
        desk.stub.Recover,
        custody_pb2.RecoverRequest(
            case_id=case_id,
            pharmacist=creds("log-novak"),
            second=creds("ph-okafor"),
            seal_intact=True,
            seal_id_seen="SEAL-0001",
            blind_count=counts(F2706=5),
        ),
    )
    recovered = await desk.call(
        desk.stub.Recover,
        custody_pb2.RecoverRequest(
            case_id=case_id,
            pharmacist=creds("ph-okafor"),
            second=creds("log-novak"),
            seal_intact=True,
            seal_id_seen="SEAL-0001",
            blind_count=counts(F2706=5),
        ),
    )
    assert recovered.custody_case.state == custody_pb2.CASE_STATE_RECOVERED
    (override,) = recovered.events
    assert (override.event_type, override.to_custodian, override.witness) == (
        "OVERRIDE",
        "person:ph-okafor",
        "log-novak",
    )
    await desk.call(
        desk.stub.HandCarry,
        custody_pb2.HandCarryRequest(case_id=case_id, carrier=creds("ph-okafor")),
    )
    receive = custody_pb2.ReceiveRequest(
        case_id=case_id, recipient=creds("an-wang"), blind_count=counts(F2706=5)
    )
    # From a carrier, the carrier's two factors are part of the hand-over (named as sent).
    await desk.refused(grpc.StatusCode.INVALID_ARGUMENT, desk.stub.Receive, receive, "carrier")
    receive.carrier.CopyFrom(creds("ph-okafor"))
    received = await desk.call(desk.stub.Receive, receive)
    assert received.custody_case.custodian == "person:an-wang"
    assert [(e.from_custodian, e.witness) for e in received.events] == [
        ("person:ph-okafor", "ph-okafor")
    ]


def test_a_bad_stock_file_names_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "stock.yaml"
    path.write_text(
        "lots:\n"
        "  - drug_code: 86999900000101\n"  # unquoted: a number to YAML
        "    lot: X1\n"
        "    expiry: 2027-06-30\n"
        "    units: 5\n"
        "    received: 2026-01-01\n"
        '  - drug_code: "86999900000101"\n'
        "    lot: X2\n"
        "    expiry: someday\n"
        "    units: 0\n"
        "    received: 2026-01-01\n"
        '  - drug_code: "86999900000101"\n'
        "    lot: X3\n"
        "    expiry: 2026-01-31\n"
        "    units: 5\n"
        "    received: 2026-02-01\n"
        "    colour: red\n",
        encoding="utf-8",
    )
    catalogue = load_catalogue(SOURCES.catalogue)
    with pytest.raises(StockFileError) as caught:
        load_vault_stock(path, catalogue)
    where = [issue.path for issue in caught.value.issues]
    assert where == ["lots[0].drug_code", "lots[1].expiry", "lots[1].units", "lots[2].colour"]
    assert "quote it" in caught.value.issues[0].message
    # The expired-on-receipt lot is named once the file is otherwise right.
    path.write_text(
        "lots:\n"
        '  - drug_code: "86999900000101"\n'
        "    lot: X3\n"
        "    expiry: 2026-01\n"
        "    units: 5\n"
        "    received: 2026-02-01\n",
        encoding="utf-8",
    )
    with pytest.raises(StockFileError, match=r"lots\[0\]: lot X3 .* expired on 2026-01-31"):
        load_vault_stock(path, catalogue)
