"""The gRPC servicers: thin translators between the wire and the dispatcher core.

Commands (create, cancel, hellos) and robot reports go to the core through `AsyncBus.submit`
and wait for its verdict; door and lift reports go through `AsyncBus.post`. Reads (get, list, watch
snapshots) look at the core directly: the bus task runs on the same event loop, so between two
awaits the core is never half-way through a message.

Streams (`WatchOrders`, `WatchAlerts`, both `Connect`s) register a sink on the bus's router that
queues messages for the response stream; a separate reader task handles the request stream, so
reading and writing never wait for each other. The sinks run inside the bus task and never raise.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio

from fleet.api import convert
from fleet.api.errors import abort_for, grpc_errors, is_abort, status_for
from fleet.dispatch import messages as m
from fleet.dispatch.bus import AlertSink, AsyncBus, DeviceSink, OrderSink, RobotSink
from fleet.dispatch.core import FleetCore
from fleet.domain.errors import DomainError, InvalidArgument
from fleet.domain.order import Order, OrderState
from fleet.v1 import (
    infrastructure_pb2,
    infrastructure_pb2_grpc,
    operations_pb2,
    operations_pb2_grpc,
    orders_pb2,
    orders_pb2_grpc,
    robot_pb2,
    robot_pb2_grpc,
)

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Updates a watcher may have queued before it counts as stuck and its stream is ended.
WATCH_QUEUE_LIMIT = 10_000
_TOKEN_PREFIX = "o1:"
_TERMINAL_BATCH = 200

_T = TypeVar("_T")
Context = grpc.aio.ServicerContext[Any, Any]


# ---- per-stream outbound queues ----------------------------------------------------------------


@dataclass(frozen=True)
class _Close:
    """End the response stream with this status."""

    code: grpc.StatusCode
    details: str


class _End:
    """End the response stream normally."""


class _Outbox(Generic[_T]):
    """What a response stream still has to send, then how it ends."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[_T | _Close | _End] = asyncio.Queue()
        self._closed = False

    def __len__(self) -> int:
        return self._queue.qsize()

    def put(self, item: _T) -> None:
        """Queue a message, unless the stream is already ending."""
        if not self._closed:
            self._queue.put_nowait(item)

    def close(self, code: grpc.StatusCode, details: str) -> None:
        """End the stream with an error status after what is queued."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(_Close(code, details))

    def end(self) -> None:
        """End the stream normally after what is queued."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(_End())

    async def drain(self, context: Context) -> AsyncIterator[_T]:
        """Yield queued messages until the stream ends; abort the call for a `_Close`."""
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                return
            if isinstance(item, _Close):
                await context.abort(item.code, item.details)
            yield item


async def _first(requests: AsyncIterator[_T]) -> _T | None:
    """The first request of a stream, or None when it ended without one."""
    try:
        return await anext(requests)
    except StopAsyncIteration:
        return None


def _unregister(registry: dict[str, Any], key: str, sink: object) -> bool:
    """Remove `sink` from `registry[key]` if it is still the one there; True if it was."""
    if registry.get(key) is sink:
        del registry[key]
        return True
    return False


# ---- orders ------------------------------------------------------------------------------------


def encode_page_token(offset: int) -> str:
    """The opaque token for the page starting at `offset`."""
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{offset}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    """The offset in a token from `encode_page_token`; InvalidArgument for anything else."""
    if not token:
        return 0
    bad = InvalidArgument("page_token", "is not a token from a previous ListOrders response")
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    digits = text.removeprefix(_TOKEN_PREFIX)
    if digits == text or not digits.isascii() or not digits.isdigit():
        raise bad
    return int(digits)


def _newest_first(order: Order) -> tuple[float, str]:
    return order.created_at, order.id


