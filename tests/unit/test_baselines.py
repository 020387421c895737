"""The baseline dispatchers (Open-RMF-like greedy-earliest-finish, openTCS-like nearest-idle),
the hospital-day workload and a short digital-twin run with each baseline."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.hospital_day import run_day
from fleet.building.model import Building
from fleet.domain.cargo import CargoClass, Flow, flow_of
from fleet.domain.priority import Priority
from fleet.planning import (
    OnboardTask,
    Plan,
    Problem,
    Snapshot,
    StopKind,
    Task,
    VehicleState,
    build_problem,
)
from fleet.planning.baselines import greedy_earliest_finish, nearest_idle
from simulators.fast import SIM_EPOCH
from simulators.workload import WORKLOADS, hospital_day_workload

Dispatcher = Callable[[Problem], Plan]
BASELINES = [greedy_earliest_finish, nearest_idle]

# --- a fake building: nodes on a line (x in metres); ISO is out of reach of the dirty flow ------

POSITIONS = {"A": 0.0, "B": 10.0, "C": 30.0, "D": 60.0, "E": 100.0, "W": -20.0, "ISO": 45.0}
NOW = 1_000.0
CLEAN = frozenset({CargoClass.CLEAN, CargoClass.STERILE, CargoClass.CONTROLLED_DRUG})
DIRTY = frozenset({CargoClass.WASTE, CargoClass.SOILED})


def travel(a: str, b: str, flow: Flow, speed: float) -> float:
    if flow is Flow.DIRTY and "ISO" in (a, b):
        return math.inf
    return abs(POSITIONS[a] - POSITIONS[b]) / speed


def robot(
    rid: str,
    start: str = "A",
    classes: frozenset[CargoClass] = CLEAN,
    capacity: int = 4,
    speed: float = 1.0,
    available_at: float = NOW,
    onboard: tuple[OnboardTask, ...] = (),
) -> VehicleState:
    flow = flow_of(next(iter(classes)))
    return VehicleState(rid, start, available_at, capacity, speed, classes, flow, onboard)


def task(
    oid: str,
    pickup: str = "B",
    dropoff: str = "C",
    cargo: CargoClass = CargoClass.CLEAN,
    quantity: int = 1,
    priority: Priority = Priority.ROUTINE,
    created_at: float = NOW,
    needed_by: float | None = None,
    service: float = 0.0,
) -> Task:
    return Task(
        oid, pickup, dropoff, cargo, quantity, priority, created_at, needed_by, service, service
    )


def onboard(oid: str, dropoff: str, service: float = 0.0) -> OnboardTask:
    return OnboardTask(oid, dropoff, CargoClass.CLEAN, 1, Priority.ROUTINE, None, service)


def run(dispatcher: Dispatcher, snapshot: Snapshot) -> Plan:
    plan = dispatcher(build_problem(snapshot, travel))
    check_plan(snapshot, plan)
    return plan


def check_plan(snapshot: Snapshot, plan: Plan) -> None:
    """Every rule a baseline plan must keep, walking each route with its load."""
    tasks = {t.order_id: t for t in snapshot.tasks}
    problem = build_problem(snapshot, travel)
    allowed = {
        t.order_id: {problem.vehicles[v].robot_id for v in problem.allowed_vehicles[k]}
        for k, t in enumerate(problem.tasks)
    }
    assert set(plan.routes) == {v.robot_id for v in snapshot.vehicles}
    assert len(set(plan.unassigned)) == len(plan.unassigned)
    served: set[str] = set()
    for v in snapshot.vehicles:
        stops = plan.routes[v.robot_id].stops
        load = {o.order_id: (o.cargo_class, o.quantity) for o in v.onboard}
        clock = max(snapshot.now, v.available_at)
        for stop in stops:
            assert stop.arrival >= clock - 1e-6 and stop.departure >= stop.arrival
            clock = stop.departure
            for oid in stop.order_ids:
                if stop.kind is StopKind.PICKUP:
                    t = tasks[oid]
                    assert stop.node == t.pickup_node and oid not in served
                    assert v.robot_id in allowed[oid]
                    served.add(oid)
                    load[oid] = (t.cargo_class, t.quantity)
                else:
                    assert oid in load, "drop-off before pickup or on another robot"
                    assert plan.eta[oid] == stop.arrival
                    del load[oid]
            classes = [c for c, _ in load.values()]
            assert sum(q for _, q in load.values()) <= v.capacity_slots
            assert len({flow_of(c) for c in classes}) <= 1
            if CargoClass.CONTROLLED_DRUG in classes:
                assert len(classes) == 1
        assert not load
    assert served.isdisjoint(plan.unassigned)
    assert served | set(plan.unassigned) == set(tasks)
    onboard_ids = {o.order_id for v in snapshot.vehicles for o in v.onboard}
    assert set(plan.eta) == served | onboard_ids


# --- greedy-earliest-finish --------------------------------------------------------------------


def test_greedy_times_follow_the_integer_matrix_and_service_like_the_solver() -> None:
    snapshot = Snapshot(
        NOW, (robot("R1", "A", available_at=NOW + 3.5),), (task("T1", "B", "C", service=5.5),)
    )
    stops = run(greedy_earliest_finish, snapshot).routes["R1"].stops
    # free at +4 (whole seconds, rounded up), 10 s to B, 6 s loading (rounded up), 20 s to C
    assert [(s.node, s.kind, s.arrival, s.departure) for s in stops] == [
        ("B", StopKind.PICKUP, NOW + 14, NOW + 19.5),
        ("C", StopKind.DROPOFF, NOW + 40, NOW + 45.5),
    ]


def test_greedy_gives_each_task_to_the_earliest_finisher() -> None:
    # R1 is nearer B but first drives its onboard order to E; R2 from D finishes first.
    snapshot = Snapshot(
        NOW,
        (robot("R1", "A", onboard=(onboard("O1", "E"),)), robot("R2", "D")),
        (task("T1", "B", "C"),),
    )
    plan = run(greedy_earliest_finish, snapshot)
    assert plan.assignment == {"O1": "R1", "T1": "R2"}
    assert plan.eta == {"O1": NOW + 100, "T1": NOW + 50 + 20}


def test_greedy_appends_in_creation_order_without_reordering() -> None:
    # One robot: T2 (created first) goes first although doing T1 first would be shorter.
    snapshot = Snapshot(
        NOW,
        (robot("R1", "A"),),
        (task("T1", "B", "C", created_at=NOW - 5), task("T2", "E", "D", created_at=NOW - 10)),
    )
    stops = run(greedy_earliest_finish, snapshot).routes["R1"].stops
    assert [(s.node, s.order_ids) for s in stops] == [
        ("E", ("T2",)),
        ("D", ("T2",)),
        ("B", ("T1",)),
        ("C", ("T1",)),
    ]
    assert stops[-1].arrival == NOW + 100 + 40 + 50 + 20


def test_greedy_queues_on_the_robot_that_finishes_first_even_if_busy() -> None:
    # Both tasks at B: R1 at B finishes T1 at +20 and, after it, T2 at +60 (back 20, out 20);
    # R2 from W would only finish at +50, so T2 goes to R2.
    snapshot = Snapshot(
        NOW,
        (robot("R1", "B"), robot("R2", "W")),
        (task("T1", "B", "C", created_at=1), task("T2", "B", "C", created_at=2)),
    )
    plan = run(greedy_earliest_finish, snapshot)
    assert plan.assignment == {"T1": "R1", "T2": "R2"}


def test_cargo_rules_capacity_and_reach_are_respected() -> None:
    snapshot = Snapshot(
        NOW,
        (robot("CLEAN1", "B"), robot("DIRTY1", "E", classes=DIRTY, capacity=2)),
        (
            task("WASTE", "B", "C", cargo=CargoClass.WASTE),
            task("DIRTY-ISO", "ISO", "C", cargo=CargoClass.SOILED),
            task("TOO-BIG", "B", "C", cargo=CargoClass.WASTE, quantity=3),
            task("CLEAN", "C", "D"),
        ),
    )
    for dispatcher in BASELINES:
        plan = run(dispatcher, snapshot)
        assert plan.assignment == {"WASTE": "DIRTY1", "CLEAN": "CLEAN1"}
        assert set(plan.unassigned) == {"DIRTY-ISO", "TOO-BIG"}


def test_onboard_deliveries_first_in_the_given_order_merging_same_node() -> None:
    snapshot = Snapshot(
        NOW,
        (robot("R1", "A", onboard=(onboard("O1", "D", 7), onboard("O2", "D", 9))),),
        (task("T1", "B", "C"),),
    )
    for dispatcher in BASELINES:
        plan = run(dispatcher, snapshot)
        stops = plan.routes["R1"].stops
        assert (stops[0].node, stops[0].order_ids, stops[0].arrival) == (
            "D",
            ("O1", "O2"),
            NOW + 60,
        )
        assert stops[0].departure == NOW + 60 + 9
        assert plan.eta["O2"] == NOW + 60
    # greedy appends T1 behind the deliveries; nearest-idle leaves it (no idle robot)
    assert greedy_earliest_finish(build_problem(snapshot, travel)).assignment["T1"] == "R1"
    assert nearest_idle(build_problem(snapshot, travel)).unassigned == ("T1",)


# --- nearest-idle ------------------------------------------------------------------------------


def test_nearest_idle_gives_one_task_per_idle_robot_to_the_nearest() -> None:
    snapshot = Snapshot(
        NOW,
        (
            robot("BUSY", "B", onboard=(onboard("O1", "C"),)),
            robot("FAR", "E"),
            robot("NEAR", "A"),
            robot("FINISHING", "B", available_at=NOW + 30),  # still at its last drop-off
        ),
        (
            task("T1", "B", "C", created_at=1),
            task("T2", "B", "D", created_at=2),
            task("T3", "C", "D", created_at=3),
        ),
    )
    plan = run(nearest_idle, snapshot)
    assert plan.assignment == {"O1": "BUSY", "T1": "NEAR", "T2": "FAR"}
    assert plan.unassigned == ("T3",)
    assert [len(plan.routes[r].stops) for r in ("NEAR", "FAR", "FINISHING")] == [2, 2, 0]


def test_nearest_idle_serves_stat_first_then_by_age() -> None:
    snapshot = Snapshot(
        NOW,
        (robot("NEAR", "B"), robot("FAR", "E")),
        (
            task("OLD", "B", "C", created_at=1),
            task("STAT", "B", "C", priority=Priority.STAT, created_at=9),
            task("NEWER", "B", "C", created_at=5),
        ),
    )
    plan = run(nearest_idle, snapshot)
    assert plan.assignment == {"STAT": "NEAR", "OLD": "FAR"}
    assert plan.unassigned == ("NEWER",)


# --- both --------------------------------------------------------------------------------------

NODE = st.sampled_from(sorted(POSITIONS))
DIRTY_NODE = st.sampled_from(sorted(n for n in POSITIONS if n != "ISO"))


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    n_robots = draw(st.integers(1, 4))
    vehicles = []
    for i in range(n_robots):
        dirty = draw(st.booleans())
        carried = draw(st.integers(0, 2))
        vehicles.append(
            robot(
                f"R{i}",
                draw(NODE),
                DIRTY if dirty else CLEAN,
                capacity=draw(st.integers(1, 4)),
                speed=draw(st.sampled_from([0.5, 1.0, 1.5])),
                available_at=NOW + draw(st.integers(-10, 50)),
                onboard=tuple(
                    OnboardTask(
                        f"R{i}-O{j}",
                        draw(DIRTY_NODE if dirty else NODE),
                        CargoClass.WASTE if dirty else CargoClass.CLEAN,
                        1,
                        Priority.ROUTINE,
                        None,
                        draw(st.sampled_from([0.0, 2.5])),
                    )
                    for j in range(carried)
                ),
            )
        )
    tasks = [
        task(
            f"T{k}",
            draw(NODE),
            draw(NODE),
            cargo=draw(st.sampled_from(sorted(CLEAN | DIRTY))),
            quantity=draw(st.integers(1, 3)),
            priority=draw(st.sampled_from(list(Priority))),
            created_at=draw(st.integers(0, 5)),
            needed_by=NOW + draw(st.integers(0, 300)),
            service=draw(st.sampled_from([0.0, 1.5, 30.0])),
        )
        for k in range(draw(st.integers(0, 8)))
    ]
    return Snapshot(NOW, tuple(vehicles), tuple(tasks))


@pytest.mark.parametrize("dispatcher", BASELINES)
@settings(max_examples=60, deadline=None)
@given(snapshot=snapshots())
def test_every_plan_keeps_the_rules_and_is_deterministic(
    dispatcher: Dispatcher, snapshot: Snapshot
) -> None:
    plan = run(dispatcher, snapshot)
    assert dispatcher(build_problem(snapshot, travel)) == plan
    if dispatcher is nearest_idle:
        for v in snapshot.vehicles:
            new = [o for o in plan.routes[v.robot_id].order_ids if not o.startswith(v.robot_id)]
            assert len(new) <= (0 if v.onboard or v.available_at > NOW else 1)


# --- the hospital-day workload -------------------------------------------------------------------


def test_hospital_day_is_seeded_realistic_and_valid(demo_building: Building) -> None:
    day = hospital_day_workload(demo_building, SIM_EPOCH, 24, 1)
    assert day == hospital_day_workload(demo_building, SIM_EPOCH, 24, 1)
    assert day != hospital_day_workload(demo_building, SIM_EPOCH, 24, 2)
    assert all(SIM_EPOCH <= o.at < SIM_EPOCH + 24 * 3600 for o in day)
    assert [o.at for o in day] == sorted(o.at for o in day)
    stations = demo_building.stations
    for o in day:
        c = o.order
        assert c.pickup_station in stations and c.dropoff_station in stations
        assert c.needed_by is not None and c.needed_by >= o.at + 5 * 60
        if c.priority is Priority.STAT:
            assert 15 * 60 <= c.needed_by - o.at <= 20 * 60
    stat = sum(o.order.priority is Priority.STAT for o in day) / len(day)
    assert 0.02 <= stat <= 0.07
    hours = [(o.at % 86400) / 3600 for o in day]
    assert sum(7 <= h < 17 for h in hours) > 0.6 * len(day)  # concentrated in the working day
    assert sum(h >= 22 or h < 6 for h in hours) < 0.15 * len(day)  # a light night
    drugs = [o.order for o in day if o.order.cargo_class is CargoClass.CONTROLLED_DRUG]
    assert any(c.dropoff_station == "PHARMACY" for c in drugs)  # returns after cases
    assert any(c.dropoff_station == "WASTE-STATION" for c in (o.order for o in day))
    assert set(WORKLOADS) == {"standard", "hospital-day"}


# --- a short twin run with each baseline ------------------------------------------------------


@pytest.mark.parametrize("name", ["greedy-earliest-finish", "nearest-idle"])
def test_twin_hour_with_a_baseline_delivers_or_explains_everything(
    demo_building: Building, name: str
) -> None:
    report = run_day(demo_building, 4, 1.0, 3, name, "standard")
    assert report["dispatcher"] == name
    assert report["orders_created"] > 20
    assert report["orders_open"] == 0
    assert report["orders_delivered"] + report["orders_failed"] == report["orders_created"]
    assert sum(report["failure_reasons"].values()) == report["orders_failed"]
    assert report["conflicts"] == 0 and report["safety_violations"] == 0
    assert set(report["on_time_rate_by_priority"]) == {"STAT", "URGENT", "ROUTINE"}
