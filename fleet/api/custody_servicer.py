"""CustodyService: the controlled-drug custody steps and queries over gRPC.

Thin (DESIGN.md principle 1): the servicer checks the shape of a request (required fields,
credentials with both factors, counts given once per lot), turns it into one call of the pure
`CustodyBook` and the result back into protobuf. It owns no state: every call goes through a
`CustodyRunner`, which runs it serialized with every other custody step at the time of its
injected clock. The dispatcher drives the robot-linked steps (depart, arrive, await_recipient,
robot_fault, start_recovery) through the same runner; they are not RPCs.

People authenticate inside the step, with the step's `now`: the badge and PIN of each person
(`Credentials`) become an `Authentication` from the book's `StaffDirectory`, then the book checks
roles and the two-person rules. A step the book refuses raises before it changes anything, so a
refused call leaves no ledger event, no stock change and the case as it was. Errors map to gRPC
codes in `fleet.api.errors`; the book's own field names (`witness_auth`, ...) are renamed to
the request's fields.

With the fleet (a runner that has a `desk`, `fleet.api.custody_runner.DeskCustodyRunner`), the
robot-linked steps go through the `CustodyDesk`, which tells the core what the robot must do:
Verify also places the case's order (the robot is called as soon as the second pharmacist
verified), Load and LoadReturn seal the compartment of the robot waiting for the case (robot
and compartment given must be that robot's), OpenCompartment opens it for the recipient,
Reconcile places the return leg, ReturnReceive opens it at the pharmacy; a case's OR station
must be a station of the building. Each such call is one piece of work on the bus task: the
book step and the robot command happen together. The case view then shows the robot waiting
for people with the case (`waiting_robot`). Without a desk, every step is the book's alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol, TypeVar

import grpc.aio

from fleet.api.convert import ts
from fleet.api.errors import grpc_errors
from fleet.clock import Clock
from fleet.custody.desk import CustodyDesk
from fleet.custody.discrepancy import Discrepancy, ResolutionCode
from fleet.custody.ledger import CustodyEvent, format_quantity
from fleet.custody.lifecycle import (
    CaseState,
    ClockedSink,
    CustodyBook,
    CustodyCase,
    LifecycleSettings,
    OpenGrant,
    StepResult,
)
from fleet.custody.people import Authentication, PinHashing
from fleet.custody.setup import CustodySources, build_custody_book
from fleet.dispatch import messages as m
from fleet.domain.errors import FailedPrecondition, InvalidArgument
from fleet.store.ledger import LedgerStore, connect_ledger, open_ledger
from fleet.v1 import custody_pb2, custody_pb2_grpc

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]


# ---- the runner --------------------------------------------------------------------------------


class CustodyRunner(Protocol):
    """Runs custody work one piece at a time, at the time of its clock."""

    async def run(self, step: Callable[[CustodyBook, float], T]) -> T:
        """Run `step(book, now)` serialized with every other custody step; `now` is read from
        the injected clock when the step starts. Returns its result or raises its error."""
        ...

    async def ledger_events(
        self, drug_code: str, lot: str, from_seq: int = 1
    ) -> list[CustodyEvent]:
        """The stored ledger events of one drug lot with seq >= `from_seq`, in seq order."""
        ...


class LedgerReader(Protocol):
    """What the runner reads history from (`fleet.store.ledger.LedgerStore`)."""

    def iter_events(self, from_seq: int = 1) -> Iterator[CustodyEvent]: ...


class LockedCustodyRunner:
    """A `CustodyRunner` over one `CustodyBook`.

    Steps run one at a time on a single worker thread, which is the lock: a book step hashes
    PINs (scrypt, tens of milliseconds per person) and commits to the ledger database, and that
    must not stall the event loop that drives robots. A single worker rather than an
    `asyncio.Lock` around `to_thread` because a cancelled RPC would release such a lock while
    its step still runs in the thread; the worker's queue keeps steps apart whatever happens to
    the callers. `now` is read on the worker, so steps see non-decreasing times in the order
    they run. Every access to the book must go through `run`.

    History is read from `ledger` (the database, the record of truth) on another thread: the
    store is safe for concurrent readers and writers.
    """

    def __init__(
        self,
        book: CustodyBook,
        clock: Clock,
        ledger: LedgerReader,
        *,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.book = book
        self.clock = clock
        self.ledger = ledger
        self._on_close = on_close
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="custody"
        )

    async def run(self, step: Callable[[CustodyBook, float], T]) -> T:
        """See `CustodyRunner.run`."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self._call, step)

    def _call(self, step: Callable[[CustodyBook, float], T]) -> T:
        return step(self.book, self.clock.now())

    async def ledger_events(
        self, drug_code: str, lot: str, from_seq: int = 1
    ) -> list[CustodyEvent]:
        """See `CustodyRunner.ledger_events`. Scans the ledger from `from_seq` (the store has no
        index by lot yet)."""

        def read() -> list[CustodyEvent]:
            return [
                e
                for e in self.ledger.iter_events(from_seq)
                if e.drug_code == drug_code and e.lot == lot
            ]

        return await asyncio.to_thread(read)

    def close(self) -> None:
        """Finish the queued steps, stop the worker, then close what the runner owns."""
        self._worker.shutdown(wait=True)
        if self._on_close is not None:
            self._on_close()