class OrderServicer(orders_pb2_grpc.OrderServiceServicer):
    """OrderService: create, get, list, cancel and watch orders."""

    def __init__(self, bus: AsyncBus, core: FleetCore) -> None:
        self._bus = bus
        self._core = core

    @grpc_errors
    async def CreateOrder(
        self, request: orders_pb2.CreateOrderRequest, context: Context
    ) -> orders_pb2.Order:
        """Accept an order; it is stored before the answer."""
        order = await self._bus.submit(convert.create_order_from_pb(request))
        if order is None:  # pragma: no cover - the core returns the order it created
            raise RuntimeError("the core returned no order for CreateOrder")
        return convert.order_to_pb(order)

    @grpc_errors
    async def GetOrder(
        self, request: orders_pb2.GetOrderRequest, context: Context
    ) -> orders_pb2.Order:
        """One order, open or finished."""
        return convert.order_to_pb(self._core.get_order(request.order_id))

    @grpc_errors
    async def CancelOrder(
        self, request: orders_pb2.CancelOrderRequest, context: Context
    ) -> orders_pb2.Order:
        """Cancel an order that is not yet on board."""
        order = await self._bus.submit(m.CancelOrder(request.order_id, request.reason))
        if order is None:  # pragma: no cover - the core returns the cancelled order
            raise RuntimeError("the core returned no order for CancelOrder")
        return convert.order_to_pb(order)

    @grpc_errors
    async def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, context: Context
    ) -> orders_pb2.ListOrdersResponse:
        """Orders newest first: open ones from the core's memory, finished ones from the store."""
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(
                "page_size",
                f"must be 0..{MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE}), "
                f"got {request.page_size}",
            )
        size = request.page_size or DEFAULT_PAGE_SIZE
        offset = decode_page_token(request.page_token)
        states: set[OrderState] = set()
        for value in request.states:
            state = convert.STATE_FROM_PB.get(value)
            if state is None:
                raise InvalidArgument("states", f"unknown order state {value}")
            states.add(state)
        robot_id = request.robot_id
        if robot_id and not self._core.known_robot(robot_id):
            raise InvalidArgument("robot_id", f"unknown robot {robot_id!r}")
        wanted = offset + size + 1  # one more than the page, to know if another page follows
        rows = [
            order
            for order in self._core.orders.values()
            if not order.state.terminal
            and (not states or order.state in states)
            and (not robot_id or order.robot_id == robot_id)
        ]
        finished = [s for s in OrderState if s.terminal and (not states or s in states)]
        if finished:
            rows.extend(self._finished(finished, robot_id, wanted))
        rows.sort(key=_newest_first, reverse=True)
        page = rows[offset : offset + size]
        more = len(rows) > offset + size
        return orders_pb2.ListOrdersResponse(
            orders=[convert.order_to_pb(order) for order in page],
            next_page_token=encode_page_token(offset + size) if more else "",
        )

    def _finished(self, states: list[OrderState], robot_id: str, wanted: int) -> list[Order]:
        """The newest `wanted` terminal orders in `states` (held by `robot_id` if set)."""
        out: list[Order] = []
        batch = max(wanted, _TERMINAL_BATCH)
        offset = 0
        while len(out) < wanted:
            rows = self._core.store.list_orders(states, limit=batch, offset=offset)
            out.extend(
                o for o in rows if o.state.terminal and (not robot_id or o.robot_id == robot_id)
            )
            if len(rows) < batch:
                break
            offset += batch
        return out[:wanted]

    async def WatchOrders(
        self, request: orders_pb2.WatchOrdersRequest, context: Context
    ) -> AsyncIterator[orders_pb2.OrderUpdate]:
        """Stream order updates as the core emits them, optionally the current state first."""
        ids = set(request.order_ids)
        outbox: _Outbox[Order] = _Outbox()

        def watch(order: Order) -> None:
            if ids and order.id not in ids:
                return
            if len(outbox) >= WATCH_QUEUE_LIMIT:
                outbox.close(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "the watcher fell behind; watch again with include_current",
                )
                _remove_watcher(self._bus.router.watchers, watch)
                return
            outbox.put(order)

        sink: OrderSink = watch
        # Register and take the snapshot with no await in between: nothing is missed or doubled.
        self._bus.router.watchers.append(sink)
        try:
            current: list[Order] = []
            if request.include_current:
                current = sorted(
                    (
                        o
                        for o in self._core.orders.values()
                        if not o.state.terminal and (not ids or o.id in ids)
                    ),
                    key=_newest_first,
                )
            snapshot = [orders_pb2.OrderUpdate(order=convert.order_to_pb(o)) for o in current]
            for update in snapshot:
                yield update
            async for order in outbox.drain(context):
                yield orders_pb2.OrderUpdate(order=convert.order_to_pb(order))
        except Exception as exc:
            if is_abort(exc):
                raise
            await abort_for(context, exc)
        finally:
            _remove_watcher(self._bus.router.watchers, sink)


