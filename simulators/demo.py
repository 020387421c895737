"""`make demo`: the dispatcher serving gRPC, simulated robots, doors and lifts connected to it
over gRPC, and nurses placing orders through the OrderService, faster than real time.

It prints each order's progress as the OrderService's watch stream reports it, and ends with a
KPI summary that counts the deliveries that crossed a door and rode a lift.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc

from fleet.api import convert
from fleet.bootstrap import Service
from fleet.building.loader import MapError, load_building
from fleet.config import METRICS_OFF, Settings
from fleet.domain.order import OrderState
from fleet.domain.priority import Priority
from fleet.v1 import orders_pb2, orders_pb2_grpc
from simulators.fast import fleet_specs
from simulators.live import LiveTwin
from simulators.report import delivery_paths
from simulators.workload import TimedOrder, standard_workload

# Orders are placed during this share of the run; the rest lets robots finish them.
PLACING_SHARE = 0.55
# How many times busier than the standard day the demo hospital is (a short demo must show
# a fair number of deliveries).
BUSY_FACTOR = 1.2


def _clock_str(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def _line(order: orders_pb2.Order) -> str:
    state = orders_pb2.OrderState.Name(order.state).removeprefix("ORDER_STATE_")
    what = (
        f"{order.id} {order.pickup_station} -> {order.dropoff_station} "
        f"({convert.CARGO_FROM_PB[order.cargo_class].value} x{order.quantity}, "
        f"{convert.PRIORITY_FROM_PB[order.priority].value})"
    )
    extra = ""
    if order.robot_id and state in ("ASSIGNED", "PICKED_UP"):
        extra = f" robot {order.robot_id}"
    if order.HasField("eta"):
        extra += f", ETA {_clock_str(convert.seconds(order.eta))}"
    if order.failure_reason:
        extra += f": {order.failure_reason}"
    return f"{what}: {state}{extra}"


async def run_demo(args: argparse.Namespace, out: list[str] | None = None) -> dict[str, object]:
    """Run the live demo and return its summary (also printed)."""

    def say(text: str) -> None:
        print(text, flush=True)
        if out is not None:
            out.append(text)

    settings = Settings(
        map_path=Path(args.map),
        database_url=args.db,
        grpc_port=0,
        metrics_port=getattr(args, "metrics_port", METRICS_OFF),
        time_scale=args.time_scale,
        solve_time_limit_s=2.0,
        log_level="WARNING",
    )
    building = load_building(settings.map_path)
    service = Service(settings)
    await service.start()
    target = f"{settings.host}:{service.grpc_port}"
    clock = service.core.clock
    say(f"dispatcher for {building.name} listening on {target} (database {args.db})")
    if service.metrics_port is not None:
        say(f"metrics on http://{settings.host}:{service.metrics_port}/metrics")
    twin = LiveTwin(building, fleet_specs(building, args.robots), target, clock, args.time_scale)
    await twin.start()
    say(
        f"{args.robots} simulated robots, {len(building.doors)} doors and "
        f"{len(building.lifts)} lifts connected over gRPC; time runs {args.time_scale:g}x"
    )
    channel = grpc.aio.insecure_channel(target)
    stub = orders_pb2_grpc.OrderServiceStub(channel)
    placed: list[str] = []
    final: dict[str, orders_pb2.Order] = {}
    wall0 = time.monotonic()
    sim0 = clock.now()
    duration = float(args.duration_s)

    async def watch() -> None:
        last: dict[str, int] = {}
        async for update in stub.WatchOrders(orders_pb2.WatchOrdersRequest()):
            o = update.order
            final[o.id] = o
            if last.get(o.id) != o.state:
                last[o.id] = o.state
                say(f"[{_clock_str(clock.now())}] {_line(o)}")

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.2)

    sim_hours = duration * args.time_scale * PLACING_SHARE / 3600.0
    workload = standard_workload(building, sim0, sim_hours, seed=args.seed, scale=BUSY_FACTOR)
    # The first order of the day always goes from the warehouse to an OR upstairs.
    first = standard_workload(building, sim0, 1.0, seed=args.seed)[0].order
    workload.insert(
        0,
        TimedOrder(
            sim0,
            type(first)(
                pickup_station="WH-PORT-1"
                if "WH-PORT-1" in building.stations
                else first.pickup_station,
                dropoff_station="OR-03" if "OR-03" in building.stations else first.dropoff_station,
                cargo_class=first.cargo_class,
                quantity=2,
                priority=Priority.URGENT,
                needed_by=sim0 + 1800,
                requested_by="nurse-or3",
            ),
        ),
    )

    async def place() -> None:
        for timed in workload:
            delay = (timed.at - clock.now()) / args.time_scale
            if delay > 0:
                await asyncio.sleep(delay)
            cmd = timed.order
            assert cmd.cargo_class is not None  # the workload always names the cargo
            req = orders_pb2.CreateOrderRequest(
                pickup_station=cmd.pickup_station,
                dropoff_station=cmd.dropoff_station,
                cargo_class=convert.CARGO_TO_PB[cmd.cargo_class],
                quantity=cmd.quantity,
                priority=convert.PRIORITY_TO_PB[cmd.priority],
                requested_by=cmd.requested_by,
                weight_kg=cmd.weight_kg,
            )
            if cmd.needed_by is not None:
                req.needed_by.CopyFrom(convert.ts(max(cmd.needed_by, clock.now() + 60)))
            try:
                order = await stub.CreateOrder(req, timeout=5)
                placed.append(order.id)
            except grpc.aio.AioRpcError as exc:
                say(f"order refused: {exc.code().name}: {exc.details()}")

    placer = asyncio.create_task(place())
    try:
        while time.monotonic() - wall0 < duration:
            await asyncio.sleep(0.25)
            if (
                placer.done()
                and placed
                and all(
                    final.get(oid) is not None and convert.STATE_FROM_PB[final[oid].state].terminal
                    for oid in placed
                )
            ):
                break
    finally:
        placer.cancel()
        watcher.cancel()
        for task in (placer, watcher):
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await task
    summary = _summary(service, twin, placed, time.monotonic() - wall0, clock.now() - sim0)
    await channel.close(None)
    await twin.stop()
    await service.stop(grace=0.5)
    say("")
    say("KPI summary")
    for key, value in summary.items():
        say(f"  {key:<48} {value}")
    return summary


def _summary(
    service: Service, twin: LiveTwin, placed: list[str], wall_s: float, sim_s: float
) -> dict[str, object]:
    core = service.core
    orders = [core.orders[oid] for oid in placed if oid in core.orders]
    delivered = [o for o in orders if o.state is OrderState.DELIVERED]
    leads = sorted(
        (o.delivered_at - o.created_at) / 60 for o in delivered if o.delivered_at is not None
    )
    on_time = [o.on_time for o in delivered if o.on_time is not None]
    paths = delivery_paths(core.step_log)
    both = sum(
        1 for o in delivered if o.id in paths and paths[o.id].doors and paths[o.id].lift_rides
    )
    first_assign = []
    for o in orders:
        t = next((e.at for e in o.history if e.state is OrderState.ASSIGNED), None)
        if t is not None:
            first_assign.append(t - o.created_at)

    def pct(values: list[float], q: float) -> float:
        if not values:
            return 0.0
        values = sorted(values)
        return values[min(len(values) - 1, math.ceil(q * len(values)) - 1)]

    return {
        "orders placed": len(orders),
        "orders delivered": len(delivered),
        "orders failed": sum(o.state is OrderState.FAILED for o in orders),
        "orders still open at the end": sum(not o.state.terminal for o in orders),
        "deliveries that crossed a door and rode a lift": both,
        "on-time rate": f"{(sum(on_time) / len(on_time)) if on_time else 1.0:.0%}",
        "lead time p50 / p95 (simulated minutes)": (
            f"{pct(leads, 0.5):.1f} / {pct(leads, 0.95):.1f}"
        ),
        "time to assignment p50 (simulated s)": f"{pct(first_assign, 0.5):.1f}",
        "lift rides": twin.world.lift_rides,
        "door passes": twin.world.door_passes,
        "robot distance (m)": round(twin.world.distance_m),
        "conflicts (robots sharing a door, car or one-robot spot)": twin.world.conflicts,
        "safety violations": len(twin.world.violations),
        "simulated time (min)": round(sim_s / 60, 1),
        "wall time (s)": round(wall_s, 1),
    }


def main(args: argparse.Namespace) -> int:
    """`fleet demo`."""
    logging.basicConfig(level=logging.WARNING)
    if not hasattr(args, "seed"):
        args.seed = 1
    try:
        summary = asyncio.run(run_demo(args))
    except MapError as exc:
        print(exc, file=sys.stderr)
        return 1
    ok = (
        summary["deliveries that crossed a door and rode a lift"] != 0
        and summary["conflicts (robots sharing a door, car or one-robot spot)"] == 0
        and summary["safety violations"] == 0
    )
    return 0 if ok else 1
