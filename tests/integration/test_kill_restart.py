"""Killing the dispatcher process mid-delivery loses no accepted order.

A real `fleet serve` process is started on SQLite and on PostgreSQL, simulated robots connect
to it over gRPC and orders are placed; the process is killed with SIGKILL while robots are
carrying goods, and a new process is started on the same database and port. Every accepted
order is still there, the robots reconnect, and the work is finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc

from fleet.building.loader import load_building
from fleet.clock import ScaledClock
from fleet.v1 import common_pb2, orders_pb2, orders_pb2_grpc
from simulators.live import LiveTwin
from tests.conftest import DEMO_MAP, ROOT
from tests.unit.twin_helpers import clean_robot

SCALE = 60.0
ROUTES = [
    ("WH-PORT-1", "OR-02"),
    ("WH-PORT-2", "OR-06"),
    ("WH-PORT-1", "WARD-B"),
    ("STERILE-CORE", "OR-08"),
    ("WH-PORT-2", "GOWN-DISPENSER"),
    ("WH-PORT-1", "OR-04"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(db_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, FLEET_DATABASE_URL=db_url, FLEET_LOG_LEVEL="WARNING")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleet.cli",
            "serve",
            "--map",
            str(DEMO_MAP),
            "--port",
            str(port),
            "--metrics-port",
            "-1",
            "--time-scale",
            str(SCALE),
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        # Its own process group: the kill takes the optimizer's worker process with it, as a
        # machine crash would, and leaves nothing running after the test.
        start_new_session=True,
    )


async def _wait_serving(stub: orders_pb2_grpc.OrderServiceStub) -> None:
    for _ in range(200):
        try:
            await stub.ListOrders(orders_pb2.ListOrdersRequest(), timeout=1)
            return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    raise AssertionError("the server did not come up")


async def _orders(stub: orders_pb2_grpc.OrderServiceStub) -> dict[str, orders_pb2.Order]:
    reply = await stub.ListOrders(orders_pb2.ListOrdersRequest(page_size=1000), timeout=5)
    return {o.id: o for o in reply.orders}


async def test_sigkill_mid_delivery_loses_no_accepted_order(store_url: str, tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "serve.log"
    server = _serve(store_url, port, log)
    target = f"127.0.0.1:{port}"
    building = load_building(DEMO_MAP)
    robots = [clean_robot("AMR-01", "B1-CHARGER-1"), clean_robot("AMR-02", "B1-CHARGER-2")]
    twin = LiveTwin(building, robots, target, ScaledClock(SCALE), SCALE)
    channel = grpc.aio.insecure_channel(target)
    stub = orders_pb2_grpc.OrderServiceStub(channel)
    try:
        await _wait_serving(stub)
        await twin.start()
        accepted = []
        for pick, drop in ROUTES:
            order = await stub.CreateOrder(
                orders_pb2.CreateOrderRequest(
                    pickup_station=pick,
                    dropoff_station=drop,
                    cargo_class=common_pb2.CARGO_CLASS_CLEAN,
                    quantity=1,
                )
            )
            accepted.append(order.id)
        # Wait until a robot carries goods, then kill the dispatcher without warning.
        for _ in range(600):
            states = {o.state for o in (await _orders(stub)).values()}
            if orders_pb2.ORDER_STATE_PICKED_UP in states:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no order was ever picked up")
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)

        server = _serve(store_url, port, log)
        await _wait_serving(stub)
        after = await _orders(stub)
        assert set(accepted) <= set(after), "an accepted order was lost"
        for oid in accepted:
            assert after[oid].pickup_station and after[oid].dropoff_station
        # The robots reconnect by themselves and the work is finished.
        for _ in range(1200):
            after = await _orders(stub)
            if all(
                after[o].state in (orders_pb2.ORDER_STATE_DELIVERED, orders_pb2.ORDER_STATE_FAILED)
                for o in accepted
            ):
                break
            await asyncio.sleep(0.1)
        finals = {o: orders_pb2.OrderState.Name(after[o].state) for o in accepted}
        assert all(s == "ORDER_STATE_DELIVERED" for s in finals.values()), (
            finals,
            [after[o] for o, s in finals.items() if s != "ORDER_STATE_DELIVERED"],
            log.read_text()[-3000:],
        )
        assert twin.world.conflicts == 0 and twin.world.violations == []
    finally:
        await channel.close(None)
        await twin.stop()
        server.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)  # whatever of its group is still running
