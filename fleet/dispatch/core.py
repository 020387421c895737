"""The dispatcher core: the single writer of fleet state.

Every change to robots, orders, reservations, doors and lifts happens here, one message at a
time, through `handle`. Handlers queue outbound messages; the bus drains them with `drain` and
hands them to the edges. Re-planning is split so the solve can run elsewhere: `snapshot()`
captures what the optimizer needs, `apply_plan()` installs a result if the fleet has not moved
on since the snapshot.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.building.graph import BuildingGraph, LaneLeg, NoRoute
from fleet.building.model import Building, DoorKind, Lane, StationKind
from fleet.clock import Clock
from fleet.dispatch import messages as m
from fleet.dispatch.ports import Assignment, FleetStore
from fleet.domain.cargo import CargoClass, flow_of
from fleet.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from fleet.domain.order import Order, OrderEvent, OrderState
from fleet.domain.priority import Priority
from fleet.domain.robot import Robot, RobotCapabilities, RobotMode
from fleet.planning import OnboardTask, Plan, Snapshot, Stop, StopKind, Task, VehicleState
from fleet.planning.deferral import deferred_pickup
from fleet.planning.insertion import VehicleRoute, insert_task, without_orders
from fleet.planning.plan import assign_compartments
from fleet.planning.problem import grams
from fleet.traffic.control import TrafficControl
from fleet.traffic.lift_sessions import IllegalSessionTransition, LiftSessions, SessionState
from fleet.traffic.lift_waits import LiftWaitEstimator
from fleet.traffic.resources import TrafficResources, door_resource, lift_resource
from fleet.traffic.steps import Step, StepKind, steps_for_route

# A robot whose reported pause state differs from the dispatcher's is told again this often.
PAUSE_RESEND_S = 10.0


@dataclass(frozen=True)
class CoreConfig:
    """Tunables of the dispatcher core."""

    offline_timeout_s: float = 30.0
    state_interval_s: float = 2.0
    max_quantity: int = 100
    # Orders on board a robot that never reconnects after a restart fail after this long.
    reconnect_grace_s: float = 120.0
    # Finished orders leave memory this long after they finish (the store keeps them; reads
    # fall back to it). None keeps them all, as the digital twin does for its KPI report.
    finished_retention_s: float | None = 3600.0
    # A new order gets a robot and an ETA at once from a cheap insertion into the current plan
    # (the full re-optimization follows). Off, a new order waits PENDING for the next plan.
    insert_on_create: bool = True
    # Battery, as the planner models it (robots do not announce these; the defaults match a
    # 10 km robot at 1 m/s charging from empty to full in about half an hour). A route never
    # takes a robot below the reserve: the planner puts a charging stop into it instead.
    # A drain of 0 switches the battery model off.
    battery_reserve_pct: float = 20.0
    battery_drain_pct_per_s: float = 0.01
    battery_charge_pct_per_s: float = 0.05
    # An idle robot standing at a charger charges while it waits for work (any work ends it).
    top_up_below_pct: float = 95.0
    # Late commitment (`fleet.planning.deferral`): a ROUTINE order is not picked up earlier
    # than this long (plus its direct trip) before it is needed, so that orders arriving
    # meanwhile can share the trip; its robot stays free until it must leave. None: off.
    pickup_defer_margin_s: float | None = None
    # A deferred order is planned (given a robot) only this long before its earliest pickup;
    # until then it waits PENDING with the ETA the deferral implies. Keeps solves small.
    defer_lookahead_s: float = 40 * 60.0
    # The speed the deferral assumes for the direct trip (slower than any robot: on the safe
    # side).
    defer_speed_m_s: float = 0.7
    # A lift controller frees a car whose session sends nothing for this long; the core renews
    # every live session when half of it is used. 0: sessions without a lease.
    lift_lease_s: float = 120.0
    # A robot drives into a car only on a car report at most this old ("a stale lift state is
    # never trusted").
    lift_state_max_age_s: float = 10.0


@dataclass
class _Wait:
    """What a robot's next step is waiting for."""

    # "door_queue", "door_open", "lift_queue", "lift_at": a door or a car; "traffic": exclusive
    # lanes and nodes ahead; "blocked": no route until a closure lifts (`resource` says why).
    kind: str
    resource: str
    level: str = ""
    session_id: str = ""
    since: float = 0.0


@dataclass
class _RobotRun:
    """A robot as the core runs it: its domain record plus what it is executing."""

    robot: Robot
    connected: bool = True
    current_stop: Stop | None = None
    stop_departure: float = 0.0  # estimate of when the current stop is done
    steps: deque[Step] = field(default_factory=deque)
    in_flight: tuple[int, Step] | None = None
    waiting: _Wait | None = None
    future: list[Stop] = field(default_factory=list)
    step_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    sessions: dict[str, str] = field(default_factory=dict)  # resource -> session id held
    in_lift: str = ""  # the car the robot is in (or entering), "" when on the floor
    lift_called_at: float | None = None  # when its current lift call began (for wait learning)
    ride_started_at: float | None = None  # when its car was sent to the destination level
    charge_from: float = 0.0  # when its current charging stop is expected to begin
    topping_up: bool = False  # charging while idle: ends as soon as it is given work
    charged_at: float | None = None  # when its last charging step ended
    # `future` may still hold orders cancelled, failed or given to another robot since it was
    # planned; the next insertion filters it once (rather than at every insertion).
    stale: bool = True
    battery_at: float = 0.0  # when it last reported its battery
    paused: bool = False  # by an operator: it starts nothing until resumed
    pause_told_at: float = -math.inf  # when it was last told to match `paused` (see _robot_state)


@dataclass
class _LiftRun:
    level: str
    door: m.LiftDoorState = m.LiftDoorState.CLOSED
    mode: m.LiftMode = m.LiftMode.NORMAL
    session_id: str = ""
    reported_at: float = -math.inf
    fault: str = ""


@dataclass
class _DoorRun:
    mode: m.DoorMode = m.DoorMode.CLOSED
    session_id: str = ""
    fault: str = ""


@dataclass
class _Closures:
    """Why each lane, door, lift and node is closed now (one reason per source)."""

    operator: dict[str, str] = field(default_factory=dict)  # "lane:X"/"door:X"/"lift:X" -> why
    faults: dict[str, str] = field(default_factory=dict)  # "door:X"/"lift:X" from controllers
    # "node:N" / "lane:L" -> the dead robot standing on it (offline or in fault)
    blocked: dict[str, str] = field(default_factory=dict)
    fire_alarm: str = ""  # non-empty while the building's fire alarm is on

    def of(self, kind: str) -> set[str]:
        """Names of the closed things of `kind` ("lane", "door", "lift", "node")."""
        return {
            key.partition(":")[2]
            for source in (self.operator, self.faults, self.blocked)
            for key in source
            if key.startswith(kind + ":")
        }


_WAIT_KINDS = ("door", "lift", "traffic", "blocked")


ALERT_HISTORY = 10_000
"""Alerts kept in `FleetCore.alerts` (raised and cleared); active ones are never dropped."""

_PRIORITY_ORDER = {Priority.STAT: 0, Priority.URGENT: 1, Priority.ROUTINE: 2}


