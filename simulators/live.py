"""The digital twin in live mode: simulated robots, doors and lifts as gRPC clients.

Each simulated robot opens its own RobotGateway.Connect stream, and one door controller and
one lift controller open InfrastructureGateway.Connect streams, exactly as vendors' systems
would. Their timers run on asyncio, `time_scale` times faster than real time. A dropped stream
is retried: the robot says hello again from where it stands, with what it carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol, TypeVar

import grpc

from fleet.building.model import Building
from fleet.clock import Clock
from fleet.v1 import (
    infrastructure_pb2,
    infrastructure_pb2_grpc,
    robot_pb2,
    robot_pb2_grpc,
)
from simulators.infrastructure import LIFT_HEARTBEAT_S, SimDoorController, SimLiftController
from simulators.robot import RobotSpec, SimRobot
from simulators.scheduling import AsyncioScheduler
from simulators.world import World

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Device(Protocol):
    def connect(self) -> None: ...


async def _drain(queue: asyncio.Queue[T]) -> AsyncIterator[T]:
    while True:
        yield await queue.get()


class LiveTwin:
    """Simulated devices connected to a dispatcher at `target` over gRPC."""

    def __init__(
        self,
        building: Building,
        specs: list[RobotSpec],
        target: str,
        clock: Clock,
        time_scale: float,
        record_events: bool = True,
        state_interval_s: float = 2.0,
    ) -> None:
        self.building = building
        self.target = target
        self.world = World(building, record_events=record_events, count_exclusive_conflicts=True)
        self.scheduler = AsyncioScheduler(clock, time_scale)
        self.state_interval_s = state_interval_s
        self.specs = specs
        self.robots: dict[str, SimRobot] = {}
        self.doors: SimDoorController | None = None
        self.lifts: SimLiftController | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._channel: grpc.aio.Channel | None = None

    async def start(self) -> None:
        """Open the channel and every device's stream."""
        self._channel = grpc.aio.insecure_channel(self.target)
        robot_stub = robot_pb2_grpc.RobotGatewayStub(self._channel)
        infra_stub = infrastructure_pb2_grpc.InfrastructureGatewayStub(self._channel)

        door_q: asyncio.Queue[infrastructure_pb2.InfrastructureMessage] = asyncio.Queue()
        lift_q: asyncio.Queue[infrastructure_pb2.InfrastructureMessage] = asyncio.Queue()
        self.doors = SimDoorController(
            "sim-doors", self.building, self.world, self.scheduler, door_q.put_nowait
        )
        self.lifts = SimLiftController(
            "sim-lifts",
            self.building,
            self.world,
            self.scheduler,
            lift_q.put_nowait,
            heartbeat_s=LIFT_HEARTBEAT_S,
        )
        self._tasks.append(asyncio.create_task(self._infra_loop(infra_stub, self.doors, door_q)))
        self._tasks.append(asyncio.create_task(self._infra_loop(infra_stub, self.lifts, lift_q)))
        for spec in self.specs:
            q: asyncio.Queue[robot_pb2.RobotMessage] = asyncio.Queue()
            robot = SimRobot(
                spec,
                self.building,
                self.world,
                self.scheduler,
                q.put_nowait,
                state_interval_s=self.state_interval_s,
            )
            self.robots[spec.robot_id] = robot
            self._tasks.append(asyncio.create_task(self._robot_loop(robot_stub, robot, q)))

    async def stop(self) -> None:
        """Close every stream and the channel."""
        for robot in self.robots.values():
            robot.disconnect()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await task
        self._tasks = []
        if self._channel is not None:
            await self._channel.close(None)

    async def _robot_loop(
        self,
        stub: robot_pb2_grpc.RobotGatewayAsyncStub,
        robot: SimRobot,
        queue: asyncio.Queue[robot_pb2.RobotMessage],
    ) -> None:
        while True:
            while not queue.empty():
                queue.get_nowait()  # nothing from a dead stream is worth sending
            call = stub.Connect(_drain(queue))
            robot.connect()
            try:
                async for msg in call:
                    robot.receive(msg)
            except grpc.aio.AioRpcError as exc:
                log.info("robot %s stream ended: %s", robot.spec.robot_id, exc.code())
            finally:
                robot.disconnect()
                call.cancel()
            await asyncio.sleep(0.5)

    async def _infra_loop(
        self,
        stub: infrastructure_pb2_grpc.InfrastructureGatewayAsyncStub,
        device: SimDoorController | SimLiftController,
        queue: asyncio.Queue[infrastructure_pb2.InfrastructureMessage],
    ) -> None:
        receive: Callable[[infrastructure_pb2.InfrastructureCommand], None] = device.receive
        while True:
            while not queue.empty():
                queue.get_nowait()
            call = stub.Connect(_drain(queue))
            device.connect()
            try:
                async for cmd in call:
                    receive(cmd)
            except grpc.aio.AioRpcError as exc:
                log.info("controller %s stream ended: %s", device.controller_id, exc.code())
            finally:
                call.cancel()
            await asyncio.sleep(0.5)