def _remove_watcher(watchers: list[Any], sink: object) -> None:
    for i, registered in enumerate(watchers):
        if registered is sink:
            del watchers[i]
            return


# ---- robots ------------------------------------------------------------------------------------


class RobotGatewayServicer(robot_pb2_grpc.RobotGatewayServicer):
    """RobotGateway.Connect: one stream per robot, hello first."""

    def __init__(self, bus: AsyncBus, core: FleetCore) -> None:
        self._bus = bus
        self._core = core
        self._streams: dict[str, _Outbox[robot_pb2.DispatcherMessage]] = {}

    async def Connect(
        self, request_iterator: AsyncIterator[robot_pb2.RobotMessage], context: Context
    ) -> AsyncIterator[robot_pb2.DispatcherMessage]:
        """Accept the robot's hello, then relay reports in and steps out until either side
        ends the stream; the robot is then marked disconnected."""
        requests = aiter(request_iterator)
        first = await _first(requests)
        if first is None or first.WhichOneof("msg") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must be hello")
        try:
            hello = convert.hello_from_pb(first.hello)
        except DomainError as exc:
            await abort_for(context, exc)
        robot_id = hello.robot_id
        building = self._core.building
        outbox: _Outbox[robot_pb2.DispatcherMessage] = _Outbox()

        def deliver(out: m.WelcomeRobot | m.SendStep | m.SendInstantAction) -> None:
            try:
                outbox.put(convert.dispatcher_message_to_pb(out, building))
            except Exception:  # never raise into the bus task
                log.exception("cannot send %s to robot %s", type(out).__name__, robot_id)
                outbox.close(grpc.StatusCode.INTERNAL, "internal error")

        sink: RobotSink = deliver
        robots = self._bus.router.robots
        previous = robots.get(robot_id)
        # Registered before the hello is handled: the Welcome is routed right after it.
        robots[robot_id] = sink
        try:
            await self._bus.submit(hello)
        except BaseException as exc:
            mine = robots.get(robot_id) is sink
            if mine:
                if previous is not None:
                    robots[robot_id] = previous
                else:
                    del robots[robot_id]
            if isinstance(exc, Exception):  # the core refused the hello
                await abort_for(context, exc)
            if mine and previous is None:
                # Cancelled while the hello waits in the queue: the core will still accept it,
                # so tell it right away that this stream is gone.
                self._bus.post(m.RobotDisconnected(robot_id))
            raise
        replaced = self._streams.get(robot_id)
        self._streams[robot_id] = outbox
        if replaced is not None:
            replaced.close(grpc.StatusCode.ABORTED, f"robot {robot_id} connected again")
        compartments = hello.capabilities.compartments
        reader = asyncio.create_task(self._read(requests, robot_id, outbox, compartments))
        try:
            async for message in outbox.drain(context):
                yield message
        finally:
            reader.cancel()
            if self._streams.get(robot_id) is outbox:
                del self._streams[robot_id]
            if _unregister(robots, robot_id, sink):
                self._bus.post(m.RobotDisconnected(robot_id))

    async def _read(
        self,
        requests: AsyncIterator[robot_pb2.RobotMessage],
        robot_id: str,
        outbox: _Outbox[robot_pb2.DispatcherMessage],
        compartments: int | None = None,
    ) -> None:
        """Translate the robot's messages and hand them to the core one at a time.

        `compartments`: how many its hello announced (None: no compartment rule); a state
        report naming a compartment below 1 or above that count (or one twice, or one open and
        locked at once) is bad input like any other: the stream ends with INVALID_ARGUMENT
        naming the field.

        A message that does not translate ends the stream with INVALID_ARGUMENT. Each message
        waits for the core's verdict (`submit`, not `post`): when the core refuses one, the
        stream ends with that status. That matters for a robot the core marked offline (its
        reports stopped for longer than the offline timeout) while its stream stayed open: its
        reports are refused with FAILED_PRECONDITION, so it must reconnect and say hello again
        instead of reporting into the void forever.
        """
        try:
            async for message in requests:
                inbound = convert.robot_message_from_pb(message, robot_id, compartments)
                if isinstance(inbound, m.RobotHello):
                    if inbound.robot_id != robot_id:
                        raise InvalidArgument(
                            "hello.robot_id", f"{inbound.robot_id!r} on the stream of {robot_id!r}"
                        )
                    compartments = inbound.capabilities.compartments
                await self._bus.submit(inbound)
        except asyncio.CancelledError:
            raise
        except DomainError as exc:
            # The robot sees the status; the operator sees why its stream was ended.
            log.warning("robot %s: message refused, stream ended: %s", robot_id, exc)
            outbox.close(*status_for(exc))
        except Exception as exc:
            if not isinstance(exc, grpc.RpcError):
                log.exception("robot %s: reading its stream failed", robot_id)
            outbox.close(*status_for(exc))
        else:
            outbox.end()


