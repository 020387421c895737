"""The custody desk: where controlled-drug custody cases meet the robot fleet.

`CustodyBook` (fleet.custody.lifecycle) knows cases, people and the ledger; the dispatcher core
knows orders and robots. The desk ties one to the other, in both directions:

- people's steps that involve a robot go through the desk, which checks that a robot really
  stands there, records the step in the book and then tells the core what the robot must do:
  `send` places the case's order (pharmacy -> OR, `CreateOrder.custody_case`), `load` and
  `load_return` seal the compartment of the robot waiting at the secure pickup
  (`SealCompartment`), `open_for_recipient` and `return_receive` open it for the person the
  book authenticated (`OpenCompartment`), `send_return` places the return leg;
- what the fleet reports moves the case: a robot waiting at a secure station
  (`on_secure_stop`: arrived at the OR -> ARRIVED, AWAITING_RECIPIENT), an order on board
  (`on_order` PICKED_UP -> IN_TRANSIT) or failed with the drugs on board (a robot fault ->
  DELIVERY_FAULT: custody stays with the sealed compartment), and the clock (`tick`: nobody
  came -> the alternate is paged, then the robot is sent back to the pharmacy,
  `RedirectOrder`).

Every other step (request, approve, pick, verify, receive, administer, waste, reconcile,
recovery, discrepancies) is the book's own: call `desk.book` directly.

Pure (DESIGN.md principle 1): no I/O; `submit` hands one command to the dispatcher core and
returns what the core returns (in the twin `FastTwin.handle`; in the service, a call made on
the core's own task). Single writer: one call at a time, like the core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from fleet.custody.lifecycle import CaseState, CustodyBook, Leg, OpenGrant, StepResult
from fleet.custody.people import Authentication
from fleet.custody.permissions import Action
from fleet.dispatch import messages as m
from fleet.domain.cargo import CargoClass
from fleet.domain.errors import DomainError, FailedPrecondition, NotFound
from fleet.domain.order import Order, OrderState
from fleet.domain.priority import Priority

Submit = Callable[[m.Inbound], Order | None]

# States in which the drugs ride in a sealed compartment: a robot failing now is a fault of
# the case (hospital-domain.md: custody stays with the compartment).
_ON_BOARD = frozenset(
    {
        CaseState.LOADED,
        CaseState.IN_TRANSIT,
        CaseState.ARRIVED,
        CaseState.AWAITING_RECIPIENT,
        CaseState.ALT_RECIPIENT_PAGED,
        CaseState.RETURNING_TO_PHARMACY,
        CaseState.RETURN_IN_TRANSIT,
    }
)

# Order states whose watcher message the desk acts on (`on_order`): replayed after a restart.
_REPLAYED = frozenset(
    {OrderState.PICKED_UP, OrderState.DELIVERED, OrderState.FAILED, OrderState.CANCELLED}
)


@dataclass
class Trip:
    """One fleet order carrying a case: its leg, and the robot waiting for people (if any)."""

    case_id: str
    order_id: str
    leg: Leg
    waiting: m.SecureStop | None = None
    done: bool = False
    delivered: bool = False  # done, and handed over where it was going


@dataclass
class DeskLog:
    """What the desk did on its own (not asked by a person), for the step log and tests."""

    at: float
    case_id: str
    what: str


@dataclass
class CustodyDesk:
    """Ties custody cases to robot trips; see the module docstring.

    `pharmacy_station`: the station where controlled drugs are issued and returned (the hatch).
    """

    book: CustodyBook
    submit: Submit
    pharmacy_station: str = "PHARMACY"
    trips: dict[str, Trip] = field(default_factory=dict)  # order id -> trip
    current: dict[str, str] = field(default_factory=dict)  # case id -> order id of its trip
    log: list[DeskLog] = field(default_factory=list)
    resend: set[str] = field(default_factory=set)  # verified cases whose trip ended unloaded
    # Reconciled cases whose outbound order was not yet delivered: the return waits for it.
    returns_due: set[str] = field(default_factory=set)
    alerts: list[m.RaiseAlert] = field(default_factory=list)  # for the operators, at `tick`

    # ---- reading ------------------------------------------------------------------------

    def trip_of(self, case_id: str) -> Trip | None:
        """The case's current trip (None before `send`)."""
        order_id = self.current.get(case_id)
        return self.trips.get(order_id) if order_id else None

    def waiting_robot(self, case_id: str) -> m.SecureStop | None:
        """The robot waiting for people with this case's compartment, if one waits now."""
        trip = self.trip_of(case_id)
        return trip.waiting if trip is not None and not trip.done else None

    # ---- people's steps that move a robot ----------------------------------------------

    def send(
        self,
        case_id: str,
        *,
        now: float,
        priority: Priority = Priority.URGENT,
        needed_by: float | None = None,
        caller_auth: Authentication | None = None,
    ) -> Order:
        """Place the order that brings a verified (or recovered, for a redispatch) case from
        the pharmacy hatch to its OR; its pickup waits for the pharmacist to load and seal.
        `caller_auth`: the person calling the robot, who must be the one holding the drugs
        and allowed to load them (a redispatch after a recovery)."""
        case = self.book.case(case_id)
        if caller_auth is not None:
            self.book.step_auth.check(Action.LOAD, caller_auth, now=now, actor_in={case.holder})
        if case.state not in (CaseState.VERIFIED, CaseState.RECOVERED):
            raise FailedPrecondition(
                f"case {case.id} is {case.state.value}: only a VERIFIED (or RECOVERED) case "
                "is sent to its OR"
            )
        trip = self.trip_of(case.id)
        if trip is not None and not trip.done:
            raise FailedPrecondition(f"case {case.id} already rides on order {trip.order_id}")
        return self._place(
            case.id,
            Leg.OUTBOUND,
            self.pharmacy_station,
            case.or_station,
            now=now,
            priority=priority,
            needed_by=needed_by,
            requested_by=case.requested_by,
        )

    def load(
        self,
        case_id: str,
        loader_auth: Authentication,
        seal_id: str,
        *,
        now: float,
        robot_id: str | None = None,
        compartment: int | None = None,
    ) -> StepResult:
        """The pharmacist locks the drugs into the compartment of the robot waiting at the
        hatch under `seal_id` (book: LOADED); the robot seals it and leaves. `robot_id` and
        `compartment`, when given (what the pharmacist scanned), must be those of the robot
        waiting: FailedPrecondition naming both otherwise, and nothing changes."""
        return self._seal(
            case_id,
            Leg.OUTBOUND,
            seal_id,
            robot_id,
            compartment,
            lambda stop: self.book.load(
                case_id,
                loader_auth,
                stop.robot_id,
                str(stop.compartment),
                seal_id,
                now=now,
                location=stop.station,
            ),
        )

    def open_for_recipient(
        self, case_id: str, recipient_auth: Authentication, *, now: float
    ) -> OpenGrant:
        """The recipient authenticated at the robot with badge and PIN: its compartment opens
        for them, for the book's open window."""
        stop = self._waiting(case_id, "DROPOFF", Leg.OUTBOUND)
        grant = self.book.open_for_recipient(case_id, recipient_auth, now=now)
        grants = len(self.book.case(case_id).grants)
        self.submit(
            m.OpenCompartment(
                stop.order_id,
                grant_id=f"{case_id}/grant-{grants}",
                staff_id=grant.staff_id,
                open_for_s=max(1.0, grant.expires_at - now),
            )
        )
        return grant

    def send_return(self, case_id: str, *, now: float) -> Order:
        """Place the return leg of a reconciled case: the robot that brought the drugs comes
        back to the OR (same compartment) for the unused units and the empty ampoules."""
        case = self.book.case(case_id)
        if case.state is not CaseState.RECONCILIATION_SUBMITTED:
            raise FailedPrecondition(
                f"case {case.id} is {case.state.value}: a return is sent after reconciliation"
            )
        outbound = self._last_trip(case.id, Leg.OUTBOUND)
        return self._place(
            case.id,
            Leg.RETURN,
            case.or_station,
            self.pharmacy_station,
            now=now,
            priority=Priority.ROUTINE,
            requested_by=case.requested_by,
            return_of=outbound.order_id,
        )

    def request_return(self, case_id: str, *, now: float) -> Order | None:
        """After a reconciliation: the return leg rides in the compartment the outbound kept,
        so it is placed now if the outbound order was delivered, else as soon as it is (at
        `tick`); returns the order placed now, or None. A case that did not reach its OR on a
        robot (hand carried), or whose return cannot be placed, comes back by hand (the
        reconciliation stands; the desk's log says why)."""
        trip = self.trip_of(case_id)
        if trip is None or trip.leg is not Leg.OUTBOUND:
            return None
        if not trip.delivered:
            if not trip.done:
                self.returns_due.add(case_id)
            return None
        try:
            return self.send_return(case_id, now=now)
        except DomainError as exc:
            self.log.append(DeskLog(now, case_id, f"return not placed: {exc}"))
            return None

    def load_return(
        self,
        case_id: str,
        loader_auth: Authentication,
        seal_id: str,
        *,
        now: float,
        robot_id: str | None = None,
        compartment: int | None = None,
    ) -> StepResult:
        """The OR person locks the unused units and empties into the compartment of the robot
        waiting at the OR (book: RETURN_IN_TRANSIT); the robot seals it and leaves. `robot_id`
        and `compartment` as for `load`."""
        return self._seal(
            case_id,
            Leg.RETURN,
            seal_id,
            robot_id,
            compartment,
            lambda stop: self.book.load_return(
                case_id, loader_auth, stop.robot_id, str(stop.compartment), seal_id, now=now
            ),
        )

    def return_receive(
        self,
        case_id: str,
        pharmacist_auth: Authentication,
        witness_auth: Authentication,
        blind_count_unused: Mapping[str, int],
        blind_count_empties: Mapping[str, int],
        *,
        now: float,
        seal_id_seen: str | None = None,
        open_for_s: float = 120.0,
    ) -> StepResult:
        """A robot back at the pharmacy (the return leg, or an undelivered case sent back):
        the pharmacist and a witness count what it brought (book: RETURN_RECEIVED or a
        discrepancy), and the compartment opens for the pharmacist so the robot is freed."""
        stop = self._waiting_at_pharmacy(case_id)
        result = self.book.return_receive(
            case_id,
            pharmacist_auth,
            witness_auth,
            blind_count_unused,
            blind_count_empties,
            now=now,
            seal_id_seen=seal_id_seen,
        )
        self.submit(
            m.OpenCompartment(
                stop.order_id,
                grant_id=f"{case_id}/return",
                staff_id=pharmacist_auth.staff_id,
                open_for_s=open_for_s,
            )
        )
        return result

    # ---- what the fleet reports --------------------------------------------------------

    def on_secure_stop(self, stop: m.SecureStop) -> None:
        """A robot waits at a secure station with a case's compartment."""
        trip = self.trips.get(stop.order_id)
        if trip is None or trip.done:
            return
        trip.waiting = stop
        case = self.book.case(trip.case_id)
        if (
            stop.kind == "DROPOFF"
            and trip.leg is Leg.OUTBOUND
            and stop.station == case.or_station
            and case.state is CaseState.IN_TRANSIT
        ):
            self.book.arrive(case.id, now=stop.at)
            self.book.await_recipient(case.id, now=stop.at)
            self.log.append(DeskLog(stop.at, case.id, f"{stop.robot_id} at {stop.station}"))

    def on_order(self, order: Order) -> None:
        """An order changed: a trip left (the case is in transit) or failed on board (a robot
        fault: custody stays with the sealed compartment)."""
        trip = self.trips.get(order.id)
        if trip is None or trip.done:
            return
        case = self.book.case(trip.case_id)
        now = order.history[-1].at if order.history else 0.0
        if order.state is OrderState.PICKED_UP:
            trip.waiting = None
            if trip.leg is Leg.OUTBOUND and case.state is CaseState.LOADED:
                self.book.depart(case.id, now=now)
        elif order.state is OrderState.DELIVERED:
            trip.waiting, trip.done, trip.delivered = None, True, True
        elif order.state in (OrderState.FAILED, OrderState.CANCELLED):
            trip.waiting, trip.done = None, True
            if case.state in _ON_BOARD:
                self.book.robot_fault(
                    case.id,
                    now=now,
                    detail=order.failure_reason or order.state.value,
                    location=f"robot {order.robot_id}",
                )
                # Custody stays with the sealed compartment; two people must come for it.
                self.book.start_recovery(case.id, now=now)
                self.alerts.append(
                    m.RaiseAlert(
                        "CUSTODY_ROBOT_FAULT",
                        m.AlertSeverity.CRITICAL,
                        case.id,
                        f"robot {order.robot_id} failed with custody case {case.id} "
                        f"({case.drug_code}, {case.held} {case.unit}) sealed on board "
                        f"({order.failure_reason or order.state.value}): a pharmacist and a "
                        "second person must recover it with a blind count",
                    )
                )
                self.log.append(DeskLog(now, case.id, f"robot fault: {order.failure_reason}"))
            elif case.state is CaseState.VERIFIED and trip.leg is Leg.OUTBOUND:
                # The trip ended before loading (its robot went offline on the way to the
                # hatch, say): the drugs are still with the pharmacist; call a robot again.
                self.resend.add(case.id)
                self.log.append(
                    DeskLog(now, case.id, f"{order.id} {order.state.value}: sending again")
                )

    def tick(self, now: float) -> list[str]:
        """Nobody came for a case within the book's timeouts: page the alternate, then send the
        robot back to the pharmacy. A verified case whose trip ended before it was loaded gets a
        new one. Returns the cases moved."""
        moved = []
        # Alerts raised while a fleet report was being routed, handed on here (outside it).
        alerts, self.alerts = self.alerts, []
        for alert in alerts:
            self.submit(alert)
        for case_id in sorted(self.resend):
            self.resend.discard(case_id)
            if self.book.case(case_id).state is CaseState.VERIFIED:
                self.send(case_id, now=now)
                moved.append(case_id)
        for case_id in sorted(self.returns_due):
            trip = self.trip_of(case_id)
            if trip is not None and not trip.done:
                continue  # the outbound is still on its way
            self.returns_due.discard(case_id)
            reconciled = self.book.case(case_id).state is CaseState.RECONCILIATION_SUBMITTED
            if reconciled and self.request_return(case_id, now=now) is not None:
                moved.append(case_id)
        for case_id in self.book.timeouts_due(now):
            result = self.book.recipient_absent(case_id, now=now)
            moved.append(case_id)
            if result.case.state is CaseState.RETURNING_TO_PHARMACY:
                trip = self.trip_of(case_id)
                if trip is not None and not trip.done:
                    trip.waiting = None
                    self.submit(
                        m.RedirectOrder(
                            trip.order_id,
                            self.pharmacy_station,
                            f"nobody received custody case {case_id}: back to the pharmacy",
                        )
                    )
                self.log.append(DeskLog(now, case_id, "recipient absent: back to pharmacy"))
            else:
                self.log.append(DeskLog(now, case_id, "recipient absent: alternate paged"))
        return moved

    # ---- after a restart ----------------------------------------------------------------

    def rebuild_trips(self, orders: Iterable[Order]) -> list[str]:
        """After a restart, the trips of the book's cases from the fleet orders that carry them
        (`Order.custody_case`; a return leg has `return_of`), oldest first: the fleet's store
        is the record of which robot order carried which case, so the desk keeps no state of
        its own. Robots waiting at a secure station (`Trip.waiting`) are not known until the
        core reports them again (SecureStop) when it sends them their next secure step.

        The newest order of each case is then handed to `on_order`, as if it had just
        changed: what the fleet did while the book's state was not saved (a trip that left,
        failed with the drugs on board, or ended before loading) moves the case as it would
        have then. Returns the cases so moved, for the log."""
        newest: dict[str, Order] = {}
        for order in orders:
            if not order.custody_case or order.id in self.trips:
                continue
            try:
                self.book.case(order.custody_case)
            except NotFound:
                continue
            leg = Leg.RETURN if order.return_of else Leg.OUTBOUND
            done, delivered = order.state.terminal, order.state is OrderState.DELIVERED
            self._track(Trip(order.custody_case, order.id, leg, done=done, delivered=delivered))
            newest[order.custody_case] = order
        moved = []
        for case_id, order in newest.items():
            if self.current.get(case_id) != order.id or order.state not in _REPLAYED:
                continue
            before = self.book.case(case_id).state
            self.trips[order.id].done = False
            self.on_order(order)
            if self.book.case(case_id).state is not before or case_id in self.resend:
                moved.append(case_id)
        # Reconciled cases whose outbound is still on its way: the return waits for it.
        for case in self.book.cases():
            trip = self.trip_of(case.id)
            if (
                case.state is CaseState.RECONCILIATION_SUBMITTED
                and trip is not None
                and trip.leg is Leg.OUTBOUND
                and not trip.done
            ):
                self.returns_due.add(case.id)
        return moved

    # ---- helpers -----------------------------------------------------------------------

    def _seal(
        self,
        case_id: str,
        leg: Leg,
        seal_id: str,
        robot_id: str | None,
        compartment: int | None,
        record: Callable[[m.SecureStop], StepResult],
    ) -> StepResult:
        """The robot waiting at the leg's pickup (the one scanned, when given) gets its
        compartment sealed once the book has `record`ed the loading."""
        stop = self._waiting(case_id, "PICKUP", leg)
        _check_robot(case_id, stop, robot_id, compartment)
        result = record(stop)
        self.submit(m.SealCompartment(stop.order_id, seal_id))
        return result

    def _place(
        self,
        case_id: str,
        leg: Leg,
        pickup: str,
        dropoff: str,
        *,
        now: float,
        priority: Priority,
        requested_by: str,
        needed_by: float | None = None,
        return_of: str = "",
    ) -> Order:
        """Place one leg's order (one compartment, controlled drugs only) and track it."""
        what = "controlled drugs" if leg is Leg.OUTBOUND else "controlled-drug return"
        order = self.submit(
            m.CreateOrder(
                pickup_station=pickup,
                dropoff_station=dropoff,
                cargo_class=CargoClass.CONTROLLED_DRUG,
                quantity=1,
                priority=priority,
                needed_by=needed_by,
                requested_by=requested_by,
                note=f"{what}, custody case {case_id}",
                return_of=return_of,
                custody_case=case_id,
            )
        )
        assert order is not None
        self._track(Trip(case_id, order.id, leg))
        sent = "sent" if leg is Leg.OUTBOUND else "return sent"
        self.log.append(DeskLog(now, case_id, f"{sent} on {order.id}"))
        return order

    def _track(self, trip: Trip) -> None:
        self.trips[trip.order_id] = trip
        self.current[trip.case_id] = trip.order_id

    def _last_trip(self, case_id: str, leg: Leg) -> Trip:
        for trip in reversed(list(self.trips.values())):
            if trip.case_id == case_id and trip.leg is leg:
                return trip
        raise FailedPrecondition(f"case {case_id} never travelled on the {leg.value} leg")

    def _waiting(self, case_id: str, kind: str, leg: Leg) -> m.SecureStop:
        trip = self.trip_of(case_id)
        if trip is None:
            self.book.case(case_id)  # NotFound for an unknown case
            raise FailedPrecondition(f"case {case_id} has no robot trip: send it first")
        stop = trip.waiting
        if trip.done or trip.leg is not leg or stop is None or stop.kind != kind:
            place = "hatch" if kind == "PICKUP" and leg is Leg.OUTBOUND else "station"
            raise FailedPrecondition(
                f"case {case_id}: no robot waits at the {place} for it yet (order {trip.order_id})"
            )
        return stop

    def _waiting_at_pharmacy(self, case_id: str) -> m.SecureStop:
        trip = self.trip_of(case_id)
        stop = trip.waiting if trip is not None and not trip.done else None
        if trip is None:
            self.book.case(case_id)  # NotFound for an unknown case
            raise FailedPrecondition(f"case {case_id} has no robot trip")
        if stop is None or stop.kind != "DROPOFF" or stop.station != self.pharmacy_station:
            raise FailedPrecondition(
                f"case {case_id}: no robot waits at {self.pharmacy_station} with it yet "
                f"(order {trip.order_id})"
            )
        return stop


def _check_robot(
    case_id: str, stop: m.SecureStop, robot_id: str | None, compartment: int | None
) -> None:
    """The robot and compartment a person scanned are those of the robot waiting."""
    if (robot_id is not None and robot_id != stop.robot_id) or (
        compartment is not None and compartment != stop.compartment
    ):
        given = f"robot {robot_id or stop.robot_id} compartment {compartment or stop.compartment}"
        raise FailedPrecondition(
            f"case {case_id}: {given} was given, but robot {stop.robot_id} compartment "
            f"{stop.compartment} waits at {stop.station} for it"
        )
