"""Prometheus metrics of one service instance, and the `/metrics` HTTP endpoint.

Each `FleetMetrics` has its own `CollectorRegistry` (never the process-global one), so several
services can run in one process (tests, the demo). The edges feed it:

- `on_order_changed` is registered as an order watcher on the bus's router: it counts created
  orders and observes the dispatch latency (creation to first ASSIGNED);
- `observe_solve` is the bus's `on_solved` callback;
- `refresh(core)` recomputes the gauges from the core's state (cheap; `run_refresher` calls it
  once a second on the event loop, between two messages the core handles);
- `serve_metrics` serves the registry on `/metrics` from the event loop itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter as _Tally
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from fleet.domain.order import Order, OrderState
from fleet.domain.robot import RobotMode

if TYPE_CHECKING:
    from fleet.dispatch.core import FleetCore

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
_SOLVE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
_REQUEST_TIMEOUT_S = 10.0


class FleetMetrics:
    """The metrics of one service instance, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.orders = Gauge(
            "fleet_orders",
            "Orders the dispatcher holds in memory, by state (terminal states: since start-up)",
            ["state"],
            registry=self.registry,
        )
        self.robots = Gauge(
            "fleet_robots",
            "Robots known to the dispatcher, by mode",
            ["mode"],
            registry=self.registry,
        )
        self.dispatch_latency = Histogram(
            "fleet_dispatch_latency_seconds",
            "Time from an order's creation to its first assignment to a robot",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.solve_duration = Histogram(
            "fleet_solve_duration_seconds",
            "Wall time of one optimizer run, from snapshot to plan",
            buckets=_SOLVE_BUCKETS,
            registry=self.registry,
        )
        self.orders_created = Counter(
            "fleet_orders_created", "Orders accepted", registry=self.registry
        )
        for state in OrderState:
            self.orders.labels(state=state.value).set(0)
        for mode in RobotMode:
            self.robots.labels(mode=mode.value).set(0)
        self._open: set[str] = set()  # open orders seen, to spot new ones
        self._assigned: set[str] = set()  # open orders whose first assignment was observed

    def on_order_changed(self, order: Order) -> None:
        """An order watcher: count new orders, observe the latency of first assignments."""
        if order.state.terminal:
            self._open.discard(order.id)
            self._assigned.discard(order.id)
            return
        if order.id not in self._open:
            self._open.add(order.id)
            if len(order.history) <= 1:
                self.orders_created.inc()
        if order.state is OrderState.ASSIGNED and order.id not in self._assigned:
            self._assigned.add(order.id)
            assigned = [e for e in order.history if e.state is OrderState.ASSIGNED]
            if len(assigned) == 1:  # the first assignment ever, not one after a re-plan
                self.dispatch_latency.observe(max(0.0, assigned[0].at - order.created_at))

    def observe_solve(self, seconds: float) -> None:
        """The bus's `on_solved` callback."""
        self.solve_duration.observe(seconds)

    def refresh(self, core: FleetCore) -> None:
        """Recompute the gauges from the core's state; call it on the core's event loop."""
        states = _Tally(order.state for order in core.orders.values())
        for state in OrderState:
            self.orders.labels(state=state.value).set(states.get(state, 0))
        modes = _Tally(robot.mode for robot in core.robot_view())
        for mode in RobotMode:
            self.robots.labels(mode=mode.value).set(modes.get(mode, 0))


async def run_refresher(metrics: FleetMetrics, core: FleetCore, interval_s: float = 1.0) -> None:
    """Refresh the gauges every `interval_s` until cancelled."""
    while True:
        try:
            metrics.refresh(core)
        except Exception:  # metrics must never take the service down
            log.exception("metrics refresh failed")
        await asyncio.sleep(interval_s)


class MetricsEndpoint:
    """A running `/metrics` HTTP endpoint on the event loop (no threads).

    A deliberately tiny HTTP/1.0-style server: it answers `GET /metrics` (and `GET /`) with the
    registry in the Prometheus text format (OpenMetrics when the scraper asks for it), anything
    else with 404 or 405, and closes each connection after the answer.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the actual one when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the metrics endpoint is not running")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        """Listen on `host:port` (port 0: any free port)."""
        self._server = await asyncio.start_server(self._serve, host, port)

    async def close(self) -> None:
        """Stop listening and release the port."""
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, content_type, body = await asyncio.wait_for(
                self._answer(reader), _REQUEST_TIMEOUT_S
            )
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("ascii") + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # a scraper that went away or sent garbage: nothing to answer
        except Exception:
            log.exception("metrics request failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
        request = (await reader.readline()).decode("latin-1").split()
        accept = ""
        while True:  # headers, up to the blank line
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        if len(request) < 2:
            return "400 Bad Request", "text/plain", b"bad request\n"
        method, target = request[0], request[1].split("?", 1)[0]
        if target not in ("/metrics", "/"):
            return "404 Not Found", "text/plain", b"not found; try /metrics\n"
        if method != "GET":
            return "405 Method Not Allowed", "text/plain", b"use GET\n"
        encoder, content_type = choose_encoder(accept)
        return "200 OK", content_type, encoder(self._registry)


async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> MetricsEndpoint:
    """Serve `registry` on `http://host:port/metrics` (port 0: any free port) until closed."""
    endpoint = MetricsEndpoint(registry)
    await endpoint.start(host, port)
    return endpoint
