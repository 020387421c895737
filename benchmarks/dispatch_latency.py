"""Dispatch latency: from a new order's arrival to its assignment with an ETA, through the real
dispatcher core.

    python -m benchmarks.dispatch_latency --robots 100 --orders 1000 --seed 1 --json
    python -m benchmarks.dispatch_latency ... --db sqlite:////tmp/latency.db   # the SQL store

What is timed is `FleetCore.handle(CreateOrder(...))` with `CoreConfig.insert_on_create` on, as
the gRPC `OrderService.CreateOrder` servicer hands it over: validation, the order stored
(durable before acknowledged), every robot's planner view and future stops, the insertion into
the current plan, the assignment recorded, the order's compartment, the changed orders written
back and queued for watchers. The reply must name a robot and carry an ETA: a reply that does
not (or an error) is counted in `failures`, never silently timed as a success.

Set-up, untimed, all through the core's own messages under a `ManualClock` that stays at a
weekday 09:00 (the whole run happens "now": every order is created at that instant):

1. `--robots` robots say hello (`RobotHello`, then a `RobotStateReport` with their battery), as
   the digital twin's robots do: 70 % material robots (sterile, clean, linen, controlled drugs;
   4 lockable compartments, 60 kg), 30 % waste robots (soiled, waste; one 120 kg bin); 4 slots,
   0.8-1.2 m/s, 50-100 % battery, standing at chargers, parking places and stations.
2. `--orders` orders arrive one by one as `CreateOrder` (the hospital's order mix: supplies to
   ORs and wards, sterile kits, linen, controlled drugs, soiled goods and waste; 5 % STAT,
   20 % URGENT, 75 % ROUTINE): each is placed by the core's own insertion, so the current plan
   is the one a dispatcher answering every order at once would hold. (No full re-optimization
   runs: the benchmark times the first answer, which never waits for one.)
3. A `Tick` starts every robot that has work on its first stop. About half of those are then
   driven to their first pickup and load it: their steps are answered `COMPLETED` (and the
   doors on the way reported open) until the robot carries orders; they stay committed to their
   next stop. The rest stay on their first step (robots on a lift, or on a charge, wait there).

Then `--arrivals` further orders arrive and each `handle` is timed. After each one, untimed, a
random order that is neither on board nor committed to leaves through `CancelOrder`, so the
number of open orders stays at `--orders`; every 10 arrivals a `Tick` runs, as in the service.
The building graph's travel-time caches are warm after the set-up (as in a running service).

The last line printed is one JSON object (with `--json`; otherwise a short summary first).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import platform
import pstats
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import fleet.dispatch.core as core_module
from fleet.building.graph import BuildingGraph
from fleet.building.loader import load_building
from fleet.building.model import Building, StationKind
from fleet.clock import ManualClock
from fleet.dispatch import messages as m
from fleet.dispatch.core import CoreConfig, FleetCore
from fleet.dispatch.ports import Assignment, FleetStore, InMemoryStore
from fleet.domain.cargo import CargoClass
from fleet.domain.errors import DomainError
from fleet.domain.order import Order, OrderState
from fleet.domain.priority import Priority
from fleet.domain.robot import Robot, RobotCapabilities, RobotMode
from fleet.traffic.steps import StepKind

NOW = 1_767_603_600.0  # 2026-01-05T09:00:00Z, a weekday morning
CLEAN = frozenset(
    {CargoClass.STERILE, CargoClass.CLEAN, CargoClass.LINEN, CargoClass.CONTROLLED_DRUG}
)
DIRTY = frozenset({CargoClass.SOILED, CargoClass.WASTE})
TICK_EVERY = 10  # arrivals between two ticks

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


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary_ms(seconds: Sequence[float]) -> dict[str, float] | None:
    if not seconds:
        return None
    ms = [s * 1000 for s in seconds]
    return {
        "p50": round(percentile(ms, 50), 3),
        "p90": round(percentile(ms, 90), 3),
        "p99": round(percentile(ms, 99), 3),
        "max": round(max(ms), 3),
        "mean": round(sum(ms) / len(ms), 3),
    }


# ---- what the timed path spends its time in (a thin, always-on breakdown) --------------------


class Stopwatch:
    """Accumulates the time spent in wrapped calls while `running`."""

    def __init__(self) -> None:
        self.total = 0.0
        self.running = False

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.running:
                return fn(*args, **kwargs)
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - started

        return timed

    def take(self) -> float:
        spent, self.total = self.total, 0.0
        return spent


class TimedStore:
    """The benchmark's store, its write and read calls timed by `watch` (a pass-through)."""

    def __init__(self, inner: FleetStore, watch: Stopwatch) -> None:
        self.inner = inner
        w = watch.wrap
        self._add_order = w(inner.add_order)
        self._update_orders = w(inner.update_orders)
        self._get_order = w(inner.get_order)
        self._record_assignments = w(inner.record_assignments)
        self._upsert_robot = w(inner.upsert_robot)

    def add_order(self, order: Order) -> None:
        self._add_order(order)

    def update_orders(self, orders: Iterable[Order]) -> None:
        self._update_orders(orders)

    def get_order(self, order_id: str) -> Order | None:
        found: Order | None = self._get_order(order_id)
        return found

    def list_orders(
        self, states: Iterable[OrderState] = (), limit: int = 100, offset: int = 0
    ) -> list[Order]:
        return self.inner.list_orders(states, limit, offset)

    def load_open_orders(self) -> list[Order]:
        return self.inner.load_open_orders()

    def max_order_number(self) -> int:
        return self.inner.max_order_number()

    def upsert_robot(self, robot: Robot) -> None:
        self._upsert_robot(robot)

    def load_robots(self) -> list[Robot]:
        return self.inner.load_robots()

    def record_assignments(self, assignments: Iterable[Assignment]) -> None:
        self._record_assignments(assignments)

    def close(self) -> None:
        self.inner.close()