# ---- doors and lifts ---------------------------------------------------------------------------


class InfrastructureGatewayServicer(infrastructure_pb2_grpc.InfrastructureGatewayServicer):
    """InfrastructureGateway.Connect: one stream per door/lift controller, hello first."""

    def __init__(self, bus: AsyncBus, core: FleetCore) -> None:
        self._bus = bus
        self._core = core

    async def Connect(
        self,
        request_iterator: AsyncIterator[infrastructure_pb2.InfrastructureMessage],
        context: Context,
    ) -> AsyncIterator[infrastructure_pb2.InfrastructureCommand]:
        """Accept the controller's hello, then relay door/lift states in and requests out."""
        requests = aiter(request_iterator)
        first = await _first(requests)
        if first is None or first.WhichOneof("msg") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must be hello")
        try:
            hello = convert.infrastructure_message_from_pb(first)
            await self._bus.submit(hello)
        except Exception as exc:
            await abort_for(context, exc)
        assert isinstance(hello, m.ControllerHello)
        outbox: _Outbox[infrastructure_pb2.InfrastructureCommand] = _Outbox()

        def deliver(out: m.DoorCommand | m.LiftCommand) -> None:
            try:
                outbox.put(convert.infrastructure_command_to_pb(out))
            except Exception:  # never raise into the bus task
                log.exception("cannot send %s to controller %s", out, hello.controller_id)
                outbox.close(grpc.StatusCode.INTERNAL, "internal error")

        sink: DeviceSink = deliver
        devices = self._bus.router.devices
        names = list(dict.fromkeys((*hello.door_ids, *hello.lift_ids)))
        for name in names:
            devices[name] = sink
        reader = asyncio.create_task(self._read(requests, hello, outbox))
        try:
            async for command in outbox.drain(context):
                yield command
        finally:
            reader.cancel()
            for name in names:
                _unregister(devices, name, sink)

    async def _read(
        self,
        requests: AsyncIterator[infrastructure_pb2.InfrastructureMessage],
        hello: m.ControllerHello,
        outbox: _Outbox[infrastructure_pb2.InfrastructureCommand],
    ) -> None:
        """Translate and post door and lift states, acks and fire alarms; a bad message ends
        the stream."""
        doors, lifts = set(hello.door_ids), set(hello.lift_ids)
        try:
            async for message in requests:
                inbound = convert.infrastructure_message_from_pb(message, hello.controller_id)
                _check_device(inbound, doors, lifts)
                self._bus.post(inbound)
        except asyncio.CancelledError:
            raise
        except DomainError as exc:
            outbox.close(*status_for(exc))
        except Exception as exc:
            if not isinstance(exc, grpc.RpcError):
                log.exception("controller %s: reading its stream failed", hello.controller_id)
            outbox.close(*status_for(exc))
        else:
            outbox.end()


