"""Li & Lim PDPTW benchmark: an instance through the dispatcher's own `build_problem` + `solve`.

    python -m benchmarks.pdptw benchmarks/data/li_lim_100/lc101.txt --time-limit 10 --seed 1 --json

The instance becomes a `Snapshot` (one robot per available vehicle, starting and ending at the
depot with its window, one task per pickup/delivery pair with hard windows and service times)
plus the model options the benchmark needs (distance as the arc cost, a fixed cost per vehicle so
that the number of vehicles comes first, as in the best-known solutions, closed routes, a fine
time resolution). Nothing here searches: `fleet.planning.solve` does.

OR-Tools works with integers, so distances are scaled (`DISTANCE_SCALE`) and travel times kept
to `TIME_RESOLUTION` instance time units. The reported distance is recomputed in double
precision from the returned routes, and `check_routes` re-checks them (every task served once,
capacity, time windows with service times, precedence, return to the depot in time) in Python.

The last line printed with `--json` is one JSON object: `instance`, `vehicles`, `distance`,
`routes` (per vehicle the task ids of the instance in visiting order, depot left out),
`feasible`, `violations`, `bks_vehicles`, `bks_distance`, `gap_pct` (distance gap to the best
known), `time_limit_s`, `wall_s`, `seed`, `config`.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from fleet.domain.cargo import CargoClass, Flow
from fleet.domain.priority import Priority
from fleet.planning import (
    ROUTE_ELIMINATION_SEARCH,
    Plan,
    Problem,
    SearchConfig,
    Snapshot,
    Task,
    VehicleState,
    build_problem,
    solve,
)

DISTANCE_SCALE = 10_000
"""Integer cost units per unit of distance (the BKS are in double precision, unrounded)."""

TIME_RESOLUTION = 1e-4
"""Instance time units per solver time unit. Travel times are rounded up to it, so a route the
solver finds feasible is feasible in double precision too (up to 1e-4 per leg of pessimism)."""

FIXED_COST = 100_000 * DISTANCE_SCALE
"""Cost of using a vehicle: more than any route's distance (instances are 100 x 100 squares with
about 100 tasks), so one vehicle fewer always beats any distance saving."""

EPS = 1e-6

CONFIGS: dict[str, SearchConfig] = {
    # The default: fewest vehicles, then distance (see fleet.planning.ROUTE_ELIMINATION_SEARCH).
    "elimination": ROUTE_ELIMINATION_SEARCH,
    # What was measured on the way there (BENCHMARKS.md):
    "plain": SearchConfig(),  # one search, PARALLEL_CHEAPEST_INSERTION, fixed vehicle costs
    "plain-lci": SearchConfig(first_solution="LOCAL_CHEAPEST_INSERTION"),
    "plain-savings": SearchConfig(first_solution="SAVINGS"),
    "elimination-all-operators": replace(ROUTE_ELIMINATION_SEARCH, operators=()),
    "elimination-gd-start": replace(
        ROUTE_ELIMINATION_SEARCH, initial_share=0.0, elimination_share=0.5
    ),
}
"""Named search configurations (`--config`); the metaheuristic is chosen with `--metaheuristic`."""

DEFAULT_CONFIG = "elimination"
DEFAULT_METAHEURISTIC = "TABU_SEARCH"


@dataclass(frozen=True)
class Site:
    """One row of an instance file: the depot (id 0), a pickup or a delivery."""

    id: int
    x: float
    y: float
    demand: int
    earliest: float
    latest: float
    service: float
    pickup: int  # for a delivery: its pickup's id; else 0
    delivery: int  # for a pickup: its delivery's id; else 0


@dataclass(frozen=True)
class Instance:
    name: str
    vehicles: int
    capacity: int
    sites: dict[int, Site]

    @property
    def depot(self) -> Site:
        return self.sites[0]

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """(pickup id, delivery id) per task, in file order of the pickups."""
        return [(s.id, s.delivery) for s in self.sites.values() if s.id != 0 and s.delivery != 0]

    def distance(self, a: int, b: int) -> float:
        sa, sb = self.sites[a], self.sites[b]
        return math.hypot(sa.x - sb.x, sa.y - sb.y)


def parse(path: Path) -> Instance:
    """Read a Li & Lim file (format in `benchmarks/data/li_lim_100/README.md`)."""
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    vehicles, capacity = int(lines[0][0]), int(lines[0][1])
    sites: dict[int, Site] = {}
    for row in lines[1:]:
        i, x, y, demand, earliest, latest, service, pickup, delivery = row[:9]
        site = Site(
            int(i),
            float(x),
            float(y),
            int(demand),
            float(earliest),
            float(latest),
            float(service),
            int(pickup),
            int(delivery),
        )
        if site.id in sites:
            raise ValueError(f"{path}: duplicate site id {site.id}")
        sites[site.id] = site
    if 0 not in sites:
        raise ValueError(f"{path}: no depot (site 0)")
    for s in sites.values():
        if s.delivery and sites[s.delivery].pickup != s.id:
            raise ValueError(f"{path}: site {s.id}: delivery {s.delivery} does not point back")
    return Instance(path.stem, vehicles, capacity, sites)


def snapshot(instance: Instance, fixed_cost: int = FIXED_COST) -> Snapshot:
    """The instance as the dispatcher's planner input (site ids become node names)."""
    depot = instance.depot
    vehicles = tuple(
        VehicleState(
            robot_id=f"v{k}",
            start_node="0",
            available_at=depot.earliest,
            capacity_slots=instance.capacity,
            speed_m_s=1.0,
            cargo_classes=frozenset({CargoClass.CLEAN}),
            flow=Flow.CLEAN,
            end_node="0",
            end_latest=depot.latest,
            fixed_cost=fixed_cost,
        )
        for k in range(instance.vehicles)
    )
    tasks = []
    for p, d in instance.pairs:
        sp, sd = instance.sites[p], instance.sites[d]
        tasks.append(
            Task(
                order_id=str(p),
                pickup_node=str(p),
                dropoff_node=str(d),
                cargo_class=CargoClass.CLEAN,
                quantity=sp.demand,
                priority=Priority.ROUTINE,
                created_at=depot.earliest,
                needed_by=None,
                pickup_service_s=sp.service,
                dropoff_service_s=sd.service,
                pickup_earliest=sp.earliest,
                pickup_latest=sp.latest,
                dropoff_earliest=sd.earliest,
                dropoff_latest=sd.latest,
            )
        )
    return Snapshot(now=depot.earliest, vehicles=vehicles, tasks=tuple(tasks))


