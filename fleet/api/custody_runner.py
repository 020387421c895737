"""The custody runner of a dispatcher that serves custody with its fleet (`fleet serve
--custody`): every custody step runs on the bus's own task, next to the core.

`LockedCustodyRunner` (fleet.api.custody_servicer) runs the book alone on a worker thread: no
robot is told anything. Here the book sits behind a `CustodyDesk` whose `submit` is the core's
`handle`, and the desk also takes the fleet's reports (SecureStop, order changes) on the bus
task; so people's steps must run there too, one at a time with the core's messages:
`AsyncBus.call`. The servicer sees the desk (`runner.desk`) and routes the robot-linked steps
through it (Verify calls the robot, Load seals, OpenCompartment opens, Reconcile places the
return (`CustodyDesk.request_return`: at once, or once the outbound order is delivered),
LoadReturn seals, ReturnReceive opens at the pharmacy).

The price: a step's PIN hashing and ledger commit run on the event loop that drives the robots
(milliseconds with the demo hashing; tens of milliseconds per person with the production
scrypt). History is read from the ledger database on another thread, as in
`LockedCustodyRunner`.

The book's working state is kept in the database (`CustodyStateKeeper`, table
`custody_state`): after every step the runner runs (and every desk tick), the state is captured
on the bus task, inside the same `bus.call`, and written by a single writer thread in the order
it was captured; the step's caller gets its answer once the write is done. Only cases whose JSON
changed since the last save are written (a hash per case), with the stock and the meta row.
What the desk does on its own on fleet reports (depart, arrive, robot fault: steps without
ledger events) is saved with the next step or tick, at most `CUSTODY_TICK_S` later, and at stop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from fleet.api.custody_servicer import LedgerReader
from fleet.clock import Clock
from fleet.custody.desk import CustodyDesk
from fleet.custody.ledger import CustodyEvent
from fleet.custody.lifecycle import TERMINAL_STATES, CustodyBook
from fleet.custody.state import STOCK_KEY, case_key, dumps
from fleet.dispatch.bus import AsyncBus

T = TypeVar("T")
log = logging.getLogger(__name__)

_TERMINAL = frozenset(s.value for s in TERMINAL_STATES)


class StateStore(Protocol):
    """Where the state goes (`fleet.store.custody_state.CustodyStateStore`)."""

    def save(
        self, changed: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any], at: float = 0.0
    ) -> None: ...


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class CustodyStateKeeper:
    """Saves the custody book's working state (`CustodyBook.export_state`) to a store, only
    what changed since the last save, in the order it was captured.

    `capture_and_save(book, now)` runs on the bus task (the book's single writer): it exports
    the state, compares each case's JSON with the hash of what was last saved, and hands the
    changed rows, the stock (if changed) and the meta row to one writer thread. The meta row
    carries `ledger_seq`, the last ledger record the state reflects (the highest seq of the
    book's events, never less than `ledger_seq` given at start: the head when the state was
    first saved or restored). A case in a terminal state that was saved once is not exported
    again. After a failed write everything is written again with the next save.

    `saved`: what is already in the store at start (`{"meta": ..., "rows": ...}` from
    `CustodyStateStore.load`, after a restore), so that an unchanged book writes nothing.
    """

    def __init__(
        self, store: StateStore, *, ledger_seq: int, saved: Mapping[str, Any] | None = None
    ) -> None:
        self.store = store
        self.ledger_seq = ledger_seq
        self._hashes: dict[str, str] = {}
        self._positions: dict[str, int] = {}
        self._frozen: set[str] = set()
        self._meta = ""
        self._failed = False
        self._writer = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="custody-state"
        )
        if saved is not None:
            self._meta = dumps(saved["meta"])
            for key, body in saved["rows"].items():
                if key == STOCK_KEY:
                    self._hashes[key] = _digest(dumps(body))
                    continue
                case = body["case"]
                self._positions[case["id"]] = body["pos"]
                self._hashes[key] = _digest(dumps(case))
                if case["state"] in _TERMINAL:
                    self._frozen.add(case["id"])

    def capture(self, book: CustodyBook) -> tuple[dict[str, dict[str, Any]], dict[str, Any]] | None:
        """What changed since the last capture (rows and meta), or None for nothing. Call it on
        the bus task."""
        if self._failed:
            self._failed = False
            self._hashes.clear()
            self._frozen.clear()
            self._meta = ""
        state = book.export_state(omit=self._frozen)
        changed: dict[str, dict[str, Any]] = {}
        seq = self.ledger_seq
        for case in state["cases"]:
            cid = case["id"]
            pos = self._positions.setdefault(cid, len(self._positions))
            key = case_key(cid)
            digest = _digest(dumps(case))
            if self._hashes.get(key) != digest:
                self._hashes[key] = digest
                changed[key] = {"pos": pos, "case": case}
            if case["event_seqs"]:
                seq = max(seq, max(case["event_seqs"]))
            if case["state"] in _TERMINAL:
                self._frozen.add(cid)
        digest = _digest(dumps(state["stock"]))
        if self._hashes.get(STOCK_KEY) != digest:
            self._hashes[STOCK_KEY] = digest
            changed[STOCK_KEY] = state["stock"]
        self.ledger_seq = seq
        meta = {
            "format": state["format"],
            "next_case": state["next_case"],
            "discrepancy_case": state["discrepancy_case"],
            "ledger_seq": seq,
        }
        text = dumps(meta)
        if not changed and text == self._meta:
            return None
        self._meta = text
        return changed, meta

    def capture_and_save(
        self, book: CustodyBook, now: float
    ) -> concurrent.futures.Future[None] | None:
        """Capture (on the bus task) and queue the write; the future is done once it is
        written (it never raises: a failed write is logged and redone with the next save)."""
        delta = self.capture(book)
        if delta is None:
            return None
        changed, meta = delta
        return self._writer.submit(self._write, changed, meta, now)

    def _write(self, changed: dict[str, dict[str, Any]], meta: dict[str, Any], now: float) -> None:
        try:
            self.store.save(changed, meta, now)
        except Exception:
            self._failed = True  # the next capture writes everything again
            log.exception(
                "could not save the custody state (%d rows, ledger seq %s): it is written "
                "again with the next step",
                len(changed),
                meta.get("ledger_seq"),
            )

    def close(self) -> None:
        """Wait for the queued writes, then stop the writer thread."""
        self._writer.shutdown(wait=True)


class DeskCustodyRunner:
    """A `CustodyRunner` whose steps run on the bus task, with the desk that ties cases to
    robot trips (see the module docstring)."""

    def __init__(
        self,
        bus: AsyncBus,
        desk: CustodyDesk,
        clock: Clock,
        ledger: LedgerReader,
        keeper: CustodyStateKeeper | None = None,
    ) -> None:
        self.bus = bus
        self.desk = desk
        self.clock = clock
        self.ledger = ledger
        self.keeper = keeper

    @property
    def stations(self) -> frozenset[str]:
        """The building's station names (an OR station of a case must be one of them)."""
        return frozenset(self.bus.core.building.stations)

    async def run(self, step: Callable[[CustodyBook, float], T]) -> T:
        """See `CustodyRunner.run`: on the bus task, `now` read when the step starts. With a
        state keeper, the book's state is captured right after the step (also after a refused
        one: a step through the desk may have changed the book before it failed) and the call
        returns once it is written."""
        saving: list[concurrent.futures.Future[None] | None] = []

        def call() -> T:
            now = self.clock.now()
            try:
                return step(self.desk.book, now)
            finally:
                if self.keeper is not None:
                    saving.append(self.keeper.capture_and_save(self.desk.book, now))

        try:
            return await self.bus.call(call)
        finally:
            pending = saving[0] if saving else None
            if pending is not None:
                await asyncio.wrap_future(pending)

    async def tick(self) -> list[str]:
        """The desk's timer (`CustodyDesk.tick`) as a step: what it moved, and what the fleet's
        reports moved since the last step, is saved."""
        return await self.run(lambda book, now: self.desk.tick(now))

    async def save(self) -> None:
        """Capture and write the state now (at stop: the bus no longer runs, so this runs on
        the loop, where nothing else touches the book)."""
        if self.keeper is None:
            return
        pending = self.keeper.capture_and_save(self.desk.book, self.clock.now())
        if pending is not None:
            await asyncio.wrap_future(pending)

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


__all__ = ["CustodyStateKeeper", "DeskCustodyRunner", "StateStore"]
