"""Solomon VRPTW benchmark through the dispatcher's own `build_problem` + `solve`.

    python -m benchmarks.vrptw benchmarks/data/solomon_100/C101.vrp --time-limit 10 --seed 1 --json

Each customer becomes a task loaded at the depot (`Task.loaded_at_start`: no pickup stop, the
robot leaves the depot with it on board, single trip as VRPTW asks) and dropped off at the
customer within its window, with its service time; robots return to the depot within its window.
The best-known solutions follow the DIMACS convention (see
`benchmarks/data/solomon_100/README.md`): distance only (no vehicle cost), distances and travel
times truncated to one decimal; so this benchmark uses exactly those (x 10: integers) and no
fixed vehicle cost.

The last line printed with `--json` is one JSON object, as for `benchmarks.pdptw`; `routes` lists
per vehicle the customers (Solomon numbering, depot 0) in visiting order.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.pdptw import (
    EPS,
    arguments,
    gap_pct,
    read_bks,
    route_distance,
    summary,
)
from fleet.domain.cargo import CargoClass, Flow
from fleet.domain.priority import Priority
from fleet.planning import (
    Plan,
    Problem,
    SearchConfig,
    Snapshot,
    StopKind,
    Task,
    VehicleState,
    build_problem,
    solve,
)

CONFIGS: dict[str, SearchConfig] = {
    "plain": SearchConfig(),  # PARALLEL_CHEAPEST_INSERTION, then the metaheuristic
    "lci": SearchConfig(first_solution="LOCAL_CHEAPEST_INSERTION"),
    "savings": SearchConfig(first_solution="SAVINGS"),
}
"""Named search configurations (`--config`). No vehicle cost here (DIMACS: distance only), and
the customers are single drop-off nodes, so `SINGLE_NODE_MOVES_OFF` does not apply."""

DEFAULT_CONFIG = "plain"
DEFAULT_METAHEURISTIC = "TABU_SEARCH"


@dataclass(frozen=True)
class Customer:
    """A VRPLIB node renumbered the Solomon way: the depot is 0, customers 1..n."""

    id: int
    x: float
    y: float
    demand: int
    earliest: float
    latest: float
    service: float


@dataclass(frozen=True)
class Instance:
    name: str
    vehicles: int
    capacity: int
    customers: dict[int, Customer]  # 0: the depot

    @property
    def depot(self) -> Customer:
        return self.customers[0]

    def distance(self, a: int, b: int) -> float:
        """Euclidean distance truncated to one decimal (DIMACS convention)."""
        ca, cb = self.customers[a], self.customers[b]
        return math.floor(10.0 * math.hypot(ca.x - cb.x, ca.y - cb.y) + 1e-9) / 10.0


def parse(path: Path) -> Instance:
    """Read a VRPLIB CVRPTW file (NODE_COORD, DEMAND, TIME_WINDOW, optional SERVICE_TIME)."""
    header: dict[str, str] = {}
    sections: dict[str, dict[int, list[float]]] = {}
    current: str | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line == "EOF":
            continue
        if line.endswith("_SECTION"):
            current = line.removesuffix("_SECTION")
            sections[current] = {}
            continue
        if ":" in line and current is None:
            key, value = line.split(":", 1)
            header[key.strip()] = value.strip()
            continue
        if current is None:
            raise ValueError(f"{path}: unexpected line {line!r}")
        values = line.split()
        if current == "DEPOT":
            if int(values[0]) > 0:
                sections[current][int(values[0])] = []
            continue
        sections[current][int(values[0])] = [float(v) for v in values[1:]]
    depots = list(sections.get("DEPOT", {1: []}))
    if depots != [1]:
        raise ValueError(f"{path}: expected the single depot 1, got {depots}")
    service = float(header.get("SERVICE_TIME", "0"))
    services = sections.get("SERVICE_TIME", {})
    customers: dict[int, Customer] = {}
    for node, (x, y) in sections["NODE_COORD"].items():
        earliest, latest = sections["TIME_WINDOW"][node]
        customers[node - 1] = Customer(
            node - 1,
            x,
            y,
            int(sections["DEMAND"][node][0]),
            earliest,
            latest,
            0.0 if node == 1 else services.get(node, [service])[0],
        )
    return Instance(header["NAME"], int(header["VEHICLES"]), int(header["CAPACITY"]), customers)


def snapshot(instance: Instance) -> Snapshot:
    depot = instance.depot
    start = depot.earliest
    vehicles = tuple(
        VehicleState(
            robot_id=f"v{k}",
            start_node="0",
            available_at=start,
            capacity_slots=instance.capacity,
            speed_m_s=1.0,
            cargo_classes=frozenset({CargoClass.CLEAN}),
            flow=Flow.CLEAN,
            end_node="0",
            end_latest=depot.latest,
        )
        for k in range(instance.vehicles)
    )
    tasks = tuple(
        Task(
            order_id=str(c.id),
            pickup_node="0",
            dropoff_node=str(c.id),
            cargo_class=CargoClass.CLEAN,
            quantity=max(1, c.demand),
            priority=Priority.ROUTINE,
            created_at=start,
            needed_by=None,
            pickup_service_s=0.0,
            dropoff_service_s=c.service,
            dropoff_earliest=c.earliest,
            dropoff_latest=c.latest,
            loaded_at_start=True,
        )
        for c in instance.customers.values()
        if c.id != 0
    )
    return Snapshot(now=start, vehicles=vehicles, tasks=tasks)


def problem_for(
    instance: Instance, search: SearchConfig, metaheuristic: str = DEFAULT_METAHEURISTIC
) -> Problem:
    def travel(a: str, b: str, flow: Flow, speed: float) -> float:
        return instance.distance(int(a), int(b)) / speed

    def distance(a: str, b: str, flow: Flow) -> float:
        return instance.distance(int(a), int(b))

    return build_problem(
        snapshot(instance),
        travel,
        distance,
        distance_scale=10,
        time_resolution_s=0.1,
        horizon_s=instance.depot.latest - instance.depot.earliest + 1,
        span_cost=0,
        metaheuristic=metaheuristic,
        search=search,
    )


def routes_of(plan: Plan) -> list[list[int]]:
    """Per used vehicle, the customers in visiting order (the depot pickups left out)."""
    routes = []
    for route in plan.routes.values():
        ids = [int(stop.node) for stop in route.stops if stop.kind is StopKind.DROPOFF]
        if ids:
            routes.append(ids)
    return routes


def check_routes(instance: Instance, routes: Sequence[Sequence[int]]) -> list[str]:
    """Every way `routes` breaks the instance's rules (empty: feasible)."""
    problems: list[str] = []
    depot = instance.depot
    if len(routes) > instance.vehicles:
        problems.append(f"{len(routes)} routes for {instance.vehicles} vehicles")
    visits = [i for route in routes for i in route]
    customers = {i for i in instance.customers if i != 0}
    if sorted(visits) != sorted(customers):
        problems.append(f"coverage: {len(visits)} visits, {len(set(visits))} distinct customers")
    for r, route in enumerate(routes):
        clock, load, here = depot.earliest, 0, 0
        for i in route:
            if i not in instance.customers or i == 0:
                continue
            c = instance.customers[i]
            clock = max(clock + instance.distance(here, i), c.earliest)
            if clock > c.latest + EPS:
                problems.append(f"route {r}: customer {i} served at {clock:.1f} > {c.latest}")
            load += c.demand
            clock += c.service
            here = i
        if load > instance.capacity:
            problems.append(f"route {r}: load {load} > {instance.capacity}")
        back = clock + instance.distance(here, 0)
        if back > depot.latest + EPS:
            problems.append(f"route {r}: back at the depot at {back:.1f} > {depot.latest}")
    return problems


