"""Dispatch latency: from a new order's arrival to its assignment with an ETA.

    python -m benchmarks.dispatch_latency --robots 100 --orders 1000 --seed 1 --json

On the demo hospital, `--robots` robots (70 % clean material robots that may also carry
controlled drugs, 30 % waste robots; capacity 4 slots, 0.8-1.2 m/s) stand at chargers, parking
places and stations, each busy until some time in the next two minutes. A current plan holding
`--orders` open orders (the hospital's order mix: supplies to ORs and wards, sterile kits,
linen, controlled drugs, soiled goods and waste; 5 % STAT, 20 % URGENT, 75 % ROUTINE) is built
by inserting them one by one with `insert_task`; then about half the robots are made to have
committed to their first pickup (they carry those orders, as the dispatcher core describes them).

Then `--arrivals` further orders arrive. Each is timed end to end as the dispatcher does it:
`FleetCore.validate_order` on the CreateOrder, the Task built from the stations, every robot's
`VehicleRoute` built from its state and future stops, `insert_task` and reading the ETA. After
each arrival the insertion is applied to the plan and a random not-yet-loaded order leaves it
(delivered or cancelled, untimed), so the plan keeps `--orders` open orders. The building graph's
travel-time cache is warm (as in a running service) after the plan is built.

The last line printed is one JSON object (with `--json`; otherwise a short summary first).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.building.graph import BuildingGraph
from fleet.building.loader import load_building
from fleet.building.model import Building, StationKind
from fleet.clock import ManualClock
from fleet.dispatch.core import FleetCore
from fleet.dispatch.messages import CreateOrder
from fleet.dispatch.ports import InMemoryStore
from fleet.domain.cargo import CargoClass, flow_of_classes
from fleet.domain.priority import Priority
from fleet.planning.insertion import (
    Insertion,
    VehicleRoute,
    insert_task,
    retime,
    without_orders,
)
from fleet.planning.plan import Stop, StopKind
from fleet.planning.problem import OnboardTask, Task, VehicleState

NOW = 1_767_603_600.0  # 2026-01-05T09:00:00Z, a weekday morning
CLEAN = frozenset(
    {CargoClass.STERILE, CargoClass.CLEAN, CargoClass.LINEN, CargoClass.CONTROLLED_DRUG}
)
DIRTY = frozenset({CargoClass.SOILED, CargoClass.WASTE})

# (weight, pickup station kinds, drop-off station kinds, cargo classes, quantity range)
FLOWS: tuple[tuple[float, tuple[StationKind, ...], tuple[StationKind, ...], tuple[CargoClass, ...],
               tuple[int, int]], ...] = (
    (18.0, (StationKind.WAREHOUSE_PORT,), (StationKind.OR,),
     (CargoClass.STERILE, CargoClass.CLEAN), (1, 3)),
    (9.0, (StationKind.WAREHOUSE_PORT,), (StationKind.WARD,),
     (CargoClass.CLEAN, CargoClass.LINEN), (1, 3)),
    (6.0, (StationKind.STERILE_CORE,), (StationKind.OR,), (CargoClass.STERILE,), (1, 2)),
    (3.0, (StationKind.WAREHOUSE_PORT,), (StationKind.DISPENSER,), (CargoClass.LINEN,), (2, 4)),
    (4.5, (StationKind.PHARMACY,), (StationKind.OR,), (CargoClass.CONTROLLED_DRUG,), (1, 1)),
    (7.5, (StationKind.SOILED_UTILITY,), (StationKind.WASTE,),
     (CargoClass.WASTE, CargoClass.SOILED), (1, 3)),
)  # fmt: skip
# (priority, share, minutes from creation to needed-by)
PRIORITIES = (
    (Priority.STAT, 0.05, 20.0),
    (Priority.URGENT, 0.20, 45.0),
    (Priority.ROUTINE, 0.75, 120.0),
)


@dataclass(frozen=True)
class Facts:
    """An open order as the insertion sees it (the core passes its `Order`s instead)."""

    quantity: int
    cargo_class: CargoClass
    priority: Priority
    needed_by: float | None


@dataclass
class RobotState:
    """One robot as the core holds it: its state after the committed stop and its future."""

    vehicle: VehicleState
    future: list[Stop] = field(default_factory=list)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "p50": round(percentile(ms, 50), 3),
        "p90": round(percentile(ms, 90), 3),
        "p99": round(percentile(ms, 99), 3),
        "max": round(max(ms), 3),
        "mean": round(sum(ms) / len(ms), 3),
    }


def make_robots(building: Building, count: int, rng: random.Random) -> list[RobotState]:
    bay = sorted(
        s.node
        for s in building.stations.values()
        if s.kind in (StationKind.CHARGER, StationKind.PARKING)
    )
    clean_places = bay + sorted(
        s.node
        for s in building.stations.values()
        if s.kind in (StationKind.OR, StationKind.WARD, StationKind.WAREHOUSE_PORT)
    )
    dirty_places = bay + sorted(
        s.node
        for s in building.stations.values()
        if s.kind in (StationKind.SOILED_UTILITY, StationKind.WASTE)
    )
    robots: list[RobotState] = []
    for k in range(count):
        dirty = k % 10 >= 7
        classes = DIRTY if dirty else CLEAN
        vehicle = VehicleState(
            robot_id=f"R{k:03d}",
            start_node=rng.choice(dirty_places if dirty else clean_places),
            available_at=NOW + rng.uniform(0, 120),
            capacity_slots=4,
            speed_m_s=rng.choice((0.8, 1.0, 1.2)),
            cargo_classes=classes,
            flow=flow_of_classes(classes),
        )
        robots.append(RobotState(vehicle))
    return robots


def make_order(building: Building, rng: random.Random, created_at: float) -> CreateOrder:
    weights = [f[0] for f in FLOWS]
    _, pickups, dropoffs, cargos, (low, high) = rng.choices(FLOWS, weights)[0]
    pickup = rng.choice(sorted(n for n, s in building.stations.items() if s.kind in pickups))
    dropoff = rng.choice(sorted(n for n, s in building.stations.items() if s.kind in dropoffs))
    priority, _, minutes = rng.choices(PRIORITIES, [p[1] for p in PRIORITIES])[0]
    return CreateOrder(
        pickup_station=pickup,
        dropoff_station=dropoff,
        cargo_class=rng.choice(cargos),
        quantity=rng.randint(low, high),
        priority=priority,
        needed_by=max(NOW + 60, created_at + minutes * 60),
    )


def to_task(building: Building, order_id: str, cmd: CreateOrder, created_at: float) -> Task:
    """What the core builds from an accepted order (see `FleetCore.snapshot`)."""
    assert cmd.cargo_class is not None
    pickup = building.stations[cmd.pickup_station]
    dropoff = building.stations[cmd.dropoff_station]
    return Task(
        order_id=order_id,
        pickup_node=pickup.node,
        dropoff_node=dropoff.node,
        cargo_class=cmd.cargo_class,
        quantity=cmd.quantity,
        priority=cmd.priority,
        created_at=created_at,
        needed_by=cmd.needed_by,
        pickup_service_s=pickup.service_time_s,
        dropoff_service_s=dropoff.service_time_s,
    )


def routes_of(robots: Sequence[RobotState]) -> list[VehicleRoute]:
    """What the core hands to `insert_task`: every robot's state and future stops."""
    return [VehicleRoute(r.vehicle, tuple(r.future)) for r in robots]


