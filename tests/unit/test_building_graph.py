"""Routes and travel times: the demo hospital's hygiene rules, and small hand-made maps."""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.building.graph import (
    LIFT_TRANSFER_S,
    BuildingGraph,
    Closures,
    LaneLeg,
    LiftLeg,
    NoRoute,
    Route,
)
from fleet.building.loader import load_building
from fleet.building.model import (
    Building,
    Door,
    DoorKind,
    Lane,
    Level,
    Lift,
    Node,
    Station,
    StationKind,
)
from fleet.domain.cargo import Access, Flow

DEMO = Path(__file__).resolve().parents[2] / "maps" / "demo_hospital.yaml"
ORS = [f"OR-0{i}" for i in range(1, 9)]
CLEAN_STATIONS = [
    "WH-PORT-1",
    "WH-PORT-2",
    "PHARMACY",
    "STERILE-CORE",
    "GOWN-DISPENSER",
    "WARD-A",
    "WARD-B",
    "WARD-C",
    *ORS,
]
DIRTY_STATIONS = ["WASTE-STATION", "SOILED-UTIL-1", "SOILED-UTIL-2", "WARD-SOILED"]
SHARED_STATIONS = [f"CHARGER-{i}" for i in range(1, 5)] + [f"PARK-{i}" for i in range(1, 4)]


@cache
def demo() -> BuildingGraph:
    return BuildingGraph(load_building(DEMO))


def node(station: str) -> str:
    return demo().building.station_node(station)


def lifts_of(route: Route) -> list[str]:
    return [leg.lift for leg in route.legs if isinstance(leg, LiftLeg)]


def doors_of(route: Route) -> list[str]:
    return [leg.door for leg in route.legs if isinstance(leg, LaneLeg) and leg.door]


# --- the demo hospital's rules -----------------------------------------------------------------


@pytest.mark.parametrize("port", ["WH-PORT-1", "WH-PORT-2"])
@pytest.mark.parametrize("theatre", ORS)
def test_warehouse_to_or_rides_the_clean_lift_through_an_access_controlled_door(
    port: str, theatre: str
) -> None:
    graph = demo()
    route = graph.route(node(port), node(theatre), Flow.CLEAN, 1.0)
    assert lifts_of(route) == ["LIFT-CLEAN"]
    kinds = {graph.building.doors[d].kind for d in doors_of(route)}
    assert DoorKind.ACCESS_CONTROLLED in kinds
    assert route.start == node(port) and route.end == node(theatre)


def test_every_warehouse_to_or_route_needs_a_controlled_door_and_a_lift() -> None:
    # Not just the fastest route: with the controlled-door lanes, or the lifts, taken out of the
    # building, no route is left at all (for either flow).
    building = demo().building
    no_controlled = dataclasses.replace(
        building,
        lanes=tuple(
            lane
            for lane in building.lanes
            if lane.door is None or building.doors[lane.door].kind is DoorKind.AUTOMATIC
        ),
    )
    no_lifts = dataclasses.replace(building, lifts={})
    for cut in (no_controlled, no_lifts):
        graph = BuildingGraph(cut)
        for port, theatre, flow in itertools.product(["WH-PORT-1", "WH-PORT-2"], ORS, Flow):
            assert graph.travel_time(node(port), node(theatre), flow, 1.0) == math.inf


def test_soiled_utility_to_waste_uses_the_dirty_lift() -> None:
    route = demo().route(node("SOILED-UTIL-1"), node("WASTE-STATION"), Flow.DIRTY, 1.0)
    assert lifts_of(route) == ["LIFT-DIRTY"]
    assert all(leg.access is not Access.CLEAN for leg in route.legs if isinstance(leg, LaneLeg))


