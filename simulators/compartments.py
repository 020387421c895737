"""The lockable compartments of a simulated robot: controlled-drug custody on the robot's side.

Pure: no scheduler, no protobuf, no I/O. Time is passed in (`now`), and the model says when it
next wants to be woken (`next_event_at`); the robot that owns it calls `advance(now)` then. The
gRPC robot double (`simulators.robot.SimRobot`) drives it, and so does every twin built on
SimRobot; another robot model can drive it the same way:

    locks = Compartments(count, open_after_s=5.0, handling_s=20.0)
    locks.start_step(now, "pickup" | "dropoff", numbers, secure)    # step starts (docking)
    locks.step_done()        # may a secure step complete? (True for a non-secure one)
    locks.finish_step()      # the step completed
    locks.cancel_step(now)   # CANCEL_STEP, or the robot dropped the step (disconnect)
    locks.seal(now, n, seal_id)                                       # SEAL_COMPARTMENT
    locks.open_for(now, n, grant_id, staff_id, open_for_s)            # OPEN_COMPARTMENT
    locks.advance(now) at locks.next_event_at()   # the recipient opens / closes, grants lapse
    locks.status()           # what the robot reports in every RobotState

The rules (robot protocol, PickupStep.secure / DropoffStep.secure):

- Compartments start unlocked, unsealed and empty; numbered from 1.
- Any pickup unlocks the step's compartments for loading, except one locked under an intact
  seal (it holds another custody: refused, noted). A secure pickup then waits until every
  compartment of the step is sealed (SEAL_COMPARTMENT: closed, locked, seal recorded, intact).
- A secure drop-off locks the step's compartments and waits. OPEN_COMPARTMENT for one of them,
  with a grant id, a staff id and open_for_s > 0, unlocks it. The simulated recipient opens the
  door `open_after_s` later (if `recipient_present`); the seal is broken from that moment
  (seal_intact False, seal_id kept for the record until the next seal replaces it); they close
  it `handling_s` after opening and it relocks at once. A grant that runs out before the door
  is opened relocks it and the step goes on waiting. The step may complete once every
  compartment of it was opened and closed.
- A non-secure drop-off never unlocks a compartment (one under an intact seal is noted: its
  goods stay locked in); a non-secure pickup behaves as above.
- OPEN for a compartment that is not part of the secure drop-off in progress, without grant id
  or staff id, with open_for_s <= 0, or while the robot is in fault is refused: noted in
  `refused`, nothing opens.
- Cancelling a step voids grants not yet used and locks the step's closed compartments; seals
  stay as they are (an intact seal stays intact).
- `fault` (the robot is in fault or dead) voids every grant not yet used and relocks; nothing
  opens until `clear_fault`. A door already open stays open until the person closes it, and
  relocks then.
- `tamper` breaks a seal (forcing, a broken tamper-evident tag) without opening anything.
- `recover` is the on-site recovery after a fault (two people, the service key): the seal is
  broken, the compartment emptied and locked again; the next pickup may load it.

A step that lists no compartments (a robot without compartment numbers) counts any one
compartment as its own: one seal (pickup) or one opening (drop-off) completes it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from fleet.dispatch.messages import CompartmentStatus

log = logging.getLogger(__name__)

StepKind = Literal["pickup", "dropoff"]

# The simulated recipient: seconds from unlocking to opening the door, and from opening to
# closing it again (taking the drugs out, or putting returns in).
DEFAULT_OPEN_AFTER_S = 5.0
DEFAULT_HANDLING_S = 20.0


@dataclass
class Compartment:
    """One compartment's physical state."""

    number: int
    locked: bool = False
    seal_id: str = ""  # the seal it was last locked under; kept after the seal breaks
    seal_intact: bool = True  # meaningful when seal_id is set
    open: bool = False

    @property
    def sealed(self) -> bool:
        """Locked under a seal that is still intact."""
        return bool(self.seal_id) and self.seal_intact and self.locked

    def status(self) -> CompartmentStatus:
        """The report of it (as RobotState.compartments carries it)."""
        return CompartmentStatus(
            number=self.number,
            locked=self.locked,
            seal_id=self.seal_id,
            seal_intact=self.seal_intact,
            open=self.open,
        )


@dataclass
class Grant:
    """An OPEN_COMPARTMENT being used: the compartment is unlocked for `staff_id`."""

    number: int
    grant_id: str
    staff_id: str
    until: float  # unlocked until then, unless the door was opened by then
    opens_at: float | None  # when the simulated recipient opens the door; None: nobody comes
    closes_at: float | None = None  # set once opened


@dataclass
class _SecureStep:
    kind: StepKind
    numbers: frozenset[int]  # empty: any one compartment
    done: set[int] = field(default_factory=set)  # sealed (pickup) / opened and closed (drop-off)

    def covers(self, number: int) -> bool:
        return not self.numbers or number in self.numbers

    def complete(self) -> bool:
        return self.done >= self.numbers if self.numbers else bool(self.done)