def commit_first_pickups(
    robots: list[RobotState],
    orders: dict[str, Facts],
    graph: BuildingGraph,
    rng: random.Random,
) -> int:
    """About half the robots drive to their first pickup: it becomes the committed stop.

    As in `FleetCore.snapshot`: the robot starts from that stop's node when its service is done
    and carries its orders; the stop leaves the future.
    """
    committed = 0
    for robot in robots:
        if not robot.future or robot.future[0].kind is not StopKind.PICKUP or rng.random() < 0.5:
            continue
        stop = robot.future.pop(0)
        onboard = tuple(
            OnboardTask(
                order_id=oid,
                dropoff_node=_dropoff_node(robot.future, oid),
                cargo_class=orders[oid].cargo_class,
                quantity=orders[oid].quantity,
                priority=orders[oid].priority,
                needed_by=orders[oid].needed_by,
                dropoff_service_s=0.0,  # not used by the insertion
            )
            for oid in stop.order_ids
        )
        v = robot.vehicle
        robot.vehicle = VehicleState(
            v.robot_id,
            stop.node,
            stop.departure,
            v.capacity_slots,
            v.speed_m_s,
            v.cargo_classes,
            v.flow,
            onboard,
        )
        robot.future = list(retime(robot.vehicle, robot.future, graph.travel_time, NOW))
        committed += 1
    return committed


def _dropoff_node(stops: Sequence[Stop], order_id: str) -> str:
    return next(s.node for s in stops if s.kind is StopKind.DROPOFF and order_id in s.order_ids)