@pytest.mark.parametrize("theatre", ORS)
def test_dirty_flow_cannot_reach_an_or(theatre: str) -> None:
    start = node("SOILED-UTIL-1")
    with pytest.raises(NoRoute) as caught:
        demo().route(start, node(theatre), Flow.DIRTY, 1.0)
    message = str(caught.value)
    assert start in message and node(theatre) in message and "DIRTY" in message
    assert demo().travel_time(node("CHARGER-1"), node(theatre), Flow.DIRTY, 1.0) == math.inf


def test_clean_flow_cannot_reach_the_waste_station() -> None:
    assert demo().travel_time(node("CHARGER-1"), node("WASTE-STATION"), Flow.CLEAN, 1.0) == math.inf


@pytest.mark.parametrize(
    ("flow", "stations"),
    [
        (Flow.CLEAN, CLEAN_STATIONS + SHARED_STATIONS),
        (Flow.DIRTY, DIRTY_STATIONS + SHARED_STATIONS),
    ],
)
def test_each_flow_reaches_all_its_stations_on_its_own_lanes_and_lifts(
    flow: Flow, stations: list[str]
) -> None:
    graph = demo()
    nodes = [node(s) for s in stations]
    matrix = graph.travel_times(nodes, flow, 1.0)
    assert all(math.isfinite(t) for row in matrix for t in row)
    building = graph.building
    for a, b in itertools.permutations(nodes, 2):
        for leg in graph.route(a, b, flow, 1.0).legs:
            access = leg.access if isinstance(leg, LaneLeg) else building.lifts[leg.lift].access
            assert access.admits(flow), (a, b, leg)


def test_demo_has_every_station_the_brief_names() -> None:
    names = set(demo().building.stations)
    assert set(CLEAN_STATIONS + DIRTY_STATIONS + SHARED_STATIONS) == names


def test_or_corridor_speed_limit_slows_a_fast_robot() -> None:
    graph = demo()
    a, b = node("OR-01"), node("OR-08")
    assert graph.travel_time(a, b, Flow.CLEAN, 1.5) == graph.travel_time(a, b, Flow.CLEAN, 0.8)


# --- travel_time, route and travel_times agree -------------------------------------------------


def test_travel_time_matches_route_time() -> None:
    graph = demo()
    nodes = [node(s) for s in CLEAN_STATIONS + SHARED_STATIONS]
    matrix = graph.travel_times(nodes, Flow.CLEAN, 1.2)
    for i, a in enumerate(nodes):
        for j, b in enumerate(nodes):
            route = graph.route(a, b, Flow.CLEAN, 1.2)
            assert graph.travel_time(a, b, Flow.CLEAN, 1.2) == route.time_s == matrix[i][j]
            assert route.time_s == pytest.approx(sum(leg.time_s for leg in route.legs))


def test_route_to_itself_is_empty() -> None:
    a = node("WARD-A")
    assert demo().route(a, a, Flow.DIRTY, 1.0) == Route(a, a, (), 0.0, 0.0)
    assert demo().travel_time(a, a, Flow.DIRTY, 1.0) == 0.0


def test_unknown_node_and_bad_speed_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown node 'NOWHERE'"):
        demo().travel_time("NOWHERE", node("WARD-A"), Flow.CLEAN, 1.0)
    with pytest.raises(ValueError, match="speed"):
        demo().route(node("WARD-A"), node("WARD-B"), Flow.CLEAN, 0.0)


def test_travel_times_is_fast_after_warm_up() -> None:
    graph = BuildingGraph(demo().building)
    nodes = list(graph.building.nodes)[:60]
    graph.travel_times(nodes, Flow.CLEAN, 1.0)
    started = time.perf_counter()
    matrix = graph.travel_times(nodes, Flow.CLEAN, 1.0)
    assert time.perf_counter() - started < 0.1
    assert len(matrix) == 60 and all(len(row) == 60 for row in matrix)


# --- small hand-made buildings -----------------------------------------------------------------


