"""The custody runner of a dispatcher that serves custody with its fleet (`fleet serve
--custody`): every custody step runs on the bus's own task, next to the core.

`LockedCustodyRunner` (fleet.api.custody_servicer) runs the book alone on a worker thread: no
robot is told anything. Here the book sits behind a `CustodyDesk` whose `submit` is the core's
`handle`, and the desk also takes the fleet's reports (SecureStop, order changes) on the bus
task; so people's steps must run there too, one at a time with the core's messages:
`AsyncBus.call`. The servicer sees the desk (`runner.desk`) and routes the robot-linked steps
through it (Verify calls the robot, Load seals, OpenCompartment opens, Reconcile places the
return, LoadReturn seals, ReturnReceive opens at the pharmacy).

The return leg rides in the compartment the outbound order kept, so it can be placed only once
that order is DELIVERED (the recipient opened the compartment and the robot finished its
drop-off). A reconciliation that comes sooner (a short procedure) is not refused for that: the
runner places the return when the outbound order is delivered (`place_return`, `on_order`).

The price: a step's PIN hashing and ledger commit run on the event loop that drives the robots
(milliseconds with the demo hashing; tens of milliseconds per person with the production
scrypt). History is read from the ledger database on another thread, as in
`LockedCustodyRunner`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from fleet.api.custody_servicer import LedgerReader
from fleet.clock import Clock
from fleet.custody.desk import CustodyDesk
from fleet.custody.ledger import CustodyEvent
from fleet.custody.lifecycle import CustodyBook, Leg
from fleet.dispatch.bus import AsyncBus, DispatcherStopped
from fleet.domain.errors import DomainError
from fleet.domain.order import Order, OrderState

T = TypeVar("T")
log = logging.getLogger(__name__)


class DeskCustodyRunner:
    """A `CustodyRunner` whose steps run on the bus task, with the desk that ties cases to
    robot trips (see the module docstring)."""

    def __init__(
        self, bus: AsyncBus, desk: CustodyDesk, clock: Clock, ledger: LedgerReader
    ) -> None:
        self.bus = bus
        self.desk = desk
        self.clock = clock
        self.ledger = ledger
        # Cases reconciled while their outbound order was not yet delivered.
        self.returns_due: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def stations(self) -> frozenset[str]:
        """The building's station names (an OR station of a case must be one of them)."""
        return frozenset(self.bus.core.building.stations)

    async def run(self, step: Callable[[CustodyBook, float], T]) -> T:
        """See `CustodyRunner.run`: on the bus task, `now` read when the step starts."""
        return await self.bus.call(lambda: step(self.desk.book, self.clock.now()))

    def place_return(self, case_id: str, now: float) -> bool:
        """After a reconciliation (call it on the bus task, inside `run`): place the return leg
        now if the outbound order is delivered, or as soon as it is. Returns True when placed
        now. A case that did not reach the OR on a robot (hand carried) has no return leg: it
        comes back by hand (ReturnReceive)."""
        trip = self.desk.trip_of(case_id)
        if trip is None or trip.leg is not Leg.OUTBOUND:
            return False
        order = self.bus.core.orders.get(trip.order_id)
        if order is not None and order.state is OrderState.DELIVERED:
            try:
                self.desk.send_return(case_id, now=now)
            except DomainError as exc:  # the reconciliation stands; the return goes by hand
                log.warning("could not place the return of custody case %s: %s", case_id, exc)
                return False
            return True
        if not trip.done:
            self.returns_due.add(case_id)
        return False

    def on_order(self, order: Order) -> None:
        """An order changed (a bus watcher, registered after the desk's): a delivered outbound
        order whose case was already reconciled gets its return placed."""
        trip = self.desk.trips.get(order.id)
        if trip is None or trip.case_id not in self.returns_due:
            return
        if order.state is OrderState.DELIVERED:
            self.returns_due.discard(trip.case_id)
            task = asyncio.get_running_loop().create_task(self._send_return(trip.case_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif order.state in (OrderState.FAILED, OrderState.CANCELLED):
            self.returns_due.discard(trip.case_id)

    async def _send_return(self, case_id: str) -> None:
        # A bus call of its own (not inside the watcher): what the core emits is routed at once.
        try:
            await self.bus.call(lambda: self.desk.send_return(case_id, now=self.clock.now()))
        except DispatcherStopped:
            pass
        except Exception:
            log.exception("could not place the return of custody case %s", case_id)

    async def ledger_events(
        self, drug_code: str, lot: str, from_seq: int = 1
    ) -> list[CustodyEvent]:
        """See `CustodyRunner.ledger_events`."""

        def read() -> list[CustodyEvent]:
            return [
                e
                for e in self.ledger.iter_events(from_seq)
                if e.drug_code == drug_code and e.lot == lot
            ]

        return await asyncio.to_thread(read)


__all__ = ["DeskCustodyRunner"]
