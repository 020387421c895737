"""Lift sessions: the lifecycle table, leases, and when a robot may drive into a car."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fleet.traffic.lift_sessions import (
    TERMINAL,
    TRANSITIONS,
    IllegalSessionTransition,
    LiftSessions,
    SessionState,
)

S = SessionState


def opened(now: float = 0.0) -> LiftSessions:
    book = LiftSessions()
    book.open("S1", "LIFT-A", "R1", "L0", "L2", now=now, lease_s=60.0)
    return book


def at_floor() -> LiftSessions:
    book = opened()
    book.move("S1", S.ASSIGNED, 1.0)
    book.move("S1", S.AT_FLOOR, 2.0)
    return book


def enter_ok(book: LiftSessions, **changes: object) -> str:
    args: dict[str, object] = {
        "robot": "R1",
        "lift": "LIFT-A",
        "level": "L0",
        "reported_session": "S1",
        "reported_level": "L0",
        "door_open": True,
        "report_age_s": 0.5,
        "max_age_s": 2.0,
    }
    args.update(changes)
    return book.may_enter(**args)  # type: ignore[arg-type]


# --- lifecycle -----------------------------------------------------------------------------------


def test_the_happy_path_keeps_a_history() -> None:
    book = at_floor()
    assert enter_ok(book) == ""
    path = [S.ENTERED, S.RIDING, S.ARRIVED, S.EXITED, S.RELEASED]
    for t, state in enumerate(path, start=3):
        book.move("S1", state, float(t), why=f"step {t}")
    session = book.get("S1")
    assert session is not None
    assert session.state == S.RELEASED
    assert [h[1] for h in session.history] == [S.REQUESTED, S.ASSIGNED, S.AT_FLOOR, *path]
    assert session.history[3] == (3.0, S.ENTERED, "step 3")
    assert session.exit_level == "L2"
    assert not session.robot_inside
    assert book.live_for_robot("R1") is None
    assert book.live_for_lift("LIFT-A") == []


def test_a_report_can_show_the_car_assigned_and_open_at_once() -> None:
    book = opened()
    assert book.move("S1", S.AT_FLOOR, 1.0).state == S.AT_FLOOR


def test_repeating_the_current_state_changes_nothing() -> None:
    book = at_floor()
    before = copy.deepcopy(book.get("S1"))
    book.move("S1", S.AT_FLOOR, 9.0)
    assert book.get("S1") == before


HAPPY = [S.AT_FLOOR, S.ENTERED, S.RIDING, S.ARRIVED, S.EXITED, S.RELEASED]
PATH_TO = {S.REQUESTED: [], S.ASSIGNED: [S.ASSIGNED], S.CANCELLED: [S.CANCELLED]}
PATH_TO |= {state: HAPPY[: i + 1] for i, state in enumerate(HAPPY)}


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (S.REQUESTED, S.ENTERED),
        (S.ASSIGNED, S.RIDING),
        (S.RIDING, S.REQUESTED),
        (S.ARRIVED, S.RIDING),
        (S.EXITED, S.ENTERED),
        (S.RELEASED, S.REQUESTED),
        (S.CANCELLED, S.RELEASED),
    ],
)
def test_illegal_transitions_are_refused_naming_both_states(
    old: SessionState, new: SessionState
) -> None:
    book = opened()
    for t, state in enumerate(PATH_TO[old], start=1):
        book.move("S1", state, float(t))
    with pytest.raises(IllegalSessionTransition, match=f"'S1': {old} -> {new}") as err:
        book.move("S1", new, 1.0)
    assert (err.value.session_id, err.value.old, err.value.new) == ("S1", old, new)
    assert book.get("S1").state == old  # type: ignore[union-attr]


def test_the_table_ends_every_live_state_and_nothing_leaves_a_terminal_one() -> None:
    for state, nexts in TRANSITIONS.items():
        if state in TERMINAL:
            assert nexts == frozenset()
        else:
            assert {S.EXPIRED, S.CANCELLED} <= nexts


def test_cancelling_with_the_robot_inside_leaves_it_flagged() -> None:
    book = at_floor()
    book.move("S1", S.ENTERED, 3.0)
    book.move("S1", S.RIDING, 4.0)
    book.move("S1", S.CANCELLED, 5.0, why="lift out of service")
    session = book.get("S1")
    assert session is not None and session.robot_inside
    assert book.stranded() == [session]
    assert book.live_for_robot("R1") is None
    book.open("S2", "LIFT-A", "R2", "L0", "L1", 6.0, 60.0)
    with pytest.raises(ValueError, match="live"):
        book.robot_out("S2", 6.0)
    book.robot_out("S1", 7.0, why="operator")
    assert book.stranded() == []
    assert session.history[-1] == (7.0, S.CANCELLED, "robot out: operator")


def test_a_fire_recall_lets_the_robot_out_at_another_level() -> None:
    book = at_floor()
    book.move("S1", S.ENTERED, 3.0)
    book.move("S1", S.RIDING, 4.0)
    with pytest.raises(IllegalSessionTransition, match="without a recall"):
        book.move("S1", S.ARRIVED, 5.0, level="L1")
    book.move("S1", S.ARRIVED, 5.0, why="fire recall", level="L1", recalled=True)
    book.move("S1", S.EXITED, 6.0)
    session = book.get("S1")
    assert session is not None
    assert (session.exit_level, session.robot_inside) == ("L1", False)


def test_a_car_recalled_before_the_ride_opens_from_entered_only_with_recalled() -> None:
    book = at_floor()
    book.move("S1", S.ENTERED, 3.0)
    with pytest.raises(IllegalSessionTransition):
        book.move("S1", S.ARRIVED, 4.0)
    assert book.move("S1", S.ARRIVED, 4.0, level="L0", recalled=True).exit_level == "L0"


def test_level_belongs_to_arrived_only() -> None:
    book = opened()
    with pytest.raises(ValueError, match="ARRIVED only"):
        book.move("S1", S.ASSIGNED, 1.0, level="L1")


def test_unknown_sessions_are_a_key_error() -> None:
    book = LiftSessions()
    with pytest.raises(KeyError, match="S9"):
        book.move("S9", S.ASSIGNED, 0.0)
    with pytest.raises(KeyError, match="S9"):
        book.renew("S9", 0.0)
    assert book.get("S9") is None


# --- opening and leases --------------------------------------------------------------------------


def test_opening_the_same_id_again_renews_the_lease_only() -> None:
    book = at_floor()
    again = book.open("S1", "LIFT-A", "R1", "L0", "L2", now=30.0, lease_s=999.0)
    assert again is book.get("S1")
    assert (again.state, again.lease_s, again.lease_until) == (S.AT_FLOOR, 60.0, 90.0)
    assert len(again.history) == 3


def test_an_id_is_one_ride_and_is_not_reopened() -> None:
    book = opened()
    with pytest.raises(ValueError, match="another ride"):
        book.open("S1", "LIFT-B", "R1", "L0", "L2", 1.0, 60.0)
    book.move("S1", S.CANCELLED, 2.0)
    with pytest.raises(ValueError, match="CANCELLED"):
        book.open("S1", "LIFT-A", "R1", "L0", "L2", 3.0, 60.0)


def test_a_robot_has_one_live_session() -> None:
    book = opened()
    with pytest.raises(ValueError, match="'R1' already has live lift session 'S1'"):
        book.open("S2", "LIFT-B", "R1", "L0", "L1", 1.0, 60.0)
    assert book.get("S2") is None
    book.move("S1", S.EXPIRED, 2.0)
    assert book.open("S2", "LIFT-B", "R1", "L0", "L1", 3.0, 60.0).state == S.REQUESTED
    assert book.live_for_robot("R1") is book.get("S2")


@pytest.mark.parametrize("lease_s", [0.0, -1.0, float("nan"), float("inf")])
def test_a_lease_is_a_positive_number_of_seconds(lease_s: float) -> None:
    with pytest.raises(ValueError, match="lease_s"):
        LiftSessions().open("S1", "LIFT-A", "R1", "L0", "L1", 0.0, lease_s)


def test_a_ride_goes_somewhere() -> None:
    with pytest.raises(ValueError, match="itself"):
        LiftSessions().open("S1", "LIFT-A", "R1", "L0", "L0", 0.0, 60.0)


def test_leases_come_due_then_expire_unless_renewed() -> None:
    book = opened(now=0.0)  # lease 60 s: until 60
    book.open("S2", "LIFT-A", "R2", "L1", "L0", now=20.0, lease_s=60.0)  # until 80
    assert book.due_for_renewal(29.0) == []
    assert [s.id for s in book.due_for_renewal(31.0)] == ["S1"]
    assert [s.id for s in book.due_for_renewal(51.0)] == ["S1", "S2"]
    assert [s.id for s in book.due_for_renewal(51.0, fraction=0.9)] == []
    assert book.expired(60.0) == []
    assert [s.id for s in book.expired(61.0)] == ["S1"]
    assert [s.id for s in book.due_for_renewal(61.0)] == ["S2"]  # an expired one is not due
    book.renew("S1", 61.0)
    assert book.expired(61.0) == []
    assert book.get("S1").lease_until == 121.0  # type: ignore[union-attr]
    book.move("S1", S.EXPIRED, 62.0)
    assert book.expired(500.0) == [book.get("S2")]
    with pytest.raises(ValueError, match="EXPIRED"):
        book.renew("S1", 63.0)


def test_live_for_lift_lists_live_sessions_in_opening_order() -> None:
    book = opened()
    book.open("S2", "LIFT-B", "R2", "L0", "L1", 1.0, 60.0)
    book.open("S3", "LIFT-A", "R3", "L1", "L0", 2.0, 60.0)
    assert [s.id for s in book.live_for_lift("LIFT-A")] == ["S1", "S3"]
    book.move("S1", S.CANCELLED, 3.0)
    assert [s.id for s in book.live_for_lift("LIFT-A")] == ["S3"]


def test_forget_finished_keeps_the_newest_and_every_stranded_one() -> None:
    book = LiftSessions()
    for i in range(5):
        book.open(f"S{i}", "LIFT-A", f"R{i}", "L0", "L1", float(i), 60.0)
    book.move("S0", S.AT_FLOOR, 10.0)
    book.move("S0", S.ENTERED, 11.0)
    book.move("S0", S.CANCELLED, 12.0)  # stranded
    book.move("S3", S.CANCELLED, 13.0)
    book.move("S1", S.CANCELLED, 14.0)
    book.forget_finished(keep=1)
    assert [s.id for s in book.sessions()] == ["S0", "S1", "S2", "S4"]
    book.forget_finished(keep=0)
    assert [s.id for s in book.sessions()] == ["S0", "S2", "S4"]


# --- may the robot drive in? ---------------------------------------------------------------------


def test_may_enter_when_its_own_car_stands_open_at_its_level_with_a_fresh_report() -> None:
    assert enter_ok(at_floor()) == ""


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"robot": "R2"}, "R2 has no live session for LIFT-A"),
        ({"lift": "LIFT-B"}, "R1 has no live session for LIFT-B"),
        ({"reported_session": "S7"}, "reports session 'S7', not 'S1'"),
        ({"reported_session": ""}, "reports session '', not 'S1'"),
        ({"reported_level": "L1"}, "at 'L1', not 'L0'"),
        ({"door_open": False}, "door is not open"),
        ({"report_age_s": 2.5}, "stale"),
        ({"report_age_s": float("nan")}, "stale"),
        ({"level": "L1"}, "boards at L0, not L1"),
    ],
)
def test_may_enter_says_why_not(changes: dict[str, object], reason: str) -> None:
    assert reason in enter_ok(at_floor(), **changes)


def test_a_stale_report_is_not_trusted_even_when_it_looks_right() -> None:
    assert "stale" in enter_ok(at_floor(), report_age_s=3.0)


def test_may_enter_only_once_the_session_is_at_the_floor() -> None:
    book = opened()
    assert "REQUESTED, not AT_FLOOR" in enter_ok(book)
    book.move("S1", S.AT_FLOOR, 1.0)
    book.move("S1", S.ENTERED, 2.0)
    assert "ENTERED, not AT_FLOOR" in enter_ok(book)


# --- properties ----------------------------------------------------------------------------------

ROBOTS = ["R1", "R2", "R3"]
LIFTS = ["LIFT-A", "LIFT-B"]
LEVELS = ["L0", "L1", "L2"]
IDS = ["S1", "S2", "S3"]
robots, lifts, levels, ids = (st.sampled_from(x) for x in (ROBOTS, LIFTS, LEVELS, IDS))
ASK_FIELDS = ["lift", "level", "reported_session", "reported_level"]
VALUES = ["", *LIFTS, *LEVELS, *IDS]
ENDS = {S.EXPIRED, S.CANCELLED}
INSIDE = {S.ENTERED, S.RIDING, S.ARRIVED}


class SessionsMachine(RuleBasedStateMachine):
    """Random opens, moves, renewals and questions; the invariants hold after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.book = LiftSessions()
        self.now = 0.0

    def refused_changes_nothing(self, change: Callable[[], object]) -> None:
        self.now += 1.0
        before = copy.deepcopy(self.book.sessions())
        try:
            change()
        except (KeyError, ValueError):
            assert self.book.sessions() == before

    @rule(sid=ids, lift=lifts, robot=robots, a=levels, b=levels)
    def open(self, sid: str, lift: str, robot: str, a: str, b: str) -> None:
        self.refused_changes_nothing(lambda: self.book.open(sid, lift, robot, a, b, self.now, 30))

    @rule(sid=ids, state=st.sampled_from(SessionState), level=st.none() | levels, r=st.booleans())
    def move(self, sid: str, state: SessionState, level: str | None, r: bool) -> None:
        self.refused_changes_nothing(
            lambda: self.book.move(sid, state, self.now, level=level, recalled=r)
        )

    @rule(sid=ids, pick=st.integers(0, 5))
    def advance(self, sid: str, pick: int) -> None:
        """A move the table allows; half the time the first live one, so runs get far."""
        session = self.book.get(sid)
        if session is None or not session.live:
            return
        order = sorted(TRANSITIONS[session.state], key=lambda x: (x in TERMINAL, x))
        state = order[0 if pick < 3 else pick % len(order)]
        recalled = state == S.ARRIVED and session.state == S.ENTERED
        self.book.move(sid, state, self.now, recalled=recalled)

    @rule(sid=ids)
    def renew(self, sid: str) -> None:
        self.refused_changes_nothing(lambda: self.book.renew(sid, self.now))

    @rule(
        sid=ids,
        field=st.sampled_from(["", *ASK_FIELDS]),
        value=st.sampled_from(VALUES),
        report_first=st.booleans(),
    )
    def ask_about_its_own_car(self, sid: str, field: str, value: str, report_first: bool) -> None:
        """A report right for a live session's robot, or with one field wrong; perhaps just
        after the car reported itself open for the session (so that the answer may be yes)."""
        own = self.book.get(sid)
        if own is None or not own.live:
            return
        if report_first and S.AT_FLOOR in TRANSITIONS[own.state]:
            self.book.move(sid, S.AT_FLOOR, self.now, "car open for the session")
        robot = own.robot
        right = {"lift": own.lift, "level": own.from_level}
        right |= {"reported_session": own.id, "reported_level": own.from_level}
        ask = right | ({field: value} if field else {})
        why = enter_ok(self.book, robot=robot, **ask)
        event("own car: may enter" if why == "" else "own car: may not enter")
        assert (why == "") == (own.state == S.AT_FLOOR and ask == right)

    @rule(robot=robots, lift=lifts, level=levels, sid=st.sampled_from(VALUES), at=levels)
    def ask_anything(self, robot: str, lift: str, level: str, sid: str, at: str) -> None:
        before = copy.deepcopy(self.book.sessions())
        why = self.book.may_enter(robot, lift, level, sid, at, True, 0.0, 1.0)
        assert self.book.sessions() == before
        if why == "":
            own = self.book.live_for_robot(robot)
            assert own is not None and own.robot == robot and own.state == S.AT_FLOOR
            assert (own.id, own.lift, own.from_level, own.from_level) == (sid, lift, level, at)

    @invariant()
    def one_live_session_per_robot(self) -> None:
        for robot in ROBOTS:
            live = [s for s in self.book.sessions() if s.robot == robot and s.live]
            assert len(live) <= 1
            assert self.book.live_for_robot(robot) == (live[0] if live else None)

    @invariant()
    def robot_inside_follows_the_state(self) -> None:
        for s in self.book.sessions():
            expected = s.state in INSIDE or (s.robot_inside and s.state in ENDS)
            assert s.robot_inside == expected


SessionsMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None
)
test_no_robot_ever_has_two_live_sessions_nor_enters_on_another_session = SessionsMachine.TestCase