def building(
    nodes: dict[str, tuple[str, float, float]],
    lanes: list[Lane],
    *,
    levels: dict[str, float] | None = None,
    doors: Sequence[Door] = (),
    lifts: Sequence[Lift] = (),
) -> Building:
    levels = levels or {"L1": 0.0}
    return Building(
        name="test",
        levels={name: Level(name, z) for name, z in levels.items()},
        nodes={name: Node(name, level, x, y) for name, (level, x, y) in nodes.items()},
        lanes=tuple(lanes),
        doors={d.name: d for d in doors},
        lifts={lift.name: lift for lift in lifts},
        stations={},
    )


def test_speed_limit_and_door_open_time_are_counted() -> None:
    door = Door("D", DoorKind.ACCESS_CONTROLLED, open_time_s=4.0, close_time_s=2.0)
    b = building(
        {"A": ("L1", 0, 0), "B": ("L1", 10, 0), "C": ("L1", 10, 20)},
        [
            Lane("A", "B", 10.0, speed_limit_m_s=0.5, door="D"),
            Lane("B", "C", 20.0),
        ],
        doors=[door],
    )
    graph = BuildingGraph(b)
    assert graph.travel_time("A", "B", Flow.CLEAN, 1.0) == 10.0 / 0.5 + 4.0
    assert graph.travel_time("A", "B", Flow.CLEAN, 0.4) == 10.0 / 0.4 + 4.0
    assert graph.travel_time("B", "C", Flow.CLEAN, 2.0) == 10.0
    route = graph.route("C", "A", Flow.DIRTY, 1.0)
    assert route.legs == (
        LaneLeg("C", "B", 20.0, None, 20.0, Access.ANY),
        LaneLeg("B", "A", 10.0, "D", 24.0, Access.ANY),
    )
    assert (route.time_s, route.length_m) == (44.0, 30.0)


def test_one_way_lanes_are_respected() -> None:
    b = building(
        {"A": ("L1", 0, 0), "B": ("L1", 10, 0), "C": ("L1", 5, 10)},
        [
            Lane("A", "B", 10.0, bidirectional=False),
            Lane("B", "C", 11.0),
            Lane("C", "A", 11.0, bidirectional=False),
        ],
    )
    graph = BuildingGraph(b)
    assert graph.travel_time("A", "B", Flow.CLEAN, 1.0) == 10.0
    route = graph.route("B", "A", Flow.CLEAN, 1.0)  # must go round by C
    assert [(leg.start, leg.end) for leg in route.legs] == [("B", "C"), ("C", "A")]
    assert route.time_s == 22.0
    assert graph.travel_time("A", "C", Flow.CLEAN, 1.0) == 21.0


def test_one_way_dead_end_has_no_way_back() -> None:
    b = building({"A": ("L1", 0, 0), "B": ("L1", 3, 4)}, [Lane("A", "B", 5.0, bidirectional=False)])
    graph = BuildingGraph(b)
    assert graph.travel_time("B", "A", Flow.CLEAN, 1.0) == math.inf
    with pytest.raises(NoRoute, match=r"CLEAN flow from 'B' to 'A'"):
        graph.route("B", "A", Flow.CLEAN, 1.0)


def test_lane_access_splits_the_flows() -> None:
    b = building(
        {"A": ("L1", 0, 0), "B": ("L1", 10, 0), "C": ("L1", 5, 20)},
        [
            Lane("A", "B", 10.0, access=Access.DIRTY),
            Lane("A", "C", 20.0, access=Access.CLEAN),
            Lane("C", "B", 20.0, access=Access.CLEAN),
        ],
    )
    graph = BuildingGraph(b)
    assert graph.travel_time("A", "B", Flow.DIRTY, 1.0) == 10.0
    assert graph.travel_time("A", "B", Flow.CLEAN, 1.0) == 40.0
    assert graph.travel_time("A", "C", Flow.DIRTY, 1.0) == math.inf