def open_custody_runner(
    sources: CustodySources,
    database_url: str,
    clock: Clock,
    *,
    create: bool = True,
    settings: LifecycleSettings | None = None,
    hashing: PinHashing | None = None,
) -> LockedCustodyRunner:
    """A runner over a book built from `sources` whose ledger is the database at
    `database_url` (`create`: make its tables if missing, as the owner; False: the restricted
    application role, tables must exist). `close()` closes the database too.

    Raises CatalogueError, StaffFileError, StockFileError or LedgerError naming what is wrong.
    """
    store: LedgerStore = open_ledger(database_url) if create else connect_ledger(database_url)
    try:
        book = build_custody_book(
            sources, ClockedSink(store, clock), settings=settings, hashing=hashing
        )
    except BaseException:
        store.close()
        raise
    return LockedCustodyRunner(book, clock, store, on_close=store.close)


# ---- request checks ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Person:
    """Badge and PIN as sent, checked for shape; authenticated inside the step."""

    field: str
    badge: str
    pin: str

    def auth(self, book: CustodyBook, now: float) -> Authentication:
        return book.directory.authenticate_badge(self.badge, self.pin, now)


def _person(request: Any, field: str) -> _Person:
    """The required credentials in `request.<field>` (INVALID_ARGUMENT naming it if absent)."""
    person = _maybe_person(request, field)
    if person is None:
        raise InvalidArgument(field, "required: the badge and PIN of the person acting")
    return person


def _maybe_person(request: Any, field: str) -> _Person | None:
    if not request.HasField(field):
        return None
    creds: custody_pb2.Credentials = getattr(request, field)
    if not creds.badge.strip():
        raise InvalidArgument(f"{field}.badge", "required (the badge is the first factor)")
    if not creds.pin:
        raise InvalidArgument(f"{field}.pin", "required (the PIN is the second factor)")
    return _Person(field, creds.badge, creds.pin)


def _auth_of(person: _Person | None, book: CustodyBook, now: float) -> Authentication | None:
    return None if person is None else person.auth(book, now)


def _required(value: str, field: str) -> str:
    if not value.strip():
        raise InvalidArgument(field, "required")
    return value


def _compartment(value: int, field: str = "compartment") -> str:
    # The robot protocol numbers compartments from 1 (RobotHello.compartments); the book keeps
    # them as ids, so the number travels as its decimal text.
    if value < 1:
        raise InvalidArgument(field, "required: the compartment number, 1 or more")
    return str(value)


@dataclass(frozen=True, slots=True)
class _Sealing:
    """A Load or LoadReturn request, checked: who locks what into which compartment."""

    case_id: str
    loader: _Person
    robot_id: str
    number: int  # as the robot protocol numbers it, from 1
    compartment: str  # the book's id of it
    seal_id: str


def _sealing(request: custody_pb2.LoadRequest | custody_pb2.LoadReturnRequest) -> _Sealing:
    return _Sealing(
        _required(request.case_id, "case_id"),
        _person(request, "loader"),
        _required(request.robot_id, "robot_id"),
        request.compartment,
        _compartment(request.compartment),
        _required(request.seal_id, "seal_id"),
    )


def _counts(items: Sequence[custody_pb2.LotCount], field: str) -> dict[str, int]:
    """A blind count by lot; a lot given twice is refused (a count is one number per lot)."""
    out: dict[str, int] = {}
    for item in items:
        if item.lot in out:
            raise InvalidArgument(field, f"lot {item.lot!r} is given twice")
        out[item.lot] = item.units
    return out


def _renamed(fields: Mapping[str, str], call: Callable[[], T]) -> T:
    """Run `call`, renaming the field of an InvalidArgument from the book's argument name to the
    request's field name."""
    try:
        return call()
    except InvalidArgument as exc:
        wire = fields.get(exc.field)
        if wire is None:
            raise
        raise InvalidArgument(wire, exc.reason) from None


# ---- responses ---------------------------------------------------------------------------------


