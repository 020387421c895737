"""`AsyncBus.call`: synchronous work on the core's own task, routed and re-planned like a
submitted message (what the custody desk needs in the service)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from fleet.building.graph import BuildingGraph
from fleet.building.model import Building
from fleet.clock import ManualClock
from fleet.dispatch.bus import AsyncBus, DispatcherStopped
from fleet.dispatch.core import CoreConfig, FleetCore
from fleet.dispatch.ports import InMemoryStore
from fleet.domain.errors import InvalidArgument
from fleet.domain.order import Order, OrderState
from fleet.planning import Plan, Problem, solve
from simulators.fast import SIM_EPOCH
from tests.unit.twin_helpers import order


class _Solves:
    """A solver that counts its calls (in the worker thread)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, problem: Problem) -> Plan:
        self.calls += 1
        return solve(problem, time_limit_s=0.5)


@pytest.fixture
async def running(demo_building: Building) -> AsyncIterator[tuple[AsyncBus, _Solves]]:
    core = FleetCore(
        demo_building,
        BuildingGraph(demo_building),
        InMemoryStore(),
        ManualClock(SIM_EPOCH),
        CoreConfig(),
    )
    solves = _Solves()
    with ThreadPoolExecutor(max_workers=1) as pool:
        bus = AsyncBus(core, solves, pool, tick_interval_s=3600)
        bus.start()
        try:
            yield bus, solves
        finally:
            await bus.stop()


async def test_call_runs_on_the_core_task_and_routes_what_the_core_emitted(
    running: tuple[AsyncBus, _Solves],
) -> None:
    bus, solves = running
    seen: list[Order] = []
    bus.router.watchers.append(seen.append)
    where: list[str | None] = []

    def place() -> tuple[str, OrderState]:
        task = asyncio.current_task()
        where.append(task.get_name() if task is not None else None)
        placed = bus.core.handle(order("WH-PORT-1", "OR-03"))
        assert placed is not None
        # Nothing is routed while `fn` runs: the bus routes after it returns.
        assert not seen
        return placed.id, placed.state

    order_id, state = await asyncio.wait_for(bus.call(place), 5)
    assert where == ["fleet-core"]  # the bus's own task: the single writer
    assert state is OrderState.PENDING
    assert [o.id for o in seen] == [order_id]  # OrderChanged routed to the watchers
    for _ in range(300):  # the core asked for a plan: the bus started a solve
        if solves.calls:
            break
        await asyncio.sleep(0.01)
    assert solves.calls >= 1


async def test_call_returns_fn_result_and_raises_its_error(
    running: tuple[AsyncBus, _Solves],
) -> None:
    bus, _ = running
    assert await asyncio.wait_for(bus.call(lambda: 41 + 1), 5) == 42

    def refused() -> None:
        bus.core.handle(order("WH-PORT-1", "NO-SUCH-STATION"))

    with pytest.raises(InvalidArgument, match="dropoff_station"):
        await asyncio.wait_for(bus.call(refused), 5)

    def broken() -> None:
        raise RuntimeError("a bug in the caller")

    with pytest.raises(RuntimeError, match="a bug in the caller"):
        await asyncio.wait_for(bus.call(broken), 5)
    # The bus lives on after both.
    assert await asyncio.wait_for(bus.call(lambda: "still here"), 5) == "still here"


async def test_calls_and_messages_run_one_at_a_time_in_order(
    running: tuple[AsyncBus, _Solves],
) -> None:
    bus, _ = running
    log: list[str] = []
    inside = threading.Lock()

    def work(name: str) -> str:
        assert inside.acquire(blocking=False), "two pieces of work ran at once"
        try:
            log.append(name)
            return name
        finally:
            inside.release()

    results = await asyncio.wait_for(
        asyncio.gather(*(bus.call(lambda n=f"w{i}": work(n)) for i in range(20))), 5
    )
    assert results == [f"w{i}" for i in range(20)] and log == results


async def test_a_call_still_queued_when_the_bus_stops_is_told(demo_building: Building) -> None:
    core = FleetCore(
        demo_building,
        BuildingGraph(demo_building),
        InMemoryStore(),
        ManualClock(SIM_EPOCH),
        CoreConfig(),
    )
    bus = AsyncBus(core, lambda problem: solve(problem, time_limit_s=0.5), None, 3600)
    # Not started: the call waits in the queue until stop() tells it.
    pending = asyncio.ensure_future(bus.call(lambda: 1))
    await asyncio.sleep(0)
    await bus.stop()
    with pytest.raises(DispatcherStopped):
        await asyncio.wait_for(pending, 5)