def three_levels(*lifts: Lift) -> Building:
    return building(
        {"G": ("L0", 0, 0), "M": ("L1", 0, 0), "T": ("L2", 0, 0)},
        [],
        levels={"L0": 0.0, "L1": 4.5, "L2": 9.0},
        lifts=lifts,
    )


def test_lift_ride_time_and_legs() -> None:
    lift = Lift(
        "LIFT",
        {"L0": "G", "L1": "M", "L2": "T"},
        capacity_robots=1,
        door_time_s=4.0,
        speed_m_s=1.5,
        access=Access.CLEAN,
        expected_wait_s=30.0,
    )
    graph = BuildingGraph(three_levels(lift))
    expected = 30.0 + 3 * 4.0 + 2 * LIFT_TRANSFER_S + 9.0 / 1.5
    route = graph.route("T", "G", Flow.CLEAN, 1.0)
    # One ride top to bottom: cheaper than stopping at L1 and riding again.
    assert route.legs == (LiftLeg("LIFT", "L2", "L0", "T", "G", expected),)
    assert (route.time_s, route.length_m) == (expected, 0.0)
    assert graph.travel_time("T", "G", Flow.DIRTY, 1.0) == math.inf


def test_the_faster_of_two_lifts_sharing_lobbies_is_chosen() -> None:
    lobbies = {"L0": "G", "L1": "M", "L2": "T"}
    slow = Lift("SLOW", lobbies, 1, door_time_s=4.0, speed_m_s=0.5, expected_wait_s=30.0)
    fast = Lift("FAST", lobbies, 1, door_time_s=4.0, speed_m_s=2.0, expected_wait_s=30.0)
    graph = BuildingGraph(three_levels(slow, fast))
    assert lifts_of(graph.route("G", "T", Flow.CLEAN, 1.0)) == ["FAST"]
    assert lifts_of(graph.route("M", "G", Flow.DIRTY, 1.0)) == ["FAST"]


# --- property: shortest-path times on random grid maps -----------------------------------------


@st.composite
def grid_buildings(draw: st.DrawFn) -> Building:
    width = draw(st.integers(2, 4))
    height = draw(st.integers(1, 3))
    nodes = {f"N{x}{y}": ("L1", 5.0 * x, 5.0 * y) for x in range(width) for y in range(height)}
    pairs = [((x, y), (x + 1, y)) for x in range(width - 1) for y in range(height)]
    pairs += [((x, y), (x, y + 1)) for x in range(width) for y in range(height - 1)]
    lanes = []
    for (x1, y1), (x2, y2) in pairs:
        if not draw(st.booleans()) and len(pairs) > 1:
            continue  # leave some lanes out; the graph may fall apart, which is fine here
        a, b = f"N{x1}{y1}", f"N{x2}{y2}"
        if draw(st.booleans()):
            a, b = b, a
        lanes.append(
            Lane(
                a,
                b,
                length_m=draw(st.floats(5.0, 9.0)),
                bidirectional=draw(st.booleans()),
                speed_limit_m_s=draw(st.none() | st.floats(0.2, 2.0)),
            )
        )
    return building(nodes, lanes)


@settings(max_examples=60, deadline=None)
@given(grid_buildings(), st.floats(0.3, 2.0))
def test_travel_times_obey_the_triangle_inequality(b: Building, speed: float) -> None:
    graph = BuildingGraph(b)
    nodes = list(b.nodes)
    matrix = graph.travel_times(nodes, Flow.CLEAN, speed)
    for i, j, k in itertools.product(range(len(nodes)), repeat=3):
        assert matrix[i][i] == 0.0
        via = matrix[i][j] + matrix[j][k]
        assert matrix[i][k] <= via * (1 + 1e-12)
    for a in nodes:
        assert graph.travel_time(a, a, Flow.CLEAN, speed) == 0.0


def test_stations_are_reached_through_their_node() -> None:
    b = dataclasses.replace(
        building({"A": ("L1", 0, 0), "B": ("L1", 3, 4)}, [Lane("A", "B", 5.0)]),
        stations={"S": Station("S", StationKind.PARKING, "B")},
    )
    graph = BuildingGraph(b)
    assert graph.travel_time("A", b.station_node("S"), Flow.CLEAN, 1.0) == 5.0