class FleetCore:
    """Owns robots, orders, reservations, doors and lifts; changes them one message at a time."""

    def __init__(
        self,
        building: Building,
        graph: BuildingGraph,
        store: FleetStore,
        clock: Clock,
        config: CoreConfig | None = None,
    ) -> None:
        self.building = building
        self.graph = graph
        self.store = store
        self.clock = clock
        self.config = config or CoreConfig()
        self.orders: dict[str, Order] = {}
        self.robots: dict[str, _RobotRun] = {}
        self.lifts = {
            name: _LiftRun(level=lift.initial_level or lift.levels[0])
            for name, lift in building.lifts.items()
        }
        self.doors = {name: _DoorRun() for name in building.doors}
        self.resources = TrafficResources(building)
        self._open_graph = BuildingGraph(building)  # no closures: what the building allows
        # Door passages, lift cars (one session per car: a car carries one robot at a time
        # until car sharing exists), exclusive lanes, zones and nodes: one book, so a wait for
        # a car and a wait for a lobby show up in the same wait-for graph.
        self.traffic = TrafficControl(self.resources.exclusive_capacities())
        self.lift_sessions = LiftSessions()
        self.closures = _Closures()
        self.alerts: list[m.Alert] = []
        self._active_alerts: dict[tuple[str, str], m.Alert] = {}
        # Seconds robots spent waiting, per kind ("door", "lift", "traffic", "blocked"), and
        # every observed lift wait (lift, seconds): the twin's KPI report reads them.
        self.wait_s: dict[str, float] = dict.fromkeys(_WAIT_KINDS, 0.0)
        self.lift_wait_log: list[tuple[str, float]] = []
        self.deadlocks_resolved = 0
        # Deadlocked cycles no robot could back out of (key -> since), and the longest such.
        self._stuck: dict[str, float] = {}
        # Custody: robot -> compartment index -> the delivered custody order whose return leg
        # will ride in it (hospital-domain.md: the same compartment both ways). No other
        # custody case is loaded into it meanwhile.
        self.custody_holds: dict[str, dict[int, str]] = {}
        # Custody orders whose compartment the dispatcher opened for an authenticated person.
        self._opened: set[str] = set()
        self.longest_deadlock_s = 0.0
        self._resolving = False
        self.session_errors: list[str] = []  # lift-session bookkeeping that went wrong
        self._lanes: dict[tuple[str, str], Lane] = {}
        for lane in building.lanes:
            self._lanes[(lane.start, lane.end)] = lane
            if lane.bidirectional:
                self._lanes[(lane.end, lane.start)] = lane
        # Observed lift waits replace the map's nominal ones in the travel times we plan with.
        self.lift_waits = LiftWaitEstimator.for_building(building)
        # ... and observed rides (seconds beyond the map's door and travel times, 0 at first).
        self.lift_ride_excess = LiftWaitEstimator(dict.fromkeys(building.lifts, 0.0))
        self.step_log: list[m.StepRecord] = []
        self.plan_epoch = 0  # moves when a robot commits to a new stop
        self.plan_version = 0  # counts applied plans
        self.replan_requested = False
        self._held: set[str] = set()  # open orders left out of the last snapshot: station closed
        self._earliest: dict[str, float | None] = {}  # order id -> deferred pickup (see _deferred)
        # (node, flow, speed) -> travel time to the nearest charger, for the graph's version.
        self._to_charger: dict[tuple[str, str, float], float] = {}
        self._to_charger_version = -1
        self._started_at = clock.now()
        self._grace_over = False
        self._outbox: list[m.Outbound] = []
        self._dirty: dict[str, Order] = {}
        self._sessions = itertools.count(1)
        self._action_ids = itertools.count(1)
        self._chargers = tuple(
            sorted(s.node for s in building.stations.values() if s.kind is StationKind.CHARGER)
        )
        # Session ids stay unique across restarts, so a controller never mistakes a new
        # dispatcher's request for a repeat of an old one.
        self._boot = f"{int(clock.now()):x}"
        known = store.load_robots()
        self._known_robots = {r.id for r in known}
        # What every robot ever seen can carry (weight, compartments): an order too heavy for
        # all of them is refused at once rather than left pending forever.
        self._capabilities: dict[str, RobotCapabilities] = {r.id: r.capabilities for r in known}
        self._next_order = store.max_order_number() + 1
        self._speed_limits = {
            (lane.start, lane.end): lane.speed_limit_m_s for lane in building.lanes
        } | {(lane.end, lane.start): lane.speed_limit_m_s for lane in building.lanes}
        self._recover()

    # ---- start-up -----------------------------------------------------------------------

    def _recover(self) -> None:
        """Rebuild state from the store: every accepted order is still there after a restart."""
        now = self.clock.now()
        for order in self.store.load_open_orders():
            self.orders[order.id] = order
            if order.state is OrderState.ASSIGNED:
                # Plans do not survive a restart; the order waits for the next plan.
                order.move_to(OrderState.PENDING, now, "dispatcher restarted; re-planning")
                self._mark(order)
        if self.orders:
            self.replan_requested = True
        self._flush()

    # ---- the one entry point -------------------------------------------------------------

    def handle(self, msg: m.Inbound) -> Order | None:
        """Apply one command or event. Returns the order for order commands."""
        try:
            result = self._dispatch(msg)
        finally:
            self._flush()
        return result

    def drain(self) -> list[m.Outbound]:
        """Take the messages queued for the edges, in order."""
        out, self._outbox = self._outbox, []
        return out

    def _dispatch(self, msg: m.Inbound) -> Order | None:
        if isinstance(msg, m.CreateOrder):
            return self._create_order(msg)
        if isinstance(msg, m.CancelOrder):
            return self._cancel_order(msg)
        if isinstance(msg, m.RedirectOrder):
            return self._redirect_order(msg)
        if isinstance(msg, m.SealCompartment):
            self._seal_compartment(msg)
        elif isinstance(msg, m.OpenCompartment):
            self._open_compartment(msg)
        elif isinstance(msg, m.RobotHello):
            self._robot_hello(msg)
        elif isinstance(msg, m.RobotStateReport):
            self._robot_state(msg)
        elif isinstance(msg, m.StepReport):
            self._step_report(msg)
        elif isinstance(msg, m.RobotDisconnected):
            run = self.robots.get(msg.robot_id)
            if run is not None and run.connected:
                self._go_offline(run, "stream closed")
        elif isinstance(msg, m.DoorReport):
            self._door_report(msg)
        elif isinstance(msg, m.LiftReport):
            self._lift_report(msg)
        elif isinstance(msg, m.ControllerHello):
            self._controller_hello(msg)
        elif isinstance(msg, m.FireAlarm):
            self._fire_alarm(msg)
        elif isinstance(msg, m.RequestAck):
            self._request_ack(msg)
        elif isinstance(msg, m.OperatorCommand):
            self._operator(msg)
        elif isinstance(msg, m.RaiseAlert):
            for name in ("code", "subject", "message"):
                if not getattr(msg, name).strip():
                    raise InvalidArgument(name, "is required")
            self._alert(msg.code, msg.severity, msg.subject, msg.message)
        elif isinstance(msg, m.Tick):
            self._tick()
        return None

    # ---- orders --------------------------------------------------------------------------

    def validate_order(self, cmd: m.CreateOrder) -> None:
        """Raise InvalidArgument naming the first bad field of `cmd`."""
        stations = self.building.stations
        if not cmd.pickup_station:
            raise InvalidArgument("pickup_station", "is required")
        if cmd.pickup_station not in stations:
            raise InvalidArgument("pickup_station", f"unknown station {cmd.pickup_station!r}")
        if not cmd.dropoff_station:
            raise InvalidArgument("dropoff_station", "is required")
        if cmd.dropoff_station not in stations:
            raise InvalidArgument("dropoff_station", f"unknown station {cmd.dropoff_station!r}")
        if cmd.pickup_station == cmd.dropoff_station:
            raise InvalidArgument("dropoff_station", "must differ from pickup_station")
        if cmd.cargo_class is None:
            raise InvalidArgument("cargo_class", "is required")
        if cmd.quantity < 1:
            raise InvalidArgument("quantity", f"must be at least 1, got {cmd.quantity}")
        if cmd.quantity > self.config.max_quantity:
            raise InvalidArgument(
                "quantity", f"must be at most {self.config.max_quantity}, got {cmd.quantity}"
            )
        if cmd.needed_by is not None and cmd.needed_by < self.clock.now():
            raise InvalidArgument("needed_by", "is in the past")
        flow = flow_of(cmd.cargo_class)
        a = self.building.station_node(cmd.pickup_station)
        b = self.building.station_node(cmd.dropoff_station)
        # The building's own ways, not today's closures: an order waits for a closed lift or
        # door to reopen; it is refused only when the building has no way at all.
        if self._open_graph.travel_time(a, b, flow, 1.0) == float("inf"):
            raise InvalidArgument(
                "dropoff_station",
                f"no {flow.value.lower()}-flow route from {cmd.pickup_station} "
                f"to {cmd.dropoff_station} for {cmd.cargo_class.value} cargo",
            )
        outbound = self._check_return(cmd, cmd.cargo_class) if cmd.return_of else None
        self._check_weight(cmd, cmd.cargo_class, outbound)
        if cmd.custody_case:
            if cmd.cargo_class is not CargoClass.CONTROLLED_DRUG:
                raise InvalidArgument(
                    "custody_case",
                    "only CONTROLLED_DRUG orders carry a custody case, "
                    f"got {cmd.cargo_class.value}",
                )
            if len(cmd.custody_case) > 64 or not cmd.custody_case.strip():
                raise InvalidArgument("custody_case", "must be a case id of 1-64 characters")

    def _check_return(self, cmd: m.CreateOrder, cargo: CargoClass) -> Order:
        """The outbound order of a controlled drug's return leg, checked as a pharmacist would.

        Unused drugs go back the way they came, sealed in the compartment that brought them:
        the outbound must be a delivered controlled-drug order (not itself a return); the return
        is a controlled drug too, picked up where the outbound was delivered, dropped off where
        it was picked up (the issuing pharmacy, which reconciles the custody unit), needs no
        more slots than the outbound, and rides on the robot that delivered the outbound, which
        the dispatcher must still know. One open return per outbound at a time.
        """
        if cargo is not CargoClass.CONTROLLED_DRUG:
            raise InvalidArgument(
                "cargo_class", f"a return (return_of) must be CONTROLLED_DRUG, got {cargo.value}"
            )
        outbound = self.orders.get(cmd.return_of) or self.store.get_order(cmd.return_of)
        if outbound is None:
            raise InvalidArgument("return_of", f"unknown order {cmd.return_of!r}")
        if outbound.return_of:
            raise InvalidArgument("return_of", f"{outbound.id} is itself a return")
        if outbound.cargo_class is not CargoClass.CONTROLLED_DRUG:
            raise InvalidArgument("return_of", f"{outbound.id} is not a controlled-drug order")
        if outbound.state is not OrderState.DELIVERED:
            raise InvalidArgument(
                "return_of",
                f"{outbound.id} is {outbound.state.value}; only a delivered order has a return",
            )
        if cmd.pickup_station != outbound.dropoff_station:
            raise InvalidArgument(
                "pickup_station",
                f"a return is picked up where {outbound.id} was delivered "
                f"({outbound.dropoff_station})",
            )
        if cmd.dropoff_station != outbound.pickup_station:
            raise InvalidArgument(
                "dropoff_station",
                f"a return goes back where {outbound.id} came from ({outbound.pickup_station})",
            )
        if cmd.quantity > outbound.quantity:
            raise InvalidArgument(
                "quantity",
                f"a return takes at most the {outbound.quantity} slot(s) of {outbound.id}",
            )
        if outbound.robot_id is None or not self.known_robot(outbound.robot_id):
            raise InvalidArgument(
                "return_of", f"the robot that delivered {outbound.id} is no longer known"
            )
        for other in self.orders.values():
            if other.return_of == outbound.id and other.state in (
                OrderState.PENDING,
                OrderState.ASSIGNED,
                OrderState.PICKED_UP,
            ):
                raise InvalidArgument(
                    "return_of", f"{outbound.id} already has an open return, {other.id}"
                )
        return outbound

    def _check_weight(self, cmd: m.CreateOrder, cargo: CargoClass, outbound: Order | None) -> None:
        """The weight must be a number >= 0 that some robot allowed to carry the cargo can take.

        Robots are judged by the models they announced (every robot ever seen, connected or
        not). While no robot for this cargo has said hello yet, any weight is accepted and the
        order waits. A return must fit the robot it is pinned to.
        """
        weight = cmd.weight_kg
        if not 0 <= weight < math.inf:
            raise InvalidArgument("weight_kg", f"must be a finite number >= 0, got {weight}")
        if weight == 0:
            return
        pinned = outbound.robot_id if outbound is not None else None
        models = [
            caps
            for rid, caps in self._capabilities.items()
            if caps.can_carry(cargo) and (pinned is None or rid == pinned)
        ]
        if models and not any(
            c.max_payload_kg is None or grams(weight) <= grams(c.max_payload_kg) for c in models
        ):
            most = max(c.max_payload_kg or 0.0 for c in models)
            whom = f"robot {pinned}" if pinned else f"every robot that may carry {cargo.value}"
            raise InvalidArgument(
                "weight_kg", f"{weight:g} kg is too heavy for {whom} (at most {most:g} kg)"
            )

    def _create_order(self, cmd: m.CreateOrder) -> Order:
        self.validate_order(cmd)
        assert cmd.cargo_class is not None
        # A return rides where its outbound rode: the same robot, the same compartment.
        outbound = self._check_return(cmd, cmd.cargo_class) if cmd.return_of else None
        now = self.clock.now()
        order = Order(
            id=f"ORD-{self._next_order:06d}",
            pickup_station=cmd.pickup_station,
            dropoff_station=cmd.dropoff_station,
            cargo_class=cmd.cargo_class,
            quantity=cmd.quantity,
            priority=cmd.priority,
            created_at=now,
            needed_by=cmd.needed_by,
            requested_by=cmd.requested_by,
            note=cmd.note,
            weight_kg=cmd.weight_kg,
            return_of=cmd.return_of,
            compartment=outbound.compartment if outbound else None,
            pinned_robot=outbound.robot_id if outbound else None,
            custody_case=cmd.custody_case,
        )
        order.history.append(OrderEvent(at=now, state=OrderState.PENDING, detail="accepted"))
        # Durable before acknowledged: if the store refuses, nothing changes here.
        self.store.add_order(order)
        self._next_order += 1
        self.orders[order.id] = order
        self._outbox.append(m.OrderChanged(copy.deepcopy(order)))
        if self.config.insert_on_create and self._insert(order, "first answer"):
            self._preempt_charging()
        self._request_replan()
        return copy.deepcopy(order)

    def _cancel_order(self, cmd: m.CancelOrder) -> Order:
        self.get_order(cmd.order_id)  # NotFound / InvalidArgument for unknown or empty ids
        order = self.orders.get(cmd.order_id)
        if order is None:  # only terminal orders live in the store alone
            raise FailedPrecondition(f"order {cmd.order_id} is already finished")
        if order.state not in (OrderState.PENDING, OrderState.ASSIGNED):
            raise FailedPrecondition(
                f"order {order.id} is {order.state.value}; only pending or assigned orders "
                "can be cancelled"
            )
        run = self.robots.get(order.robot_id or "")
        if run is not None and self._is_loading(run, order.id):
            raise FailedPrecondition(f"order {order.id} is being loaded onto a robot")
        order.move_to(OrderState.CANCELLED, self.clock.now(), cmd.reason or "cancelled")
        self._mark(order)
        self._request_replan()
        return copy.deepcopy(order)

    def _is_loading(self, run: _RobotRun, order_id: str) -> bool:
        return (
            run.in_flight is not None
            and run.in_flight[1].kind is StepKind.PICKUP
            and (order_id in run.in_flight[1].order_ids)
        )

    def get_order(self, order_id: str) -> Order:
        """The order with this id, from memory or the store; NotFound otherwise."""
        if not order_id:
            raise InvalidArgument("order_id", "is required")
        order = self.orders.get(order_id)
        if order is None:
            order = self.store.get_order(order_id)
        if order is None:
            raise NotFound(f"no order {order_id!r}")
        return copy.deepcopy(order)

    def known_robot(self, robot_id: str) -> bool:
        """True when a robot with this id has ever said hello (to this or an earlier run)."""
        return robot_id in self.robots or robot_id in self._known_robots

    def _mark(self, order: Order) -> None:
        self._dirty[order.id] = order
        if order.return_of and order.state.terminal and order.state is not OrderState.DELIVERED:
            # A return that will not ride (failed, cancelled): its compartment is not kept.
            self._release_hold(order.return_of)
        if order.state.terminal or order.state is OrderState.PENDING:
            run = self.robots.get(order.robot_id or "")
            if run is not None:
                run.stale = True

    def _flush(self) -> None:
        if not self._dirty:
            return
        changed = list(self._dirty.values())
        self._dirty.clear()
        self.store.update_orders(changed)
        for order in changed:
            self._outbox.append(m.OrderChanged(copy.deepcopy(order)))

    def _request_replan(self) -> None:
        self.replan_requested = True

    # ---- robots --------------------------------------------------------------------------

    def _robot_hello(self, msg: m.RobotHello) -> None:
        now = self.clock.now()
        if not msg.robot_id:
            raise InvalidArgument("robot_id", "is required")
        if msg.node not in self.building.nodes:
            raise InvalidArgument("current_node", f"unknown node {msg.node!r}")
        caps = msg.capabilities
        if not caps.cargo_classes:
            raise InvalidArgument("cargo_classes", "at least one cargo class is required")
        try:
            _ = caps.flow
        except ValueError as exc:
            raise InvalidArgument("cargo_classes", str(exc)) from exc
        if caps.capacity_slots < 1:
            raise InvalidArgument("capacity_slots", "must be at least 1")
        if caps.max_speed_m_s <= 0:
            raise InvalidArgument("max_speed_m_s", "must be greater than 0")
        if caps.max_payload_kg is not None and not 0 < caps.max_payload_kg < math.inf:
            raise InvalidArgument("max_payload_kg", "must be finite and greater than 0")
        if caps.compartments is not None and caps.compartments < 1:
            raise InvalidArgument("compartments", "must be at least 1")
        old = self.robots.get(msg.robot_id)
        if old is not None and old.connected:
            # A second hello on a live robot: it restarted; drop what it was doing.
            self._abandon_work(old, "robot restarted", fail_onboard=False)
        node = self.building.nodes[msg.node]
        robot = Robot(
            id=msg.robot_id,
            capabilities=caps,
            node=msg.node,
            level=node.level,
            x=node.x,
            y=node.y,
            battery_percent=msg.battery_percent,
            mode=RobotMode.IDLE,
            last_seen=now,
        )
        run = _RobotRun(robot=robot)
        if old is not None:
            run.step_ids = old.step_ids  # step ids stay increasing across reconnects
            run.paused = old.paused  # an operator's pause outlives a dropped connection
        self.robots[msg.robot_id] = run
        carrying = set(msg.carrying)
        for order in self.orders.values():
            if order.state is OrderState.PICKED_UP and order.robot_id == msg.robot_id:
                if order.id in carrying:
                    robot.carrying.add(order.id)
                else:
                    order.move_to(
                        OrderState.FAILED, now, f"robot {msg.robot_id} no longer carries it"
                    )
                    self._mark(order)
        self.store.upsert_robot(robot)
        self._known_robots.add(robot.id)
        self._capabilities[robot.id] = caps
        self._outbox.append(
            m.WelcomeRobot(msg.robot_id, self.building.name, self.config.state_interval_s)
        )
        if msg.in_lift:
            self._recover_from_lift(run, old, msg.in_lift)
        elif old is not None and old.in_lift:
            # It was held for this robot, which now says it is out of the car.
            self._release(old, f"lift:{old.in_lift}")
        # What it held before is no longer where it is: keep only the car it stands in, and
        # take the node it stands on (it is there, whoever else was promised it).
        keep = [lift_resource(msg.in_lift)] if msg.in_lift else []
        self._grant(self.traffic.release_all(msg.robot_id, keep=keep))
        node_res = self.resources.node_resource(msg.node)
        if node_res and not msg.in_lift and not self.traffic.hold(msg.robot_id, node_res):
            others = [h for h in self.traffic.holders(node_res) if h != msg.robot_id]
            self._alert(
                "ROBOT_ON_HELD_NODE",
                m.AlertSeverity.WARNING,
                msg.robot_id,
                f"{msg.robot_id} reports standing on {msg.node}, held by {', '.join(others)}",
                (msg.robot_id, *others),
            )
        self._unblock(msg.robot_id)
        self._request_replan()

    def _recover_from_lift(self, run: _RobotRun, old: _RobotRun | None, lift: str) -> None:
        """A robot says hello from inside a car: bring the car to a floor and let it out first."""
        if lift not in self.lifts:
            raise InvalidArgument("in_lift", f"unknown lift {lift!r}")
        res = f"lift:{lift}"
        # Keep the session it had; after a dispatcher restart adopt the car's own session,
        # since the car is serving the robot that stands in it.
        sid = (old.sessions.get(res) if old else None) or self.lifts[lift].session_id
        if sid:
            run.sessions[res] = sid
        run.in_lift = lift
        level = self.lifts[lift].level
        lobby = self.building.lifts[lift].lobbies[level]
        run.steps = deque(
            [
                Step(StepKind.LIFT_CALL, lift=lift, level=level, from_node=lobby),
                Step(StepKind.LIFT_EXIT, lift=lift, level=level, to_node=lobby),
                Step(StepKind.LIFT_RELEASE, lift=lift, level=level),
            ]
        )
        self._log(run, f"in {lift} at {level} after reconnecting: exit first", "LIFT_RECOVER")

    def _robot_state(self, msg: m.RobotStateReport) -> None:
        run = self._live_robot(msg.robot_id)
        r = run.robot
        r.last_seen = self.clock.now()
        r.battery_percent = msg.battery_percent
        run.battery_at = self.clock.now()
        r.level, r.x, r.y = msg.level or r.level, msg.x, msg.y
        if msg.node:
            r.node = msg.node
        if msg.compartments:
            self._check_seals(run, msg.compartments)
        self._sync_pause(run, msg.mode)
        if msg.mode is RobotMode.FAULT and r.mode is not RobotMode.FAULT:
            self._abandon_work(
                run, "robot reported a fault: " + "; ".join(msg.errors), fail_onboard=True
            )
            r.mode = RobotMode.FAULT
            self.store.upsert_robot(r)
            self._block(run, "fault: " + "; ".join(msg.errors))
        elif msg.mode is not RobotMode.FAULT and r.mode is RobotMode.FAULT:
            r.mode = RobotMode.IDLE
            self.store.upsert_robot(r)
            self._unblock(r.id)
            self._request_replan()

    def _sync_pause(self, run: _RobotRun, reported: RobotMode) -> None:
        """The dispatcher owns pause and resume: a robot that reports itself paused when it
        is not (a PAUSE it kept across a lost connection), or not paused when it is, is told
        again (at most every PAUSE_RESEND_S)."""
        robot_paused = reported is RobotMode.PAUSED
        if reported in (RobotMode.FAULT, RobotMode.OFFLINE) or robot_paused == run.paused:
            return
        now = self.clock.now()
        if now - run.pause_told_at < PAUSE_RESEND_S:
            return
        run.pause_told_at = now
        kind = m.InstantKind.PAUSE if run.paused else m.InstantKind.RESUME
        why = "paused by the dispatcher" if run.paused else "not paused by the dispatcher"
        self._outbox.append(m.SendInstantAction(run.robot.id, next(self._action_ids), kind, why))
        self._log(run, f"told again: {why}", kind.value)

    def _live_robot(self, robot_id: str) -> _RobotRun:
        run = self.robots.get(robot_id)
        if run is None:
            raise InvalidArgument("robot_id", f"unknown robot {robot_id!r}: send a hello first")
        if not run.connected:
            raise FailedPrecondition(f"robot {robot_id} is offline: send a hello first")
        return run

    def _step_report(self, msg: m.StepReport) -> None:
        run = self._live_robot(msg.robot_id)
        run.robot.last_seen = self.clock.now()
        if run.in_flight is None or run.in_flight[0] != msg.step_id:
            return  # a late report of a step that was abandoned: nothing to do
        step = run.in_flight[1]
        if msg.outcome is m.StepOutcome.STARTED:
            return
        if msg.outcome is m.StepOutcome.FAILED:
            run.in_flight = None
            self._log(run, f"FAILED {step.describe()}: {msg.detail}", "STEP_FAILED", step)
            self._abandon_work(run, f"step failed: {msg.detail}", fail_onboard=True)
            run.robot.mode = RobotMode.FAULT
            self.store.upsert_robot(run.robot)
            self._block(run, f"step failed: {msg.detail}")
            return
        run.in_flight = None
        self._step_done(run, step, msg.node)
        self._advance(run)

    def _step_done(self, run: _RobotRun, step: Step, node: str) -> None:
        now = self.clock.now()
        robot = run.robot
        if step.kind is StepKind.MOVE:
            robot.node = step.to_node
        elif step.kind is StepKind.LIFT_ENTER:
            robot.node = step.from_node  # riding: the lobby it left is its last node
        elif step.kind is StepKind.LIFT_EXIT:
            robot.node = step.to_node
            run.in_lift = ""
            sid = run.sessions.get(lift_resource(step.lift), "")
            if sid:
                self._session_move(sid, SessionState.EXITED, f"out at {step.level}")
        elif step.kind is StepKind.PICKUP:
            for oid in step.order_ids:
                order = self.orders[oid]
                order.move_to(OrderState.PICKED_UP, now, f"on board {robot.id}")
                robot.carrying.add(oid)
                self._mark(order)
        elif step.kind is StepKind.DROPOFF:
            for oid in step.order_ids:
                order = self.orders[oid]
                robot.carrying.discard(oid)
                if order.state is not OrderState.PICKED_UP:
                    # Written off meanwhile (a fault with it on board): the record stands; the
                    # goods are handed over and the log says so.
                    self._log(run, f"handed over {oid}, recorded {order.state.value}", "NOTE")
                    continue
                order.move_to(OrderState.DELIVERED, now, f"delivered by {robot.id}")
                robot.carrying.discard(oid)
                self._mark(order)
                self._hold_or_release_compartment(run, order)
            # A finished task frees capacity and time: the rest of the plan may improve.
            self._request_replan()
        elif step.kind is StepKind.CHARGE:
            run.topping_up = False
            run.charged_at = self.clock.now()
        if node and node in self.building.nodes:
            robot.node = node
        robot.level = self.building.nodes[robot.node].level
        self._log(run, step.describe(), step.kind.value, step)
        if run.steps and run.steps[0] is step:
            run.steps.popleft()
        if step.kind is StepKind.LIFT_ENTER:
            sid = run.sessions.get(lift_resource(step.lift), "")
            if sid:
                self._session_move(sid, SessionState.ENTERED, "robot in the car")
        if step.kind in (StepKind.MOVE, StepKind.LIFT_ENTER, StepKind.LIFT_EXIT):
            self._release_behind(run)

    def _log(self, run: _RobotRun, what: str, kind: str, step: Step | None = None) -> None:
        self.step_log.append(
            m.StepRecord(
                at=self.clock.now(),
                robot_id=run.robot.id,
                what=what,
                kind=kind,
                order_ids=step.order_ids if step else (),
            )
        )

    # ---- execution -----------------------------------------------------------------------

    def _advance(self, run: _RobotRun) -> None:
        """Start whatever the robot should do next, until it must wait for someone."""
        robot = run.robot
        while run.paused and run.in_flight is None and run.steps:
            if run.steps[0].kind is not StepKind.DOOR_CLOSE:
                break
            # Even a paused robot lets a door it has passed close behind it.
            self._dispatcher_step(run, run.steps[0])
        while run.connected and not run.paused and robot.mode is not RobotMode.FAULT:
            if run.in_flight is not None or run.waiting is not None:
                return
            if not run.steps:
                finished = run.current_stop is not None
                if finished:
                    run.current_stop = None
                if not self._start_next_stop(run):
                    robot.mode = RobotMode.IDLE
                    if self._top_up(run):
                        continue
                    # Done at a one-robot spot (a docking hatch) with nothing to do next: leave
                    # it free for the next robot rather than wait to be asked (its only way out
                    # may be the door the next robot queues for).
                    if finished and self.resources.node_resource(robot.node):
                        self._back_off(run, "leaving a one-robot spot free")
                    return
                continue
            step = run.steps[0]
            if step.kind is StepKind.PICKUP:
                step = self._refresh_pickup(run, step)
                if not step.order_ids:
                    run.steps.popleft()  # everything it was to load was cancelled
                    continue
            if step.kind.robot_side:
                if not self._claim(run, step):
                    return
                if step.kind is StepKind.LIFT_ENTER and not self._may_enter(run, step):
                    continue
                step_id = next(run.step_ids)
                run.in_flight = (step_id, step)
                session = run.sessions.get(f"lift:{step.lift}", "") if step.lift else ""
                if step.kind is StepKind.LIFT_ENTER:
                    run.in_lift = step.lift
                self._outbox.append(m.SendStep(robot.id, step_id, step, session))
                if step.secure:
                    self._secure_stop(run, step)
                return
            self._dispatcher_step(run, step)

    # ---- custody: secure pickups and drop-offs of controlled drugs ---------------------------

    def _custody_compartments(self, run: _RobotRun, order_ids: Sequence[str]) -> set[str]:
        """A custody outbound about to be loaded takes a compartment no other case keeps for
        its return (it travels alone: every compartment not kept is empty). Returns the ones
        for which there is none (the plan did not know: they go back to the pool)."""
        count = run.robot.capabilities.compartments
        held = self.custody_holds.get(run.robot.id, {})
        unplaced: set[str] = set()
        for oid in order_ids:
            order = self.orders[oid]
            if not order.custody_case or order.pinned_robot is not None or not count:
                continue
            if order.compartment is not None and order.compartment not in held:
                continue
            free = [c for c in range(count) if c not in held]
            if free:
                order.compartment = free[0]
                self._mark(order)
            else:
                unplaced.add(oid)
        return unplaced

    def _custody_kept(self, run: _RobotRun) -> int:
        """Compartments of the robot kept for custody returns, now or once what it carries is
        delivered (an outbound on board will keep its compartment at its OR)."""
        held = len(self.custody_holds.get(run.robot.id, {}))
        return held + sum(
            1 for oid in run.robot.carrying if (o := self.orders.get(oid)) and _keeps_compartment(o)
        )

    def _hold_or_release_compartment(self, run: _RobotRun, order: Order) -> None:
        """After a custody order was handed over: an outbound delivered at its OR keeps its
        compartment for the return; a return frees it."""
        if not order.custody_case or order.compartment is None:
            return
        if order.return_of:
            self._release_hold(order.return_of)
        elif _keeps_compartment(order):
            self.custody_holds.setdefault(run.robot.id, {})[order.compartment] = order.id

    def _release_hold(self, outbound_id: str) -> None:
        for holds in self.custody_holds.values():
            for index, oid in list(holds.items()):
                if oid == outbound_id:
                    del holds[index]

    def _secure(self, order_ids: Sequence[str]) -> bool:
        """Whether a pickup or drop-off of these orders waits for people (a custody case)."""
        return any(self.orders[oid].custody_case for oid in order_ids if oid in self.orders)

    def _secure_stop(self, run: _RobotRun, step: Step) -> None:
        """Tell the custody desk a robot now waits at a secure station for people."""
        for oid in step.order_ids:
            order = self.orders[oid]
            if not order.custody_case:
                continue
            self._outbox.append(
                m.SecureStop(
                    at=self.clock.now(),
                    robot_id=run.robot.id,
                    order_id=oid,
                    custody_case=order.custody_case,
                    kind=step.kind.value,
                    station=step.station,
                    node=step.to_node,
                    compartment=_protocol_compartment(order),
                )
            )
            self._log(run, f"waiting at {step.station} for custody of {oid}", "SECURE_STOP", step)

    def _check_seals(self, run: _RobotRun, compartments: Sequence[m.CompartmentStatus]) -> None:
        """A custody order's compartment must stay locked under an intact seal from the
        pharmacy hatch to the recipient; the robot's own report of anything else (not opened
        for an authenticated person) is a critical alert for the pharmacy and the operators."""
        status = {c.number: c for c in compartments}
        for oid in sorted(run.robot.carrying):
            order = self.orders.get(oid)
            if (
                order is None
                or not order.custody_case
                or order.compartment is None
                or oid in self._opened
            ):
                continue
            seen = status.get(order.compartment + 1)
            if seen is None or (seen.locked and seen.seal_intact and not seen.open):
                continue
            what = "open" if seen.open else ("unlocked" if not seen.locked else "seal broken")
            self._alert(
                "COMPARTMENT_SEAL_BROKEN",
                m.AlertSeverity.CRITICAL,
                run.robot.id,
                f"compartment {seen.number} of {run.robot.id} carrying custody case "
                f"{order.custody_case} ({oid}) reports {what} (seal {seen.seal_id or 'none'}) "
                "without an authorised opening",
                (run.robot.id,),
            )

    def _custody_order(self, order_id: str) -> Order:
        """The open order carrying a custody case; NotFound / InvalidArgument for an unknown
        id, FailedPrecondition for a finished order or one without a case."""
        order = self.orders.get(order_id)
        if order is None:
            self.get_order(order_id)  # NotFound / InvalidArgument
            raise FailedPrecondition(f"order {order_id} is already finished")
        if not order.custody_case:
            raise FailedPrecondition(f"order {order_id} carries no custody case")
        return order

    def _waiting_secure(self, order_id: str, kind: StepKind) -> tuple[_RobotRun, Order]:
        """The robot standing at the secure `kind` step of custody order `order_id`;
        FailedPrecondition naming where the order is otherwise."""
        order = self._custody_order(order_id)
        run = self.robots.get(order.robot_id or "")
        flight = run.in_flight if run is not None else None
        if (
            run is None
            or flight is None
            or flight[1].kind is not kind
            or not flight[1].secure
            or order_id not in flight[1].order_ids
        ):
            where = f"with {order.robot_id}" if order.robot_id else "not assigned to a robot"
            raise FailedPrecondition(
                f"order {order_id} is {order.state.value} {where}: no robot waits at its "
                f"{kind.value.lower()} ({self._station_of(order, kind)}) yet"
            )
        if not run.connected:
            raise FailedPrecondition(f"robot {run.robot.id} is offline")
        return run, order

    @staticmethod
    def _station_of(order: Order, kind: StepKind) -> str:
        return order.pickup_station if kind is StepKind.PICKUP else order.dropoff_station

    def _compartment_action(
        self, run: _RobotRun, order: Order, kind: m.InstantKind, **fields: Any
    ) -> None:
        self._outbox.append(
            m.SendInstantAction(
                run.robot.id,
                next(self._action_ids),
                kind,
                reason=f"custody {order.custody_case}",
                compartment=_protocol_compartment(order),
                **fields,
            )
        )

    def _seal_compartment(self, cmd: m.SealCompartment) -> None:
        if not cmd.seal_id.strip():
            raise InvalidArgument("seal_id", "is required")
        run, order = self._waiting_secure(cmd.order_id, StepKind.PICKUP)
        self._compartment_action(run, order, m.InstantKind.SEAL_COMPARTMENT, seal_id=cmd.seal_id)
        self._log(
            run,
            f"seal {cmd.seal_id} on {order.id}",
            "SEAL",
            run.in_flight[1] if run.in_flight else None,
        )

    def _open_compartment(self, cmd: m.OpenCompartment) -> None:
        if not cmd.grant_id.strip():
            raise InvalidArgument("grant_id", "is required")
        if not cmd.staff_id.strip():
            raise InvalidArgument("staff_id", "is required")
        if not 0 < cmd.open_for_s < math.inf:
            raise InvalidArgument("open_for_s", f"must be > 0 seconds, got {cmd.open_for_s}")
        run, order = self._waiting_secure(cmd.order_id, StepKind.DROPOFF)
        self._opened.add(order.id)  # its seal may now break: the recipient opens it
        self._compartment_action(
            run,
            order,
            m.InstantKind.OPEN_COMPARTMENT,
            grant_id=cmd.grant_id,
            staff_id=cmd.staff_id,
            open_for_s=cmd.open_for_s,
        )
        self._log(run, f"open {order.id} for {cmd.staff_id}", "OPEN", None)

    def _redirect_order(self, cmd: m.RedirectOrder) -> Order:
        """A custody order on board goes to `cmd.dropoff_station` instead; a robot waiting at
        its secure drop-off leaves it (the step is cancelled, the compartment stays sealed)."""
        stations = self.building.stations
        if cmd.dropoff_station not in stations:
            raise InvalidArgument("dropoff_station", f"unknown station {cmd.dropoff_station!r}")
        order = self._custody_order(cmd.order_id)
        if order.state is not OrderState.PICKED_UP:
            raise FailedPrecondition(
                f"order {order.id} is {order.state.value}; only an order on board is redirected"
            )
        run = self.robots[order.robot_id or ""]
        now = self.clock.now()
        old = order.dropoff_station
        order.dropoff_station = cmd.dropoff_station
        order.history.append(
            OrderEvent(
                at=now,
                state=order.state,
                detail=f"redirected from {old} to {cmd.dropoff_station}: {cmd.reason}",
            )
        )
        self._mark(order)
        self._outbox.append(m.OrderChanged(copy.deepcopy(order)))
        node = stations[cmd.dropoff_station].node
        flight = run.in_flight
        at_dropoff = (
            flight is not None
            and flight[1].kind is StepKind.DROPOFF
            and order.id in flight[1].order_ids
        )
        heading_there = run.current_stop is not None and order.id in run.current_stop.order_ids
        # Its old drop-off leaves the plan; the new one comes first (it travels alone).
        future: list[Stop] = []
        for stop in run.future:
            if stop.kind is StopKind.DROPOFF and order.id in stop.order_ids:
                ids = tuple(i for i in stop.order_ids if i != order.id)
                if not ids:
                    continue
                stop = Stop(stop.node, stop.kind, ids, stop.arrival, stop.departure)
            future.append(stop)
        run.future = [Stop(node, StopKind.DROPOFF, (order.id,), now, now), *future]
        if at_dropoff:
            self._outbox.append(
                m.SendInstantAction(
                    run.robot.id, next(self._action_ids), m.InstantKind.CANCEL_STEP, cmd.reason
                )
            )
            run.in_flight = None
        if at_dropoff or heading_there:
            self._end_wait(run)
            run.steps.clear()
            run.current_stop = None
        self._log(run, f"{order.id} redirected to {cmd.dropoff_station}: {cmd.reason}", "REDIRECT")
        self.plan_epoch += 1
        self._advance(run)
        self._request_replan()
        return copy.deepcopy(order)

    def _refresh_pickup(self, run: _RobotRun, step: Step) -> Step:
        """The pickup step without orders cancelled or re-assigned since it was planned."""
        stop = run.current_stop
        assert stop is not None
        ids = tuple(oid for oid in step.order_ids if self._still_wanted(run, stop, oid))
        if ids == step.order_ids:
            return step
        quantity = sum(self.orders[oid].quantity for oid in ids)
        fresh = Step(
            step.kind,
            station=step.station,
            order_ids=ids,
            quantity=quantity,
            to_node=step.to_node,
            compartments=tuple(c for c in step.compartments if c[0] in ids),
            secure=self._secure(ids),
        )
        run.steps[0] = fresh
        return fresh

    def _start_next_stop(self, run: _RobotRun) -> bool:
        """Take the next stop of the robot's plan and expand it into steps."""
        while run.future:
            stop = run.future.pop(0)
            if stop.kind is StopKind.CHARGE:
                if self._start_charge_stop(run, stop):
                    return True
                continue
            ids = tuple(oid for oid in stop.order_ids if self._still_wanted(run, stop, oid))
            if not ids:
                continue
            stop = Stop(stop.node, stop.kind, ids, stop.arrival, stop.departure)
            robot = run.robot
            caps = robot.capabilities
            if stop.kind is StopKind.PICKUP and self._hold(run, stop):
                run.future.insert(0, stop)
                return False
            if stop.kind is StopKind.PICKUP:
                unplaced = self._custody_compartments(run, ids)
                for oid in unplaced:
                    self._fail_or_release(
                        self.orders[oid],
                        f"every compartment of {run.robot.id} is kept for a custody return",
                    )
                ids = tuple(oid for oid in ids if oid not in unplaced)
                if not ids:
                    continue
                stop = Stop(stop.node, stop.kind, ids, stop.arrival, stop.departure)
            blocked = ""
            try:
                route = self.graph.route(robot.node, stop.node, caps.flow, caps.max_speed_m_s)
                steps = steps_for_route(route, self._speed_limits)
                drive_s = route.time_s
            except NoRoute as exc:
                if stop.kind is StopKind.PICKUP or not math.isfinite(
                    self._open_graph.travel_time(
                        robot.node, stop.node, caps.flow, caps.max_speed_m_s
                    )
                ):
                    for oid in ids:
                        self._fail_or_release(self.orders[oid], f"no route: {exc}")
                    continue
                # Goods on board and the way there closed for now: keep them, wait for it to
                # reopen (a pickup goes back to the pool instead; another robot may reach it).
                blocked, steps, drive_s = f"no way to {stop.node} now: {exc}", [], 0.0
            station = self._station_at(stop.node)
            quantity = sum(self.orders[oid].quantity for oid in ids)
            kind = StepKind.PICKUP if stop.kind is StopKind.PICKUP else StepKind.DROPOFF
            steps.append(
                Step(
                    kind,
                    station=station,
                    order_ids=ids,
                    quantity=quantity,
                    to_node=stop.node,
                    compartments=self._compartments_of(ids),
                    secure=self._secure(ids),
                )
            )
            run.steps = deque(steps)
            run.current_stop = stop
            now = self.clock.now()
            service = self.building.stations[station].service_time_s
            run.stop_departure = now + drive_s + service
            robot.mode = RobotMode.BUSY
            self.plan_epoch += 1
            if blocked:
                self._blocked(run, blocked, stop.node)
            return True
        return False

    def _start_charge_stop(self, run: _RobotRun, stop: Stop) -> bool:
        """Drive to the charger and charge for the planned time (or until full)."""
        robot = run.robot
        caps = robot.capabilities
        station = self._station_at(stop.node)
        try:
            route = self.graph.route(robot.node, stop.node, caps.flow, caps.max_speed_m_s)
        except NoRoute:
            return False  # the next plan finds another charger
        steps = steps_for_route(route, self._speed_limits)
        planned = max(0.0, stop.departure - stop.arrival)
        steps.append(
            Step(
                StepKind.CHARGE,
                station=station,
                to_node=stop.node,
                target_percent=100.0,
                max_duration_s=planned,
            )
        )
        run.steps = deque(steps)
        run.current_stop = stop
        run.charge_from = self.clock.now() + route.time_s
        run.stop_departure = run.charge_from + planned
        robot.mode = RobotMode.BUSY
        self.plan_epoch += 1
        return True

    def _top_up(self, run: _RobotRun) -> bool:
        """Start charging an idle robot that stands at a charger and is not full."""
        robot = run.robot
        cfg = self.config
        if (
            cfg.battery_drain_pct_per_s <= 0
            or robot.node not in self._chargers
            or run.future  # held for a deferred pickup: it leaves soon
            or robot.battery_percent >= cfg.top_up_below_pct
            # The battery it reported before its last charge ended is stale: wait for a fresh
            # report rather than start the same charge over and over.
            or (run.charged_at is not None and run.battery_at <= run.charged_at)
        ):
            return False
        now = self.clock.now()
        station = self._station_at(robot.node)
        step = Step(StepKind.CHARGE, station=station, to_node=robot.node, target_percent=100.0)
        run.steps = deque([step])
        # The planner keeps seeing an idle robot here (no new epoch): it is free at once.
        run.current_stop = Stop(robot.node, StopKind.CHARGE, (), now, now)
        run.stop_departure = run.charge_from = now
        run.topping_up = True
        robot.mode = RobotMode.CHARGING
        return True

    def _preempt_charging(self) -> None:
        """A robot charging while idle leaves as soon as it has work; one on a planned charge
        leaves early only for a STAT order."""
        for run in sorted(self.robots.values(), key=lambda r: r.robot.id):
            flight = run.in_flight
            if flight is None or flight[1].kind is not StepKind.CHARGE or not run.future:
                continue
            first = run.future[0]
            stat = any(
                (o := self.orders.get(oid)) is not None and o.priority is Priority.STAT
                for oid in first.order_ids
            )
            if not (stat or run.topping_up):
                continue
            why = "STAT order" if stat else "work"
            self._outbox.append(
                m.SendInstantAction(
                    run.robot.id, next(self._action_ids), m.InstantKind.CANCEL_STEP, why
                )
            )
            self._log(run, f"charging cut short for {','.join(first.order_ids)}", "PREEMPT")
            run.topping_up = False
            run.in_flight = None
            run.steps.clear()
            run.current_stop = None
            self._advance(run)

    def _deferred(self, o: Order, now: float) -> float | None:
        """The earliest pickup of a ROUTINE order with time to spare (late commitment), or
        None when it may be picked up at once."""
        if o.id not in self._earliest:
            stations = self.building.stations
            pickup, dropoff = stations[o.pickup_station], stations[o.dropoff_station]
            try:
                drive = self.graph.travel_time(
                    pickup.node, dropoff.node, flow_of(o.cargo_class), self.config.defer_speed_m_s
                )
            except NoRoute:
                drive = math.inf
            earliest = deferred_pickup(
                priority=o.priority,
                needed_by=o.needed_by,
                now=-math.inf,
                direct_s=pickup.service_time_s + drive + dropoff.service_time_s,
                margin_s=self.config.pickup_defer_margin_s,
            )
            self._earliest[o.id] = earliest
        earliest = self._earliest[o.id]
        return earliest if earliest is not None and earliest > now else None

    def _hold(self, run: _RobotRun, stop: Stop) -> bool:
        """Whether the robot should wait where it is before driving to pickup `stop`: every
        order it would load there is deferred past the time it would arrive."""
        if self.config.pickup_defer_margin_s is None or run.robot.carrying:
            # Nothing on board waits for a deferral: the deferred order is picked up early.
            return False
        now = self.clock.now()
        earliest = min(
            (self._deferred(self.orders[oid], now) or -math.inf for oid in stop.order_ids),
            default=-math.inf,
        )
        if earliest <= now:
            return False
        caps = run.robot.capabilities
        try:
            drive = self.graph.travel_time(run.robot.node, stop.node, caps.flow, caps.max_speed_m_s)
        except NoRoute:
            return False  # _start_next_stop deals with it
        return now + drive < earliest

    def _still_wanted(self, run: _RobotRun, stop: Stop, oid: str) -> bool:
        order = self.orders.get(oid)
        if order is None:
            return False
        if stop.kind is StopKind.PICKUP:
            return order.state is OrderState.ASSIGNED and order.robot_id == run.robot.id
        return oid in run.robot.carrying

    def _station_at(self, node: str) -> str:
        for name, station in self.building.stations.items():
            if station.node == node:
                return name
        raise KeyError(f"no station on node {node}")

    def _fail_or_release(self, order: Order, reason: str) -> None:
        now = self.clock.now()
        if order.state is OrderState.PICKED_UP:
            order.move_to(OrderState.FAILED, now, reason)
        elif order.state is OrderState.ASSIGNED:
            order.move_to(OrderState.PENDING, now, reason)
        self._mark(order)
        self._request_replan()

    def _new_session(self, run: _RobotRun, resource: str) -> str:
        sid = f"{run.robot.id}/{resource}/{self._boot}-{next(self._sessions)}"
        run.sessions[resource] = sid
        return sid

    def _dispatcher_step(self, run: _RobotRun, step: Step) -> None:
        """Do a dispatcher-side step, or set what the robot waits for."""
        rid = run.robot.id
        if step.kind is StepKind.DOOR_OPEN:
            res = door_resource(step.door)
            # The door and what lies beyond it in one request: a robot holding a door open
            # while it waits for the corridor behind it would block both.
            nxt = run.steps[1] if len(run.steps) > 1 else None
            need = [res, *(self._needs(run, nxt, 1) if nxt is not None else ())]
            if self._request(run, need):
                self._open_door(run, step.door)
            else:
                self._start_wait(run, _Wait("door_queue", res))
        elif step.kind is StepKind.DOOR_CLOSE:
            self._release(run, door_resource(step.door))
            self._finish_dispatcher_step(run, step)
        elif step.kind is StepKind.LIFT_CALL:
            run.lift_called_at = self.clock.now()
            res = lift_resource(step.lift)
            if self._request(run, [res]):
                self._call_lift(run, step.lift, step.level)
            else:
                self._start_wait(run, _Wait("lift_queue", res, level=step.level))
        elif step.kind is StepKind.LIFT_RIDE:
            res = lift_resource(step.lift)
            sid = run.sessions[res]
            self._start_wait(run, _Wait("lift_at", res, step.to_level, sid))
            self._session_move(sid, SessionState.RIDING, f"to {step.to_level}")
            run.ride_started_at = self.clock.now()
            self._outbox.append(
                m.LiftCommand(step.lift, m.LiftAction.GO_TO, sid, rid, step.to_level, self._lease_s)
            )
        elif step.kind is StepKind.LIFT_RELEASE:
            sid = run.sessions.get(lift_resource(step.lift), "")
            if sid:
                self._session_move(sid, SessionState.RELEASED, "ride done")
            self._release(run, lift_resource(step.lift))
            self._finish_dispatcher_step(run, step)
        elif step.kind is StepKind.REROUTE:
            self._finish_dispatcher_step(run, step)
            self._reroute(run, step.note or "continuing after a detour")
        else:  # pragma: no cover - robot-side kinds never get here
            raise AssertionError(step.kind)

    def _finish_dispatcher_step(self, run: _RobotRun, step: Step) -> None:
        self._end_wait(run)
        if step.kind is not StepKind.REROUTE:
            self._log(run, step.describe(), step.kind.value, step)
        if run.steps and run.steps[0] is step:
            run.steps.popleft()

    @property
    def _lease_s(self) -> float:
        return self.config.lift_lease_s

    def _open_door(self, run: _RobotRun, door: str) -> None:
        sid = self._new_session(run, door_resource(door))
        self._start_wait(run, _Wait("door_open", door_resource(door), session_id=sid))
        self._outbox.append(m.DoorCommand(door, m.DoorAction.OPEN, sid, run.robot.id))
        state = self.doors[door]
        if state.mode is m.DoorMode.OPEN and state.session_id == sid:
            self._door_ready(run)

    def _call_lift(self, run: _RobotRun, lift: str, level: str) -> None:
        res = lift_resource(lift)
        sid = run.sessions.get(res) or self._new_session(run, res)
        self._start_wait(run, _Wait("lift_at", res, level, sid))
        to_level = next((s.to_level for s in run.steps if s.kind is StepKind.LIFT_RIDE), level)
        if to_level != level:  # not a car brought to a robot stuck in it after a restart
            try:
                self.lift_sessions.open(
                    sid,
                    lift,
                    run.robot.id,
                    level,
                    to_level,
                    self.clock.now(),
                    self._lease_s or 1e9,  # no lease: the book needs one, never due
                )
            except ValueError as exc:
                # Bookkeeping went wrong (a second live session of the robot): say so rather
                # than stop the dispatcher.
                self.session_errors.append(str(exc))
        self._outbox.append(
            m.LiftCommand(lift, m.LiftAction.CALL, sid, run.robot.id, level, self._lease_s)
        )

    def _release(self, run: _RobotRun, resource: str) -> None:
        """Give a door or lift back and start the next robot waiting for it."""
        sid = run.sessions.pop(resource, "")
        kind, _, name = resource.partition(":")
        if sid:
            if kind == "door":
                self._outbox.append(m.DoorCommand(name, m.DoorAction.CLOSE, sid, run.robot.id))
            else:
                session = self.lift_sessions.get(sid)
                if session is not None and session.live:
                    self._session_move(sid, SessionState.CANCELLED, "given up")
                self._outbox.append(m.LiftCommand(name, m.LiftAction.RELEASE, sid, run.robot.id))
        self._grant(self.traffic.release(run.robot.id, [resource]))

    def _grant(self, holders: Sequence[str]) -> None:
        """Start robots whose waiting request was just granted."""
        for holder in holders:
            run = self.robots.get(holder)
            if run is not None:
                self._granted(run)

    def _granted(self, run: _RobotRun) -> None:
        wait = run.waiting
        if wait is None:
            return
        name = wait.resource.partition(":")[2]
        if wait.kind == "door_queue":
            self._end_wait(run)
            self._open_door(run, name)
        elif wait.kind == "lift_queue":
            self._end_wait(run)
            self._call_lift(run, name, wait.level)
        elif wait.kind == "traffic":
            self._end_wait(run)
            self._advance(run)

    def _door_ready(self, run: _RobotRun) -> None:
        step = run.steps[0]
        self._finish_dispatcher_step(run, step)
        self._advance(run)

    # ---- waits -----------------------------------------------------------------------------

    def _start_wait(self, run: _RobotRun, wait: _Wait) -> None:
        self._end_wait(run)
        wait.since = self.clock.now()
        run.waiting = wait
        if wait.kind in ("traffic", "door_queue", "lift_queue"):
            self._resolve_deadlocks()

    def _end_wait(self, run: _RobotRun) -> None:
        """Count the wait that ends (lift rides are not waits) and clear it."""
        wait, run.waiting = run.waiting, None
        if wait is None:
            return
        waited = self.clock.now() - wait.since
        if wait.kind.startswith("door"):
            self.wait_s["door"] += waited
        elif wait.kind == "lift_queue" or (wait.kind == "lift_at" and not run.in_lift):
            self.wait_s["lift"] += waited
        elif wait.kind in ("traffic", "blocked"):
            self.wait_s[wait.kind] += waited

    def _needs(self, run: _RobotRun, step: Step, index: int) -> list[str]:
        """The exclusive lanes, zones and nodes `step` (at `index` in the robot's steps) needs
        before the robot may start it. Entering a zone claims the whole way through it and
        the node where it comes out, so a robot never stops inside a one-at-a-time corridor."""
        if step.kind is StepKind.LIFT_EXIT:
            node = self.resources.node_resource(step.to_node)
            return [node] if node else []
        if step.kind is not StepKind.MOVE:
            return []
        need: list[str] = []
        lane = self.resources.lane_resource(step.from_node, step.to_node)
        if lane:
            need.append(lane)
        node = self.resources.node_resource(step.to_node)
        if node:
            need.append(node)
        if lane and lane.startswith("zone:") and lane not in self.traffic.held_by(run.robot.id):
            for later in itertools.islice(run.steps, index + 1, None):
                if later.kind in (StepKind.DOOR_OPEN, StepKind.DOOR_CLOSE):
                    continue
                if (
                    later.kind is not StepKind.MOVE
                    or self.resources.lane_resource(later.from_node, later.to_node) != lane
                ):
                    break
                node = self.resources.node_resource(later.to_node)
                if node and node not in need:
                    need.append(node)
        return need

    def _request(self, run: _RobotRun, need: Sequence[str]) -> bool:
        """Ask for `need` all at once; robots a replaced request lets through start."""
        granted, others = self.traffic.submit(run.robot.id, need, self.clock.now())
        self._grant(others)
        return granted

    def _claim(self, run: _RobotRun, step: Step) -> bool:
        """Reserve what `step` needs ahead of the robot; False (the robot waits) when another
        robot holds it or is earlier in line for it."""
        need = self._needs(run, step, 0)
        if not need or self._request(run, need):
            return True
        self._start_wait(run, _Wait("traffic", ",".join(need)))
        return False

    def _release_behind(self, run: _RobotRun) -> None:
        """Free the lanes, zones and nodes the robot has left behind. It keeps the node it
        stands on and, inside a zone, the zone and its nodes ahead."""
        rid = run.robot.id
        keep: set[str] = set()
        if not run.in_lift:
            node = self.resources.node_resource(run.robot.node)
            if node:
                keep.add(node)
            nxt = next(
                (
                    (i, s)
                    for i, s in enumerate(run.steps)
                    if s.kind not in (StepKind.DOOR_OPEN, StepKind.DOOR_CLOSE)
                ),
                None,
            )
            if nxt is not None and nxt[1].kind is StepKind.MOVE:
                lane = self.resources.lane_resource(nxt[1].from_node, nxt[1].to_node)
                if lane and lane.startswith("zone:") and lane in self.traffic.held_by(rid):
                    keep.add(lane)
                    held = set(self.traffic.held_by(rid))
                    keep.update(r for r in held if r.startswith("node:"))
        behind = [
            r
            for r in self.traffic.held_by(rid)
            if r.startswith(("node:", "lane:", "zone:")) and r not in keep
        ]
        if behind:
            self._grant(self.traffic.release(rid, behind))

    # ---- infrastructure ------------------------------------------------------------------

    def _controller_hello(self, msg: m.ControllerHello) -> None:
        for door in msg.door_ids:
            if door not in self.doors:
                raise InvalidArgument("door_ids", f"unknown door {door!r}")
        for lift in msg.lift_ids:
            if lift not in self.lifts:
                raise InvalidArgument("lift_ids", f"unknown lift {lift!r}")

    def _door_report(self, msg: m.DoorReport) -> None:
        state = self.doors.get(msg.door_id)
        if state is None:
            raise InvalidArgument("door_id", f"unknown door {msg.door_id!r}")
        state.mode, state.session_id, state.fault = msg.mode, msg.session_id, msg.fault
        key = door_resource(msg.door_id)
        if msg.mode in (m.DoorMode.BLOCKED, m.DoorMode.FAULT, m.DoorMode.OFFLINE):
            self._device_fault("door", msg.door_id, msg.mode.value, msg.fault)
            return
        if msg.mode in (m.DoorMode.CLOSED, m.DoorMode.OPEN):
            self._device_fault("door", msg.door_id, "", "")
        if msg.mode is not m.DoorMode.OPEN:
            return
        for holder in self.traffic.holders(key):
            run = self.robots[holder]
            w = run.waiting
            if w and w.kind == "door_open" and w.session_id == msg.session_id:
                self._door_ready(run)

    def _resend_rides(self, lift: str) -> None:
        """Contact with a car is back: a ride asked for while it was offline was not heard
        (an offline car's requests are ignored), so ask again (requests are idempotent)."""
        for holder in self.traffic.holders(lift_resource(lift)):
            run = self.robots[holder]
            w = run.waiting
            if (
                run.in_lift == lift
                and w is not None
                and w.kind == "lift_at"
                and w.session_id
                and run.steps
                and run.steps[0].kind is StepKind.LIFT_RIDE
            ):
                self._outbox.append(
                    m.LiftCommand(
                        lift, m.LiftAction.GO_TO, w.session_id, holder, w.level, self._lease_s
                    )
                )
                self._log(run, f"ride to {w.level} asked again: {lift} is back", "LIFT_RECOVER")

    def _lift_report(self, msg: m.LiftReport) -> None:
        state = self.lifts.get(msg.lift_id)
        if state is None:
            raise InvalidArgument("lift_id", f"unknown lift {msg.lift_id!r}")
        now = self.clock.now()
        was = state.mode
        state.level, state.door, state.mode = msg.level, msg.door, msg.mode
        state.session_id, state.fault, state.reported_at = msg.session_id, msg.fault, now
        key = lift_resource(msg.lift_id)
        down = msg.mode in (m.LiftMode.OUT_OF_SERVICE, m.LiftMode.FIRE_RECALL, m.LiftMode.OFFLINE)
        self._device_fault("lift", msg.lift_id, msg.mode.value if down else "", msg.fault)
        if was is m.LiftMode.OFFLINE and not down:
            self._resend_rides(msg.lift_id)
        session = self.lift_sessions.get(msg.session_id) if msg.session_id else None
        if session is not None and session.state is SessionState.REQUESTED:
            self._session_move(session.id, SessionState.ASSIGNED, "car serves the session")
        if msg.door is not m.LiftDoorState.OPEN:
            return
        for holder in self.traffic.holders(key):
            run = self.robots[holder]
            w = run.waiting
            if msg.mode is m.LiftMode.FIRE_RECALL and run.in_lift == msg.lift_id:
                if w and w.session_id == msg.session_id:
                    self._recall_exit(run, msg.lift_id, msg.level)
                continue
            if (
                w
                and w.kind == "lift_at"
                and w.session_id == msg.session_id
                and w.level == msg.level
            ):
                step = run.steps[0]
                self._finish_dispatcher_step(run, step)
                if step.kind is StepKind.LIFT_RIDE:
                    run.robot.level = msg.level
                    self._learn_lift_ride(run, msg.lift_id, step.level, step.to_level)
                    self._session_move(w.session_id, SessionState.ARRIVED, f"at {msg.level}")
                elif step.kind is StepKind.LIFT_CALL:
                    self._session_move(w.session_id, SessionState.AT_FLOOR, f"at {msg.level}")
                    self._learn_lift_wait(run, msg.lift_id)
                self._advance(run)

    def _device_fault(self, kind: str, name: str, mode: str, detail: str) -> None:
        """A door or lift controller says the device is out of use (`mode`, e.g. FAULT or
        FIRE_RECALL) or back in use (`mode` ""): close or reopen it, with an alert naming the
        robots whose way used it."""
        key = f"{kind}:{name}"
        if not mode:
            if key in self.closures.faults:
                del self.closures.faults[key]
                self._clear_alerts(name, prefix=f"{kind.upper()}_")
                self._apply_closures(f"{kind} {name} back in service")
            return
        why = f"{kind} {name} {mode.lower().replace('_', ' ')}" + (f": {detail}" if detail else "")
        if self.closures.faults.get(key) == why:
            return
        self.closures.faults[key] = why
        users = self._robots_using(**{kind: name})
        self._alert(f"{kind.upper()}_{mode}", m.AlertSeverity.WARNING, name, why, users)
        self._apply_closures(why)

    def _recall_exit(self, run: _RobotRun, lift: str, level: str) -> None:
        """Fire recall with the robot in the car: it gets out where the car stopped and its
        route is rebuilt from there."""
        lobby = self.building.lifts[lift].lobbies[level]
        rest = list(run.steps)
        cut = next((i for i, s in enumerate(rest) if s.kind is StepKind.LIFT_RELEASE), -1)
        rest = rest[cut + 1 :]
        final = [s for s in rest if s.kind in (StepKind.PICKUP, StepKind.DROPOFF, StepKind.CHARGE)]
        self._end_wait(run)
        run.steps = deque(
            [
                Step(StepKind.LIFT_EXIT, lift=lift, level=level, to_node=lobby),
                Step(StepKind.LIFT_RELEASE, lift=lift, level=level),
                *(
                    [
                        Step(StepKind.REROUTE, note=f"fire recall: out of {lift} at {level}"),
                        final[-1],
                    ]
                    if final
                    else []
                ),
            ]
        )
        sid = run.sessions.get(lift_resource(lift), "")
        self._session_move(sid, SessionState.ARRIVED, "fire recall", level=level)
        self._log(run, f"fire recall: leaves {lift} at {level}", "LIFT_RECALL")
        self._advance(run)

    def _learn_lift_wait(self, run: _RobotRun, lift: str) -> None:
        """Count the wait from the robot's call (queueing for the car included) to the car
        standing open at its level; plan with the learned waits from now on."""
        called_at, run.lift_called_at = run.lift_called_at, None
        if called_at is None:
            return  # a car brought to a robot stuck in it after a restart: not a real call
        waited = self.clock.now() - called_at
        self.lift_wait_log.append((lift, waited))
        self.lift_waits.observe(lift, waited)
        self._plan_with_learned_lifts()

    def _learn_lift_ride(self, run: _RobotRun, lift: str, from_level: str, to_level: str) -> None:
        """Count how much longer a ride took (doors closing, travel, doors opening) than the
        map's physics say: a slow car, a car that stops for people on the way."""
        started, run.ride_started_at = run.ride_started_at, None
        if started is None:
            return
        spec = self.building.lifts[lift]
        levels = self.building.levels
        climb = abs(levels[to_level].elevation - levels[from_level].elevation)
        nominal = 2 * spec.door_time_s + climb / spec.speed_m_s
        self.lift_ride_excess.observe(lift, self.clock.now() - started - nominal)
        self._plan_with_learned_lifts()

    def _plan_with_learned_lifts(self) -> None:
        """Travel times use the learned wait for a car plus the learned extra ride time."""
        waits = self.lift_waits.estimates()
        excess = self.lift_ride_excess.estimates()
        if self.graph.set_lift_waits({k: v + excess[k] for k, v in waits.items()}):
            self._request_replan()

    # ---- lift sessions ---------------------------------------------------------------------

    def _session_move(
        self, sid: str, state: SessionState, why: str, *, level: str | None = None
    ) -> None:
        """Move a lift session on; a move the lifecycle forbids is recorded, never fatal.
        `level` (ARRIVED only): a fire recall let the robot out there."""
        if not sid or self.lift_sessions.get(sid) is None:
            return
        try:
            if level is None:
                self.lift_sessions.move(sid, state, self.clock.now(), why)
            else:
                self.lift_sessions.move(
                    sid, state, self.clock.now(), why, level=level, recalled=True
                )
        except IllegalSessionTransition as exc:
            self.session_errors.append(str(exc))

    def _may_enter(self, run: _RobotRun, step: Step) -> bool:
        """Whether the robot may drive into the car now: its own live session, the car at its
        level with the door open, on a fresh report. Otherwise it calls the car again."""
        state = self.lifts[step.lift]
        why = self.lift_sessions.may_enter(
            run.robot.id,
            step.lift,
            step.level,
            reported_session=state.session_id,
            reported_level=state.level,
            door_open=state.door is m.LiftDoorState.OPEN,
            report_age_s=self.clock.now() - state.reported_at,
            max_age_s=self.config.lift_state_max_age_s,
        )
        if not why:
            return True
        self._log(run, f"not entering {step.lift}: {why}; calling it again", "LIFT_RECALL")
        res = lift_resource(step.lift)
        sid = run.sessions.pop(res, "")
        session = self.lift_sessions.get(sid) if sid else None
        if session is not None and session.live:
            self._session_move(sid, SessionState.CANCELLED, why)
        if sid:
            self._outbox.append(m.LiftCommand(step.lift, m.LiftAction.RELEASE, sid, run.robot.id))
        call = Step(StepKind.LIFT_CALL, lift=step.lift, level=step.level, from_node=step.from_node)
        run.steps.appendleft(call)
        return False

    def _request_ack(self, msg: m.RequestAck) -> None:
        """A controller accepted or refused a request. A refused lift session that is still
        ours is called again (lease expired) or routed around (car not in service); a refused
        door is routed around until the door reports itself in order again."""
        if msg.accepted:
            session = self.lift_sessions.get(msg.session_id)
            if session is not None and session.state is SessionState.REQUESTED:
                self._session_move(msg.session_id, SessionState.ASSIGNED, "controller accepted")
            return
        owner = next(
            (r for r in self.robots.values() if msg.session_id in r.sessions.values()), None
        )
        if owner is None:
            return  # a session we already gave up
        resource = next(k for k, v in owner.sessions.items() if v == msg.session_id)
        kind, _, name = resource.partition(":")
        why = f"{kind} {name} refused {owner.robot.id}: {msg.reason or 'no reason given'}"
        self._log(owner, why, "REFUSED")
        if kind == "lift":
            if owner.in_lift == name:
                # Its robot is inside the car: a refused request (a ride during a fire recall)
                # does not end the session. The car lets the robot out at its recall level,
                # reported on that same session, or an operator brings it out.
                self._alert(
                    "LIFT_REFUSED_RIDER", m.AlertSeverity.CRITICAL, name, why, (owner.robot.id,)
                )
                return
            expired = "lease" in msg.reason.lower()
            self._session_move(
                msg.session_id,
                SessionState.EXPIRED if expired else SessionState.CANCELLED,
                msg.reason,
            )
            owner.sessions.pop(resource, None)
            w = owner.waiting
            if expired and w is not None and w.kind == "lift_at" and w.resource == resource:
                # The car was freed under us: ask again, with a new session.
                self._call_lift(owner, name, w.level)
                return
            if not expired:
                self.closures.faults.setdefault(resource, why)
                self._alert("LIFT_REFUSED", m.AlertSeverity.WARNING, name, why, (owner.robot.id,))
                self._apply_closures(why)
            self._reroute(owner, why)
            self._advance(owner)
        else:
            self.closures.faults.setdefault(resource, why)
            self._alert("DOOR_REFUSED", m.AlertSeverity.WARNING, name, why, (owner.robot.id,))
            self._apply_closures(why)
            self._reroute(owner, why)
            self._advance(owner)

    # ---- closures, re-routing, deadlocks ---------------------------------------------------

    def _apply_closures(self, why: str) -> None:
        """Tell the graph what is closed; if travel changed, re-plan and re-route every robot
        whose way is affected (and retry those that had no way)."""
        c = self.closures
        doors = c.of("door")
        if c.fire_alarm:
            doors |= {n for n, d in self.building.doors.items() if d.kind is DoorKind.FIRE}
        changed = self.graph.set_closed(
            lanes=c.of("lane"), doors=doors, lifts=c.of("lift"), nodes=c.of("node")
        )
        if not changed:
            return
        self._request_replan()
        for run in sorted(self.robots.values(), key=lambda r: r.robot.id):
            if not run.connected or run.paused:
                continue
            w = run.waiting
            if (w is not None and w.kind == "blocked") or self._way_closed(run):
                self._reroute(run, why)
                self._advance(run)

    def _way_closed(self, run: _RobotRun) -> bool:
        """Whether the robot's remaining steps use a lane, door, lift or node now closed."""
        closed = self.graph.closed
        for step in run.steps:
            if step.kind is StepKind.MOVE:
                lane = self._lanes.get((step.from_node, step.to_node))
                if (
                    (lane is not None and lane.name in closed.lanes)
                    or (step.door and step.door in closed.doors)
                    or step.to_node in closed.nodes
                ):
                    return True
            elif step.lift and step.lift in closed.lifts and run.in_lift != step.lift:
                return True
        return False

    def _reroute(self, run: _RobotRun, why: str) -> None:
        """Rebuild the route to the robot's current stop from where it is now. A robot in a
        car or mid-step re-routes once that is done; one with no way left waits, blocked,
        with an alert, until a closure lifts."""
        if run.in_lift or run.in_flight is not None:
            steps = list(run.steps)
            if run.in_lift:
                at = next((i for i, s in enumerate(steps) if s.kind is StepKind.LIFT_RELEASE), -1)
            else:
                at = 0
            if at >= 0 and not (at + 1 < len(steps) and steps[at + 1].kind is StepKind.REROUTE):
                steps.insert(at + 1, Step(StepKind.REROUTE, note=why))
                run.steps = deque(steps)
            return
        robot = run.robot
        final = _final_step(run)
        self._drop_waits(run)
        if final is None:
            run.steps.clear()
            return
        caps = robot.capabilities
        try:
            route = self.graph.route(robot.node, final.to_node, caps.flow, caps.max_speed_m_s)
        except NoRoute:
            run.steps = deque([final])
            self._blocked(run, why, final.to_node)
            return
        if self._active_alerts.get(("ROBOT_BLOCKED", robot.id)) is not None:
            self._clear_alerts(robot.id, prefix="ROBOT_BLOCKED")
        run.steps = deque([*steps_for_route(route, self._speed_limits), final])
        self._log(run, f"re-routed to {final.to_node} ({why})", "REROUTE")

    def _blocked(self, run: _RobotRun, why: str, goal: str) -> None:
        """The robot has no way to `goal` now: it waits where it is, and staff are told."""
        robot = run.robot
        self._start_wait(run, _Wait("blocked", why))
        self._log(run, f"no way to {goal}: waits ({why})", "BLOCKED")
        self._alert(
            "ROBOT_BLOCKED",
            m.AlertSeverity.WARNING,
            robot.id,
            f"{robot.id} has no way to {goal} ({why}); it waits where it is",
            (robot.id,),
        )

    def _drop_waits(self, run: _RobotRun) -> None:
        """Give up what the robot waits for and the doors and cars it holds on the floor, and
        the lanes and nodes ahead; it keeps the node it stands on."""
        rid = run.robot.id
        self._end_wait(run)
        self._grant(self.traffic.cancel(rid))
        # The step under way keeps what it drives through (a door held open for it included)
        # and where it is going.
        flight = run.in_flight[1] if run.in_flight is not None else None
        passing = door_resource(flight.door) if flight is not None and flight.door else ""
        for resource in list(run.sessions):
            if resource not in (lift_resource(run.in_lift), passing):
                self._release(run, resource)
        keep = [r for r in (self.resources.node_resource(run.robot.node), passing) if r]
        if run.in_lift:
            keep.append(lift_resource(run.in_lift))
        if flight is not None:
            keep.extend(self._needs(run, flight, 0))
        self._grant(self.traffic.release_all(rid, keep=keep))

    def _robots_using(self, *, lift: str = "", door: str = "") -> tuple[str, ...]:
        """Robots whose remaining steps use the lift or door."""
        return tuple(
            sorted(
                run.robot.id
                for run in self.robots.values()
                if any((lift and s.lift == lift) or (door and s.door == door) for s in run.steps)
            )
        )

    def _block(self, run: _RobotRun, why: str) -> None:
        """A dead robot blocks the exclusive node, lane or zone it stopped on: routes avoid it
        until it is back."""
        held = [
            r
            for r in self.traffic.held_by(run.robot.id)
            if r.startswith(("node:", "lane:", "zone:"))
            or (run.in_lift and r == lift_resource(run.in_lift))
        ]
        if not held:
            return
        for res in held:
            kind, _, name = res.partition(":")
            if kind == "zone":
                for lane in self.building.lanes:
                    if lane.zone == name:
                        self.closures.blocked[f"lane:{lane.name}"] = run.robot.id
            else:
                self.closures.blocked[res] = run.robot.id
        self._alert(
            "ROBOT_BLOCKING",
            m.AlertSeverity.CRITICAL,
            run.robot.id,
            f"{run.robot.id} stopped on {', '.join(held)} ({why}); robots are routed around it",
            (run.robot.id,),
        )
        self._apply_closures(f"{run.robot.id} blocks {', '.join(held)}")

    def _unblock(self, robot_id: str) -> None:
        gone = [k for k, v in self.closures.blocked.items() if v == robot_id]
        if not gone:
            return
        for key in gone:
            del self.closures.blocked[key]
        self._clear_alerts(robot_id, prefix="ROBOT_BLOCKING")
        self._apply_closures(f"{robot_id} no longer blocks the way")

    def _resolve_deadlocks(self) -> None:
        """Break every cycle of robots waiting for each other: one of them backs off to a
        holding point, then re-routes. An idle robot in the way is moved aside the same way."""
        if self._resolving:
            return  # a back-off's own requests: the outer call (or the next tick) looks again
        if not self.traffic.waiters() and not self._stuck:
            return  # nobody waits: no cycle (the common case, on every tick)
        self._resolving = True
        try:
            self._break_cycles()
        finally:
            self._resolving = False

    def _break_cycles(self) -> None:
        # One back-off changes the wait-for graph (it may break several cycles, or make a
        # robot of another cycle the one to move): look again after each.
        for _ in range(len(self.robots) + 1):
            # `any` stops at the first cycle broken; the next round looks at the graph anew.
            if not any(self._break(cycle) for cycle in self.traffic.deadlocks()):
                break
        now = self.clock.now()
        cycles = self.traffic.deadlocks()
        current = {",".join(c) for c in cycles}
        for key in sorted(set(self._stuck) - current):
            # A cycle nobody could back out of, broken since (a holding point came free).
            self.longest_deadlock_s = max(self.longest_deadlock_s, now - self._stuck.pop(key))
            self.deadlocks_resolved += 1
            self._clear_alerts(key, prefix="DEADLOCK")
        for cycle in cycles:
            key = ",".join(cycle)
            if key not in self._stuck:
                self._stuck[key] = now
                self._alert(
                    "DEADLOCK",
                    m.AlertSeverity.CRITICAL,
                    key,
                    f"robots {key} wait for each other and none can back off",
                    tuple(cycle),
                )

    def _break(self, cycle: list[str]) -> bool:
        """Back one robot of the cycle off (the one that began waiting last); False when none
        of them can move."""
        victims = sorted(
            (self.robots[h] for h in cycle if h in self.robots),
            key=lambda r: (-(r.waiting.since if r.waiting else -math.inf), r.robot.id),
        )
        for run in victims:
            others = ", ".join(c for c in cycle if c != run.robot.id)
            if self._back_off(run, f"deadlock with {others}"):
                self.deadlocks_resolved += 1
                return True
        return False

    @property
    def deadlocks_unresolved(self) -> int:
        """Cycles of robots waiting for each other that no back-off has broken yet."""
        return len(self._stuck)

    def _clear_the_way(self) -> None:
        """An idle robot standing on an exclusive node another robot waits for moves aside."""
        for rid in self.traffic.waiters():
            for holder in sorted(self.traffic.blockers(rid)):
                run = self.robots.get(holder)
                if (
                    run is not None
                    and run.connected
                    and not run.paused
                    and run.robot.mode is not RobotMode.FAULT
                    and run.current_stop is None
                    and run.in_flight is None
                    and run.waiting is None
                    and not run.steps
                    and not run.future
                    and not run.in_lift
                ):
                    self._back_off(run, f"making way for {rid}")

    def _back_off(self, run: _RobotRun, why: str) -> bool:
        """Send the robot to the nearest holding point it can reach over lanes and nodes no
        other robot holds; its stop's route is rebuilt from there. False when there is none."""
        if not run.connected or run.in_lift or run.in_flight is not None or run.paused:
            return False
        robot = run.robot
        caps = robot.capabilities
        rid = robot.id
        options = []
        for hp in self.building.holding_points:
            if hp == robot.node:
                continue
            t = self.graph.travel_time(robot.node, hp, caps.flow, caps.max_speed_m_s)
            if math.isfinite(t):
                options.append((t, hp))
        # What other robots wait for: a back-off route must not take it from under them,
        # unless they wait for this robot to get out of their way (TrafficControl lets it).
        wanted = {
            r
            for w in self.traffic.waiters()
            if w != rid and rid not in self.traffic.blockers(w)
            for r in self.traffic.waiting_for(w)
        }
        for _, hp in sorted(options)[:12]:
            route = self.graph.route(robot.node, hp, caps.flow, caps.max_speed_m_s)
            if any(not isinstance(leg, LaneLeg) for leg in route.legs):
                continue
            needs: list[str] = []
            for leg in route.legs:
                assert isinstance(leg, LaneLeg)
                needs += [
                    r
                    for r in (
                        self.resources.lane_resource(leg.start, leg.end),
                        self.resources.node_resource(leg.end),
                    )
                    if r
                ]
                if leg.door:
                    needs.append(door_resource(leg.door))
            if any(h != rid for r in needs for h in self.traffic.holders(r)) or wanted & set(needs):
                continue
            final = _final_step(run)
            self._drop_waits(run)
            tail = (
                [Step(StepKind.REROUTE, note=f"after backing off to {hp}"), final]
                if final is not None
                else []
            )
            run.steps = deque([*steps_for_route(route, self._speed_limits), *tail])
            self._log(run, f"backs off to {hp}: {why}", "BACK_OFF")
            self._advance(run)
            return True
        return False

    # ---- operator controls and the fire alarm ----------------------------------------------

    def _operator(self, cmd: m.OperatorCommand) -> None:
        """Pause or resume robots; close or reopen a lane, door or lift. Every plan affected is
        rebuilt; an alert tells the operations centre what changed."""
        a, target = cmd.action, cmd.target
        who = f" by {cmd.operator}" if cmd.operator else ""
        reason = cmd.reason or "no reason given"
        if a in (m.OperatorAction.PAUSE_ROBOT, m.OperatorAction.RESUME_ROBOT):
            if target and target not in self.robots:
                raise InvalidArgument("target", f"unknown robot {target!r}")
            runs = (
                [self.robots[target]]
                if target
                else sorted(self.robots.values(), key=lambda r: r.robot.id)
            )
            for run in runs:
                if a is m.OperatorAction.PAUSE_ROBOT:
                    self._pause(run, f"paused{who}: {reason}")
                else:
                    self._resume(run, f"resumed{who}")
            return
        kind = a.value.split("_", 1)[1].lower()  # lane, door or lift
        names = (
            {lane.name for lane in self.building.lanes}
            if kind == "lane"
            else set(self.building.doors if kind == "door" else self.building.lifts)
        )
        if not target:
            raise InvalidArgument("target", f"a {kind} name is required")
        if target not in names:
            raise InvalidArgument("target", f"unknown {kind} {target!r}")
        key = f"{kind}:{target}"
        code = f"{kind.upper()}_CLOSED_BY_OPERATOR"
        if a.value.startswith("CLOSE"):
            self.closures.operator[key] = f"{kind} {target} closed{who}: {reason}"
            users = (
                self._robots_using(lift=target)
                if kind == "lift"
                else (self._robots_using(door=target) if kind == "door" else ())
            )
            self._alert(code, m.AlertSeverity.WARNING, target, self.closures.operator[key], users)
        elif self.closures.operator.pop(key, None) is not None:
            self._clear_alerts(target, prefix=code)
        self._apply_closures(
            f"{kind} {target} {'closed' if a.value.startswith('CLOSE') else 'reopened'}{who}"
        )

    def _pause(self, run: _RobotRun, why: str) -> None:
        if run.paused or not run.connected:
            return
        run.paused = True
        robot = run.robot
        self._outbox.append(
            m.SendInstantAction(robot.id, next(self._action_ids), m.InstantKind.PAUSE, why)
        )
        self._log(run, why, "PAUSE")
        if not run.in_lift:
            # What it has not picked up goes to other robots; what is on board stays with it.
            now = self.clock.now()
            stop = run.current_stop
            if stop is None or stop.kind is not StopKind.DROPOFF:
                flight = run.in_flight
                kept = list(itertools.islice(run.steps, 2)) if flight is not None else []
                # The step under way, and the door it drives through closed behind it.
                run.steps = deque(
                    s
                    for i, s in enumerate(kept)
                    if i == 0 or (s.kind is StepKind.DOOR_CLOSE and kept[0].door == s.door)
                )
                run.current_stop = None
            self._drop_waits(run)
            run.future = []
            for order in self.orders.values():
                if order.robot_id == robot.id and order.state is OrderState.ASSIGNED:
                    order.move_to(OrderState.PENDING, now, f"robot {robot.id} {why}")
                    self._mark(order)
        robot.mode = RobotMode.PAUSED
        self.store.upsert_robot(robot)
        self._alert(
            "ROBOT_PAUSED", m.AlertSeverity.INFO, robot.id, f"{robot.id} {why}", (robot.id,)
        )
        self._request_replan()

    def _resume(self, run: _RobotRun, why: str) -> None:
        if not run.paused:
            return
        run.paused = False
        robot = run.robot
        robot.mode = RobotMode.BUSY if (run.steps or run.in_flight) else RobotMode.IDLE
        self.store.upsert_robot(robot)
        self._outbox.append(
            m.SendInstantAction(robot.id, next(self._action_ids), m.InstantKind.RESUME, why)
        )
        self._log(run, why, "RESUME")
        self._clear_alerts(robot.id, prefix="ROBOT_PAUSED")
        self._request_replan()
        self._advance(run)

    def _fire_alarm(self, msg: m.FireAlarm) -> None:
        """A fire alarm closes every fire door to robots (none is held open) and, through the
        lift controllers' recall reports, the lifts; clearing it reopens them."""
        active = msg.detail or "fire alarm" if msg.active else ""
        if bool(active) == bool(self.closures.fire_alarm):
            return
        self.closures.fire_alarm = active
        if msg.active:
            fire = {n for n, d in self.building.doors.items() if d.kind is DoorKind.FIRE}
            self._alert(
                "FIRE_ALARM",
                m.AlertSeverity.CRITICAL,
                msg.controller_id or "building",
                f"fire alarm: {active}; fire doors {', '.join(sorted(fire)) or '(none)'} closed",
                tuple(sorted({r for d in fire for r in self._robots_using(door=d)})),
            )
        else:
            self._clear_alerts(msg.controller_id or "building", prefix="FIRE_ALARM")
        self._apply_closures(f"fire alarm {'on' if msg.active else 'cleared'}")

    # ---- alerts --------------------------------------------------------------------------

    def _alert(
        self,
        code: str,
        severity: m.AlertSeverity,
        subject: str,
        message: str,
        robots: Sequence[str] = (),
    ) -> None:
        key = (code, subject)
        active = self._active_alerts.get(key)
        if active is not None and active.message == message:
            return
        alert = m.Alert(self.clock.now(), code, severity, subject, message, tuple(robots))
        self._active_alerts[key] = alert
        self._keep_alert(alert)

    def _clear_alerts(self, subject: str, prefix: str) -> None:
        for key in sorted(
            k for k in self._active_alerts if k[1] == subject and k[0].startswith(prefix)
        ):
            was = self._active_alerts.pop(key)
            alert = dataclasses.replace(
                was, at=self.clock.now(), message=f"cleared: {was.message}", cleared=True
            )
            self._keep_alert(alert)

    def _keep_alert(self, alert: m.Alert) -> None:
        """Record and send an alert; the history is bounded (the active ones are kept apart)."""
        self.alerts.append(alert)
        if len(self.alerts) > ALERT_HISTORY:
            del self.alerts[: len(self.alerts) - ALERT_HISTORY]
        self._outbox.append(alert)

    def active_alerts(self) -> list[m.Alert]:
        """Alerts raised and not cleared, oldest first."""
        return sorted(self._active_alerts.values(), key=lambda a: a.at)

    # ---- faults and time -----------------------------------------------------------------

    def _tick(self) -> None:
        now = self.clock.now()
        for run in self.robots.values():
            if run.connected and now - run.robot.last_seen > self.config.offline_timeout_s:
                self._go_offline(run, f"no report for {now - run.robot.last_seen:.0f} s")
        if not self._grace_over and now - self._started_at > self.config.reconnect_grace_s:
            self._grace_over = True
            for order in self.orders.values():
                if order.state is OrderState.PICKED_UP and (order.robot_id not in self.robots):
                    order.move_to(
                        OrderState.FAILED,
                        now,
                        f"robot {order.robot_id} did not reconnect after a dispatcher restart",
                    )
                    self._mark(order)
        self._evict_finished(now)
        if any(
            (o := self.orders.get(oid)) is not None and self._released_at(o, now) <= now
            for oid in self._held
        ):
            self._held.clear()
            self._request_replan()  # a station opened: its waiting orders can be planned
        for session in self.lift_sessions.due_for_renewal(now):
            self.lift_sessions.renew(session.id, now)
            self._outbox.append(
                m.LiftCommand(
                    session.lift, m.LiftAction.RENEW, session.id, session.robot, "", self._lease_s
                )
            )
        self._clear_the_way()
        self._resolve_deadlocks()
        # Robots given work by an insertion start here if no plan has started them since; an
        # idle robot at a charger starts topping up once it has reported its battery.
        for run in sorted(self.robots.values(), key=lambda r: r.robot.id):
            free = run.current_stop is None and run.in_flight is None and run.waiting is None
            if free and (run.future or (run.robot.node in self._chargers and not run.steps)):
                self._advance(run)

    def _evict_finished(self, now: float) -> None:
        """Drop long-finished orders from memory, so a service running for months stays small."""
        keep = self.config.finished_retention_s
        if keep is None:
            return
        old = [
            oid
            for oid, o in self.orders.items()
            if o.state.terminal
            and o.history
            and o.history[-1].at < now - keep
            and oid not in self._dirty
        ]
        for oid in old:
            del self.orders[oid]
            self._earliest.pop(oid, None)
            self._opened.discard(oid)
        self.lift_sessions.forget_finished()  # the same for finished lift sessions

    def _go_offline(self, run: _RobotRun, why: str) -> None:
        self._abandon_work(run, f"robot {run.robot.id} went offline ({why})", fail_onboard=True)
        run.connected = False
        run.robot.mode = RobotMode.OFFLINE
        self._log(run, f"offline: {why}", "OFFLINE")
        self.store.upsert_robot(run.robot)
        self._block(run, f"offline: {why}")

    def _abandon_work(self, run: _RobotRun, reason: str, fail_onboard: bool) -> None:
        """Stop a robot's work: its resources go back, its unpicked orders to other robots."""
        now = self.clock.now()
        kept = lift_resource(run.in_lift) if run.in_lift else ""
        for resource in list(run.sessions):
            if resource != kept:
                self._release(run, resource)
        if kept:
            # A robot that stops inside a car blocks it: nobody else is sent in until it
            # reconnects and is brought out, or an operator clears the car.
            self._log(run, f"stopped inside {run.in_lift}: car held", "LIFT_BLOCKED")
        # It stays physically where it stopped: the node it stands on (and the lane or zone
        # it was driving) stays held.
        keep = {kept} - {""}
        flight = run.in_flight
        if not run.in_lift:
            keep.add(self.resources.node_resource(run.robot.node) or "")
            if flight is not None and flight[1].kind is StepKind.MOVE:
                keep.add(self.resources.lane_resource(flight[1].from_node, flight[1].to_node) or "")
        keep.discard("")
        self._grant(self.traffic.release_all(run.robot.id, keep=keep))
        run.in_flight = None
        self._end_wait(run)
        run.steps.clear()
        run.current_stop = None
        run.topping_up = False
        run.future = []
        for order in self.orders.values():
            if order.robot_id != run.robot.id or order.state.terminal:
                continue
            if order.state is OrderState.ASSIGNED:
                order.move_to(OrderState.PENDING, now, reason)
                self._mark(order)
            elif order.state is OrderState.PICKED_UP and fail_onboard:
                order.move_to(OrderState.FAILED, now, reason + " with the order on board")
                run.robot.carrying.discard(order.id)
                self._mark(order)
        self._request_replan()

    # ---- planning ------------------------------------------------------------------------

    def _insert(self, order: Order, why: str) -> bool:
        """Assign `order` at once to the robot where it adds least to the current plan.

        The robot's future stops become the insertion's; the robot itself is started by the
        next plan or the next tick, so a full plan arriving in between can still place it
        better. False (the order stays or becomes PENDING) when no robot can take it now.
        """
        now = self.clock.now()
        runs: list[_RobotRun] = []
        routes: list[VehicleRoute] = []
        for run in sorted(self.robots.values(), key=lambda r: r.robot.id):
            vehicle = self._vehicle(run, now)
            if vehicle is None:
                continue
            if run.stale or order.robot_id == run.robot.id:
                stops = without_orders(run.future, self._gone_from(run.robot.id, order.id))
                if run.stale:
                    run.future, run.stale = list(stops), False
            else:
                stops = tuple(run.future)
            runs.append(run)
            routes.append(VehicleRoute(vehicle, stops))
        found = None
        if self._released_at(order, now) <= now:
            task = self._task(order)
            # The insertion knows no hard windows: place without them, then check the closing
            # times; the full solve handles what does not fit.
            loose = dataclasses.replace(task, pickup_latest=None, dropoff_latest=None)
            found = insert_task(loose, routes, self.graph.travel_time, now, self.orders)
            if found is not None and (
                found.pickup_eta > (task.pickup_latest or math.inf)
                or found.eta > (task.dropoff_latest or math.inf)
            ):
                found = None
        if found is None:
            if order.state is OrderState.ASSIGNED:
                order.move_to(OrderState.PENDING, now, "no robot can take it now")
                self._mark(order)
            elif self._deferred(order, now) is not None and order.needed_by is not None:
                # Scheduled, not yet planned: it arrives the deferral margin before it is needed.
                margin = self.config.pickup_defer_margin_s or 0.0
                order.eta = order.needed_by - margin
                self._mark(order)
            return False
        run = runs[[r.robot.id for r in runs].index(found.robot_id)]
        run.future = list(found.stops)
        previous = self.robots.get(order.robot_id or "")
        if previous is not None and previous is not run:
            previous.stale = True  # the order leaves its future
        if order.state is OrderState.PENDING or order.robot_id != found.robot_id:
            order.robot_id = found.robot_id
            order.move_to(OrderState.ASSIGNED, now, f"assigned to {found.robot_id} ({why})")
            self.store.record_assignments(
                [Assignment(order.id, found.robot_id, now, self.plan_version)]
            )
        # A deferred pickup waits: the drop-off comes that much later than the insertion says.
        earliest = self._deferred(order, now)
        order.eta = found.eta + max(0.0, (earliest or -math.inf) - found.pickup_eta)
        self._mark(order)
        self._record_compartments(run, found.stops, found.compartments)
        return True

    def _gone_from(self, robot_id: str, placing: str) -> Callable[[str], bool]:
        """A test for order ids no longer this robot's to pick up or deliver; the order being
        placed counts as gone, so it is never in a route twice."""

        def gone(order_id: str) -> bool:
            order = self.orders.get(order_id)
            return (
                order_id == placing
                or order is None
                or order.state.terminal
                or order.robot_id != robot_id
            )

        return gone

    def snapshot(self) -> tuple[Snapshot, int]:
        """What the optimizer needs now, and the epoch it was taken at."""
        now = self.clock.now()
        vehicles: list[VehicleState] = []
        committed: set[str] = set()
        for run in self.robots.values():
            vehicle = self._vehicle(run, now)
            if vehicle is None:
                continue
            vehicles.append(vehicle)
            if run.current_stop is not None:
                committed.update(run.current_stop.order_ids)
        open_work = [
            o
            for o in self.orders.values()
            if o.state in (OrderState.PENDING, OrderState.ASSIGNED) and o.id not in committed
        ]
        released = [o for o in open_work if self._released_at(o, now) <= now]
        self._held = {o.id for o in open_work} - {o.id for o in released}
        tasks = tuple(self._late(self._task(o), o, now) for o in released)
        vehicles.sort(key=lambda v: v.robot_id)
        self.replan_requested = False
        chargers = self._chargers if self.config.battery_drain_pct_per_s > 0 else ()
        # The current plan warm-starts the solve (what insertions made of it since the last one).
        task_ids = {t.order_id for t in tasks} | {o.order_id for v in vehicles for o in v.onboard}
        hint = tuple(
            (
                v.robot_id,
                tuple(
                    (oid, stop.kind)
                    for stop in self.robots[v.robot_id].future
                    if stop.kind in (StopKind.PICKUP, StopKind.DROPOFF)
                    for oid in stop.order_ids
                    if oid in task_ids
                ),
            )
            for v in vehicles
        )
        snap = Snapshot(
            now=now, vehicles=tuple(vehicles), tasks=tasks, chargers=chargers, hint=hint
        )
        return snap, self.plan_epoch

    def _vehicle(self, run: _RobotRun, now: float) -> VehicleState | None:
        """A robot as the planner sees it: where and when it is free after its committed stop,
        and what it will carry then. None for a robot that cannot take work."""
        r = run.robot
        if not run.connected or r.mode in (RobotMode.FAULT, RobotMode.OFFLINE, RobotMode.PAUSED):
            return None
        cfg = self.config
        onboard_ids = set(r.carrying)
        start, available = r.node, now
        charging_until: float | None = None
        stop = None if run.topping_up else run.current_stop
        if stop is not None and stop.kind is StopKind.CHARGE:
            # On (or driving to) its charger: STAT work may take it at once, other work waits
            # for the charge (the planner's rule for `charging_until`).
            start, available = stop.node, max(now, run.charge_from)
            charging_until = max(available, run.stop_departure)
        elif stop is not None:
            start, available = stop.node, max(now, run.stop_departure)
            if stop.kind is StopKind.PICKUP:
                onboard_ids.update(stop.order_ids)
            else:
                onboard_ids.difference_update(stop.order_ids)
        # What the drive to the committed stop will still cost (service time counted as
        # driving: on the safe side).
        battery = max(0.0, r.battery_percent - cfg.battery_drain_pct_per_s * (available - now))
        if cfg.battery_drain_pct_per_s > 0 and self._chargers:
            # The reserve is what gets a robot to a charger: one that could not reach a charger
            # without using it is "below its reserve" for the planner, which then sends it to
            # charge first (that drive may use the reserve).
            to_charger = self._charger_time(start, r.capabilities)
            if battery - cfg.battery_drain_pct_per_s * to_charger < cfg.battery_reserve_pct:
                battery = min(battery, cfg.battery_reserve_pct - 1e-6)
        onboard = tuple(
            OnboardTask(
                order_id=o.id,
                dropoff_node=self.building.station_node(o.dropoff_station),
                cargo_class=o.cargo_class,
                quantity=o.quantity,
                priority=o.priority,
                needed_by=_wanted_by(o),
                dropoff_service_s=self.building.stations[o.dropoff_station].service_time_s,
                weight_kg=o.weight_kg,
                compartment=o.compartment,
            )
            for o in sorted((self.orders[i] for i in onboard_ids), key=lambda o: o.id)
        )
        caps = r.capabilities
        return VehicleState(
            robot_id=r.id,
            start_node=start,
            available_at=available,
            capacity_slots=caps.capacity_slots,
            speed_m_s=caps.max_speed_m_s,
            cargo_classes=caps.cargo_classes,
            flow=caps.flow,
            onboard=onboard,
            max_payload_kg=caps.max_payload_kg,
            compartments=caps.compartments,
            custody_full=bool(caps.compartments)
            and self._custody_kept(run) >= (caps.compartments or 0),
            battery_pct=battery,
            reserve_pct=cfg.battery_reserve_pct if cfg.battery_drain_pct_per_s > 0 else 0.0,
            drain_pct_per_s=cfg.battery_drain_pct_per_s,
            charge_pct_per_s=cfg.battery_charge_pct_per_s,
            charging_until=charging_until,
        )

    def _charger_time(self, node: str, caps: RobotCapabilities) -> float:
        """Travel time from `node` to the nearest charger (cached until the graph changes)."""
        if self._to_charger_version != self.graph.version:
            self._to_charger.clear()
            self._to_charger_version = self.graph.version
        flow, speed = caps.flow, caps.max_speed_m_s
        key = (node, flow.value, speed)
        found = self._to_charger.get(key)
        if found is None:
            found = min(self.graph.travel_time(node, c, flow, speed) for c in self._chargers)
            self._to_charger[key] = found
        return found

    def _open_until(self, station: str, now: float) -> tuple[float, float]:
        """When `station` next opens (`now` if open) and when it closes after that (inf: never)."""
        hours = self.building.stations[station].opening_hours
        if hours.always_open:
            return now, math.inf
        window = hours.next_open_window(now, self.building.utc_offset_s(now))
        # The loader refuses hours that never open; should one slip through, it is closed.
        return window if window is not None else (math.inf, math.inf)

    def _released_at(self, o: Order, now: float) -> float:
        """When the order may be planned: both of its stations open (now for most orders).

        Until then it waits PENDING, so a robot is never sent to a closed station to wait. A
        deferred order (late commitment) waits until shortly before its earliest pickup.
        """
        opens = max(
            self._open_until(o.pickup_station, now)[0],
            self._open_until(o.dropoff_station, now)[0],
        )
        earliest = self._deferred(o, now)
        if earliest is None:
            return opens
        return max(opens, earliest - self.config.defer_lookahead_s)

    def _task(self, o: Order) -> Task:
        """An order not yet on board, as the planner sees it.

        A station with opening hours bounds the start of the work there: it must begin before
        the station closes (a hard window; the order stays PENDING if no robot can make it).
        """
        stations = self.building.stations
        now = self.clock.now()
        pickup_close = self._open_until(o.pickup_station, now)[1]
        dropoff_close = self._open_until(o.dropoff_station, now)[1]
        pickup_service = stations[o.pickup_station].service_time_s
        dropoff_service = stations[o.dropoff_station].service_time_s
        return Task(
            order_id=o.id,
            pickup_node=stations[o.pickup_station].node,
            dropoff_node=stations[o.dropoff_station].node,
            cargo_class=o.cargo_class,
            quantity=o.quantity,
            priority=o.priority,
            created_at=o.created_at,
            needed_by=_wanted_by(o),
            pickup_service_s=pickup_service,
            dropoff_service_s=dropoff_service,
            pickup_latest=None if math.isinf(pickup_close) else pickup_close - pickup_service,
            dropoff_latest=None if math.isinf(dropoff_close) else dropoff_close - dropoff_service,
            weight_kg=o.weight_kg,
            # A return leg: only on the robot, and in the compartment, that brought the outbound.
            pinned_robot=o.pinned_robot,
            pinned_compartment=o.pinned_compartment,
            custody=bool(o.custody_case),
        )

    def _late(self, task: Task, o: Order, now: float) -> Task:
        """`task` with its deferred pickup as a hard earliest time (late commitment); an order
        that must also meet a station's closing time is never deferred."""
        if task.pickup_latest is not None or task.dropoff_latest is not None:
            return task
        earliest = self._deferred(o, now)
        return task if earliest is None else dataclasses.replace(task, pickup_earliest=earliest)

    def apply_plan(self, plan: Plan, epoch: int) -> bool:
        """Install a plan computed from the snapshot taken at `epoch`.

        Refused (False, and a new re-plan requested) when a robot began a new stop since: the
        plan would start robots from where they no longer are.
        """
        if epoch != self.plan_epoch:
            self._request_replan()
            return False
        now = self.clock.now()
        assignments: list[Assignment] = []
        planned: set[str] = set()
        compartments: dict[str, dict[str, int]] = {}  # robot id -> order id -> compartment
        for oid, (rid, index) in plan.compartment.items():
            compartments.setdefault(rid, {})[oid] = index
        for other in self.robots.values():
            if other.robot.id not in plan.routes:
                # Not in the snapshot (it connected since, or could not take work): what an
                # insertion gave it is placed again below, against the new plan.
                other.future = []
        for robot_id, route in plan.routes.items():
            run = self.robots.get(robot_id)
            if run is None or not run.connected:
                continue
            run.future = list(route.stops)
            run.stale = True  # orders may have been cancelled since the snapshot
            for stop in route.stops:
                if stop.kind is not StopKind.PICKUP:
                    continue
                for oid in stop.order_ids:
                    order = self.orders[oid]
                    planned.add(oid)
                    if order.state is OrderState.PENDING or order.robot_id != robot_id:
                        order.robot_id = robot_id
                        order.move_to(OrderState.ASSIGNED, now, f"assigned to {robot_id}")
                        assignments.append(Assignment(oid, robot_id, now, self.plan_version))
                        self._mark(order)
            self._record_compartments(run, route.stops, compartments.get(robot_id, {}))
        for oid, eta in plan.eta.items():
            known = self.orders.get(oid)
            if known is not None and not known.state.terminal and known.eta != eta:
                known.eta = eta
                self._mark(known)
        if assignments:
            self.store.record_assignments(assignments)
        in_snapshot = planned | set(plan.unassigned)
        for order in sorted(self.orders.values(), key=lambda o: o.id):
            if (
                order.state is not OrderState.ASSIGNED
                or order.id in planned
                or self._committed(order)
            ):
                continue
            # An order of the snapshot that the plan left out goes back to PENDING; one placed
            # after the snapshot is inserted into the new plan (PENDING if nobody can take it).
            placed = order.id not in in_snapshot and self._insert(order, "placed after snapshot")
            if not placed and order.state is OrderState.ASSIGNED:
                order.move_to(OrderState.PENDING, now, "no robot can take it now")
                self._mark(order)
        self.plan_version += 1
        self._preempt_charging()
        for run in sorted(self.robots.values(), key=lambda r: r.robot.id):
            if run.current_stop is None and run.in_flight is None:
                self._advance(run)
        self._flush()
        return True

    def _record_compartments(
        self, run: _RobotRun, stops: Sequence[Stop], given: Mapping[str, int]
    ) -> None:
        """Note on each order of a robot's planned stops the compartment the plan gives it, so
        that its pickup and drop-off steps name the compartment to open.

        A plan that gives none for a robot with compartments (the baselines plan none) gets
        them here from the planner's own assignment (`assign_compartments`). Orders loaded or
        being loaded, and pinned return legs, keep theirs: the planner kept them too.
        """
        ids = sorted({oid for stop in stops for oid in stop.order_ids})
        count = run.robot.capabilities.compartments
        if count is not None and ids and not given:
            vehicle = self._vehicle(run, self.clock.now())
            onboard = [(o.order_id, o.compartment) for o in vehicle.onboard] if vehicle else []
            pinned = {
                oid: c
                for oid in ids
                if oid in self.orders and (c := self.orders[oid].pinned_compartment) is not None
            }
            given = assign_compartments(count, onboard, stops, pinned) or {}
        loading = set(run.current_stop.order_ids) if run.current_stop else set()
        for oid in ids:
            order = self.orders.get(oid)
            if (
                order is None
                or order.state is not OrderState.ASSIGNED
                or order.pinned_robot is not None
                or oid in loading
            ):
                continue
            index = given.get(oid)
            if order.compartment != index:
                order.compartment = index
                self._mark(order)

    def _compartments_of(self, order_ids: Sequence[str]) -> tuple[tuple[str, int], ...]:
        """(order id, compartment) of the orders whose compartment is known, for a step."""
        return tuple(
            (oid, c) for oid in order_ids if (c := self.orders[oid].compartment) is not None
        )

    def _committed(self, order: Order) -> bool:
        run = self.robots.get(order.robot_id or "")
        return bool(run and run.current_stop and order.id in run.current_stop.order_ids)

    # ---- views ---------------------------------------------------------------------------

    def robot_view(self) -> list[Robot]:
        """Copies of every robot's record, for read-only views and metrics."""
        return [copy.deepcopy(run.robot) for run in self.robots.values()]

    def held_resources(self) -> dict[str, tuple[str, ...]]:
        """Resource -> holders, for invariant checks."""
        out: dict[str, tuple[str, ...]] = {}
        for run in self.robots.values():
            for res in self.traffic.held_by(run.robot.id):
                out[res] = self.traffic.holders(res)
        return out


def _wanted_by(o: Order) -> float | None:
    """The time the planner aims to deliver `o` by: its needed-by time, else what its priority
    implies (a STAT order with no time is wanted within minutes, not whenever convenient)."""
    if o.needed_by is not None:
        return o.needed_by
    within = o.priority.default_within_s
    return None if within is None else o.created_at + within


def _final_step(run: _RobotRun) -> Step | None:
    """The step its route leads to (load, unload or charge), kept when the route is rebuilt."""
    last = run.steps[-1] if run.steps else None
    if last is not None and last.kind in (StepKind.PICKUP, StepKind.DROPOFF, StepKind.CHARGE):
        return last
    return None


def _protocol_compartment(order: Order) -> int:
    """The order's compartment as the robot protocol numbers it (from 1; 0: none known)."""
    return order.compartment + 1 if order.compartment is not None else 0


def _keeps_compartment(order: Order) -> bool:
    """A custody outbound delivered at its OR keeps its compartment for the return leg (not a
    return, and not one sent back to where it came from)."""
    return (
        bool(order.custody_case)
        and not order.return_of
        and order.dropoff_station != order.pickup_station
    )