def problem_for(
    instance: Instance,
    search: SearchConfig,
    metaheuristic: str = DEFAULT_METAHEURISTIC,
    fixed_cost: int = FIXED_COST,
) -> Problem:
    def travel(a: str, b: str, flow: Flow, speed: float) -> float:
        return instance.distance(int(a), int(b)) / speed

    def distance(a: str, b: str, flow: Flow) -> float:
        return instance.distance(int(a), int(b))

    return build_problem(
        snapshot(instance, fixed_cost),
        travel,
        distance,
        distance_scale=DISTANCE_SCALE,
        time_resolution_s=TIME_RESOLUTION,
        horizon_s=instance.depot.latest - instance.depot.earliest + 1,
        span_cost=0,
        metaheuristic=metaheuristic,
        search=search,
    )


def routes_of(plan: Plan) -> list[list[int]]:
    """Per used vehicle, the site ids in visiting order (depot left out)."""
    routes = []
    for route in plan.routes.values():
        ids = [int(stop.node) for stop in route.stops]
        if ids:
            routes.append(ids)
    return routes


def check_routes(instance: Instance, routes: Sequence[Sequence[int]]) -> list[str]:
    """Every way `routes` breaks the instance's rules (empty: feasible), in double precision."""
    problems: list[str] = []
    sites, depot = instance.sites, instance.depot
    if len(routes) > instance.vehicles:
        problems.append(f"{len(routes)} routes for {instance.vehicles} vehicles")
    visits = [i for route in routes for i in route]
    customers = {i for i in sites if i != 0}
    if sorted(visits) != sorted(customers):
        missing = sorted(customers - set(visits))
        twice = sorted({i for i in visits if visits.count(i) > 1})
        unknown = sorted(set(visits) - customers)
        problems.append(f"coverage: missing {missing}, twice {twice}, unknown {unknown}")
    for r, route in enumerate(routes):
        clock, load, here = depot.earliest, 0, 0
        visited: set[int] = set()
        for i in route:
            if i not in sites or i == 0:
                continue
            s = sites[i]
            clock = max(clock + instance.distance(here, i), s.earliest)
            if clock > s.latest + EPS:
                problems.append(f"route {r}: site {i} served at {clock:.4f} > {s.latest}")
            if s.pickup and s.pickup not in visited:
                problems.append(f"route {r}: delivery {i} before its pickup {s.pickup}")
            load += s.demand
            if load > instance.capacity:
                problems.append(f"route {r}: load {load} > {instance.capacity} at site {i}")
            visited.add(i)
            clock += s.service
            here = i
        back = clock + instance.distance(here, 0)
        if back > depot.latest + EPS:
            problems.append(f"route {r}: back at the depot at {back:.4f} > {depot.latest}")
        if load != 0:
            problems.append(f"route {r}: ends with load {load}")
    return problems