# --- closures ----------------------------------------------------------------------------------


def ring() -> Building:
    """A-B-C-D-A on one level; A-B through door D1; the way round by D is longer."""
    return building(
        {"A": ("L1", 0, 0), "B": ("L1", 10, 0), "C": ("L1", 10, 10), "D": ("L1", 0, 10)},
        [
            Lane("A", "B", 10.0, door="D1"),
            Lane("B", "C", 10.0),
            Lane("C", "D", 10.0),
            Lane("D", "A", 15.0),
            Lane("C", "A", 30.0, bidirectional=False),
        ],
        doors=[Door("D1", DoorKind.AUTOMATIC, open_time_s=2.0, close_time_s=2.0)],
    )


def test_nothing_is_closed_at_first() -> None:
    graph = BuildingGraph(ring())
    assert graph.closed == Closures() and not graph.closed
    assert graph.set_closed() is False
    assert graph.version == 0


def test_a_closed_lane_is_closed_both_ways_and_reopens() -> None:
    graph = BuildingGraph(ring())
    assert graph.travel_time("A", "B", Flow.CLEAN, 1.0) == 12.0
    assert graph.set_closed(lanes=["A--B"]) is True
    assert graph.version == 1
    assert graph.closed == Closures(lanes=frozenset({"A--B"}))
    assert graph.travel_time("A", "B", Flow.CLEAN, 1.0) == 15.0 + 10.0 + 10.0  # by D and C
    assert graph.travel_time("B", "A", Flow.CLEAN, 1.0) == 10.0 + 10.0 + 15.0  # by C and D
    assert "D1" not in doors_of(graph.route("B", "A", Flow.CLEAN, 1.0))
    assert graph.set_closed(lanes=["A--B"]) is False  # the same closures: nothing changes
    assert graph.version == 1
    assert graph.set_closed() is True
    assert graph.version == 2
    assert graph.travel_time("A", "B", Flow.CLEAN, 1.0) == 12.0


def test_a_one_way_lane_is_closed_by_its_name() -> None:
    graph = BuildingGraph(ring())
    graph.set_closed(lanes=["C->A", "D--A"])
    assert graph.travel_time("C", "A", Flow.DIRTY, 1.0) == 10.0 + 12.0  # by B and the door
    graph.set_closed(lanes=["C->A", "D--A", "B--C"])
    assert graph.travel_time("C", "A", Flow.DIRTY, 1.0) == math.inf
    with pytest.raises(NoRoute):
        graph.route("C", "A", Flow.DIRTY, 1.0)


def test_a_closed_door_closes_its_lanes() -> None:
    graph = BuildingGraph(ring())
    graph.set_closed(doors={"D1"})
    assert graph.closed.doors == {"D1"}
    assert graph.travel_time("A", "B", Flow.CLEAN, 1.0) == 35.0
    assert graph.travel_times(["A", "B"], Flow.CLEAN, 1.0) == [[0.0, 35.0], [35.0, 0.0]]


def test_a_closed_node_cannot_be_entered_but_can_be_left() -> None:
    graph = BuildingGraph(ring())
    assert graph.travel_time("A", "C", Flow.CLEAN, 1.0) == 22.0  # through B
    graph.set_closed(nodes=["B"])
    assert graph.travel_time("A", "C", Flow.CLEAN, 1.0) == 25.0  # round B, by D
    assert graph.travel_time("A", "B", Flow.CLEAN, 1.0) == math.inf
    assert graph.travel_time("B", "A", Flow.CLEAN, 1.0) == 12.0  # a robot on B drives off
    assert graph.travel_time("B", "B", Flow.CLEAN, 1.0) == 0.0
    with pytest.raises(NoRoute):
        graph.route("C", "B", Flow.CLEAN, 1.0)


