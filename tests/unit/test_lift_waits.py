"""Learned lift waits: the estimator's rules, and travel times that follow the observed waits."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.building.graph import LIFT_TRANSFER_S, BuildingGraph, LiftLeg, Route
from fleet.building.loader import load_building
from fleet.building.model import Building, Lane, Level, Lift, Node
from fleet.domain.cargo import Access, Flow
from fleet.traffic.lift_waits import (
    DEFAULT_MAX_WAIT_S,
    DEFAULT_MIN_OBSERVATIONS,
    LiftWaitEstimator,
)

DEMO = Path(__file__).resolve().parents[2] / "maps" / "demo_hospital.yaml"


@cache
def demo_building() -> Building:
    return load_building(DEMO)


def lifts_of(route: Route) -> list[str]:
    return [leg.lift for leg in route.legs if isinstance(leg, LiftLeg)]


# --- the estimator -------------------------------------------------------------------------------


def test_the_prior_is_the_maps_expected_wait() -> None:
    estimator = LiftWaitEstimator.for_building(demo_building())
    assert estimator.estimates() == {"LIFT-CLEAN": 30.0, "LIFT-DIRTY": 30.0}
    assert estimator.observations("LIFT-CLEAN") == 0
    assert not estimator.learned("LIFT-CLEAN")


def test_the_prior_holds_until_enough_waits_are_seen() -> None:
    estimator = LiftWaitEstimator({"A": 30.0}, alpha=0.1, min_observations=5)
    waits = [60.0, 70.0, 80.0, 90.0]
    for wait in waits:
        estimator.observe("A", wait)
        assert estimator.estimate("A") == 30.0
    estimator.observe("A", 100.0)
    assert estimator.learned("A")
    # The first 1 / alpha waits are averaged evenly: the prior does not bias the estimate.
    assert estimator.estimate("A") == pytest.approx(80.0)


def test_the_default_gate() -> None:
    estimator = LiftWaitEstimator({"A": 30.0})
    for _ in range(DEFAULT_MIN_OBSERVATIONS - 1):
        estimator.observe("A", 90.0)
    assert estimator.estimate("A") == 30.0
    estimator.observe("A", 90.0)
    assert estimator.estimate("A") == pytest.approx(90.0)


def test_converges_and_then_follows_a_change() -> None:
    estimator = LiftWaitEstimator({"A": 30.0}, alpha=0.1, min_observations=3)
    for _ in range(50):
        estimator.observe("A", 80.0)
    assert estimator.estimate("A") == pytest.approx(80.0)
    # The building quietens: after k waits of 20 s the old level weighs (1 - alpha) ** k.
    for _ in range(10):
        estimator.observe("A", 20.0)
    assert estimator.estimate("A") == pytest.approx(20.0 + 60.0 * 0.9**10)
    for _ in range(100):
        estimator.observe("A", 20.0)
    assert estimator.estimate("A") == pytest.approx(20.0, abs=1e-3)


def test_noisy_waits_give_their_mean() -> None:
    estimator = LiftWaitEstimator({"A": 30.0}, alpha=0.05, min_observations=5)
    for i in range(400):
        estimator.observe("A", 45.0 + (15.0 if i % 2 else -15.0))
    assert estimator.estimate("A") == pytest.approx(45.0, abs=1.0)


def test_absurd_waits_are_clamped() -> None:
    estimator = LiftWaitEstimator({"A": 30.0}, min_observations=1, max_wait_s=200.0)
    assert estimator.observe("A", -5.0) == 0.0
    assert estimator.estimate("A") == 0.0
    assert estimator.observe("A", 3600.0) == 200.0  # a car out of service for an hour
    assert estimator.estimate("A") == pytest.approx(100.0)
    assert LiftWaitEstimator({"A": 1.0}).observe("A", 1e9) == DEFAULT_MAX_WAIT_S


def test_bad_input_is_refused() -> None:
    estimator = LiftWaitEstimator({"A": 30.0})
    with pytest.raises(ValueError, match="finite"):
        estimator.observe("A", math.nan)
    with pytest.raises(ValueError, match="finite"):
        estimator.observe("A", math.inf)
    assert estimator.observations("A") == 0  # a refused wait is not counted
    with pytest.raises(KeyError, match="unknown lift 'B'"):
        estimator.observe("B", 10.0)
    with pytest.raises(ValueError, match="alpha"):
        LiftWaitEstimator({"A": 30.0}, alpha=0.0)
    with pytest.raises(ValueError, match="min_observations"):
        LiftWaitEstimator({"A": 30.0}, min_observations=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        LiftWaitEstimator({"A": 30.0}, max_wait_s=0.0)
    with pytest.raises(ValueError, match="prior"):
        LiftWaitEstimator({"A": -1.0})


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["A", "B"]), st.floats(-100.0, 1e4)), max_size=60))
def test_estimates_are_deterministic_and_within_bounds(waits: list[tuple[str, float]]) -> None:
    one = LiftWaitEstimator({"A": 30.0, "B": 12.5})
    two = LiftWaitEstimator({"A": 30.0, "B": 12.5})
    for lift, wait in waits:
        one.observe(lift, wait)
        two.observe(lift, wait)
    assert one.estimates() == two.estimates()
    for lift, estimate in one.estimates().items():
        assert 0.0 <= estimate <= max(DEFAULT_MAX_WAIT_S, 30.0)
        if one.observations(lift) < DEFAULT_MIN_OBSERVATIONS:
            assert estimate == {"A": 30.0, "B": 12.5}[lift]


# --- the graph with observed waits ---------------------------------------------------------------


def test_unobserved_waits_give_exactly_the_maps_times() -> None:
    building = demo_building()
    plain, fed = BuildingGraph(building), BuildingGraph(building)
    estimator = LiftWaitEstimator.for_building(building)
    for _ in range(DEFAULT_MIN_OBSERVATIONS - 1):
        estimator.observe("LIFT-CLEAN", 200.0)  # not enough yet
    assert fed.set_lift_waits(estimator.estimates()) is False
    assert fed.version == 0
    nodes = list(building.nodes)
    for flow in Flow:
        assert fed.travel_times(nodes, flow, 1.0) == plain.travel_times(nodes, flow, 1.0)


def test_a_slower_clean_lift_lengthens_warehouse_to_or_by_the_extra_wait() -> None:
    building = demo_building()
    graph = BuildingGraph(building)
    port, theatre = building.station_node("WH-PORT-1"), building.station_node("OR-03")
    soiled, waste = building.station_node("SOILED-UTIL-1"), building.station_node("WASTE-STATION")
    before = graph.route(port, theatre, Flow.CLEAN, 1.0)  # also fills the cache
    dirty_before = graph.travel_time(soiled, waste, Flow.DIRTY, 1.0)

    estimator = LiftWaitEstimator.for_building(building)
    for _ in range(10):
        estimator.observe("LIFT-CLEAN", 90.0)
    assert graph.set_lift_waits(estimator.estimates()) is True
    assert graph.version == 1
    assert graph.lift_waits == {"LIFT-CLEAN": pytest.approx(90.0), "LIFT-DIRTY": 30.0}

    after = graph.route(port, theatre, Flow.CLEAN, 1.0)
    assert lifts_of(after) == lifts_of(before) == ["LIFT-CLEAN"]  # the only clean lift
    assert after.time_s == pytest.approx(before.time_s + 60.0)
    assert graph.travel_time(port, theatre, Flow.CLEAN, 1.0) == after.time_s
    ride = next(leg for leg in after.legs if isinstance(leg, LiftLeg))
    assert ride.time_s == pytest.approx(90.0 + 3 * 4.0 + 2 * LIFT_TRANSFER_S + 4.5 / 1.0)
    # The dirty flow rides the other lift: untouched.
    assert graph.travel_time(soiled, waste, Flow.DIRTY, 1.0) == dirty_before
    # The same waits again change nothing and keep the caches.
    assert graph.set_lift_waits(estimator.estimates()) is False
    assert graph.version == 1


def two_shafts() -> Building:
    """Two levels, a lift at each end of a 40 m corridor: NEAR by the start, FAR by the end.

    From G-W (west) to U-E (upper east): NEAR then the upper corridor, or the lower corridor then
    FAR. The lower corridor detours (44 m against 42 m), so with equal waits NEAR wins by 2 s.
    """
    nodes = {
        "G-W": Node("G-W", "G", 0, 0),
        "G-NEAR": Node("G-NEAR", "G", 5, 0),
        "G-FAR": Node("G-FAR", "G", 47, 0),
        "U-NEAR": Node("U-NEAR", "U", 5, 0),
        "U-FAR": Node("U-FAR", "U", 47, 0),
        "U-E": Node("U-E", "U", 50, 0),
    }
    lanes = (
        Lane("G-W", "G-NEAR", 5.0),
        Lane("G-NEAR", "G-FAR", 44.0),
        Lane("U-NEAR", "U-FAR", 42.0),
        Lane("U-FAR", "U-E", 3.0),
    )
    lifts = {
        name: Lift(
            name,
            {"G": f"G-{name}", "U": f"U-{name}"},
            capacity_robots=1,
            door_time_s=4.0,
            speed_m_s=1.0,
            access=Access.ANY,
            expected_wait_s=30.0,
        )
        for name in ("NEAR", "FAR")
    }
    return Building(
        name="two shafts",
        levels={"G": Level("G", 0.0), "U": Level("U", 4.0)},
        nodes=nodes,
        lanes=lanes,
        doors={},
        lifts=lifts,
        stations={},
    )


def test_a_slow_lift_switches_the_route_to_the_other_lift() -> None:
    graph = BuildingGraph(two_shafts())
    nominal = graph.route("G-W", "U-E", Flow.CLEAN, 1.0)
    # NEAR wins: 5 m, ride, 42 + 3 m; FAR would need 5 + 44 m, ride, 3 m.
    assert lifts_of(nominal) == ["NEAR"]
    ride = 30.0 + 3 * 4.0 + 2 * LIFT_TRANSFER_S + 4.0
    assert nominal.time_s == pytest.approx(5.0 + ride + 45.0)

    # NEAR's waits are 20 s longer than planned: the route through it would be 20 s longer,
    # while FAR costs only 2 s of extra driving, so the route switches to FAR.
    estimator = LiftWaitEstimator.for_building(graph.building, min_observations=3)
    for _ in range(3):
        estimator.observe("NEAR", 50.0)
    graph.set_lift_waits(estimator.estimates())
    switched = graph.route("G-W", "U-E", Flow.CLEAN, 1.0)
    assert lifts_of(switched) == ["FAR"]
    assert switched.time_s == pytest.approx(49.0 + ride + 3.0)
    assert graph.travel_time("G-W", "U-E", Flow.CLEAN, 1.0) == switched.time_s
    # A trip that only NEAR serves well gets longer by the observed extra wait.
    assert graph.travel_time("G-NEAR", "U-NEAR", Flow.CLEAN, 1.0) == pytest.approx(ride + 20.0)

    # Back to the map's waits: exactly the original route and times.
    assert graph.set_lift_waits({}) is True
    assert graph.route("G-W", "U-E", Flow.CLEAN, 1.0) == nominal
    assert graph.version == 2


def test_waits_given_at_construction_and_the_matrix_follows_them() -> None:
    building = two_shafts()
    slow = BuildingGraph(building, lift_waits={"NEAR": 50.0, "FAR": 50.0})
    fast = BuildingGraph(building)
    nodes = ["G-W", "U-E", "G-FAR"]
    slow_m = slow.travel_times(nodes, Flow.DIRTY, 1.0)
    fast_m = fast.travel_times(nodes, Flow.DIRTY, 1.0)
    assert slow_m[0][1] == pytest.approx(fast_m[0][1] + 20.0)
    assert slow_m[0][2] == fast_m[0][2]  # no lift on that trip
    assert slow.version == 0 and slow.lift_waits == {"NEAR": 50.0, "FAR": 50.0}
    fast.travel_times(nodes, Flow.DIRTY, 1.0)  # cached trees must not survive a change
    fast.set_lift_waits({"NEAR": 50.0, "FAR": 50.0})
    assert fast.travel_times(nodes, Flow.DIRTY, 1.0) == slow_m


def test_bad_waits_are_refused_and_change_nothing() -> None:
    graph = BuildingGraph(two_shafts())
    before = graph.travel_time("G-W", "U-E", Flow.CLEAN, 1.0)
    with pytest.raises(ValueError, match="unknown lift 'SIDE'"):
        graph.set_lift_waits({"NEAR": 60.0, "SIDE": 10.0})
    with pytest.raises(ValueError, match="finite seconds >= 0"):
        graph.set_lift_waits({"NEAR": -1.0})
    with pytest.raises(ValueError, match="finite seconds >= 0"):
        graph.set_lift_waits({"NEAR": math.nan})
    with pytest.raises(ValueError, match="unknown lift"):
        BuildingGraph(two_shafts(), lift_waits={"SIDE": 1.0})
    assert graph.travel_time("G-W", "U-E", Flow.CLEAN, 1.0) == before
    assert graph.version == 0 and graph.lift_waits == {"NEAR": 30.0, "FAR": 30.0}
