"""The live bus: a running solve never holds up the messages behind it."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from fleet.building.graph import BuildingGraph
from fleet.building.model import Building
from fleet.clock import ManualClock
from fleet.dispatch.bus import AsyncBus
from fleet.dispatch.core import CoreConfig, FleetCore
from fleet.dispatch.ports import InMemoryStore
from fleet.domain.order import OrderState
from fleet.planning import Plan, Problem, solve
from simulators.fast import SIM_EPOCH
from tests.unit.twin_helpers import order


async def test_orders_are_answered_while_a_solve_is_still_running(
    demo_building: Building,
) -> None:
    core = FleetCore(
        demo_building,
        BuildingGraph(demo_building),
        InMemoryStore(),
        ManualClock(SIM_EPOCH),
        CoreConfig(),
    )
    release = threading.Event()
    started: list[int] = []

    def held_solve(problem: Problem) -> Plan:
        # Stands for a long optimization: it does not return until the test lets it.
        started.append(len(problem.tasks))
        release.wait(30)
        return solve(problem, time_limit_s=1.0)

    with ThreadPoolExecutor(max_workers=1) as pool:
        bus = AsyncBus(core, held_solve, pool, tick_interval_s=3600)
        bus.start()
        try:
            first = await asyncio.wait_for(bus.submit(order("WH-PORT-1", "OR-03")), 5)
            for _ in range(100):  # the solve the first order asked for starts in the worker
                if started:
                    break
                await asyncio.sleep(0.01)
            assert started == [1]
            # While it runs, further orders are answered at once.
            second = await asyncio.wait_for(bus.submit(order("WH-PORT-1", "OR-04")), 5)
            third = await asyncio.wait_for(bus.submit(order("WH-PORT-2", "OR-05")), 5)
            assert first is not None and second is not None and third is not None
            assert not release.is_set() and core.plan_version == 0
            assert {o.state for o in (first, second, third)} == {OrderState.PENDING}  # no robots
            release.set()
            for _ in range(500):  # the plan is applied, and the next solve sees all three
                if core.plan_version >= 1 and len(started) >= 2:
                    break
                await asyncio.sleep(0.01)
            assert core.plan_version >= 1
            assert started[1] == 3
        finally:
            release.set()
            await bus.stop()