def _iso(day: date | None) -> str:
    return "" if day is None else day.isoformat()


def _number(compartment: str) -> int:
    return int(compartment) if compartment.isdigit() else 0


def grant_to_pb(grant: OpenGrant) -> custody_pb2.CompartmentGrant:
    """The wire form of a compartment grant."""
    return custody_pb2.CompartmentGrant(
        case_id=grant.case_id,
        staff_id=grant.staff_id,
        robot_id=grant.robot_id,
        compartment=_number(grant.compartment),
        opened_at=ts(grant.opened_at),
        expires_at=ts(grant.expires_at),
    )


def discrepancy_to_pb(d: Discrepancy) -> custody_pb2.CustodyDiscrepancy:
    """The wire form of a discrepancy."""
    pb = custody_pb2.CustodyDiscrepancy(
        id=d.id,
        case_id=d.case_id,
        step=d.step,
        drug_code=d.drug_code,
        lot=d.lot,
        expiry=_iso(d.expiry),
        unit=d.unit,
        empties=d.empties,
        expected=d.expected,
        counted=d.counted,
        problems=list(d.problems),
        custodian=d.custodian,
        opened_at=ts(d.opened_at),
        state=custody_pb2.DiscrepancyState.Value(f"DISCREPANCY_STATE_{d.state.value}"),
        approved_by=d.approved_by,
        destination=d.destination,
    )
    if d.resolution is not None:
        r = d.resolution
        pb.resolution.CopyFrom(
            custody_pb2.ProposedResolution(
                code=custody_pb2.ResolutionCode.Value(f"RESOLUTION_CODE_{r.code.value}"),
                note=r.note,
                resolver=r.resolver,
                witness=r.witness,
                proposed_at=ts(r.proposed_at),
            )
        )
    if d.approved_at is not None:
        pb.approved_at.CopyFrom(ts(d.approved_at))
    return pb


def case_state_to_pb(state: CaseState) -> custody_pb2.CaseState.ValueType:
    """The wire value of a case state."""
    return custody_pb2.CaseState.Value(f"CASE_STATE_{state.value}")


_STOP_KINDS: Mapping[str, custody_pb2.SecureStopKind.ValueType] = {
    "PICKUP": custody_pb2.SECURE_STOP_KIND_PICKUP,
    "DROPOFF": custody_pb2.SECURE_STOP_KIND_DROPOFF,
}


def waiting_to_pb(stop: m.SecureStop) -> custody_pb2.WaitingRobot:
    """The wire form of a robot waiting for people with a case."""
    return custody_pb2.WaitingRobot(
        robot_id=stop.robot_id,
        station=stop.station,
        compartment=max(0, stop.compartment),
        kind=_STOP_KINDS.get(stop.kind, custody_pb2.SECURE_STOP_KIND_UNSPECIFIED),
        order_id=stop.order_id,
        since=ts(stop.at),
    )


def case_to_pb(case: CustodyCase, waiting: m.SecureStop | None = None) -> custody_pb2.CustodyCase:
    """The wire form of a case; `waiting`: the robot waiting for people with it, if any."""
    pb = custody_pb2.CustodyCase(
        id=case.id,
        state=case_state_to_pb(case.state),
        prescription_no=case.prescription_no,
        patient_ref=case.patient_ref,
        case_ref=case.case_ref,
        or_station=case.or_station,
        requested_by=case.requested_by,
        drug_code=case.drug_code,
        quantity=case.quantity,
        unit=case.unit,
        returns_empty_container=case.returns_empty_container,
        recipient=case.recipient,
        alternates=list(case.alternates),
        order_id=case.order_id,
        created_at=ts(case.created_at),
        custodian=case.custodian,
        accountable=case.accountable,
        lots=[
            custody_pb2.LotAccount(
                lot=a.lot,
                expiry=_iso(a.expiry),
                issued=a.issued,
                administered=a.administered,
                wasted=a.wasted,
                broken=a.broken,
                returned_unused=a.returned_unused,
                lost=a.lost,
                held=a.held,
                opened=a.opened,
                empties_held=a.empties_held,
                empties_returned=a.empties_returned,
                empties_written_off=a.empties_written_off,
            )
            for a in case.lots.values()
        ],
        approved_by=case.approved_by,
        picker=case.picker,
        verifier=case.verifier,
        reason=case.reason,
        robot_id=case.robot_id,
        compartment=_number(case.compartment),
        seal_id=case.seal_id,
        leg=custody_pb2.CustodyLeg.Value(
            "CUSTODY_LEG_UNSPECIFIED" if case.leg is None else f"CUSTODY_LEG_{case.leg.value}"
        ),
        alternate=case.alternate,
        received_by=case.received_by,
        fault_detail=case.fault_detail,
        fault_location=case.fault_location,
        discrepancies=[discrepancy_to_pb(d) for d in case.discrepancies.values()],
        history=[
            custody_pb2.CaseHistoryEntry(
                at=ts(h.at), state=case_state_to_pb(h.state), step=h.step, seq=h.seq or 0
            )
            for h in case.history
        ],
        event_seqs=list(case.event_seqs),
    )
    if case.grant is not None:
        pb.grant.CopyFrom(grant_to_pb(case.grant))
    if case.closed_at is not None:
        pb.closed_at.CopyFrom(ts(case.closed_at))
    if waiting is not None:
        pb.waiting_robot.CopyFrom(waiting_to_pb(waiting))
    return pb


