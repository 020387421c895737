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

from fleet.building.graph import BuildingGraph, NoRoute
from fleet.building.model import Building, StationKind
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
from fleet.traffic.lift_waits import LiftWaitEstimator
from fleet.traffic.reservations import Reservations
from fleet.traffic.steps import Step, StepKind, steps_for_route


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


@dataclass
class _Wait:
    """What a robot's next dispatcher-side step is waiting for."""

    kind: str  # "door_queue", "door_open", "lift_queue", "lift_at"
    resource: str
    level: str = ""
    session_id: str = ""


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
    charge_from: float = 0.0  # when its current charging stop is expected to begin
    topping_up: bool = False  # charging while idle: ends as soon as it is given work
    charged_at: float | None = None  # when its last charging step ended
    # `future` may still hold orders cancelled, failed or given to another robot since it was
    # planned; the next insertion filters it once (rather than at every insertion).
    stale: bool = True
    battery_at: float = 0.0  # when it last reported its battery


@dataclass
class _LiftRun:
    level: str
    door: m.LiftDoorState = m.LiftDoorState.CLOSED
    mode: m.LiftMode = m.LiftMode.NORMAL
    session_id: str = ""


@dataclass
class _DoorRun:
    mode: m.DoorMode = m.DoorMode.CLOSED
    session_id: str = ""


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
        capacities = {f"door:{d}": 1 for d in building.doors}
        # One session per car: a car carries one robot at a time until car sharing exists.
        capacities.update({f"lift:{name}": 1 for name in building.lifts})
        self.reservations = Reservations(capacities)
        # Observed lift waits replace the map's nominal ones in the travel times we plan with.
        self.lift_waits = LiftWaitEstimator.for_building(building)
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
        if isinstance(msg, m.RobotHello):
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
        if self.graph.travel_time(a, b, flow, 1.0) == float("inf"):
            raise InvalidArgument(
                "dropoff_station",
                f"no {flow.value.lower()}-flow route from {cmd.pickup_station} "
                f"to {cmd.dropoff_station} for {cmd.cargo_class.value} cargo",
            )
        outbound = self._check_return(cmd, cmd.cargo_class) if cmd.return_of else None
        self._check_weight(cmd, cmd.cargo_class, outbound)

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
        if msg.mode is RobotMode.FAULT and r.mode is not RobotMode.FAULT:
            self._abandon_work(
                run, "robot reported a fault: " + "; ".join(msg.errors), fail_onboard=True
            )
            r.mode = RobotMode.FAULT
            self.store.upsert_robot(r)
        elif msg.mode is not RobotMode.FAULT and r.mode is RobotMode.FAULT:
            r.mode = RobotMode.IDLE
            self.store.upsert_robot(r)
            self._request_replan()

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
        elif step.kind is StepKind.PICKUP:
            for oid in step.order_ids:
                order = self.orders[oid]
                order.move_to(OrderState.PICKED_UP, now, f"on board {robot.id}")
                robot.carrying.add(oid)
                self._mark(order)
        elif step.kind is StepKind.DROPOFF:
            for oid in step.order_ids:
                order = self.orders[oid]
                order.move_to(OrderState.DELIVERED, now, f"delivered by {robot.id}")
                robot.carrying.discard(oid)
                self._mark(order)
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
        while run.connected and robot.mode not in (RobotMode.FAULT, RobotMode.PAUSED):
            if run.in_flight is not None or run.waiting is not None:
                return
            if not run.steps:
                if run.current_stop is not None:
                    run.current_stop = None
                if not self._start_next_stop(run):
                    robot.mode = RobotMode.IDLE
                    if not self._top_up(run):
                        return
                continue
            step = run.steps[0]
            if step.kind is StepKind.PICKUP:
                step = self._refresh_pickup(run, step)
                if not step.order_ids:
                    run.steps.popleft()  # everything it was to load was cancelled
                    continue
            if step.kind.robot_side:
                step_id = next(run.step_ids)
                run.in_flight = (step_id, step)
                session = run.sessions.get(f"lift:{step.lift}", "") if step.lift else ""
                if step.kind is StepKind.LIFT_ENTER:
                    run.in_lift = step.lift
                self._outbox.append(m.SendStep(robot.id, step_id, step, session))
                return
            self._dispatcher_step(run, step)

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
            try:
                route = self.graph.route(robot.node, stop.node, caps.flow, caps.max_speed_m_s)
            except NoRoute as exc:
                for oid in ids:
                    self._fail_or_release(self.orders[oid], f"no route: {exc}")
                continue
            steps = steps_for_route(route, self._speed_limits)
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
                )
            )
            run.steps = deque(steps)
            run.current_stop = stop
            now = self.clock.now()
            service = self.building.stations[station].service_time_s
            run.stop_departure = now + route.time_s + service
            robot.mode = RobotMode.BUSY
            self.plan_epoch += 1
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
            res = f"door:{step.door}"
            if self.reservations.request(res, rid):
                self._open_door(run, step.door)
            else:
                run.waiting = _Wait("door_queue", res)
        elif step.kind is StepKind.DOOR_CLOSE:
            self._release(run, f"door:{step.door}")
            self._finish_dispatcher_step(run, step)
        elif step.kind is StepKind.LIFT_CALL:
            run.lift_called_at = self.clock.now()
            res = f"lift:{step.lift}"
            if self.reservations.request(res, rid):
                self._call_lift(run, step.lift, step.level)
            else:
                run.waiting = _Wait("lift_queue", res, level=step.level)
        elif step.kind is StepKind.LIFT_RIDE:
            sid = run.sessions[f"lift:{step.lift}"]
            run.waiting = _Wait("lift_at", f"lift:{step.lift}", step.to_level, sid)
            self._outbox.append(
                m.LiftCommand(step.lift, m.LiftAction.GO_TO, sid, rid, step.to_level)
            )
        elif step.kind is StepKind.LIFT_RELEASE:
            self._release(run, f"lift:{step.lift}")
            self._finish_dispatcher_step(run, step)
        else:  # pragma: no cover - robot-side kinds never get here
            raise AssertionError(step.kind)

    def _finish_dispatcher_step(self, run: _RobotRun, step: Step) -> None:
        run.waiting = None
        self._log(run, step.describe(), step.kind.value, step)
        if run.steps and run.steps[0] is step:
            run.steps.popleft()

    def _open_door(self, run: _RobotRun, door: str) -> None:
        sid = self._new_session(run, f"door:{door}")
        run.waiting = _Wait("door_open", f"door:{door}", session_id=sid)
        self._outbox.append(m.DoorCommand(door, m.DoorAction.OPEN, sid, run.robot.id))
        state = self.doors[door]
        if state.mode is m.DoorMode.OPEN and state.session_id == sid:
            self._door_ready(run)

    def _call_lift(self, run: _RobotRun, lift: str, level: str) -> None:
        sid = run.sessions.get(f"lift:{lift}") or self._new_session(run, f"lift:{lift}")
        run.waiting = _Wait("lift_at", f"lift:{lift}", level, sid)
        self._outbox.append(m.LiftCommand(lift, m.LiftAction.CALL, sid, run.robot.id, level))

    def _release(self, run: _RobotRun, resource: str) -> None:
        """Give a door or lift back and start the next robot waiting for it."""
        sid = run.sessions.pop(resource, "")
        kind, _, name = resource.partition(":")
        if sid:
            if kind == "door":
                self._outbox.append(m.DoorCommand(name, m.DoorAction.CLOSE, sid, run.robot.id))
            else:
                self._outbox.append(m.LiftCommand(name, m.LiftAction.RELEASE, sid, run.robot.id))
        for holder in self.reservations.release(resource, run.robot.id):
            self._granted(self.robots[holder], resource)

    def _granted(self, run: _RobotRun, resource: str) -> None:
        wait = run.waiting
        if wait is None or wait.resource != resource:
            return
        kind, _, name = resource.partition(":")
        if kind == "door":
            self._open_door(run, name)
        else:
            self._call_lift(run, name, wait.level)

    def _door_ready(self, run: _RobotRun) -> None:
        step = run.steps[0]
        self._finish_dispatcher_step(run, step)
        self._advance(run)

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
        state.mode, state.session_id = msg.mode, msg.session_id
        if msg.mode is not m.DoorMode.OPEN:
            return
        for holder in self.reservations.holders(f"door:{msg.door_id}"):
            run = self.robots[holder]
            w = run.waiting
            if w and w.kind == "door_open" and w.session_id == msg.session_id:
                self._door_ready(run)

    def _lift_report(self, msg: m.LiftReport) -> None:
        state = self.lifts.get(msg.lift_id)
        if state is None:
            raise InvalidArgument("lift_id", f"unknown lift {msg.lift_id!r}")
        state.level, state.door, state.mode = msg.level, msg.door, msg.mode
        state.session_id = msg.session_id
        if msg.door is not m.LiftDoorState.OPEN:
            return
        for holder in self.reservations.holders(f"lift:{msg.lift_id}"):
            run = self.robots[holder]
            w = run.waiting
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
                elif step.kind is StepKind.LIFT_CALL:
                    self._learn_lift_wait(run, msg.lift_id)
                self._advance(run)

    def _learn_lift_wait(self, run: _RobotRun, lift: str) -> None:
        """Count the wait from the robot's call (queueing for the car included) to the car
        standing open at its level; plan with the learned waits from now on."""
        called_at, run.lift_called_at = run.lift_called_at, None
        if called_at is None:
            return  # a car brought to a robot stuck in it after a restart: not a real call
        self.lift_waits.observe(lift, self.clock.now() - called_at)
        if self.graph.set_lift_waits(self.lift_waits.estimates()):
            self._request_replan()

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

    def _go_offline(self, run: _RobotRun, why: str) -> None:
        self._abandon_work(run, f"robot {run.robot.id} went offline ({why})", fail_onboard=True)
        run.connected = False
        run.robot.mode = RobotMode.OFFLINE
        self._log(run, f"offline: {why}", "OFFLINE")
        self.store.upsert_robot(run.robot)

    def _abandon_work(self, run: _RobotRun, reason: str, fail_onboard: bool) -> None:
        """Stop a robot's work: its resources go back, its unpicked orders to other robots."""
        now = self.clock.now()
        kept = f"lift:{run.in_lift}" if run.in_lift else ""
        for resource in list(run.sessions):
            if resource != kept:
                self._release(run, resource)
        if kept:
            # A robot that stops inside a car blocks it: nobody else is sent in until it
            # reconnects and is brought out, or an operator clears the car.
            self._log(run, f"stopped inside {run.in_lift}: car held", "LIFT_BLOCKED")
        for resource, holder in self.reservations.release_all(run.robot.id, keep=kept):
            self._granted(self.robots[holder], resource)
        run.in_flight = None
        run.waiting = None
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
            for res in self.reservations.held_by(run.robot.id):
                out[res] = self.reservations.holders(res)
        return out


def _wanted_by(o: Order) -> float | None:
    """The time the planner aims to deliver `o` by: its needed-by time, else what its priority
    implies (a STAT order with no time is wanted within minutes, not whenever convenient)."""
    if o.needed_by is not None:
        return o.needed_by
    within = o.priority.default_within_s
    return None if within is None else o.created_at + within
