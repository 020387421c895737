"""The dispatcher's book of lift sessions: a robot rides a car only through a leased session.

A session has an id the lift controller echoes in its reports, so a car standing open at a level
is known to be open *for this robot*, not for a porter or another robot. The dispatcher renews the
lease while the session lives; a dispatcher that stops renewing (crashed, cut off) lets the
controller drop the session and return the car to normal service.

Lifecycle (`TRANSITIONS` is the whole table; moving to the current state again is a no-op, since
controllers repeat their reports):

    REQUESTED -> ASSIGNED -> AT_FLOOR -> ENTERED -> RIDING -> ARRIVED -> EXITED -> RELEASED

- REQUESTED may go straight to AT_FLOOR: one report can show the car assigned and open at once.
- AT_FLOOR may fall back to ASSIGNED: the car closed its door before the robot drove in (door
  hold timeout) and still serves the session.
- Any live state may end EXPIRED (lease ran out, controller dropped the session) or CANCELLED
  (the dispatcher gave up: robot offline, re-route, lift out of service, fire recall).
- Ending EXPIRED or CANCELLED from ENTERED, RIDING or ARRIVED leaves `robot_inside` set: the
  session is over but the robot is still in the car (`stranded()`), an operator matter, until
  `robot_out` records that it left.
- Fire recall: the car goes to the recall level and opens there. That is ARRIVED at a level other
  than `to_level`, allowed only with `recalled=True` (also from ENTERED, for a car recalled before
  the ride started), so the robot gets out through the ordinary ARRIVED -> EXITED path and
  `exit_level` says where it is. Without `recalled`, ARRIVED means `to_level`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum


class SessionState(StrEnum):
    """Where a lift session is in its lifecycle."""

    REQUESTED = "REQUESTED"
    ASSIGNED = "ASSIGNED"
    AT_FLOOR = "AT_FLOOR"
    ENTERED = "ENTERED"
    RIDING = "RIDING"
    ARRIVED = "ARRIVED"
    EXITED = "EXITED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"


_S = SessionState
TERMINAL = frozenset({_S.RELEASED, _S.EXPIRED, _S.CANCELLED})
INSIDE = frozenset({_S.ENTERED, _S.RIDING, _S.ARRIVED})
_ENDS = frozenset({_S.EXPIRED, _S.CANCELLED})
TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    _S.REQUESTED: frozenset({_S.ASSIGNED, _S.AT_FLOOR}) | _ENDS,
    _S.ASSIGNED: frozenset({_S.AT_FLOOR}) | _ENDS,
    _S.AT_FLOOR: frozenset({_S.ASSIGNED, _S.ENTERED}) | _ENDS,
    _S.ENTERED: frozenset({_S.RIDING, _S.ARRIVED}) | _ENDS,  # ARRIVED only when recalled
    _S.RIDING: frozenset({_S.ARRIVED}) | _ENDS,
    _S.ARRIVED: frozenset({_S.EXITED}) | _ENDS,
    _S.EXITED: frozenset({_S.RELEASED}) | _ENDS,
    _S.RELEASED: frozenset(),
    _S.EXPIRED: frozenset(),
    _S.CANCELLED: frozenset(),
}


class IllegalSessionTransition(ValueError):
    """A move the lifecycle does not allow; names the session and both states."""

    def __init__(
        self, session_id: str, old: SessionState, new: SessionState, why: str = ""
    ) -> None:
        self.session_id, self.old, self.new = session_id, old, new
        super().__init__(f"lift session {session_id!r}: {old} -> {new} is not allowed{why}")


@dataclass
class LiftSession:
    """One robot's leased use of one lift car for one ride."""

    id: str
    lift: str
    robot: str
    from_level: str
    to_level: str
    state: SessionState
    lease_s: float
    lease_until: float
    history: list[tuple[float, SessionState, str]] = field(default_factory=list)
    robot_inside: bool = False
    exit_level: str | None = None
    """Where the car let the robot out: `to_level`, or the recall level after a fire recall."""

    @property
    def live(self) -> bool:
        """Not yet RELEASED, EXPIRED or CANCELLED."""
        return self.state not in TERMINAL