def event_to_pb(e: CustodyEvent) -> custody_pb2.LedgerEvent:
    """The wire form of a stored ledger event."""
    pb = custody_pb2.LedgerEvent(
        seq=e.seq,
        event_id=e.event_id,
        event_type=e.event_type,
        drug_code=e.drug_code,
        lot=e.lot,
        expiry=_iso(e.expiry),
        quantity=format_quantity(e.quantity),
        unit=e.unit,
        from_custodian=e.from_custodian,
        to_custodian=e.to_custodian,
        location=e.location,
        actor=e.actor,
        actor_auth=list(e.actor_auth),
        witness=e.witness,
        witness_auth=list(e.witness_auth),
        prescription=e.prescription,
        order_id=e.order_id,
        robot_id=e.robot_id,
        compartment=e.compartment,
        seal_id=e.seal_id,
        reason=e.reason,
        note=e.note,
        occurred_at=ts(e.occurred_at),
        recorded_at=ts(e.recorded_at),
        prev_hash=e.prev_hash,
        hash=e.hash,
    )
    # Absent, not 0, when the event had no count: 0 is a real blind count.
    if e.blind_count is not None:
        pb.blind_count = e.blind_count
    if e.expected_count is not None:
        pb.expected_count = e.expected_count
    if e.corrects is not None:
        pb.corrects = e.corrects
    return pb


def step_to_pb(
    result: StepResult, waiting: m.SecureStop | None = None
) -> custody_pb2.CustodyStepResponse:
    """The wire form of what a step did (`waiting`: as for `case_to_pb`)."""
    return custody_pb2.CustodyStepResponse(
        custody_case=case_to_pb(result.case, waiting),
        events=[event_to_pb(e) for e in result.events],
        opened=[discrepancy_to_pb(d) for d in result.opened],
    )


# ---- the servicer ------------------------------------------------------------------------------

_CASE_STATES: Mapping[int, CaseState] = {
    custody_pb2.CaseState.Value(f"CASE_STATE_{s.value}"): s for s in CaseState
}
_RESOLUTION_CODES: Mapping[int, ResolutionCode] = {
    custody_pb2.ResolutionCode.Value(f"RESOLUTION_CODE_{c.value}"): c for c in ResolutionCode
}