def test_a_closed_lift_has_no_rides_and_a_closed_lobby_no_arrivals() -> None:
    lobbies = {"L0": "G", "L1": "M", "L2": "T"}
    slow = Lift("SLOW", lobbies, 1, door_time_s=4.0, speed_m_s=0.5, expected_wait_s=30.0)
    fast = Lift("FAST", lobbies, 1, door_time_s=4.0, speed_m_s=2.0, expected_wait_s=30.0)
    graph = BuildingGraph(three_levels(slow, fast))
    graph.set_closed(lifts=["FAST"])
    assert lifts_of(graph.route("G", "T", Flow.CLEAN, 1.0)) == ["SLOW"]
    graph.set_closed(lifts=["FAST", "SLOW"])
    assert graph.travel_time("G", "T", Flow.CLEAN, 1.0) == math.inf
    graph.set_closed(nodes=["T"])
    assert graph.travel_time("G", "T", Flow.CLEAN, 1.0) == math.inf
    assert lifts_of(graph.route("T", "G", Flow.CLEAN, 1.0)) == ["FAST"]


def test_unknown_names_are_refused_and_change_nothing() -> None:
    graph = BuildingGraph(ring())
    graph.set_closed(doors=["D1"])
    before = (graph.closed, graph.version)
    with pytest.raises(ValueError, match=r"unknown lane 'B--A'; did you mean 'A--B'\?"):
        graph.set_closed(lanes=["B--A"])
    with pytest.raises(ValueError, match=r"unknown door 'D-1'; did you mean 'D1'\?"):
        graph.set_closed(doors=["D-1"])
    with pytest.raises(ValueError, match=r"unknown lift 'LIFT'"):
        graph.set_closed(doors=["D1"], lifts=["LIFT"])
    with pytest.raises(ValueError, match=r"unknown node 'Z'"):
        graph.set_closed(nodes=["A", "Z"])
    assert (graph.closed, graph.version) == before
    assert graph.travel_time("A", "B", Flow.CLEAN, 1.0) == 35.0


def test_closures_and_lift_waits_work_together() -> None:
    lobbies = {"L0": "G", "L1": "M", "L2": "T"}
    slow = Lift("SLOW", lobbies, 1, door_time_s=4.0, speed_m_s=0.5, expected_wait_s=30.0)
    fast = Lift("FAST", lobbies, 1, door_time_s=4.0, speed_m_s=2.0, expected_wait_s=30.0)
    graph = BuildingGraph(three_levels(slow, fast))
    ride = 3 * 4.0 + 2 * LIFT_TRANSFER_S + 9.0 / 0.5  # SLOW, without the wait
    graph.set_closed(lifts=["FAST"])
    assert graph.set_lift_waits({"SLOW": 5.0}) is True
    assert graph.travel_time("G", "T", Flow.CLEAN, 1.0) == 5.0 + ride  # still no FAST
    assert graph.closed.lifts == {"FAST"}
    assert graph.set_closed() is True  # the waits stay
    assert graph.lift_waits == {"SLOW": 5.0, "FAST": 30.0}
    assert lifts_of(graph.route("G", "T", Flow.CLEAN, 1.0)) == ["SLOW"]  # 5 s wait beats 30 s
    assert graph.version == 3


def test_closing_the_demo_wards_fire_door_cuts_off_the_east_wing() -> None:
    graph = BuildingGraph(load_building(DEMO))
    port, ward_b = "B1-WH-PORT-1", "L2-WARD-B"
    assert graph.travel_time(port, ward_b, Flow.CLEAN, 1.0) < math.inf
    graph.set_closed(doors=["D-L2-FIRE"])
    assert graph.travel_time(port, ward_b, Flow.CLEAN, 1.0) == math.inf
    assert graph.travel_time(port, "L2-WARD-A", Flow.CLEAN, 1.0) < math.inf