class LiftSessions:
    """All lift sessions the dispatcher has opened, at most one live session per robot."""

    def __init__(self) -> None:
        self._sessions: dict[str, LiftSession] = {}
        self._live_by_robot: dict[str, str] = {}

    def open(
        self,
        session_id: str,
        lift: str,
        robot: str,
        from_level: str,
        to_level: str,
        now: float,
        lease_s: float,
    ) -> LiftSession:
        """Open a session in REQUESTED, or renew the lease of the live one with this id.

        Opening a live id again renews its lease (by its own `lease_s`) and changes nothing else.
        Opening an existing id for another ride, reopening a finished one, or opening a second
        live session for the same robot is a ValueError that changes nothing.
        """
        ride = (lift, robot, from_level, to_level)
        old = self._sessions.get(session_id)
        if old is not None:
            if (old.lift, old.robot, old.from_level, old.to_level) != ride:
                raise ValueError(f"lift session {session_id!r} exists for another ride")
            self.renew(session_id, now)
            return old
        if not (math.isfinite(lease_s) and lease_s > 0):
            raise ValueError(f"lease_s must be a positive number of seconds, not {lease_s!r}")
        if from_level == to_level:
            raise ValueError(f"lift session {session_id!r} rides from {from_level} to itself")
        if robot in self._live_by_robot:
            live = self._live_by_robot[robot]
            raise ValueError(f"robot {robot!r} already has live lift session {live!r}")
        session = LiftSession(
            session_id, lift, robot, from_level, to_level, _S.REQUESTED, lease_s, now + lease_s
        )
        session.history.append((now, _S.REQUESTED, "opened"))
        self._sessions[session_id] = session
        self._live_by_robot[robot] = session_id
        return session

    def renew(self, session_id: str, now: float) -> None:
        """Extend a live session's lease to `now + lease_s`."""
        session = self._get(session_id)
        if not session.live:
            raise ValueError(f"lift session {session_id!r} is {session.state}: no lease to renew")
        session.lease_until = now + session.lease_s

    def move(
        self,
        session_id: str,
        state: SessionState,
        now: float,
        why: str = "",
        *,
        level: str | None = None,
        recalled: bool = False,
    ) -> LiftSession:
        """Move a session along its lifecycle, keeping the history.

        `level` and `recalled` apply to ARRIVED only: the level the car opened at (default
        `to_level`), which may differ from `to_level` only when the car was `recalled`.
        """
        session = self._get(session_id)
        if state == session.state:
            return session
        if state not in TRANSITIONS[session.state]:
            raise IllegalSessionTransition(session_id, session.state, state)
        if state != _S.ARRIVED and (level is not None or recalled):
            raise ValueError("level and recalled apply to ARRIVED only")
        if state == _S.ARRIVED:
            level = session.to_level if level is None else level
            if not recalled and (session.state == _S.ENTERED or level != session.to_level):
                raise IllegalSessionTransition(
                    session_id, session.state, state, f" at {level} without a recall"
                )
            session.exit_level = level
        session.state = state
        session.robot_inside = state in INSIDE or (session.robot_inside and state in _ENDS)
        session.history.append((now, state, why))
        if state in TERMINAL:
            del self._live_by_robot[session.robot]
        return session

    def robot_out(self, session_id: str, now: float, why: str = "") -> None:
        """Record that the robot left the car of a session that ended with it inside."""
        session = self._get(session_id)
        if session.live:
            raise ValueError(f"lift session {session_id!r} is live: move it to EXITED instead")
        if session.robot_inside:
            session.robot_inside = False
            session.history.append((now, session.state, f"robot out: {why}"))

    # --- queries ---------------------------------------------------------------------------------

    def get(self, session_id: str) -> LiftSession | None:
        """The session with this id, None when unknown (or forgotten)."""
        return self._sessions.get(session_id)

    def sessions(self) -> list[LiftSession]:
        """Every session still in the book, in the order they were opened."""
        return list(self._sessions.values())

    def live_for_robot(self, robot: str) -> LiftSession | None:
        """The robot's one live session, if any."""
        session_id = self._live_by_robot.get(robot)
        return None if session_id is None else self._sessions[session_id]

    def live_for_lift(self, lift: str) -> list[LiftSession]:
        """Live sessions on this car, in the order they were opened."""
        return [s for s in self._sessions.values() if s.live and s.lift == lift]

    def stranded(self) -> list[LiftSession]:
        """Sessions that ended (expired, cancelled) with the robot still inside the car."""
        return [s for s in self._sessions.values() if not s.live and s.robot_inside]

    def due_for_renewal(self, now: float, fraction: float = 0.5) -> list[LiftSession]:
        """Live sessions whose lease is more than `fraction` used but not yet run out."""
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"fraction must be in [0, 1), not {fraction!r}")
        return [
            s
            for s in self._sessions.values()
            if s.live and s.lease_until - s.lease_s * (1.0 - fraction) < now <= s.lease_until
        ]

    def expired(self, now: float) -> list[LiftSession]:
        """Live sessions past their lease: the dispatcher itself stopped renewing them."""
        return [s for s in self._sessions.values() if s.live and now > s.lease_until]

    def may_enter(
        self,
        robot: str,
        lift: str,
        level: str,
        reported_session: str,
        reported_level: str,
        door_open: bool,
        report_age_s: float,
        max_age_s: float,
    ) -> str:
        """'' when `robot` may drive into `lift` at `level` now, else why not.

        Only the car's own report counts, and a stale lift state is never trusted.
        """
        session = self.live_for_robot(robot)
        if session is None or session.lift != lift:
            return f"{robot} has no live session for {lift}"
        if session.state != _S.AT_FLOOR:
            return f"session {session.id} is {session.state}, not {_S.AT_FLOOR}"
        if level != session.from_level:
            return f"session {session.id} boards at {session.from_level}, not {level}"
        if not report_age_s <= max_age_s:  # NaN fails too
            return f"{lift} report is {report_age_s} s old (max {max_age_s} s): stale"
        if reported_session != session.id:
            return f"{lift} reports session {reported_session!r}, not {session.id!r}"
        if reported_level != level:
            return f"{lift} is at {reported_level!r}, not {level!r}"
        if not door_open:
            return f"{lift} door is not open"
        return ""

    def forget_finished(self, keep: int = 1000) -> None:
        """Drop all but the `keep` most recently finished sessions (never a stranded one)."""
        done = [s for s in self._sessions.values() if not s.live and not s.robot_inside]
        done.sort(key=lambda s: s.history[-1][0])  # stable: opening order breaks ties
        for session in done[: max(0, len(done) - keep)]:
            del self._sessions[session.id]

    def _get(self, session_id: str) -> LiftSession:
        session = self._sessions.get(session_id)
        if session is None:
            raise KeyError(f"unknown lift session {session_id!r}")
        return session