def route_distance(
    routes: Sequence[Sequence[int]], distance: Callable[[int, int], float], depot: int = 0
) -> float:
    """Total length of closed routes from and to `depot`."""
    total = 0.0
    for route in routes:
        path = [depot, *route, depot]
        total += sum(distance(a, b) for a, b in itertools.pairwise(path))
    return total


def read_bks(path: Path, name: str) -> tuple[int | None, float | None]:
    """(vehicles, distance) of the best known solution of `name` in a bks.csv, or (None, None)."""
    if not path.exists():
        return None, None
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["instance"].lower() == name.lower():
                return int(row["vehicles"]), float(row["distance"])
    return None, None


def gap_pct(distance: float, bks: float | None) -> float | None:
    return None if bks is None else round(100.0 * (distance - bks) / bks, 3) + 0.0  # no -0.0


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
        violations.insert(0, f"unassigned tasks: {list(plan.unassigned)}")
    distance = route_distance(routes, instance.distance)
    bks_vehicles, bks_distance = read_bks(path.parent / "bks.csv", instance.name)
    return {
        "instance": instance.name,
        "vehicles": len(routes),
        "distance": round(distance, 4),
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


def summary(result: dict[str, object]) -> str:
    return (
        f"{result['instance']}: vehicles {result['vehicles']} (BKS {result['bks_vehicles']}), "
        f"distance {result['distance']} (BKS {result['bks_distance']}, gap "
        f"{result['gap_pct']} %), feasible {result['feasible']}, {result['wall_s']} s"
    )


def arguments(
    description: str,
    argv: Sequence[str] | None,
    configs: Iterable[str],
    default: str,
    metaheuristic: str = DEFAULT_METAHEURISTIC,
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("instance", type=Path)
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    parser.add_argument("--config", choices=sorted(configs), default=default)
    parser.add_argument("--metaheuristic", default=metaheuristic)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments("Li & Lim PDPTW with the dispatcher's solver.", argv, CONFIGS, DEFAULT_CONFIG)
    result = run(args.instance, args.time_limit, args.seed, args.config, args.metaheuristic)
    print(summary(result), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result))
    return 0 if result["feasible"] else 1


if __name__ == "__main__":
    sys.exit(main())
