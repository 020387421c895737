"""Public benchmarks (Li & Lim PDPTW, Solomon VRPTW) and the model options they rely on.

No quality targets here: those live in BENCHMARKS.md. These tests check the parsers on the
copied files, that the route checkers catch broken routes, that a short solve returns a feasible
plan through the dispatcher's own `solve`, and the model options (hard windows, closed routes,
fixed vehicle costs, distance as the cost, search configuration).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest

from benchmarks import pdptw, vrptw
from fleet.domain.cargo import CargoClass, Flow
from fleet.domain.priority import Priority
from fleet.planning import (
    ROUTE_ELIMINATION_SEARCH,
    OnboardTask,
    Plan,
    SearchConfig,
    Snapshot,
    StopKind,
    Task,
    VehicleState,
    build_problem,
    solve,
)

DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data"
LC101 = DATA / "li_lim_100" / "lc101.txt"
C101 = DATA / "solomon_100" / "C101.vrp"


# --- parsers --------------------------------------------------------------------------------


def test_li_lim_parser_reads_counts_depot_and_pairs() -> None:
    instance = pdptw.parse(LC101)
    assert (instance.name, instance.vehicles, instance.capacity) == ("lc101", 25, 200)
    assert len(instance.sites) == 107  # the depot and 106 tasks' nodes
    depot = instance.depot
    assert (depot.x, depot.y, depot.earliest, depot.latest) == (40.0, 50.0, 0.0, 1236.0)
    pairs = instance.pairs
    assert len(pairs) == 53
    assert pairs[0] == (3, 75)  # first pickup in the file: site 3, delivered at 75
    for p, d in pairs:
        assert instance.sites[d].pickup == p
        assert instance.sites[p].demand == -instance.sites[d].demand > 0
    assert {i for pair in pairs for i in pair} == set(instance.sites) - {0}
    assert pdptw.read_bks(LC101.parent / "bks.csv", "lc101") == (10, 828.9369)


def test_solomon_parser_reads_counts_depot_and_windows() -> None:
    instance = vrptw.parse(C101)
    assert (instance.name, instance.vehicles, instance.capacity) == ("C101", 25, 200)
    assert len(instance.customers) == 101
    depot = instance.depot
    assert (depot.x, depot.y, depot.earliest, depot.latest, depot.service) == (
        40.0,
        50.0,
        0.0,
        1236.0,
        0.0,
    )
    c1 = instance.customers[1]
    assert (c1.x, c1.y, c1.demand, c1.service) == (45.0, 68.0, 10, 90.0)
    assert pdptw.read_bks(C101.parent / "bks.csv", "C101") == (10, 827.3)
    assert instance.distance(0, 1) == 18.6  # sqrt(349) = 18.68..., truncated to one decimal


def test_solomon_best_known_routes_check_out() -> None:
    """The checker and the DIMACS distance agree with the published C101 solution."""
    instance = vrptw.parse(C101)
    routes = [
        [int(i) for i in line.split(":")[1].split()]
        for line in (C101.with_suffix(".sol")).read_text().splitlines()
        if line.startswith("Route")
    ]
    assert vrptw.check_routes(instance, routes) == []
    assert pdptw.route_distance(routes, instance.distance) == pytest.approx(827.3, abs=0.05)


# --- the route checker ------------------------------------------------------------------------


def tiny() -> pdptw.Instance:
    """Depot at 0; two pairs on a line: 1 -> 2 (5 units), 3 -> 4 (8 units), capacity 10."""
    site = pdptw.Site
    return pdptw.Instance(
        "tiny",
        2,
        10,
        {
            0: site(0, 0.0, 0.0, 0, 0.0, 1000.0, 0.0, 0, 0),
            1: site(1, 10.0, 0.0, 5, 0.0, 100.0, 1.0, 0, 2),
            2: site(2, 20.0, 0.0, -5, 0.0, 100.0, 1.0, 1, 0),
            3: site(3, 30.0, 0.0, 8, 0.0, 100.0, 1.0, 0, 4),
            4: site(4, 40.0, 0.0, -8, 0.0, 44.0, 1.0, 3, 0),
        },
    )


def test_route_checker_accepts_a_feasible_route() -> None:
    # arrive 1 at 10, 2 at 21, 3 at 32, 4 at 43 (<= 44), back at 84
    assert pdptw.check_routes(tiny(), [[1, 2, 3, 4]]) == []
    assert pdptw.route_distance([[1, 2, 3, 4]], tiny().distance) == 80.0


def test_route_checker_catches_precedence_capacity_lateness_and_coverage() -> None:
    instance = tiny()
    assert any("before its pickup" in p for p in pdptw.check_routes(instance, [[2, 1, 3, 4]]))
    assert any("load 13 > 10" in p for p in pdptw.check_routes(instance, [[1, 3, 2, 4]]))
    late = pdptw.check_routes(instance, [[3, 1, 2, 4]])  # 4 reached at 63 > 44
    assert any("site 4 served at" in p for p in late)
    assert any("coverage" in p for p in pdptw.check_routes(instance, [[1, 2]]))
    assert any("3 routes" in p for p in pdptw.check_routes(instance, [[1, 2], [3, 4], []]))


def test_solomon_checker_catches_lateness_and_capacity() -> None:
    instance = vrptw.parse(C101)
    everything = [list(range(1, 101))]  # one route: far over capacity and late
    problems = vrptw.check_routes(instance, everything)
    assert any("load" in p for p in problems)
    assert any("served at" in p for p in problems)


# --- short solves through the dispatcher's solve ---------------------------------------------


def test_short_li_lim_solve_is_feasible_and_serves_every_task_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = pdptw.main([str(LC101), "--time-limit", "1", "--seed", "1", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert result["feasible"] is True, result["violations"]
    visits = [i for route in result["routes"] for i in route]
    assert sorted(visits) == list(range(1, 107))
    assert result["vehicles"] == len(result["routes"])
    expected = {"instance", "vehicles", "distance", "routes", "bks_vehicles", "bks_distance"}
    assert expected | {"gap_pct", "time_limit_s", "wall_s"} <= set(result)


def test_short_route_elimination_solve_is_feasible() -> None:
    instance = pdptw.parse(LC101)
    problem = pdptw.problem_for(
        instance, SearchConfig(route_elimination=True, elimination_attempt_s=0.3)
    )
    plan = solve(problem, time_limit_s=1.0)
    routes = pdptw.routes_of(plan)
    assert plan.unassigned == ()
    assert pdptw.check_routes(instance, routes) == []


def test_short_solomon_solve_is_feasible() -> None:
    result = vrptw.run(C101, 1.0, 1)
    assert result["feasible"] is True, result["violations"]
    assert sorted(i for r in result["routes"] for i in r) == list(range(1, 101))  # type: ignore[attr-defined]


# --- the model options, on a line map -------------------------------------------------------

POS = {"A": 0.0, "B": 10.0, "C": 30.0, "D": 60.0, "E": 100.0, "W": -20.0, "X": -40.0}
CLEAN = frozenset({CargoClass.CLEAN})


def line_travel(a: str, b: str, flow: Flow, speed: float) -> float:
    return abs(POS[a] - POS[b]) / speed


def line_distance(a: str, b: str, flow: Flow) -> float:
    return abs(POS[a] - POS[b])


def robot(robot_id: str, start: str = "A", **options: object) -> VehicleState:
    return VehicleState(robot_id, start, 0.0, 4, 1.0, CLEAN, Flow.CLEAN, (), **options)  # type: ignore[arg-type]


def job(order_id: str, pickup: str, dropoff: str, **options: object) -> Task:
    return Task(
        order_id, pickup, dropoff, CargoClass.CLEAN, 1, Priority.ROUTINE, 0.0, None, 0.0, 0.0,
        **options,  # type: ignore[arg-type]
    )  # fmt: skip


def plan_of(snapshot: Snapshot, **options: object) -> Plan:
    return solve(build_problem(snapshot, line_travel, **options), time_limit_s=2.0)  # type: ignore[arg-type]


def test_hard_pickup_window_makes_the_robot_wait() -> None:
    snapshot = Snapshot(0.0, (robot("R1"),), (job("T1", "B", "C", pickup_earliest=50.0),))
    stops = plan_of(snapshot).routes["R1"].stops
    assert stops[0].kind is StopKind.PICKUP and stops[0].arrival == 50.0
    assert stops[1].arrival == 70.0


def test_hard_dropoff_windows_decide_the_order() -> None:
    # Cheapest is C then D, but D must be served by 70 and C not before 100.
    tasks = (
        job("TC", "A", "C", dropoff_earliest=100.0),
        job("TD", "A", "D", dropoff_latest=70.0),
    )
    plan = plan_of(Snapshot(0.0, (robot("R1"),), tasks))
    dropoffs = [s for s in plan.routes["R1"].stops if s.kind is StopKind.DROPOFF]
    assert [s.order_ids for s in dropoffs] == [("TD",), ("TC",)]
    assert dropoffs[0].arrival <= 70.0 and dropoffs[1].arrival >= 100.0


def test_closed_window_or_unreachable_window_leaves_the_task_unassigned() -> None:
    tasks = (
        job("GONE", "B", "C", dropoff_latest=-1.0),  # closed before now
        job("TIGHT", "B", "E", dropoff_latest=50.0),  # E is 100 s away
        job("OK", "B", "C"),
    )
    plan = plan_of(Snapshot(0.0, (robot("R1"),), tasks))
    assert set(plan.unassigned) == {"GONE", "TIGHT"}
    assert plan.assignment == {"OK": "R1"}


def test_inverted_window_is_rejected() -> None:
    with pytest.raises(ValueError, match="pickup_latest"):
        build_problem(
            Snapshot(
                0.0, (robot("R1"),), (job("T", "B", "C", pickup_earliest=9, pickup_latest=1),)
            ),
            line_travel,
        )


def test_closed_route_returns_to_its_end_node_within_its_window() -> None:
    snapshot = Snapshot(0.0, (robot("R1", end_node="A"),), (job("T1", "B", "E"),))
    route = plan_of(snapshot).routes["R1"]
    assert route.stops[-1].node == "E" and route.stops[-1].arrival == 100.0
    assert route.end_arrival == 200.0  # back from E to A
    open_route = plan_of(Snapshot(0.0, (robot("R1"),), (job("T1", "B", "E"),))).routes["R1"]
    assert open_route.end_arrival is None
    # Not enough time to come back: the task is dropped rather than the window broken.
    late = Snapshot(0.0, (robot("R1", end_node="A", end_latest=150.0),), (job("T1", "B", "E"),))
    assert plan_of(late).unassigned == ("T1",)


def test_fixed_cost_reduces_the_number_of_vehicles() -> None:
    tasks = (job("TW", "W", "X"), job("TE", "E", "D"))
    free = Snapshot(0.0, (robot("RW", "W"), robot("RE", "E")), tasks)
    assert plan_of(free, span_cost=0).assignment == {"TW": "RW", "TE": "RE"}
    costly = Snapshot(
        0.0, (robot("RW", "W", fixed_cost=1000), robot("RE", "E", fixed_cost=1000)), tasks
    )
    plan = plan_of(costly, span_cost=0)
    assert plan.unassigned == ()
    assert len(set(plan.assignment.values())) == 1


def test_distance_cost_replaces_travel_time_as_the_objective() -> None:
    snapshot = Snapshot(0.0, (robot("R1"),), (job("T1", "B", "C"),))
    problem = build_problem(snapshot, line_travel, line_distance, distance_scale=10, span_cost=0)
    assert problem.distance is not None
    assert solve(problem).cost == 300  # 30 distance units x 10
    slow = build_problem(
        snapshot, lambda a, b, f, s: 2 * line_travel(a, b, f, s), line_distance, span_cost=0
    )
    plan = solve(slow)
    assert plan.cost == 30  # distance, whatever the travel time
    assert plan.routes["R1"].stops[-1].arrival == 60.0


def test_fine_time_resolution_keeps_fractional_travel_times() -> None:
    snapshot = Snapshot(0.0, (robot("R1"),), (job("T1", "B", "C"),))

    def fractional(a: str, b: str, flow: Flow, speed: float) -> float:
        return line_travel(a, b, flow, speed) / 3.0  # 10/3 and 20/3 s

    coarse = solve(build_problem(snapshot, fractional))
    fine = solve(build_problem(snapshot, fractional, time_resolution_s=1e-3))
    assert coarse.routes["R1"].stops[-1].arrival == 11.0  # 4 + 7, each rounded up
    assert fine.routes["R1"].stops[-1].arrival == pytest.approx(10.0, abs=0.002)


def test_loaded_at_start_tasks_have_no_pickup_stop_and_respect_capacity() -> None:
    # Three depot deliveries of 2 slots each; capacity 4: one robot cannot take all three.
    tasks = tuple(
        dataclasses.replace(job(f"T{i}", "A", node), quantity=2, loaded_at_start=True)
        for i, node in enumerate(("B", "C", "D"))
    )
    elsewhere = robot("FAR", "E")  # does not start at A: may not serve them
    snapshot = Snapshot(
        0.0, (robot("R1", end_node="A"), robot("R2", end_node="A"), elsewhere), tasks
    )
    plan = plan_of(snapshot, span_cost=0)
    assert plan.unassigned == ()
    assert "FAR" not in plan.assignment.values()
    per_robot = Counter(plan.assignment.values())  # tasks per robot, 2 slots each
    assert max(per_robot.values()) <= 2 and len(per_robot) == 2
    for route in plan.routes.values():
        assert all(stop.kind is StopKind.DROPOFF for stop in route.stops)
    # A robot with something on board still fits only what is left of its capacity.
    onboard = OnboardTask("O1", "E", CargoClass.CLEAN, 3, Priority.ROUTINE, None, 0.0)
    busy = dataclasses.replace(robot("R1"), onboard=(onboard,))
    plan = plan_of(Snapshot(0.0, (busy,), tasks[:1]))
    assert plan.unassigned == ("T0",)  # 3 on board + 2 > 4


def test_route_elimination_keeps_onboard_orders_and_serves_everything() -> None:
    onboard = OnboardTask("O1", "C", CargoClass.CLEAN, 1, Priority.ROUTINE, None, 0.0)
    vehicles = (
        dataclasses.replace(robot("R1", fixed_cost=100), onboard=(onboard,)),
        robot("R2", "E", fixed_cost=100),
        robot("R3", "W", fixed_cost=100),
    )
    tasks = (job("T1", "B", "C"), job("T2", "D", "E"), job("T3", "W", "X"))
    search = ROUTE_ELIMINATION_SEARCH
    problem = build_problem(
        Snapshot(0.0, vehicles, tasks), line_travel, metaheuristic="TABU_SEARCH", search=search
    )
    plan = solve(problem, time_limit_s=1.0)
    assert plan.unassigned == ()
    assert plan.assignment["O1"] == "R1"
    assert set(plan.routes) == {"R1", "R2", "R3"}
    used = {robot_id for robot_id, route in plan.routes.items() if route.stops}
    assert len(used) <= 2  # one robot fewer than the three of the first solution at least


def test_search_config_is_validated_and_applied() -> None:
    with pytest.raises(ValueError, match="first_solution"):
        SearchConfig(first_solution="NOPE")
    snapshot = Snapshot(0.0, (robot("R1"), robot("R2", "E")), (job("T1", "B", "C"),))
    config = SearchConfig(
        first_solution="LOCAL_CHEAPEST_INSERTION",
        solution_limit=5,
        guided_local_search_lambda=0.2,
        operators=(("use_inactive_lns", True),),
        lns_time_limit_s=0.05,
    )
    problem = build_problem(
        snapshot, line_travel, metaheuristic="GUIDED_LOCAL_SEARCH", search=config
    )
    assert solve(problem, time_limit_s=0.5).assignment == {"T1": "R1"}
    bad = build_problem(snapshot, line_travel, search=SearchConfig(operators=(("nope", True),)))
    with pytest.raises(ValueError, match="nope"):
        solve(bad)