class Compartments:
    """A robot's lockable compartments; see the module docstring for the rules."""

    def __init__(
        self,
        count: int,
        *,
        open_after_s: float = DEFAULT_OPEN_AFTER_S,
        handling_s: float = DEFAULT_HANDLING_S,
        name: str = "",
    ) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        self.slots = {n: Compartment(n) for n in range(1, count + 1)}
        self.open_after_s = open_after_s
        self.handling_s = handling_s
        self.name = name  # the robot's id, for notes
        # Fault injection: an absent recipient never opens a door it was granted.
        self.recipient_present = True
        self.faulted = False
        self.grants: dict[int, Grant] = {}
        self.notes: list[str] = []  # everything noteworthy, with the time
        self.refused: list[str] = []  # the actions and steps it refused, with the time
        self._step: _SecureStep | None = None

    # ---- reading ---------------------------------------------------------------------------

    def __getitem__(self, number: int) -> Compartment:
        return self.slots[number]

    def status(self) -> tuple[CompartmentStatus, ...]:
        """Every compartment, by number."""
        return tuple(c.status() for c in self.slots.values())

    @property
    def secure_step(self) -> StepKind | None:
        """The kind of secure step in progress, if any."""
        return None if self._step is None else self._step.kind

    def step_done(self) -> bool:
        """Whether the step in progress may complete (always, for a non-secure one)."""
        return self._step is None or self._step.complete()

    def next_event_at(self) -> float | None:
        """When `advance` has something to do next (None: nothing pending)."""
        times = [t for g in self.grants.values() for t in _pending(g)]
        return min(times, default=None)

    # ---- steps -----------------------------------------------------------------------------

    def start_step(self, now: float, kind: StepKind, numbers: Iterable[int], secure: bool) -> None:
        """A pickup or drop-off starts (the robot docks); `numbers`: its compartments."""
        wanted = frozenset(numbers)
        for n in sorted(wanted):
            c = self.slots.get(n)
            if c is None:
                self._refuse(now, f"{kind} names compartment {n}, which it does not have")
            elif kind == "pickup":
                if c.sealed:
                    self._refuse(
                        now,
                        f"compartment {n} not unlocked for loading: sealed under {c.seal_id}",
                    )
                elif c.locked:
                    c.locked = False
                    self._note(now, f"compartment {n} unlocked for loading")
            elif secure:
                if not c.locked and not c.open:
                    c.locked = True
                    self._note(now, f"compartment {n} locked for a secure drop-off")
            elif c.sealed:
                self._refuse(
                    now,
                    f"compartment {n} stays locked at a non-secure drop-off: sealed under "
                    f"{c.seal_id}",
                )
        self._step = _SecureStep(kind, wanted) if secure else None

    def finish_step(self) -> None:
        """The step completed."""
        self._step = None

    def cancel_step(self, now: float) -> None:
        """The step was cancelled or dropped: grants not yet used lapse; its closed compartments
        lock; seals stay as they are."""
        step, self._step = self._step, None
        self._void_unused_grants(now, "step cancelled")
        if step is None:
            return
        numbers = step.numbers or frozenset(self.slots)
        for n in sorted(numbers):
            c = self.slots.get(n)
            if c is not None and not c.open and not c.locked:
                c.locked = True
                self._note(now, f"compartment {n} locked: step cancelled")

    # ---- instant actions -------------------------------------------------------------------

    def seal(self, now: float, number: int, seal_id: str) -> bool:
        """SEAL_COMPARTMENT: close and lock `number` under `seal_id`. False when refused."""
        c = self.slots.get(number)
        if c is None:
            return self._refuse(now, f"SEAL {seal_id!r}: no compartment {number}")
        if not seal_id:
            return self._refuse(now, f"SEAL of compartment {number} without a seal id")
        if c.open:
            return self._refuse(now, f"SEAL {seal_id}: compartment {number} is open")
        if c.sealed and c.seal_id != seal_id:
            return self._refuse(
                now, f"SEAL {seal_id}: compartment {number} is already sealed under {c.seal_id}"
            )
        self._void_grant(now, number, f"sealed under {seal_id}")
        c.locked, c.seal_id, c.seal_intact = True, seal_id, True
        self._note(now, f"compartment {number} locked under seal {seal_id}")
        if self._step is not None and self._step.kind == "pickup" and self._step.covers(number):
            self._step.done.add(number)
        return True

    def open_for(
        self, now: float, number: int, grant_id: str, staff_id: str, open_for_s: float
    ) -> bool:
        """OPEN_COMPARTMENT: unlock `number` for `staff_id` for at most `open_for_s` seconds.
        False when refused (nothing opens)."""
        what = f"OPEN compartment {number} (grant {grant_id!r}, staff {staff_id!r})"
        c = self.slots.get(number)
        if c is None:
            return self._refuse(now, f"{what}: no such compartment")
        if not grant_id or not staff_id:
            return self._refuse(now, f"{what}: grant id and staff id are required")
        if not (open_for_s > 0 and math.isfinite(open_for_s)):
            return self._refuse(now, f"{what}: open_for_s must be > 0, got {open_for_s}")
        if self.faulted:
            return self._refuse(now, f"{what}: the robot is in fault")
        step = self._step
        if step is None or step.kind != "dropoff" or not step.covers(number):
            return self._refuse(now, f"{what}: not a compartment of a secure drop-off in progress")
        if number in step.done:
            return self._refuse(now, f"{what}: already opened and closed at this drop-off")
        if c.open:
            return self._refuse(now, f"{what}: the door is open already")
        opens_at = now + self.open_after_s if self.recipient_present else None
        self.grants[number] = Grant(number, grant_id, staff_id, now + open_for_s, opens_at)
        c.locked = False
        self._note(now, f"compartment {number} unlocked for {staff_id} ({grant_id})")
        return True

    def advance(self, now: float) -> None:
        """Let everything due by `now` happen, in time order."""
        while True:
            due = [(t, n) for n, g in self.grants.items() for t in _pending(g) if t <= now]
            if not due:
                return
            at, number = min(due)
            self._event(at, self.grants[number])

    def _event(self, at: float, g: Grant) -> None:
        c = self.slots[g.number]
        if g.closes_at is not None:  # the person closes the door: it relocks at once
            del self.grants[g.number]
            c.open, c.locked = False, True
            self._note(at, f"compartment {g.number} closed by {g.staff_id} and locked")
            step = self._step
            if step is not None and step.kind == "dropoff" and step.covers(g.number):
                step.done.add(g.number)
        elif g.opens_at is not None and g.opens_at < g.until:  # the recipient opens it
            g.closes_at = g.opens_at + self.handling_s
            c.open = True
            if c.seal_id and c.seal_intact:
                c.seal_intact = False
                self._note(at, f"seal {c.seal_id} of compartment {g.number} broken on opening")
            self._note(at, f"compartment {g.number} opened by {g.staff_id}")
        else:  # the grant ran out before anybody opened the door
            del self.grants[g.number]
            c.locked = True
            self._note(at, f"compartment {g.number} relocked: grant {g.grant_id} ran out")

    # ---- fault injection -------------------------------------------------------------------

    def tamper(self, now: float, number: int, detail: str = "forced") -> None:
        """Break the seal of `number` (forcing, a torn tag) without opening it."""
        c = self.slots[number]
        if c.seal_id:
            c.seal_intact = False
        self._note(now, f"compartment {number} tampered with: {detail}")

    def recover(self, now: float, numbers: Iterable[int], detail: str = "") -> None:
        """Two people emptied `numbers` on site with the service key (recovery after a fault,
        outside the protocol): each seal is broken (seal_id kept), the door opened and closed,
        and it is locked again, empty. Works in fault: it is a key, not the robot."""
        for n in sorted(set(numbers)):
            c = self.slots.get(n)
            if c is None:
                continue
            self._void_grant(now, n, "recovered on site")
            if c.seal_id:
                c.seal_intact = False
            c.open, c.locked = False, True
            self._note(now, f"compartment {n} emptied on site with the service key {detail}")

    def fault(self, now: float) -> None:
        """The robot is in fault (or dead): nothing opens from now on."""
        self.faulted = True
        self._void_unused_grants(now, "robot fault")

    def clear_fault(self) -> None:
        """The fault is cleared: OPEN_COMPARTMENT is obeyed again."""
        self.faulted = False

    # ---- helpers ---------------------------------------------------------------------------

    def _void_unused_grants(self, now: float, why: str) -> None:
        for number in sorted(self.grants):
            self._void_grant(now, number, why)

    def _void_grant(self, now: float, number: int, why: str) -> None:
        g = self.grants.get(number)
        if g is None or g.closes_at is not None:  # an open door closes when the person is done
            return
        del self.grants[number]
        self.slots[number].locked = True
        self._note(now, f"compartment {number} relocked, grant {g.grant_id} void: {why}")

    def _note(self, now: float, text: str) -> None:
        line = f"{now:.0f}: {self.name + ' ' if self.name else ''}{text}"
        self.notes.append(line)
        log.debug("%s", line)

    def _refuse(self, now: float, text: str) -> bool:
        line = f"{now:.0f}: {self.name + ' ' if self.name else ''}refused: {text}"
        self.notes.append(line)
        self.refused.append(line)
        log.warning("%s", line)
        return False


def _pending(g: Grant) -> tuple[float, ...]:
    """The time of a grant's next event: closing, opening, or running out."""
    if g.closes_at is not None:
        return (g.closes_at,)
    if g.opens_at is not None and g.opens_at < g.until:
        return (g.opens_at,)
    return (g.until,)