def _check_device(inbound: m.Inbound, doors: Iterable[str], lifts: Iterable[str]) -> None:
    """A controller reports (and acks requests for) only the devices its hello named, and says
    hello once. A fire alarm names no device: any controller may relay it."""
    if isinstance(inbound, m.ControllerHello):
        raise InvalidArgument("hello", "only the first message of a stream may be a hello")
    if isinstance(inbound, m.DoorReport) and inbound.door_id not in doors:
        raise InvalidArgument(
            "door_state.door_id", f"door {inbound.door_id!r} was not named in the hello"
        )
    if isinstance(inbound, m.LiftReport) and inbound.lift_id not in lifts:
        raise InvalidArgument(
            "lift_state.lift_id", f"lift {inbound.lift_id!r} was not named in the hello"
        )
    if isinstance(inbound, m.RequestAck) and not (
        inbound.device_id in doors or inbound.device_id in lifts
    ):
        raise InvalidArgument(
            "ack.device_id", f"device {inbound.device_id!r} was not named in the hello"
        )


# ---- operations centre -------------------------------------------------------------------------

# What an operator's control did, for the response; {target} is the target as given.
_DONE = {
    m.OperatorAction.PAUSE_ROBOT: "robot {target} paused",
    m.OperatorAction.RESUME_ROBOT: "robot {target} resumed",
    m.OperatorAction.CLOSE_LANE: "lane {target} closed",
    m.OperatorAction.REOPEN_LANE: "lane {target} reopened",
    m.OperatorAction.CLOSE_DOOR: "door {target} closed to robots",
    m.OperatorAction.REOPEN_DOOR: "door {target} reopened to robots",
    m.OperatorAction.CLOSE_LIFT: "lift {target} closed to robots",
    m.OperatorAction.REOPEN_LIFT: "lift {target} reopened to robots",
}
_DONE_ALL = {
    m.OperatorAction.PAUSE_ROBOT: "every robot paused",
    m.OperatorAction.RESUME_ROBOT: "every robot resumed",
}