# ---- the fleet and the orders ----------------------------------------------------------------


def hellos(building: Building, count: int, rng: random.Random) -> list[m.RobotHello]:
    """The robots' hellos: 70 % material robots, 30 % waste robots, spread over the hospital."""
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
    out: list[m.RobotHello] = []
    waste_robots = round(count * 0.3) if count > 1 else 0
    for k in range(count):
        dirty = k >= count - waste_robots
        caps = RobotCapabilities(
            vendor="bench",
            model="WasteCart-2" if dirty else "Courier-4",
            cargo_classes=DIRTY if dirty else CLEAN,
            capacity_slots=4,
            max_speed_m_s=rng.choice((0.8, 1.0, 1.2)),
            max_payload_kg=120.0 if dirty else 60.0,
            compartments=None if dirty else 4,
        )
        node = rng.choice(dirty_places if dirty else clean_places)
        battery = round(rng.uniform(50.0, 100.0), 1)
        out.append(m.RobotHello(f"R{k:03d}", caps, node, battery_percent=battery))
    return out


def make_order(building: Building, rng: random.Random, created_at: float) -> m.CreateOrder:
    weights = [f[0] for f in FLOWS]
    _, pickups, dropoffs, cargos, (low, high) = rng.choices(FLOWS, weights)[0]
    pickup = rng.choice(sorted(n for n, s in building.stations.items() if s.kind in pickups))
    dropoff = rng.choice(sorted(n for n, s in building.stations.items() if s.kind in dropoffs))
    priority, _, minutes = rng.choices(PRIORITIES, [p[1] for p in PRIORITIES])[0]
    return m.CreateOrder(
        pickup_station=pickup,
        dropoff_station=dropoff,
        cargo_class=rng.choice(cargos),
        quantity=rng.randint(low, high),
        priority=priority,
        needed_by=created_at + minutes * 60,
        requested_by="benchmark",
    )


def assigned_with_eta(reply: Order | None) -> bool:
    """The nurse's answer: the order is assigned to a robot and has an ETA."""
    return (
        reply is not None
        and reply.state is OrderState.ASSIGNED
        and bool(reply.robot_id)
        and reply.eta is not None
        and math.isfinite(reply.eta)
    )


class Devices:
    """Answers the core's outbound messages for the robots being driven, and every door.

    Zero virtual time passes: a driven robot's robot-side steps (moves, pickups) complete at
    once, a door opens as soon as asked. Lift calls and charges are never answered (a robot on
    its way to a lift or a charger stays there), nor are other robots' steps.
    """

    def __init__(self, core: FleetCore) -> None:
        self.core = core
        self.driving: set[str] = set()

    def pump(self) -> None:
        pending = list(self.core.drain())
        while pending:
            out = pending.pop(0)
            reply: m.Inbound | None = None
            if isinstance(out, m.SendStep) and out.robot_id in self.driving:
                if out.step.kind in (StepKind.MOVE, StepKind.PICKUP):
                    reply = m.StepReport(
                        out.robot_id, out.step_id, m.StepOutcome.COMPLETED, node=out.step.to_node
                    )
            elif isinstance(out, m.DoorCommand):
                mode = m.DoorMode.OPEN if out.action is m.DoorAction.OPEN else m.DoorMode.CLOSED
                reply = m.DoorReport(out.door_id, mode, out.session_id)
            if reply is not None:
                self.core.handle(reply)
                pending.extend(self.core.drain())
            self._stop_loaded()

    def _stop_loaded(self) -> None:
        for rid in list(self.driving):
            if self.core.robots[rid].robot.carrying:
                self.driving.discard(rid)  # loaded: it stays committed to its next stop


