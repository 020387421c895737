"""The message bus: feeds the core one message at a time and routes what it emits.

`Router` delivers core output to whoever registered for it (robot streams, controller streams,
order watchers). `replan_now` runs a whole re-plan synchronously (the digital twin's fast mode,
where solving takes no virtual time). `AsyncBus` is the live service's bus: one asyncio task
owns the core; gRPC servicers `submit` commands to it (or `call` a synchronous function on
its task, as the custody desk does); the solve runs in a worker process so a long optimization
never stalls robot traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fleet.dispatch import messages as m
from fleet.dispatch.core import FleetCore
from fleet.domain.errors import FailedPrecondition
from fleet.domain.order import Order
from fleet.planning import Plan, Problem, build_problem

log = logging.getLogger(__name__)

T = TypeVar("T")

Solve = Callable[[Problem], Plan]
RobotSink = Callable[[m.WelcomeRobot | m.SendStep | m.SendInstantAction], None]
DeviceSink = Callable[[m.DoorCommand | m.LiftCommand], None]
OrderSink = Callable[[Order], None]
AlertSink = Callable[[m.Alert], None]
CustodySink = Callable[[m.SecureStop], None]


@dataclass
class Router:
    """Who receives which outbound message."""

    robots: dict[str, RobotSink] = field(default_factory=dict)
    devices: dict[str, DeviceSink] = field(default_factory=dict)  # door or lift id -> sink
    watchers: list[OrderSink] = field(default_factory=list)
    alert_watchers: list[AlertSink] = field(default_factory=list)
    # The custody desk: robots waiting at secure stations for people.
    custody_watchers: list[CustodySink] = field(default_factory=list)
    undelivered: int = 0

    def route(self, outs: list[m.Outbound]) -> None:
        """Deliver each message; one with nobody to receive it is counted and dropped (the
        robot or controller is offline, and the core learns that from timeouts). A receiver
        that raises loses that message only, never the bus."""
        for out in outs:
            try:
                self._route_one(out)
            except Exception:
                self.undelivered += 1
                log.exception("could not deliver %s", type(out).__name__)

    def _route_one(self, out: m.Outbound) -> None:
        if isinstance(out, m.OrderChanged):
            for watch in list(self.watchers):
                watch(out.order)
            return
        if isinstance(out, m.Alert):
            # Alerts are also kept by the core (`FleetCore.alerts`); nobody watching is fine.
            for alert_sink in list(self.alert_watchers):
                alert_sink(out)
            return
        if isinstance(out, m.SecureStop):
            if not self.custody_watchers:
                self.undelivered += 1
            for custody_sink in list(self.custody_watchers):
                custody_sink(out)
            return
        if isinstance(out, m.DoorCommand | m.LiftCommand):
            device = out.door_id if isinstance(out, m.DoorCommand) else out.lift_id
            device_sink = self.devices.get(device)
            if device_sink is None:
                self.undelivered += 1
            else:
                device_sink(out)
            return
        robot_sink = self.robots.get(out.robot_id)
        if robot_sink is None:
            self.undelivered += 1
        else:
            robot_sink(out)


def replan_now(core: FleetCore, solve: Solve, router: Router) -> Plan:
    """Snapshot, solve and apply in one go (fast simulation, tests)."""
    snapshot, epoch = core.snapshot()
    plan = solve(build_problem(snapshot, core.graph.travel_time))
    core.apply_plan(plan, epoch)
    router.route(core.drain())
    return plan


class DispatcherStopped(FailedPrecondition):
    """The bus stopped before the message was handled; nothing was changed."""


@dataclass
class _Envelope:
    msg: m.Inbound
    reply: asyncio.Future[Order | None] | None


@dataclass
class _Call:
    fn: Callable[[], Any]
    reply: asyncio.Future[Any]


@dataclass
class _PlanReady:
    plan: Plan
    epoch: int
    solve_s: float


class AsyncBus:
    """One task owns the core; everything else talks to it through `submit`."""

    def __init__(
        self,
        core: FleetCore,
        solve: Solve,
        executor: Executor | None = None,
        tick_interval_s: float = 1.0,
        on_solved: Callable[[float], None] | None = None,
    ) -> None:
        self.core = core
        self.router = Router()
        self._solve = solve
        self._executor = executor
        self._tick_interval_s = tick_interval_s
        self._on_solved = on_solved
        self._queue: asyncio.Queue[_Envelope | _Call | _PlanReady] = asyncio.Queue()
        self._solving = False
        self._tasks: list[asyncio.Task[None]] = []

    async def submit(self, msg: m.Inbound) -> Order | None:
        """Hand a message to the core and wait for it to be handled; domain errors propagate."""
        reply: asyncio.Future[Order | None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Envelope(msg, reply))
        return await reply

    async def call(self, fn: Callable[[], T]) -> T:
        """Run the synchronous `fn()` on the core's own task, between two messages, and return
        its result (or raise its exception). `fn` may call `core.handle` directly (it is the
        single writer then, like the bus itself); what the core emitted meanwhile is routed and
        a re-plan it asks for is started, exactly as for a submitted message. For work that
        must see the core and what rides on it as one (the custody desk)."""
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Call(fn, reply))
        result: T = await reply
        return result

    def post(self, msg: m.Inbound) -> None:
        """Hand a message to the core without waiting (robot and controller reports)."""
        self._queue.put_nowait(_Envelope(msg, None))

    def start(self) -> None:
        """Start the core task and the ticker on the running loop."""
        self._tasks = [
            asyncio.create_task(self._run(), name="fleet-core"),
            asyncio.create_task(self._ticker(), name="fleet-ticker"),
        ]

    async def stop(self) -> None:
        """Stop the tasks; messages still queued are dropped (nothing was acknowledged)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        # Nobody will handle what is still queued: tell the callers waiting for it.
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if (
                isinstance(item, _Envelope | _Call)
                and item.reply is not None
                and not item.reply.done()
            ):
                item.reply.set_exception(DispatcherStopped("the dispatcher is shutting down"))

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self._tick_interval_s)
            self.post(m.Tick())

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                self._process(item)
            except Exception:
                # A bug in one message must not stop the dispatcher: log it and go on.
                log.exception("error while handling %s", type(item).__name__)

    def _process(self, item: _Envelope | _Call | _PlanReady) -> None:
        if isinstance(item, _PlanReady):
            self._solving = False
            self.core.apply_plan(item.plan, item.epoch)
            if self._on_solved is not None:
                self._on_solved(item.solve_s)
        elif isinstance(item, _Call):
            try:
                value = item.fn()
            except Exception as exc:  # the caller's error, not the bus's
                if not item.reply.done():
                    item.reply.set_exception(exc)
            else:
                if not item.reply.done():
                    item.reply.set_result(value)
        else:
            try:
                result = self.core.handle(item.msg)
            except Exception as exc:  # domain errors go back to the caller
                if item.reply is not None and not item.reply.done():
                    item.reply.set_exception(exc)
                else:
                    log.warning("rejected %s: %s", type(item.msg).__name__, exc)
            else:
                if item.reply is not None and not item.reply.done():
                    item.reply.set_result(result)
        self.router.route(self.core.drain())
        if self.core.replan_requested and not self._solving:
            self._start_solve()

    def _start_solve(self) -> None:
        snapshot, epoch = self.core.snapshot()
        problem = build_problem(snapshot, self.core.graph.travel_time)
        self._solving = True
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        future = loop.run_in_executor(self._executor, self._solve, problem)

        def done(f: asyncio.Future[Plan]) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            if exc is not None:
                log.error("solve failed: %s", exc)
                self._solving = False
                self.core.replan_requested = True
                return
            self._queue.put_nowait(_PlanReady(f.result(), epoch, time.perf_counter() - started))

        future.add_done_callback(done)