class CustodyServicer(custody_pb2_grpc.CustodyServiceServicer):
    """CustodyService over a `CustodyRunner` (see the module docstring)."""

    def __init__(self, runner: CustodyRunner) -> None:
        self._runner = runner
        # The fleet's custody desk, when the runner serves custody with the fleet.
        desk = getattr(runner, "desk", None)
        self._desk: CustodyDesk | None = desk if isinstance(desk, CustodyDesk) else None

    def _waiting(self, case_id: str) -> m.SecureStop | None:
        """The robot waiting with the case (call inside a step: the desk is the bus's)."""
        return self._desk.waiting_robot(case_id) if self._desk is not None else None

    async def _step(
        self, step: Callable[[CustodyBook, float], StepResult], fields: Mapping[str, str]
    ) -> custody_pb2.CustodyStepResponse:
        def run(book: CustodyBook, now: float) -> tuple[StepResult, m.SecureStop | None]:
            result = _renamed(fields, lambda: step(book, now))
            return result, self._waiting(result.case.id)

        result, waiting = await self._runner.run(run)
        return step_to_pb(result, waiting)

    def _check_station(self, or_station: str) -> None:
        """With the fleet, a case's OR must be a station a robot can go to."""
        stations: frozenset[str] | None = getattr(self._runner, "stations", None)
        if self._desk is not None and stations is not None and or_station not in stations:
            raise InvalidArgument("or_station", f"{or_station!r} is not a station of the building")

    # -- request and review ----------------------------------------------------------------------

    @grpc_errors
    async def Request(
        self, request: custody_pb2.RequestCaseRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """A new case (REQUESTED)."""
        requester = _person(request, "requester")
        r = request
        self._check_station(r.or_station)

        def step(book: CustodyBook, now: float) -> StepResult:
            return book.request(
                requester.auth(book, now),
                prescription_no=r.prescription_no,
                patient_ref=r.patient_ref,
                case_ref=r.case_ref,
                or_station=r.or_station,
                drug_code=r.drug_code,
                quantity=r.quantity,
                now=now,
                recipient=r.recipient or None,
                alternates=tuple(r.alternates),
                order_id=r.order_id,
                case_id=r.case_id or None,
            )

        return await self._step(step, {"requester_auth": "requester"})

    @grpc_errors
    async def Approve(
        self, request: custody_pb2.ApproveRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """A pharmacist accepts the request."""
        case_id = _required(request.case_id, "case_id")
        pharmacist = _person(request, "pharmacist")
        return await self._step(
            lambda book, now: book.approve(case_id, pharmacist.auth(book, now), now=now),
            {"pharmacist_auth": "pharmacist"},
        )

    @grpc_errors
    async def Reject(
        self, request: custody_pb2.RejectRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """A pharmacist refuses the request with a reason."""
        case_id = _required(request.case_id, "case_id")
        pharmacist = _person(request, "pharmacist")
        reason = request.reason
        return await self._step(
            lambda book, now: book.reject(case_id, pharmacist.auth(book, now), reason, now=now),
            {"pharmacist_auth": "pharmacist"},
        )

    @grpc_errors
    async def Cancel(
        self, request: custody_pb2.CancelRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """The requester or a pharmacist calls the request off."""
        case_id = _required(request.case_id, "case_id")
        actor = _person(request, "actor")
        reason = request.reason
        return await self._step(
            lambda book, now: book.cancel(case_id, actor.auth(book, now), reason, now=now),
            {"actor_auth": "actor"},
        )

    # -- pharmacy ----------------------------------------------------------------------------------

    @grpc_errors
    async def Pick(
        self, request: custody_pb2.PickRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """The dispensing pharmacist takes the scanned lots from the vault."""
        case_id = _required(request.case_id, "case_id")
        picker = _person(request, "picker")
        scanned = [(item.lot, item.units) for item in request.scanned]
        return await self._step(
            lambda book, now: book.pick(case_id, picker.auth(book, now), scanned, now=now),
            {"picker_auth": "picker"},
        )

    @grpc_errors
    async def Verify(
        self, request: custody_pb2.VerifyRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """A second pharmacist checks the pick."""
        case_id = _required(request.case_id, "case_id")
        verifier = _person(request, "verifier")
        desk = self._desk

        def step(book: CustodyBook, now: float) -> StepResult:
            result = book.verify(case_id, verifier.auth(book, now), now=now)
            if desk is None:
                return result
            desk.send(case_id, now=now)  # the robot is called at once
            return StepResult(book.case(case_id), result.events, result.opened)

        return await self._step(step, {"verifier_auth": "verifier"})

    @grpc_errors
    async def CallRobot(
        self, request: custody_pb2.CallRobotRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """The pharmacist holding a recovered case calls a robot to the hatch."""
        case_id = _required(request.case_id, "case_id")
        caller = _person(request, "caller")
        desk = self._desk

        def step(book: CustodyBook, now: float) -> StepResult:
            if desk is None:
                raise FailedPrecondition(
                    "this dispatcher serves custody without its fleet: there is no robot to "
                    "call (fleet serve --custody)"
                )
            desk.send(case_id, now=now, caller_auth=caller.auth(book, now))
            return StepResult(book.case(case_id), (), ())

        return await self._step(step, {"caller_auth": "caller", "actor_auth": "caller"})

    @grpc_errors
    async def Load(
        self, request: custody_pb2.LoadRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """The holder locks the drugs in a robot compartment under a new seal."""
        r = _sealing(request)
        location = request.location
        desk = self._desk

        def step(book: CustodyBook, now: float) -> StepResult:
            auth = r.loader.auth(book, now)
            if desk is not None:
                return desk.load(
                    r.case_id, auth, r.seal_id, now=now, robot_id=r.robot_id, compartment=r.number
                )
            return book.load(
                r.case_id, auth, r.robot_id, r.compartment, r.seal_id, now=now, location=location
            )

        return await self._step(step, {"loader_auth": "loader"})

    # -- at the robot ----------------------------------------------------------------------------

    @grpc_errors
    async def OpenCompartment(
        self, request: custody_pb2.OpenCompartmentRequest, context: Context
    ) -> custody_pb2.CompartmentGrant:
        """The recipient authenticates at the robot; the compartment may open for them."""
        case_id = _required(request.case_id, "case_id")
        recipient = _person(request, "recipient")
        fields = {"recipient_auth": "recipient"}
        desk = self._desk

        def step(book: CustodyBook, now: float) -> OpenGrant:
            if desk is not None:
                return desk.open_for_recipient(case_id, recipient.auth(book, now), now=now)
            return book.open_for_recipient(case_id, recipient.auth(book, now), now=now)

        grant = await self._runner.run(lambda book, now: _renamed(fields, lambda: step(book, now)))
        return grant_to_pb(grant)

    @grpc_errors
    async def RecipientAbsent(
        self, request: custody_pb2.RecipientAbsentRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """Page the alternate, or send the drugs back, after the timeouts."""
        case_id = _required(request.case_id, "case_id")
        alternate = request.alternate or None
        desk = self._desk

        def step(book: CustodyBook, now: float) -> StepResult:
            result = book.recipient_absent(case_id, now=now, alternate=alternate)
            if desk is not None and result.case.state is CaseState.RETURNING_TO_PHARMACY:
                # As the desk's own timer does: the robot takes the drugs back.
                trip = desk.trip_of(case_id)
                if trip is not None and not trip.done:
                    trip.waiting = None
                    desk.submit(
                        m.RedirectOrder(
                            trip.order_id,
                            desk.pharmacy_station,
                            f"nobody received custody case {case_id}: back to the pharmacy",
                        )
                    )
            return result

        return await self._step(step, {})

    @grpc_errors
    async def Receive(
        self, request: custody_pb2.ReceiveRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """The recipient takes the delivery with a blind count."""
        case_id = _required(request.case_id, "case_id")
        recipient = _person(request, "recipient")
        carrier = _maybe_person(request, "carrier")
        counts = _counts(request.blind_count, "blind_count")
        seal_seen = request.seal_id_seen or None

        def step(book: CustodyBook, now: float) -> StepResult:
            return book.receive(
                case_id,
                recipient.auth(book, now),
                counts,
                now=now,
                witness_auth=_auth_of(carrier, book, now),
                seal_id_seen=seal_seen,
            )

        return await self._step(step, {"recipient_auth": "recipient", "witness_auth": "carrier"})

    # -- the OR ------------------------------------------------------------------------------------

    @grpc_errors
    async def StoreInOr(
        self, request: custody_pb2.StoreInOrRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """Into the OR's locked cabinet, optionally to a keeper."""
        case_id = _required(request.case_id, "case_id")
        holder = _person(request, "holder")
        keeper = _maybe_person(request, "keeper")

        def step(book: CustodyBook, now: float) -> StepResult:
            return book.store_in_or(
                case_id,
                holder.auth(book, now),
                now=now,
                keeper_auth=_auth_of(keeper, book, now),
            )

        return await self._step(
            step, {"holder_auth": "holder", "keeper_auth": "keeper", "giver_auth": "holder"}
        )

    @grpc_errors
    async def Handover(
        self, request: custody_pb2.HandoverRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """Custody from the holder to another person, both authenticated."""
        case_id = _required(request.case_id, "case_id")
        giver = _person(request, "giver")
        receiver = _person(request, "receiver")

        def step(book: CustodyBook, now: float) -> StepResult:
            return book.handover(case_id, giver.auth(book, now), receiver.auth(book, now), now=now)

        return await self._step(step, {"giver_auth": "giver", "receiver_auth": "receiver"})

    @grpc_errors
    async def Administer(
        self, request: custody_pb2.AdministerRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """Whole units given to the case's patient."""
        case_id = _required(request.case_id, "case_id")
        who = _person(request, "anesthesiologist")
        lot = _required(request.lot, "lot")
        r = request

        def step(book: CustodyBook, now: float) -> StepResult:
            return book.administer(
                case_id, who.auth(book, now), lot, r.quantity, r.patient_ref, now=now, note=r.note
            )

        return await self._step(step, {"anesthesiologist_auth": "anesthesiologist"})

    @grpc_errors
    async def Waste(
        self, request: custody_pb2.WasteRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """Units or a residual discarded before a witness."""
        case_id = _required(request.case_id, "case_id")
        actor = _person(request, "actor")
        witness = _person(request, "witness")
        lot = _required(request.lot, "lot")
        r = request

        def step(book: CustodyBook, now: float) -> StepResult:
            return book.waste(
                case_id,
                actor.auth(book, now),
                witness.auth(book, now),
                lot,
                r.quantity,
                now=now,
                residual=r.residual,
                note=r.note,
            )

        return await self._step(step, {"actor_auth": "actor", "witness_auth": "witness"})

    @grpc_errors
    async def Reconcile(
        self, request: custody_pb2.ReconcileRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """End-of-case blind counts of the unused units and the empty containers."""
        case_id = _required(request.case_id, "case_id")
        actor = _person(request, "actor")
        witness = _maybe_person(request, "witness")
        unused = _counts(request.unused_by_lot, "unused_by_lot")
        empties = _counts(request.empty_containers_by_lot, "empty_containers_by_lot")
        desk = self._desk

        def step(book: CustodyBook, now: float) -> StepResult:
            result = book.reconcile(
                case_id,
                actor.auth(book, now),
                unused,
                empties,
                now=now,
                witness_auth=_auth_of(witness, book, now),
            )
            if (
                desk is not None
                and result.case.state is CaseState.RECONCILIATION_SUBMITTED
                and desk.request_return(case_id, now=now) is not None
            ):
                # The robot that brought the drugs comes back for the return (placed now, or
                # once its outbound order is delivered).
                return StepResult(book.case(case_id), result.events, result.opened)
            return result

        return await self._step(step, {"actor_auth": "actor", "witness_auth": "witness"})

    @grpc_errors
    async def LoadReturn(
        self, request: custody_pb2.LoadReturnRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """The return goes into the case's compartment under a new seal."""
        r = _sealing(request)
        desk = self._desk

        def step(book: CustodyBook, now: float) -> StepResult:
            auth = r.loader.auth(book, now)
            if desk is not None:
                return desk.load_return(
                    r.case_id, auth, r.seal_id, now=now, robot_id=r.robot_id, compartment=r.number
                )
            return book.load_return(r.case_id, auth, r.robot_id, r.compartment, r.seal_id, now=now)

        return await self._step(step, {"loader_auth": "loader"})

    @grpc_errors
    async def ReturnReceive(
        self, request: custody_pb2.ReturnReceiveRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """The pharmacy takes the return in with blind counts."""
        case_id = _required(request.case_id, "case_id")
        pharmacist = _person(request, "pharmacist")
        witness = _person(request, "witness")
        unused = _counts(request.blind_count_unused, "blind_count_unused")
        empties = _counts(request.blind_count_empties, "blind_count_empties")
        seal_seen = request.seal_id_seen or None

        desk = self._desk

        def step(book: CustodyBook, now: float) -> StepResult:
            stop = desk.waiting_robot(case_id) if desk is not None else None
            if (
                desk is not None
                and stop is not None
                and stop.kind == "DROPOFF"
                and stop.station == desk.pharmacy_station
            ):
                # A robot brought it back: it opens for the pharmacist and is freed.
                return desk.return_receive(
                    case_id,
                    pharmacist.auth(book, now),
                    witness.auth(book, now),
                    unused,
                    empties,
                    now=now,
                    seal_id_seen=seal_seen,
                )
            return book.return_receive(  # returned by hand
                case_id,
                pharmacist.auth(book, now),
                witness.auth(book, now),
                unused,
                empties,
                now=now,
                seal_id_seen=seal_seen,
            )

        return await self._step(step, {"pharmacist_auth": "pharmacist", "witness_auth": "witness"})

    # -- faults ------------------------------------------------------------------------------------

    @grpc_errors
    async def Recover(
        self, request: custody_pb2.RecoverRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """Two people open a faulted robot's compartment and count."""
        case_id = _required(request.case_id, "case_id")
        pharmacist = _person(request, "pharmacist")
        second = _person(request, "second")
        counts = _counts(request.blind_count, "blind_count")
        empties = _counts(request.blind_count_empties, "blind_count_empties")
        r = request

        def step(book: CustodyBook, now: float) -> StepResult:
            return book.recover(
                case_id,
                pharmacist.auth(book, now),
                second.auth(book, now),
                seal_intact=r.seal_intact,
                seal_id_seen=r.seal_id_seen,
                blind_count=counts,
                now=now,
                blind_count_empties=empties,
            )

        return await self._step(step, {"pharmacist_auth": "pharmacist", "second_auth": "second"})

    @grpc_errors
    async def HandCarry(
        self, request: custody_pb2.HandCarryRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """The pharmacist holding recovered drugs carries them to the OR."""
        case_id = _required(request.case_id, "case_id")
        carrier = _person(request, "carrier")
        return await self._step(
            lambda book, now: book.hand_carry(case_id, carrier.auth(book, now), now=now),
            {"carrier_auth": "carrier"},
        )

    # -- discrepancies -----------------------------------------------------------------------------

    @grpc_errors
    async def Resolve(
        self, request: custody_pb2.ResolveRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """Propose how a discrepancy ends."""
        did = _required(request.discrepancy_id, "discrepancy_id")
        resolver = _person(request, "resolver")
        witness = _person(request, "witness")
        code = _RESOLUTION_CODES.get(request.reason_code)
        if code is None:
            raise InvalidArgument("reason_code", "required: one of the ResolutionCode values")
        note = request.note

        def step(book: CustodyBook, now: float) -> StepResult:
            return book.resolve(
                did, resolver.auth(book, now), witness.auth(book, now), code.value, note, now=now
            )

        return await self._step(step, {"resolver_auth": "resolver", "witness_auth": "witness"})

    @grpc_errors
    async def ApproveResolution(
        self, request: custody_pb2.ApproveResolutionRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """A pharmacist approves a proposed resolution."""
        did = _required(request.discrepancy_id, "discrepancy_id")
        pharmacist = _person(request, "pharmacist")
        return await self._step(
            lambda book, now: book.approve_resolution(did, pharmacist.auth(book, now), now=now),
            {"pharmacist_auth": "pharmacist"},
        )

    @grpc_errors
    async def RejectResolution(
        self, request: custody_pb2.RejectResolutionRequest, context: Context
    ) -> custody_pb2.CustodyStepResponse:
        """A pharmacist turns a proposed resolution down."""
        did = _required(request.discrepancy_id, "discrepancy_id")
        pharmacist = _person(request, "pharmacist")
        reason = request.reason
        return await self._step(
            lambda book, now: book.reject_resolution(
                did, pharmacist.auth(book, now), reason, now=now
            ),
            {"pharmacist_auth": "pharmacist"},
        )

    # -- queries -----------------------------------------------------------------------------------

    @grpc_errors
    async def GetCase(
        self, request: custody_pb2.GetCaseRequest, context: Context
    ) -> custody_pb2.CustodyCase:
        """One case."""
        case_id = _required(request.case_id, "case_id")
        case, waiting = await self._runner.run(
            lambda book, now: (book.case(case_id), self._waiting(case_id))
        )
        return case_to_pb(case, waiting)

    @grpc_errors
    async def ListCases(
        self, request: custody_pb2.ListCasesRequest, context: Context
    ) -> custody_pb2.ListCasesResponse:
        """Cases in request order, optionally only in some states."""
        wanted: set[CaseState] = set()
        for value in request.states:
            state = _CASE_STATES.get(value)
            if state is None:
                raise InvalidArgument("states", f"{value} is not a case state")
            wanted.add(state)
        cases = await self._runner.run(
            lambda book, now: [(c, self._waiting(c.id)) for c in book.cases()]
        )
        return custody_pb2.ListCasesResponse(
            cases=[case_to_pb(c, w) for c, w in cases if not wanted or c.state in wanted]
        )

    @grpc_errors
    async def ListDiscrepancies(
        self, request: custody_pb2.ListDiscrepanciesRequest, context: Context
    ) -> custody_pb2.ListDiscrepanciesResponse:
        """Open discrepancies, oldest first, optionally of one case."""
        case_id = request.case_id

        def read(book: CustodyBook, now: float) -> list[Discrepancy]:
            if case_id:
                book.case(case_id)  # NOT_FOUND for an unknown case
            found = book.open_discrepancies()
            return [d for d in found if not case_id or d.case_id == case_id]

        found = await self._runner.run(read)
        return custody_pb2.ListDiscrepanciesResponse(
            discrepancies=[discrepancy_to_pb(d) for d in found]
        )

    @grpc_errors
    async def UnitHistory(
        self, request: custody_pb2.UnitHistoryRequest, context: Context
    ) -> custody_pb2.UnitHistoryResponse:
        """The ledger events of one drug lot, optionally of one case, from the database."""
        drug_code = _required(request.drug_code, "drug_code")
        lot = _required(request.lot, "lot")
        seqs: frozenset[int] | None = None
        from_seq = 1
        if request.case_id:
            case_id = request.case_id
            case = await self._runner.run(lambda book, now: book.case(case_id))
            seqs = frozenset(case.event_seqs)
            if not seqs:
                return custody_pb2.UnitHistoryResponse()
            from_seq = min(seqs)  # nothing of the case lies before its first event
        events = await self._runner.ledger_events(drug_code, lot, from_seq)
        return custody_pb2.UnitHistoryResponse(
            events=[event_to_pb(e) for e in events if seqs is None or e.seq in seqs]
        )


__all__ = [
    "CustodyRunner",
    "CustodyServicer",
    "LedgerReader",
    "LockedCustodyRunner",
    "case_to_pb",
    "discrepancy_to_pb",
    "event_to_pb",
    "grant_to_pb",
    "open_custody_runner",
    "step_to_pb",
    "waiting_to_pb",
]
