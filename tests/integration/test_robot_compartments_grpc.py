"""Controlled-drug custody on the robot protocol over real gRPC: a real `Service` on a loopback
port and the simulated robot (simulators/robot.py) as its gRPC client.

The core does not decide on secure steps or custody actions in this test: they are handed to
the robot's stream sink, the way the core's messages reach it (`RobotGatewayServicer`
translates them, they cross the wire, the simulated robot reads them); what the robot reports
comes back through the servicer's translation to the core, where a spy on the bus reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import grpc.aio
import pytest

from fleet.bootstrap import Service
from fleet.clock import ScaledClock
from fleet.dispatch import messages as m
from fleet.domain.cargo import CargoClass
from fleet.domain.order import Order
from fleet.traffic.steps import Step, StepKind
from fleet.v1 import common_pb2, robot_pb2, robot_pb2_grpc
from simulators.robot import RobotSpec, SimRobot
from simulators.scheduling import AsyncioScheduler
from simulators.world import World
from tests.integration.test_grpc_api import robot_hello, start_service

SCALE = 200.0  # simulated seconds per real second: the pharmacy's 90 s docking takes 0.45 s
TIMEOUT_S = 10.0
ROBOT = "AMR-C1"


class Spy:
    """What the core received from the robot, after the servicer's translation."""

    def __init__(self, service: Service) -> None:
        self.inbound: list[m.Inbound] = []
        bus = service.bus
        submit = bus.submit

        async def spying(msg: m.Inbound) -> Order | None:
            self.inbound.append(msg)
            return await submit(msg)

        bus.submit = spying  # type: ignore[method-assign]

    def outcomes(self, step_id: int) -> list[m.StepOutcome]:
        return [
            x.outcome
            for x in self.inbound
            if isinstance(x, m.StepReport) and x.step_id == step_id and x.robot_id == ROBOT
        ]

    def compartment(self, number: int) -> list[m.CompartmentStatus]:
        """Every report of compartment `number`, oldest first."""
        return [
            c
            for x in self.inbound
            if isinstance(x, m.RobotStateReport) and x.robot_id == ROBOT
            for c in x.compartments
            if c.number == number
        ]


async def until(check: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class GrpcRobot:
    """The simulated robot with 3 compartments at the pharmacy, on its own gRPC stream."""

    def __init__(self, service: Service) -> None:
        self.service = service
        building = service.core.building
        clock = ScaledClock(SCALE)
        spec = RobotSpec(
            ROBOT,
            frozenset({CargoClass.CONTROLLED_DRUG}),
            "B1-PHARMACY",
            compartments=3,
        )
        self.queue: asyncio.Queue[robot_pb2.RobotMessage] = asyncio.Queue()
        self.robot = SimRobot(
            spec, building, World(building), AsyncioScheduler(clock, SCALE), self.queue.put_nowait
        )
        self.received: list[robot_pb2.DispatcherMessage] = []
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}")
        self._task: asyncio.Task[None] | None = None
        self._actions = 1_000_000

    async def start(self) -> None:
        stub = robot_pb2_grpc.RobotGatewayStub(self.channel)

        async def outgoing() -> AsyncIterator[robot_pb2.RobotMessage]:
            while True:
                yield await self.queue.get()

        call = stub.Connect(outgoing())

        async def incoming() -> None:
            async for msg in call:
                self.received.append(msg)
                self.robot.receive(msg)

        self.robot.connect()
        self._task = asyncio.create_task(incoming())
        await until(lambda: ROBOT in self.service.bus.router.robots, "the robot's welcome")
        await until(
            lambda: any(msg.WhichOneof("msg") == "welcome" for msg in self.received), "welcome"
        )

    async def stop(self) -> None:
        self.robot.disconnect()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await self._task
        await self.channel.close(None)

    def send(self, out: m.SendStep | m.SendInstantAction) -> None:
        """Hand a message to the robot's stream, as the core's router does."""
        self.service.bus.router.robots[ROBOT](out)

    def step(self, step_id: int, step: Step) -> None:
        self.send(m.SendStep(ROBOT, step_id, step))

    def action(self, kind: m.InstantKind, **fields: object) -> None:
        self._actions += 1
        self.send(m.SendInstantAction(ROBOT, self._actions, kind, **fields))  # type: ignore[arg-type]


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    svc = await start_service(f"sqlite:///{tmp_path / 'fleet.db'}")
    try:
        yield svc
    finally:
        await svc.stop(grace=0)


def secure(kind: StepKind, order: str = "ORD-CD-1") -> Step:
    return Step(
        kind,
        station="PHARMACY",
        order_ids=(order,),
        quantity=1,
        compartments=((order, 1),),  # index 1: compartment 2 on the wire
        secure=True,
    )