class OperationsServicer(operations_pb2_grpc.OperationsServiceServicer):
    """OperationsService: operator controls go to the core as `OperatorCommand`s; alerts are
    read from the core (`FleetCore.alerts`) and watched through the router."""

    def __init__(self, bus: AsyncBus, core: FleetCore) -> None:
        self._bus = bus
        self._core = core

    async def _act(
        self, action: m.OperatorAction, request: convert.OperatorRequest
    ) -> operations_pb2.OperatorActionResponse:
        cmd = convert.operator_command_from_pb(action, request)
        try:
            await self._bus.submit(cmd)
        except InvalidArgument as exc:
            # The core names the command's `target`; the caller sent it as robot_id, lane, ...
            if exc.field == "target":
                raise InvalidArgument(convert.OPERATOR_TARGET_FIELD[action], exc.reason) from None
            raise
        done = _DONE_ALL[action] if not cmd.target else _DONE[action].format(target=cmd.target)
        return operations_pb2.OperatorActionResponse(message=done)

    @grpc_errors
    async def PauseRobot(
        self, request: operations_pb2.OperatorRobotRequest, context: Context
    ) -> operations_pb2.OperatorActionResponse:
        """Pause one robot, or every robot for an empty robot_id."""
        return await self._act(m.OperatorAction.PAUSE_ROBOT, request)

    @grpc_errors
    async def ResumeRobot(
        self, request: operations_pb2.OperatorRobotRequest, context: Context
    ) -> operations_pb2.OperatorActionResponse:
        """Resume one robot, or every robot for an empty robot_id."""
        return await self._act(m.OperatorAction.RESUME_ROBOT, request)

    @grpc_errors
    async def CloseLane(
        self, request: operations_pb2.OperatorLaneRequest, context: Context
    ) -> operations_pb2.OperatorActionResponse:
        """Close a lane to robot traffic."""
        return await self._act(m.OperatorAction.CLOSE_LANE, request)

    @grpc_errors
    async def ReopenLane(
        self, request: operations_pb2.OperatorLaneRequest, context: Context
    ) -> operations_pb2.OperatorActionResponse:
        """Reopen a closed lane."""
        return await self._act(m.OperatorAction.REOPEN_LANE, request)

    @grpc_errors
    async def CloseDoor(
        self, request: operations_pb2.OperatorDoorRequest, context: Context
    ) -> operations_pb2.OperatorActionResponse:
        """Take a door out of robot use."""
        return await self._act(m.OperatorAction.CLOSE_DOOR, request)

    @grpc_errors
    async def ReopenDoor(
        self, request: operations_pb2.OperatorDoorRequest, context: Context
    ) -> operations_pb2.OperatorActionResponse:
        """Return a door to robot use."""
        return await self._act(m.OperatorAction.REOPEN_DOOR, request)

    @grpc_errors
    async def CloseLift(
        self, request: operations_pb2.OperatorLiftRequest, context: Context
    ) -> operations_pb2.OperatorActionResponse:
        """Take a lift out of robot use."""
        return await self._act(m.OperatorAction.CLOSE_LIFT, request)

    @grpc_errors
    async def ReopenLift(
        self, request: operations_pb2.OperatorLiftRequest, context: Context
    ) -> operations_pb2.OperatorActionResponse:
        """Return a lift to robot use."""
        return await self._act(m.OperatorAction.REOPEN_LIFT, request)

    @grpc_errors
    async def ListAlerts(
        self, request: operations_pb2.ListAlertsRequest, context: Context
    ) -> operations_pb2.ListAlertsResponse:
        """The core's alerts, oldest first; only the active ones when asked."""
        alerts = self._core.active_alerts() if request.active_only else list(self._core.alerts)
        return operations_pb2.ListAlertsResponse(alerts=[convert.alert_to_pb(a) for a in alerts])

    async def WatchAlerts(
        self, request: operations_pb2.WatchAlertsRequest, context: Context
    ) -> AsyncIterator[operations_pb2.Alert]:
        """Stream alerts as the core raises and clears them, optionally the active ones first."""
        outbox: _Outbox[m.Alert] = _Outbox()

        def watch(alert: m.Alert) -> None:
            if len(outbox) >= WATCH_QUEUE_LIMIT:
                outbox.close(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "the watcher fell behind; watch again with include_active",
                )
                _remove_watcher(self._bus.router.alert_watchers, watch)
                return
            outbox.put(alert)

        sink: AlertSink = watch
        # Register and take the snapshot with no await in between: nothing is missed or doubled.
        self._bus.router.alert_watchers.append(sink)
        try:
            current = self._core.active_alerts() if request.include_active else []
            snapshot = [convert.alert_to_pb(a) for a in current]
            for alert_pb in snapshot:
                yield alert_pb
            async for alert in outbox.drain(context):
                yield convert.alert_to_pb(alert)
        except Exception as exc:
            if is_abort(exc):
                raise
            await abort_for(context, exc)
        finally:
            _remove_watcher(self._bus.router.alert_watchers, sink)