def open_orders(core: FleetCore) -> list[Order]:
    return [o for o in core.orders.values() if not o.state.terminal]


def removable(core: FleetCore) -> list[str]:
    """Open orders a nurse could still cancel without touching a robot: not on board, not the
    stop a robot is driving to."""
    committed: set[str] = set()
    for run in core.robots.values():
        if run.current_stop is not None:
            committed.update(run.current_stop.order_ids)
    return sorted(
        o.id
        for o in core.orders.values()
        if o.state in (OrderState.PENDING, OrderState.ASSIGNED) and o.id not in committed
    )


def machine() -> dict[str, Any]:
    cpu_model = ""
    mem_gib: float | None = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model or platform.processor(),
        "ram_gib": mem_gib,
        # Other work on the machine inflates wall-clock figures (see cpu_ms).
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
    }


def open_store_at(url: str | None) -> FleetStore:
    if url is None:
        return InMemoryStore()
    from fleet.store import open_store  # only with --db: SQLAlchemy is not needed otherwise

    store = open_store(url)
    if store.max_order_number() or store.load_robots():
        store.close()
        raise SystemExit(f"--db {url}: the database is not empty; give a fresh one")
    return store


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    building = load_building(Path(args.map))
    graph = BuildingGraph(building)
    clock = ManualClock(NOW)
    store_watch, insert_watch = Stopwatch(), Stopwatch()
    inner = open_store_at(args.db)
    store = TimedStore(inner, store_watch)
    core = FleetCore(building, graph, store, clock, CoreConfig(insert_on_create=True))
    devices = Devices(core)
    # The core's own `insert_task`, timed (the core looks it up in its module at each call).
    real_insert_task = getattr(core_module, "insert_task")  # noqa: B009
    setattr(core_module, "insert_task", insert_watch.wrap(real_insert_task))  # noqa: B010
    try:
        return _run(args, rng, building, core, devices, store_watch, insert_watch)
    finally:
        setattr(core_module, "insert_task", real_insert_task)  # noqa: B010
        inner.close()