async def test_secure_steps_seal_and_open_over_grpc(service: Service) -> None:
    spy = Spy(service)
    robot = GrpcRobot(service)
    await robot.start()
    try:
        # The robot reports its three compartments: unlocked, unsealed.
        await until(lambda: len(spy.compartment(3)) > 0, "a compartment report")
        assert spy.compartment(2)[-1] == m.CompartmentStatus(2, locked=False)

        # Secure pickup: the step crosses the wire with secure set and waits for its seal.
        robot.step(10_001, secure(StepKind.PICKUP))
        await until(lambda: spy.outcomes(10_001) == [m.StepOutcome.STARTED], "STARTED")
        step = next(msg.step for msg in robot.received if msg.WhichOneof("msg") == "step")
        assert step.pickup.secure and step.pickup.compartments[0].compartment == 2
        await asyncio.sleep(3 * 90 / SCALE)  # three times the pharmacy's docking time
        assert spy.outcomes(10_001) == [m.StepOutcome.STARTED]
        robot.action(m.InstantKind.SEAL_COMPARTMENT, compartment=2, seal_id="SEAL-0001")
        await until(lambda: m.StepOutcome.COMPLETED in spy.outcomes(10_001), "sealed pickup")
        action = next(msg.action for msg in robot.received if msg.WhichOneof("msg") == "action")
        assert action.type == robot_pb2.INSTANT_ACTION_TYPE_SEAL_COMPARTMENT
        assert (action.compartment, action.seal_id) == (2, "SEAL-0001")
        sealed = m.CompartmentStatus(2, locked=True, seal_id="SEAL-0001", seal_intact=True)
        await until(lambda: spy.compartment(2)[-1] == sealed, "the sealed compartment reported")

        # Secure drop-off: locked until OPEN names this compartment, for somebody.
        robot.step(10_002, secure(StepKind.DROPOFF))
        await until(lambda: spy.outcomes(10_002) == [m.StepOutcome.STARTED], "drop-off STARTED")
        robot.action(
            m.InstantKind.OPEN_COMPARTMENT,
            compartment=1,  # not the drop-off's compartment
            grant_id="G-1",
            staff_id="NURSE-3",
            open_for_s=60.0,
        )
        robot.action(  # nobody authenticated
            m.InstantKind.OPEN_COMPARTMENT, compartment=2, grant_id="G-1", open_for_s=60.0
        )
        await asyncio.sleep(3 * 90 / SCALE)
        assert spy.outcomes(10_002) == [m.StepOutcome.STARTED]
        assert all(not c.open for n in (1, 2) for c in spy.compartment(n))
        assert spy.compartment(2)[-1] == sealed
        assert len(robot.robot.locks.refused) == 2

        reports_before = len(spy.compartment(2))
        robot.action(
            m.InstantKind.OPEN_COMPARTMENT,
            compartment=2,
            grant_id="G-1",
            staff_id="NURSE-3",
            open_for_s=60.0,
        )
        await until(lambda: m.StepOutcome.COMPLETED in spy.outcomes(10_002), "drop-off done")
        opened = [
            msg.action
            for msg in robot.received
            if msg.WhichOneof("msg") == "action"
            and msg.action.type == robot_pb2.INSTANT_ACTION_TYPE_OPEN_COMPARTMENT
        ]
        assert (opened[-1].grant_id, opened[-1].staff_id, opened[-1].open_for_s) == (
            "G-1",
            "NURSE-3",
            60.0,
        )
        after = spy.compartment(2)[reports_before:]
        assert m.CompartmentStatus(2, False, "SEAL-0001", False, open=True) in after
        assert after[-1] == m.CompartmentStatus(2, True, "SEAL-0001", False, open=False)
    finally:
        await robot.stop()


async def test_a_cancelled_secure_dropoff_stays_sealed_over_grpc(service: Service) -> None:
    spy = Spy(service)
    robot = GrpcRobot(service)
    await robot.start()
    try:
        robot.action(m.InstantKind.SEAL_COMPARTMENT, compartment=2, seal_id="SEAL-0002")
        robot.step(10_001, secure(StepKind.DROPOFF))
        await until(lambda: spy.outcomes(10_001) == [m.StepOutcome.STARTED], "STARTED")
        robot.robot.locks.recipient_present = False
        robot.action(
            m.InstantKind.OPEN_COMPARTMENT,
            compartment=2,
            grant_id="G-2",
            staff_id="NURSE-3",
            open_for_s=600.0,
        )
        await until(lambda: not spy.compartment(2)[-1].locked, "unlocked for the recipient")
        robot.action(m.InstantKind.CANCEL_STEP, reason="recipient absent")
        sealed = m.CompartmentStatus(2, locked=True, seal_id="SEAL-0002", seal_intact=True)
        await until(lambda: spy.compartment(2)[-1] == sealed, "relocked under its seal")
        await asyncio.sleep(3 * 90 / SCALE)
        assert spy.outcomes(10_001) == [m.StepOutcome.STARTED]
        assert spy.compartment(2)[-1] == sealed
    finally:
        await robot.stop()


@pytest.mark.parametrize(
    ("status", "field"),
    [
        (robot_pb2.CompartmentStatus(number=0), "state.compartments[0].number"),
        (robot_pb2.CompartmentStatus(number=3), "state.compartments[0].number"),
        (
            robot_pb2.CompartmentStatus(number=1, locked=True, open=True),
            "state.compartments[0].locked",
        ),
    ],
)
async def test_bad_compartment_reports_end_the_stream_naming_the_field(
    service: Service, status: robot_pb2.CompartmentStatus, field: str
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = robot_pb2_grpc.RobotGatewayStub(channel)
        call = stub.Connect()  # type: ignore[call-arg]
        hello = robot_hello("AMR-09", node="B1-PHARMACY")
        hello.hello.cargo_classes[:] = [common_pb2.CARGO_CLASS_CONTROLLED_DRUG]
        hello.hello.compartments = 2
        await call.write(hello)
        welcome = await asyncio.wait_for(call.read(), TIMEOUT_S)
        assert isinstance(welcome, robot_pb2.DispatcherMessage)
        assert welcome.WhichOneof("msg") == "welcome"
        await call.write(
            robot_pb2.RobotMessage(
                state=robot_pb2.RobotState(
                    robot_id="AMR-09",
                    last_node="B1-PHARMACY",
                    battery_percent=90.0,
                    mode=robot_pb2.ROBOT_MODE_IDLE,
                    compartments=[status],
                )
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            while True:
                msg = await asyncio.wait_for(call.read(), TIMEOUT_S)
                if msg is grpc.aio.EOF:  # type: ignore[attr-defined]
                    pytest.fail("the stream ended without an error")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").startswith(f"{field}:"), caught.value.details()