def run(
    path: Path,
    time_limit_s: float,
    seed: int,
    config: str = DEFAULT_CONFIG,
    metaheuristic: str = DEFAULT_METAHEURISTIC,
) -> dict[str, object]:
    instance = parse(path)
    started = time.perf_counter()
    problem = problem_for(instance, CONFIGS[config], metaheuristic)
    plan = solve(problem, time_limit_s=time_limit_s, seed=seed)
    wall = time.perf_counter() - started
    routes = routes_of(plan)
    violations = check_routes(instance, routes)
    if plan.unassigned:
        violations.insert(0, f"unassigned customers: {list(plan.unassigned)}")
    distance = route_distance(routes, instance.distance)
    bks_vehicles, bks_distance = read_bks(path.parent / "bks.csv", instance.name)
    return {
        "instance": instance.name,
        "vehicles": len(routes),
        "distance": round(distance, 1),
        "routes": routes,
        "feasible": not violations,
        "violations": violations[:20],
        "bks_vehicles": bks_vehicles,
        "bks_distance": bks_distance,
        "gap_pct": gap_pct(distance, bks_distance),
        "time_limit_s": time_limit_s,
        "wall_s": round(wall, 3),
        "seed": seed,
        "config": f"{config}/{metaheuristic}",
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(
        "Solomon VRPTW with the dispatcher's solver.",
        argv,
        CONFIGS,
        DEFAULT_CONFIG,
        DEFAULT_METAHEURISTIC,
    )
    result = run(args.instance, args.time_limit, args.seed, args.config, args.metaheuristic)
    print(summary(result), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result))
    return 0 if result["feasible"] else 1


if __name__ == "__main__":
    sys.exit(main())
