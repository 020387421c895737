"""The traffic control book: all-or-nothing grants, FIFO with no overtaking, deadlock cycles."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.traffic.control import TrafficControl

# --- one resource at a time, as the old Reservations ---------------------------------------------


def test_first_come_first_served_on_one_resource() -> None:
    tc = TrafficControl({"door:D": 1})
    assert tc.request("R1", ["door:D"], now=1.0)
    assert not tc.request("R2", ["door:D"], now=2.0)
    assert not tc.request("R3", ["door:D"], now=3.0)
    assert tc.holders("door:D") == ("R1",)
    assert tc.waiters() == ["R2", "R3"]
    assert tc.waiting_for("R2") == ("door:D",)
    assert tc.waiting_since("R3") == 3.0
    assert tc.release("R1", ["door:D"]) == ["R2"]
    assert tc.holders("door:D") == ("R2",)
    assert tc.release("R2", ["door:D"]) == ["R3"]
    assert tc.release("R3", ["door:D"]) == []
    assert tc.holders("door:D") == ()
    assert tc.waiters() == []


def test_capacity_two_admits_two_and_grants_both_freed_slots_in_order() -> None:
    tc = TrafficControl({"lift:L": 2})
    assert tc.request("R1", ["lift:L"])
    assert tc.request("R2", ["lift:L"])
    assert not tc.request("R3", ["lift:L"])
    assert not tc.request("R4", ["lift:L"])
    assert tc.release_all("R1") == ["R3"]
    assert tc.release_all("R2") == ["R4"]
    assert tc.holders("lift:L") == ("R3", "R4")
    assert tc.over_capacity() == []


def test_asking_again_for_the_same_set_keeps_the_place_in_the_queue() -> None:
    tc = TrafficControl({"a": 1, "b": 1})
    tc.request("H", ["a", "b"])
    assert not tc.request("W1", ["a", "b"], now=1.0)
    assert not tc.request("W2", ["a"], now=2.0)
    assert tc.request("H", ["b", "a"])  # already held: still True, changes nothing
    assert not tc.request("W1", ["b", "a", "a"], now=5.0)  # same set, any order or repeats
    assert tc.waiters() == ["W1", "W2"]
    assert tc.waiting_since("W1") == 1.0
    assert tc.release_all("H") == ["W1"]


def test_a_different_set_replaces_the_waiting_request_at_the_back() -> None:
    tc = TrafficControl({"a": 1, "b": 1})
    tc.request("H", ["a", "b"])
    tc.request("W1", ["a"], now=1.0)
    tc.request("W2", ["a"], now=2.0)
    assert not tc.request("W1", ["b"], now=3.0)
    assert tc.waiters() == ["W2", "W1"]
    assert tc.waiting_for("W1") == ("b",)
    assert tc.waiting_since("W1") == 3.0
    assert tc.release_all("H") == ["W2", "W1"]


def test_replacing_a_request_reports_the_waiters_it_let_through() -> None:
    tc = TrafficControl({"a": 1, "b": 1, "c": 1})
    tc.request("H", ["b"])
    tc.request("W1", ["a", "b"])  # waits for b, reserves a
    tc.request("W2", ["a"])  # a is free but reserved by W1
    assert tc.waiters() == ["W1", "W2"]
    assert tc.submit("W1", ["c"]) == (True, ["W2"])
    assert tc.holders("a") == ("W2",)


def test_an_empty_request_is_granted_and_drops_a_waiting_one() -> None:
    tc = TrafficControl({"a": 1})
    assert tc.request("R1", [])
    tc.request("H", ["a"])
    tc.request("R1", ["a"])
    assert tc.request("R1", [])
    assert tc.waiters() == []


def test_cancel_stops_waiting_keeps_what_is_held_and_reports_grants() -> None:
    tc = TrafficControl({"a": 1, "b": 1, "c": 1})
    tc.request("H", ["b"])
    tc.request("W1", ["c"])
    assert not tc.request("W1", ["a", "b"])  # W1 holds c, waits for a and b
    assert not tc.request("W2", ["a"])
    assert tc.cancel("W1") == ["W2"]
    assert tc.held_by("W1") == ("c",)
    assert tc.waiting_for("W1") == ()
    assert tc.waiting_since("W1") is None
    assert tc.cancel("W1") == []


def test_release_ignores_what_is_not_held() -> None:
    tc = TrafficControl({"a": 1, "b": 1})
    tc.request("R1", ["a"])
    assert tc.release("R1", ["b", "nowhere"]) == []
    assert tc.held_by("R1") == ("a",)


def test_release_all_keeps_what_it_is_told_and_stops_waiting() -> None:
    tc = TrafficControl({"node:N": 1, "lane:A--B": 1, "door:D": 1})
    assert tc.request("R1", ["node:N", "lane:A--B"])
    tc.request("R2", ["door:D"])
    assert not tc.request("R1", ["door:D"])
    assert not tc.request("R3", ["lane:A--B"])
    assert not tc.request("R4", ["node:N"])
    assert tc.release_all("R1", keep=["node:N"]) == ["R3"]
    assert tc.held_by("R1") == ("node:N",)
    assert tc.waiting_for("R1") == ()
    assert tc.waiters() == ["R4"]


def test_unknown_resources_are_refused_by_name_and_change_nothing() -> None:
    tc = TrafficControl({"a": 1})
    with pytest.raises(KeyError, match="door:X"):
        tc.request("R1", ["a", "door:X"])
    assert tc.held_by("R1") == ()
    with pytest.raises(KeyError, match="door:X"):
        tc.hold("R1", "door:X")


@pytest.mark.parametrize("cap", [0, -1, 1.5, True])
def test_capacities_must_be_positive_integers(cap: object) -> None:
    with pytest.raises(ValueError, match="door:D"):
        TrafficControl({"door:D": cap})  # type: ignore[dict-item]


# --- sets of resources ---------------------------------------------------------------------------


def test_a_request_is_all_or_nothing() -> None:
    tc = TrafficControl({"a": 1, "b": 1})
    tc.request("H", ["b"])
    assert not tc.request("W", ["a", "b"])
    assert tc.held_by("W") == ()
    assert tc.holders("a") == ()
    assert tc.release("H", ["b"]) == ["W"]
    assert tc.held_by("W") == ("a", "b")


def test_resources_already_held_count_as_held() -> None:
    tc = TrafficControl({"a": 1, "b": 1})
    tc.request("R1", ["a"])
    assert tc.request("R1", ["a", "b"])
    assert tc.held_by("R1") == ("a", "b")


def test_a_later_request_never_overtakes_an_earlier_one_on_a_shared_resource() -> None:
    tc = TrafficControl({"a": 1, "b": 1})
    tc.request("H", ["b"])
    assert not tc.request("W1", ["a", "b"])
    assert not tc.request("W2", ["a"])  # a is free, but W1 asked first
    assert tc.blockers("W2") == {"W1"}
    assert tc.blockers("W1") == {"H"}
    assert tc.release_all("H") == ["W1"]
    assert tc.release_all("W1") == ["W2"]


def test_a_robot_in_the_way_of_an_earlier_waiter_may_take_what_it_needs_to_leave() -> None:
    # HATCH holds the dock; NEXT waits for the doorway and the dock. HATCH's way out is the
    # doorway: it goes first, or neither ever moves.
    tc = TrafficControl({"door": 1, "dock": 1, "corridor": 1})
    tc.request("HATCH", ["dock"])
    assert not tc.request("NEXT", ["door", "dock"])
    assert tc.blockers("NEXT") == {"HATCH"}
    assert tc.request("HATCH", ["dock", "door", "corridor"])
    assert tc.deadlocks() == []
    # Once out, it gives both back and the earlier waiter gets them.
    assert tc.release("HATCH", ["dock", "door"]) == ["NEXT"]
    # A robot not in the way still waits behind the earlier waiter.
    tc2 = TrafficControl({"door": 1, "dock": 1})
    tc2.request("H", ["dock"])
    assert not tc2.request("W1", ["door", "dock"])
    assert not tc2.request("OTHER", ["door"])


def test_a_later_request_on_other_resources_goes_ahead() -> None:
    tc = TrafficControl({"a": 1, "b": 1, "c": 1})
    tc.request("H", ["b"])
    assert not tc.request("W1", ["a", "b"])
    assert tc.request("W2", ["c"])


def test_a_holder_of_a_resource_with_room_blocks_nobody() -> None:
    tc = TrafficControl({"zone:Z": 2, "b": 1})
    tc.request("R1", ["zone:Z"])
    tc.request("H", ["b"])
    assert not tc.request("W", ["zone:Z", "b"])
    assert tc.blockers("W") == {"H"}
    assert tc.blockers("H") == set()


# --- deadlock ------------------------------------------------------------------------------------


def test_hold_and_wait_cycle_is_reported_and_broken_by_release_all() -> None:
    tc = TrafficControl({"node:X": 1, "lift:L": 1})
    assert tc.request("R1", ["node:X"])
    assert tc.request("R2", ["lift:L"])
    assert not tc.request("R1", ["node:X", "lift:L"])
    assert not tc.request("R2", ["lift:L", "node:X"])
    assert tc.deadlocks() == [["R1", "R2"]]
    assert tc.release_all("R1") == ["R2"]
    assert tc.deadlocks() == []
    assert tc.held_by("R2") == ("lift:L", "node:X")


def test_a_cycle_through_an_earlier_waiter_counts() -> None:
    # R3 waits behind R1 on a; R1 waits for b, which R3 holds.
    tc = TrafficControl({"a": 1, "b": 1, "c": 1})
    tc.request("R3", ["b"])
    tc.request("R2", ["c"])
    assert not tc.request("R1", ["a", "c"])  # blocked by R2 on c, reserves a
    assert not tc.request("R3", ["a", "b"])  # a free but reserved by R1
    assert not tc.request("R2", ["b", "c"])  # blocked by R3 on b
    assert tc.deadlocks() == [["R1", "R2", "R3"]]


def test_deadlocks_are_listed_in_a_deterministic_order() -> None:
    tc = TrafficControl({f"r{i}": 1 for i in range(4)})
    pairs = [("D", 0, 1), ("C", 1, 0), ("B", 2, 3), ("A", 3, 2)]
    for me, mine, _ in pairs:
        tc.request(me, [f"r{mine}"])
    for me, mine, theirs in pairs:
        tc.request(me, [f"r{mine}", f"r{theirs}"])
    assert tc.deadlocks() == [["A", "B"], ["C", "D"]]


# --- physical presence ---------------------------------------------------------------------------


def test_hold_admits_a_robot_above_capacity_and_says_so() -> None:
    tc = TrafficControl({"node:N": 1})
    assert tc.hold("R1", "node:N")
    assert tc.over_capacity() == []
    assert not tc.hold("R2", "node:N")
    assert tc.holders("node:N") == ("R1", "R2")
    assert tc.over_capacity() == ["node:N"]
    tc.release_all("R1")
    assert tc.over_capacity() == []


def test_hold_can_complete_the_holders_own_waiting_request() -> None:
    tc = TrafficControl({"node:N": 1, "lift:L": 1})
    tc.request("R2", ["node:N"])
    assert not tc.request("R1", ["node:N", "lift:L"])
    assert not tc.hold("R1", "node:N")
    assert tc.waiting_for("R1") == ()
    assert tc.held_by("R1") == ("node:N", "lift:L")


# --- properties ----------------------------------------------------------------------------------

HOLDERS = ["R1", "R2", "R3", "R4"]
RESOURCES = ["a", "b", "c", "d"]

capacities = st.fixed_dictionaries({r: st.integers(1, 2) for r in RESOURCES})
subsets = st.lists(st.sampled_from(RESOURCES), max_size=4)
# Requests weigh double so that queues actually form; runs are long enough for several rounds.
operations = st.lists(
    st.tuples(
        st.sampled_from(["request", "request", "release", "release_all", "cancel"]),
        st.sampled_from(HOLDERS),
        subsets,
    ),
    min_size=10,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(capacities, operations)
def test_every_operation_keeps_the_book_consistent(
    caps: dict[str, int], ops: list[tuple[str, str, list[str]]]
) -> None:
    tc = TrafficControl(caps)
    # What each holder was told it got, from return values alone.
    told: dict[str, set[str]] = {h: set() for h in HOLDERS}
    for t, (op, holder, names) in enumerate(ops):
        asked = {h: set(tc.waiting_for(h)) for h in HOLDERS}
        held_before = {h: set(tc.held_by(h)) for h in HOLDERS}
        queue_before = tc.waiters()
        if op == "request":
            queue = tc.waiters()
            got, granted = tc.submit(holder, names, now=float(t))
            if got:
                told[holder] |= set(names)
                assert tc.waiting_for(holder) == ()
            elif asked[holder] == set(names):
                assert tc.waiters() == queue  # same request again: same place
            else:
                assert set(tc.waiting_for(holder)) == set(names)
                assert tc.waiters()[-1] == holder
        elif op == "release":
            granted = tc.release(holder, names)
            told[holder] -= set(names)
        elif op == "release_all":
            granted = tc.release_all(holder, keep=names)
            told[holder] &= set(names)
            assert tc.waiting_for(holder) == ()
        else:  # cancel
            granted = tc.cancel(holder)
            assert tc.waiting_for(holder) == ()
        assert len(granted) == len(set(granted))
        for h in granted:
            assert h != holder or op != "request"
            told[h] |= asked[h]
        # No overtaking: nobody got a resource that a waiter ahead of it still needs, unless
        # it held something that waiter needs (it was in the way and had to get out first).
        newcomers = (
            [*granted, holder] if op == "request" and not tc.waiting_for(holder) else granted
        )
        if op == "request" and asked[holder] != set(names) and holder in queue_before:
            queue_before.remove(holder)  # its new request queues behind everyone
        for h in newcomers:
            ahead = queue_before[: queue_before.index(h)] if h in queue_before else queue_before
            taken = set(tc.held_by(h)) - held_before[h]
            for e in ahead:
                needs = set(tc.waiting_for(e)) - set(tc.held_by(e))
                if needs & held_before[h]:
                    continue
                assert not taken & needs, (h, e)
        assert tc.over_capacity() == []
        assert tc.check_invariants() == []
        for h in HOLDERS:
            assert set(tc.held_by(h)) == told[h]
        for name in RESOURCES:
            assert all(name in tc.held_by(h) for h in tc.holders(name))


@settings(max_examples=300, deadline=None)
@given(capacities, st.lists(st.tuples(st.sampled_from(HOLDERS), subsets), min_size=4, max_size=12))
def test_every_waiter_is_granted_within_one_round_per_holder(
    caps: dict[str, int], asks: list[tuple[str, list[str]]]
) -> None:
    """Round robin: each round every holder that holds something releases all of it. Then the
    head of the queue is granted every round, so a waiter's wait is at most N rounds."""
    tc = TrafficControl(caps)
    for t, (holder, names) in enumerate(asks):
        tc.request(holder, names, now=float(t))
    position = {h: i for i, h in enumerate(tc.waiters())}
    for step in range(1, len(HOLDERS) + 1):
        for h in [h for h in HOLDERS if tc.held_by(h)]:
            tc.release(h, tc.held_by(h))
            assert tc.check_invariants() == []
        for h, pos in position.items():
            if pos < step:
                assert h not in tc.waiters(), f"{h} (queue position {pos}) waited {step} rounds"
    assert tc.waiters() == []