def _run(
    args: argparse.Namespace,
    rng: random.Random,
    building: Building,
    core: FleetCore,
    devices: Devices,
    store_watch: Stopwatch,
    insert_watch: Stopwatch,
) -> dict[str, Any]:
    # 1. The fleet connects.
    for hello in hellos(building, args.robots, rng):
        core.handle(hello)
        node = building.nodes[hello.node]
        core.handle(
            m.RobotStateReport(
                hello.robot_id,
                node.level,
                node.x,
                node.y,
                hello.node,
                hello.battery_percent,
                RobotMode.IDLE,
            )
        )
    devices.pump()

    # 2. The current plan: every open order placed by the core's own insertion.
    started = time.perf_counter()
    build_failures = 0
    for _ in range(args.orders):
        placed = core.handle(make_order(building, rng, NOW))
        build_failures += not assigned_with_eta(placed)
        devices.pump()
    build_s = time.perf_counter() - started

    # 3. Robots start their first stop; about half of the busy ones load their first pickup.
    core.handle(m.Tick())
    busy = sorted(rid for rid, run in core.robots.items() if run.current_stop is not None)
    devices.driving = {rid for rid in busy if rng.random() < 0.5}
    devices.pump()
    devices.driving.clear()
    carrying = sum(1 for run in core.robots.values() if run.robot.carrying)
    on_board = sum(len(run.robot.carrying) for run in core.robots.values())
    stops = [len(run.future) for run in core.robots.values()]
    open_at_start = len(open_orders(core))

    # 4. The timed arrivals.
    latencies: list[float] = []
    cpu: list[float] = []  # CPU time of the handling thread: what a busy machine does not add
    in_insert: list[float] = []
    in_store: list[float] = []
    failures: list[str] = []
    answered: list[tuple[Priority, float, float | None]] = []  # (priority, eta, needed_by)
    profiler = cProfile.Profile() if args.profile else None
    store_watch.running = insert_watch.running = True
    for k in range(args.arrivals):
        cmd = make_order(building, rng, NOW)
        store_watch.take(), insert_watch.take()
        reply: Order | None = None
        error = ""
        if profiler is not None:
            profiler.enable()
        began, began_cpu = time.perf_counter(), time.thread_time()
        try:
            reply = core.handle(cmd)
        except DomainError as exc:
            error = f"{type(exc).__name__}: {exc}"
        ended, ended_cpu = time.perf_counter(), time.thread_time()
        if profiler is not None:
            profiler.disable()
        latencies.append(ended - began)
        cpu.append(ended_cpu - began_cpu)
        in_insert.append(insert_watch.take())
        in_store.append(store_watch.take())
        if not assigned_with_eta(reply):
            state = reply.state.value if reply is not None else "no reply"
            failures.append(f"arrival {k}: {error or state}")
        elif reply is not None and reply.eta is not None:
            answered.append((reply.priority, reply.eta, reply.needed_by))
        # Untimed: what the bus does next, then one open order leaves, then now and then a tick.
        store_watch.running = insert_watch.running = False
        devices.pump()
        candidates = removable(core)
        if candidates and len(open_orders(core)) > args.orders:
            core.handle(m.CancelOrder(rng.choice(candidates), "benchmark: keep the plan size"))
        if (k + 1) % TICK_EVERY == 0:
            core.handle(m.Tick())
        devices.pump()
        store_watch.running = insert_watch.running = True
    store_watch.running = insert_watch.running = False
    if profiler is not None:
        profiler.dump_stats(args.profile)
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("cumulative").print_stats(30)

    on_time: dict[str, float] = {}
    for priority in Priority:
        mine = [(eta, nb) for p, eta, nb in answered if p is priority]
        if mine:
            hits = sum(1 for eta, nb in mine if nb is None or eta <= nb)
            on_time[priority.value] = round(hits / len(mine), 4)
    waits = [eta - NOW for _, eta, _ in answered]
    return {
        "benchmark": "dispatch_latency",
        "timed": "FleetCore.handle(CreateOrder) with insert_on_create",
        "store": "SqlStore " + args.db.split(":", 1)[0] if args.db else "InMemoryStore",
        "map": args.map,
        "robots": args.robots,
        "open_orders": open_at_start,
        "open_orders_at_end": len(open_orders(core)),
        "arrivals": args.arrivals,
        "seed": args.seed,
        "latency_ms": summary_ms(latencies),
        "cpu_ms": summary_ms(cpu),
        "latency_p50_ms_by_half": [
            round(percentile(half, 50) * 1000, 3)
            for half in (latencies[: len(latencies) // 2], latencies[len(latencies) // 2 :])
            if half
        ],
        "of_which_insert_task_ms": summary_ms(in_insert),
        "of_which_store_ms": summary_ms(in_store),
        "failures": len(failures),
        "failure_examples": failures[:5],
        "setup": {
            "plan_build_s": round(build_s, 2),
            "plan_build_failures": build_failures,
            "robots_committed_to_a_stop": sum(
                1 for run in core.robots.values() if run.current_stop is not None
            ),
            "robots_carrying": carrying,
            "orders_on_board": on_board,
            "future_stops_per_robot": {
                "mean": round(sum(stops) / len(stops), 2),
                "max": max(stops),
            },
        },
        "eta": {
            "wait_s_p50": round(percentile(waits, 50), 1) if waits else None,
            "wait_s_p90": round(percentile(waits, 90), 1) if waits else None,
            "on_time_rate_by_priority": on_time,
        },
        "machine": machine(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dispatch_latency")
    parser.add_argument("--map", default="maps/demo_hospital.yaml")
    parser.add_argument("--robots", type=int, default=100)
    parser.add_argument("--orders", type=int, default=1000, help="open orders in the plan")
    parser.add_argument("--arrivals", type=int, default=300, help="timed new orders")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="time with the SQL store at this (empty) database, e.g. sqlite:////tmp/bench.db; "
        "default: the in-memory store",
    )
    parser.add_argument(
        "--profile", default=None, metavar="FILE", help="cProfile the timed arrivals into FILE"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    if args.robots < 1 or args.orders < 0 or args.arrivals < 1:
        parser.error("--robots and --arrivals must be >= 1, --orders >= 0")
    result = run(args)
    if not args.json:
        lat = result["latency_ms"]
        print(
            f"{result['robots']} robots, {result['open_orders']} open orders, "
            f"{result['arrivals']} arrivals ({result['store']}): p50 {lat['p50']} ms, "
            f"p99 {lat['p99']} ms, max {lat['max']} ms, {result['failures']} failures",
            file=sys.stderr,
        )
    print(json.dumps(result))
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