def remove_order(robot: RobotState, order_id: str, graph: BuildingGraph) -> None:
    """The order leaves the plan (delivered elsewhere or cancelled): its stops shrink."""
    kept = without_orders(robot.future, lambda oid: oid == order_id)
    robot.future = list(retime(robot.vehicle, kept, graph.travel_time, NOW))


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    building = load_building(Path(args.map))
    graph = BuildingGraph(building)
    clock = ManualClock(NOW)
    core = FleetCore(building, graph, InMemoryStore(), clock)
    robots = make_robots(building, args.robots, rng)
    index = {r.vehicle.robot_id: i for i, r in enumerate(robots)}
    orders: dict[str, Facts] = {}
    where: dict[str, str] = {}  # order id -> robot id, for orders not yet loaded

    def apply(ins: Insertion, oid: str) -> None:
        robots[index[ins.robot_id]].future = list(ins.stops)
        where[oid] = ins.robot_id

    # The current plan: open orders created over the last hour, inserted one by one.
    build_times: list[float] = []
    unplaced = 0
    for k in range(args.orders):
        created = NOW - 3600 + 3600 * k / args.orders
        cmd = make_order(building, rng, created)
        oid = f"OPEN-{k:05d}"
        task = to_task(building, oid, cmd, created)
        orders[oid] = Facts(task.quantity, task.cargo_class, task.priority, task.needed_by)
        started = time.perf_counter()
        ins = insert_task(task, routes_of(robots), graph.travel_time, NOW, orders)
        build_times.append(time.perf_counter() - started)
        if ins is None:
            unplaced += 1
            del orders[oid]
            continue
        apply(ins, oid)
    committed = commit_first_pickups(robots, orders, graph, rng)
    for r in robots:
        for o in r.vehicle.onboard:
            where.pop(o.order_id, None)  # on board: no longer removable
    stops = [len(r.future) for r in robots]

    # The measured arrivals.
    latencies: list[float] = []
    insert_only: list[float] = []
    answered: list[tuple[Priority, float, float | None]] = []  # (priority, eta, needed_by)
    refused = 0
    for k in range(args.arrivals):
        cmd = make_order(building, rng, NOW)
        oid = f"NEW-{k:05d}"
        started = time.perf_counter()
        core.validate_order(cmd)
        task = to_task(building, oid, cmd, NOW)
        routes = routes_of(robots)
        began = time.perf_counter()
        ins = insert_task(task, routes, graph.travel_time, NOW, orders)
        eta = ins.eta if ins is not None else None
        ended = time.perf_counter()
        latencies.append(ended - started)
        insert_only.append(ended - began)
        if ins is None or eta is None:
            refused += 1
            continue
        answered.append((task.priority, eta, task.needed_by))
        orders[oid] = Facts(task.quantity, task.cargo_class, task.priority, task.needed_by)
        apply(ins, oid)
        # Keep the number of open orders steady: one not-yet-loaded order leaves the plan.
        gone = rng.choice(sorted(where))
        remove_order(robots[index[where.pop(gone)]], gone, graph)
        del orders[gone]

    on_time: dict[str, float] = {}
    for priority in Priority:
        mine = [(eta, nb) for p, eta, nb in answered if p is priority]
        if mine:
            hits = sum(1 for eta, nb in mine if nb is None or eta <= nb)
            on_time[priority.value] = round(hits / len(mine), 4)
    waits = [eta - NOW for _, eta, _ in answered]
    return {
        "benchmark": "dispatch_latency",
        "map": args.map,
        "robots": args.robots,
        "open_orders": args.orders - unplaced,
        "arrivals": args.arrivals,
        "seed": args.seed,
        "robots_committed_to_a_pickup": committed,
        "future_stops_per_robot": {"mean": round(sum(stops) / len(stops), 2), "max": max(stops)},
        "latency_ms": summary_ms(latencies),
        "insert_task_ms": summary_ms(insert_only),
        "plan_build_insert_ms": summary_ms(build_times),
        "refused": refused,
        "eta": {
            "wait_s_p50": round(percentile(waits, 50), 1) if waits else None,
            "wait_s_p90": round(percentile(waits, 90), 1) if waits else None,
            "on_time_rate_by_priority": on_time,
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dispatch_latency")
    parser.add_argument("--map", default="maps/demo_hospital.yaml")
    parser.add_argument("--robots", type=int, default=100)
    parser.add_argument("--orders", type=int, default=1000, help="open orders in the plan")
    parser.add_argument("--arrivals", type=int, default=500, help="timed new orders")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    if args.robots < 1 or args.orders < 0 or args.arrivals < 1:
        parser.error("--robots and --arrivals must be >= 1, --orders >= 0")
    result = run(args)
    if not args.json:
        lat = result["latency_ms"]
        print(
            f"{result['robots']} robots, {result['open_orders']} open orders, "
            f"{result['arrivals']} arrivals: p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
            f"max {lat['max']} ms",
            file=sys.stderr,
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
