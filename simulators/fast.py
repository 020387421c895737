"""The digital twin in fast mode: the real dispatcher core, simulated robots, doors and lifts,
all under one virtual clock. Messages between them are real protobuf, serialized and parsed
on the way (the in-process transport), so the twin exercises the same contract as the wire.

`fleet simulate ... --json` prints the KPI report of `run_simulation`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.message import Message

from fleet.api import convert
from fleet.building.graph import BuildingGraph
from fleet.building.loader import load_building
from fleet.building.model import Building, StationKind
from fleet.clock import ManualClock
from fleet.custody.ledger import CustodyEvent, Ledger, verify
from fleet.custody.lifecycle import LedgerSink
from fleet.dispatch import messages as m
from fleet.dispatch.bus import Router, replan_now
from fleet.dispatch.core import CoreConfig, FleetCore
from fleet.dispatch.ports import FleetStore, InMemoryStore
from fleet.domain.cargo import CargoClass
from fleet.domain.errors import DomainError
from fleet.domain.order import Order, OrderState
from fleet.domain.priority import Priority
from fleet.planning import Plan, Problem, solve
from fleet.v1 import infrastructure_pb2, robot_pb2
from simulators.custody_day import CustodyDay, CustodyDayConfig
from simulators.infrastructure import LIFT_HEARTBEAT_S, SimDoorController, SimLiftController
from simulators.robot import RobotSpec, SimRobot
from simulators.scheduling import VirtualLoop
from simulators.workload import TimedOrder, standard_workload
from simulators.world import World

# Simulated days start on a Monday at 07:00 UTC, so timestamps read like a hospital morning.
SIM_EPOCH = 1_767_596_400.0  # 2026-01-05T07:00:00Z
CLEAN_CLASSES = frozenset(
    {CargoClass.STERILE, CargoClass.CLEAN, CargoClass.LINEN, CargoClass.CONTROLLED_DRUG}
)
DIRTY_CLASSES = frozenset({CargoClass.SOILED, CargoClass.WASTE})
# After the last order is placed, robots get this long to finish before the run ends.
DRAIN_S = 2 * 3600.0
# Late commitment of our optimizer (`fleet.planning.deferral`): a ROUTINE order is picked up
# no earlier than 45 minutes (plus its direct trip) before it is needed. The peers' baselines
# dispatch at once, as Open-RMF and openTCS do. On by default for the realistic hospital-day
# workload only: the standard workload is a stress load (an order every ~70 s, all with hours
# of slack), where holding orders makes every solve about 1 s and the 8-hour run 9x slower in
# the twin, which solves in virtual time (330 s instead of 37 s, measured 2026-11-27).
DEFER_MARGIN_S = 45 * 60.0
DEFER_BY_DEFAULT = frozenset({"hospital-day"})
# The controlled-drug day (simulators.custody_day): cases end hours after their request
# (surgery, reconciliation, the return leg, a recovery after a robot fault, and a small fleet's
# queue), so the run waits up to this long for them; it ends as soon as every case is closed.
CUSTODY_WORKLOAD = "controlled-drugs"
CUSTODY_DRAIN_S = 8 * 3600.0


def default_defer_margin_s(workload_name: str) -> float | None:
    """The late-commitment margin `fleet simulate` uses for a workload unless told."""
    return DEFER_MARGIN_S if workload_name in DEFER_BY_DEFAULT else None


def twin_config(dispatcher_name: str, defer_margin_s: float | None = DEFER_MARGIN_S) -> CoreConfig:
    """The core's settings in the twin for `dispatcher_name` (finished orders kept for the
    KPI report; late commitment only for our optimizer)."""
    margin = defer_margin_s if dispatcher_name == "optimizer" and defer_margin_s else None
    return CoreConfig(finished_retention_s=None, pickup_defer_margin_s=margin)


TICK_S = 5.0
# A return leg placed before its outbound arrived is tried again this much later.
RETURN_RETRY_S = 60.0

P = TypeVar("P", bound=Message)


def wire(msg: P) -> P:
    """Serialize and parse a message, as a network hop would."""
    out = type(msg)()
    out.ParseFromString(msg.SerializeToString())
    return out


def fleet_specs(building: Building, robots: int) -> list[RobotSpec]:
    """A mixed fleet: about a third waste robots (dirty flow), the rest material robots,
    starting at chargers and parking spots.

    Material robots have four lockable compartments (one order each, so a controlled drug's
    return rides where it came) and carry up to 60 kg; waste carts are one open bin of 120 kg.
    """
    homes = sorted(
        s.node
        for s in building.stations.values()
        if s.kind in (StationKind.CHARGER, StationKind.PARKING)
    ) or sorted(building.nodes)
    dirty = max(1, round(robots * 0.3)) if robots > 1 else 0
    specs = []
    for i in range(robots):
        is_dirty = i >= robots - dirty
        specs.append(
            RobotSpec(
                robot_id=f"{'WST' if is_dirty else 'AMR'}-{i + 1:02d}",
                cargo_classes=DIRTY_CLASSES if is_dirty else CLEAN_CLASSES,
                start_node=homes[i % len(homes)],
                capacity_slots=4,
                speed_m_s=1.0,
                model="WasteCart-2" if is_dirty else "Courier-4",
                max_payload_kg=120.0 if is_dirty else 60.0,
                compartments=0 if is_dirty else 4,
            )
        )
    return specs


@dataclass
class SimulationResult:
    """Everything a run produced: the KPI report and the objects, for tests to inspect."""

    report: dict[str, Any]
    core: FleetCore
    world: World
    robots: dict[str, SimRobot]
    doors: SimDoorController
    lifts: SimLiftController
    rejected: list[str] = field(default_factory=list)
    custody: CustodyDay | None = None  # the controlled-drugs workload's day


class FastTwin:
    """Wires the core to simulated devices under a virtual clock."""

    def __init__(
        self,
        building: Building,
        specs: list[RobotSpec],
        store: FleetStore | None = None,
        seed: int = 1,
        solve_time_limit_s: float = 10.0,
        record_events: bool = False,
        config: CoreConfig | None = None,
        solver: Callable[[Problem], Plan] | None = None,
    ) -> None:
        self.building = building
        self.clock = ManualClock(SIM_EPOCH)
        self.loop = VirtualLoop(self.clock)
        # Two robots on one exclusive node, lane or zone count as a conflict, as two in one
        # doorway or car do: the dispatcher reserves them.
        self.world = World(building, record_events=record_events, count_exclusive_conflicts=True)
        self.graph = BuildingGraph(building)
        self.store = store or InMemoryStore()
        # The KPI report reads every order of the run from memory: keep finished ones.
        config = config or CoreConfig(finished_retention_s=None)
        self.core = FleetCore(building, self.graph, self.store, self.clock, config)
        self.router = Router()
        self.solver = solver or functools.partial(solve, time_limit_s=solve_time_limit_s, seed=seed)
        self._replan_scheduled = False
        self.rejected: list[str] = []
        self._tagged: dict[str, str] = {}  # TimedOrder.tag -> id of the order placed for it
        self._returns_waiting = 0  # return legs waiting for their outbound to arrive
        self.robots: dict[str, SimRobot] = {}
        for spec in specs:
            self._add_robot(spec)
        self.doors = SimDoorController(
            "doors-1", building, self.world, self.loop, self._infra_sender()
        )
        # Lift controllers report every car every few seconds, as the protocol asks: the
        # dispatcher never sends a robot into a car on a stale report.
        self.lifts = SimLiftController(
            "lifts-1",
            building,
            self.world,
            self.loop,
            self._infra_sender(),
            heartbeat_s=LIFT_HEARTBEAT_S,
        )
        for door in building.doors:
            self.router.devices[door] = self._to_device(self.doors.receive)
        for lift in building.lifts:
            self.router.devices[lift] = self._to_device(self.lifts.receive)

    # ---- transport -------------------------------------------------------------------------

    def _add_robot(self, spec: RobotSpec) -> None:
        rid = spec.robot_id

        def send(msg: robot_pb2.RobotMessage) -> None:
            payload = wire(msg)
            self.loop.call_soon(lambda: self._from_robot(rid, payload))

        robot = SimRobot(spec, self.building, self.world, self.loop, send)
        self.robots[rid] = robot

        def deliver(out: m.WelcomeRobot | m.SendStep | m.SendInstantAction) -> None:
            payload = wire(convert.dispatcher_message_to_pb(out, self.building))
            self.loop.call_soon(lambda: robot.receive(payload))

        self.router.robots[rid] = deliver

    def _to_device(
        self, receive: Callable[[infrastructure_pb2.InfrastructureCommand], None]
    ) -> Callable[[m.DoorCommand | m.LiftCommand], None]:
        def deliver(out: m.DoorCommand | m.LiftCommand) -> None:
            payload = wire(convert.infrastructure_command_to_pb(out))
            self.loop.call_soon(lambda: receive(payload))

        return deliver

    def _infra_sender(self) -> Callable[[infrastructure_pb2.InfrastructureMessage], None]:
        def send(msg: infrastructure_pb2.InfrastructureMessage) -> None:
            payload = wire(msg)
            self.loop.call_soon(lambda: self._from_infrastructure(payload))

        return send

    def _from_infrastructure(self, payload: infrastructure_pb2.InfrastructureMessage) -> None:
        self.handle(convert.infrastructure_message_from_pb(payload))

    def _from_robot(self, robot_id: str, payload: robot_pb2.RobotMessage) -> None:
        self.handle(convert.robot_message_from_pb(payload, robot_id))

    def handle(self, msg: m.Inbound) -> Order | None:
        """Give the core one message, route what it emits, and schedule a re-plan if asked."""
        try:
            result = self.core.handle(msg)
        finally:
            self.router.route(self.core.drain())
            if self.core.replan_requested and not self._replan_scheduled:
                self._replan_scheduled = True
                # After everything already due at this instant: one solve per burst.
                self.loop.call_soon(self._replan)
        return result

    def _replan(self) -> None:
        self._replan_scheduled = False
        replan_now(self.core, self.solver, self.router)

    # ---- running ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect every device and robot, and start the dispatcher's clock tick."""
        self.doors.connect()
        self.lifts.connect()
        for rid in sorted(self.robots):
            self.robots[rid].connect()
        self.loop.call_later(TICK_S, self._tick)

    def _tick(self) -> None:
        self.handle(m.Tick())
        self.loop.call_later(TICK_S, self._tick)

    def place(self, timed: TimedOrder) -> None:
        """Schedule an order to be placed at its time, as a nurse would.

        A return leg (`timed.return_of_tag`) gets the id of the outbound order placed for that
        tag as its `return_of`. As a nurse can only send back drugs she has received, it waits
        (checking every minute) while the outbound is still on its way; it is not placed if the
        outbound never arrives (noted in `rejected`). A tag never placed in this run (the
        outbound fell before its start) leaves the return an ordinary order.
        """

        def create() -> None:
            cmd = timed.order
            outbound_id = self._tagged.get(timed.return_of_tag, "")
            if outbound_id:
                outbound = self.core.orders.get(outbound_id)
                state = outbound.state if outbound is not None else OrderState.DELIVERED
                if not state.terminal:
                    self._returns_waiting += 1
                    self.loop.call_later(RETURN_RETRY_S, retry)
                    return
                if state is not OrderState.DELIVERED:
                    self.rejected.append(
                        f"{cmd.pickup_station}->{cmd.dropoff_station}: return of "
                        f"{outbound_id} not placed, the outbound is {state.value}"
                    )
                    return
                cmd = dataclasses.replace(cmd, return_of=outbound_id)
            try:
                created = self.handle(cmd)
            except DomainError as exc:
                self.rejected.append(f"{cmd.pickup_station}->{cmd.dropoff_station}: {exc}")
                return
            if timed.tag and created is not None:
                self._tagged[timed.tag] = created.id

        def retry() -> None:
            self._returns_waiting -= 1
            create()

        self.loop.call_later(max(0.0, timed.at - self.clock.now()), create)

    def all_done(self) -> bool:
        """True when every order the core knows is finished and no return leg waits."""
        return self._returns_waiting == 0 and all(
            o.state.terminal for o in self.core.orders.values()
        )

    def run_until(
        self, t: float, stop_when_done: bool = False, stop: Callable[[], bool] | None = None
    ) -> None:
        """Run the twin to simulated time `t`, or until every order is finished
        (`stop_when_done`), or until `stop()` — called after every event — is true."""
        if stop is None and stop_when_done:
            stop = self.all_done
        self.loop.run_until(t, stop)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def kpi_report(twin: FastTwin, wall_seconds: float, sim_start: float) -> dict[str, Any]:
    """The KPI report of a run."""
    core = twin.core
    orders = list(core.orders.values())
    lift_waits = [waited for _, waited in core.lift_wait_log]
    sim_seconds = twin.clock.now() - sim_start
    robot_seconds = sim_seconds * len(twin.robots)
    delivered = [o for o in orders if o.state is OrderState.DELIVERED]
    failed = [o for o in orders if o.state is OrderState.FAILED]
    on_time = [o.on_time for o in delivered if o.on_time is not None]
    leads = [o.delivered_at - o.created_at for o in delivered if o.delivered_at is not None]
    by_priority: dict[str, float] = {}
    for prio in Priority:
        flags = [o.on_time for o in delivered if o.priority is prio and o.on_time is not None]
        if flags:
            by_priority[prio.value] = round(sum(flags) / len(flags), 4)
    reasons: dict[str, int] = {}
    for o in failed:
        key = o.failure_reason.split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    return {
        "orders_created": len(orders),
        "orders_delivered": len(delivered),
        "orders_failed": len(failed),
        "orders_cancelled": sum(o.state is OrderState.CANCELLED for o in orders),
        "orders_open": sum(not o.state.terminal for o in orders),
        "orders_rejected": len(twin.rejected),
        "failure_reasons": dict(sorted(reasons.items())),
        "on_time_rate": round(sum(on_time) / len(on_time), 4) if on_time else 1.0,
        "on_time_rate_by_priority": by_priority,
        "lead_time_p50_s": round(_percentile(leads, 0.5), 1),
        "lead_time_p95_s": round(_percentile(leads, 0.95), 1),
        "robot_distance_m": round(twin.world.distance_m, 1),
        "lift_rides": twin.world.lift_rides,
        "door_passes": twin.world.door_passes,
        "conflicts": twin.world.conflicts,
        "safety_violations": len(twin.world.violations),
        "deadlocks_resolved": core.deadlocks_resolved,
        "deadlocks_unresolved": core.deadlocks_unresolved,
        "deadlock_longest_s": round(core.longest_deadlock_s, 1),
        "lift_session_errors": len(core.session_errors),
        "lift_wait_p50_s": round(_percentile(lift_waits, 0.5), 1),
        "lift_wait_p95_s": round(_percentile(lift_waits, 0.95), 1),
        # Share of all robot time (robots x simulated time) spent waiting, by what for.
        "waiting_share": {
            kind: round(seconds / robot_seconds, 4) if robot_seconds > 0 else 0.0
            for kind, seconds in sorted(core.wait_s.items())
        },
        "alerts": len([a for a in core.alerts if not a.cleared]),
        "robots": len(twin.robots),
        "sim_seconds": round(sim_seconds, 1),
        "wall_seconds": round(wall_seconds, 3),
    }


DISPATCHER_NAMES = ("optimizer", "greedy-earliest-finish", "nearest-idle")


def dispatcher(name: str, time_limit_s: float, seed: int) -> Callable[[Problem], Plan]:
    """The planning function called `name`: our optimizer or one of the peers' baselines.

    Raises ValueError naming the choices for an unknown name.
    """
    if name == "optimizer":
        return functools.partial(solve, time_limit_s=time_limit_s, seed=seed)
    if name in ("greedy-earliest-finish", "nearest-idle"):
        from fleet.planning import baselines

        fn = (
            baselines.greedy_earliest_finish
            if name == "greedy-earliest-finish"
            else baselines.nearest_idle
        )
        return functools.partial(fn, time_limit_s=time_limit_s, seed=seed)
    raise ValueError(
        f"--dispatcher: unknown dispatcher {name!r}; choose from " + ", ".join(DISPATCHER_NAMES)
    )


def workload(
    name: str, building: Building, start: float, hours: float, seed: int, robots: int
) -> list[TimedOrder]:
    """The orders of workload `name`; ValueError naming the choices for an unknown name.

    `controlled-drugs` places no orders of its own: its simulated people do, through the
    custody desk, as their cases go (`simulators.custody_day`)."""
    if name == CUSTODY_WORKLOAD:
        if "PHARMACY" not in building.stations or not any(
            s.startswith("OR-") for s in building.stations
        ):
            raise ValueError(
                f"--workload {CUSTODY_WORKLOAD}: the map needs a PHARMACY station and OR-* "
                "stations (the demo hospital has them)"
            )
        return []
    if name == "standard":
        return standard_workload(building, start, hours, seed, scale=max(1.0, robots / 10))
    from simulators import workload as workloads

    known: dict[str, Callable[..., list[TimedOrder]]] = getattr(workloads, "WORKLOADS", {})
    if name not in known:
        raise ValueError(
            f"--workload: unknown workload {name!r}; choose from "
            + ", ".join(sorted({"standard", CUSTODY_WORKLOAD, *known}))
        )
    return known[name](building, start, hours, seed)


def run_simulation(
    building: Building,
    robots: int,
    hours: float,
    seed: int,
    store: FleetStore | None = None,
    solve_time_limit_s: float = 10.0,
    record_events: bool = False,
    dispatcher_name: str = "optimizer",
    workload_name: str = "standard",
    defer_margin_s: float | None = None,
    demand_robots: int | None = None,
    custody_ledger: Callable[[ManualClock], LedgerSink] | None = None,
    custody_config: CustodyDayConfig | None = None,
) -> SimulationResult:
    """Run `hours` of a workload with `robots` robots; then let robots finish the orders still
    open (up to DRAIN_S) and fail, with a reason, whatever is left.

    `demand_robots`: size the workload for a fleet of that many robots (the standard workload's
    rates scale with it) instead of `robots`: a large fleet in a building whose lifts carry
    less than that fleet's standard demand.

    `defer_margin_s`: the optimizer's late-commitment margin (0: off; None: the workload's
    default, see `default_defer_margin_s`).

    The controlled-drugs workload (`simulators.custody_day`): `custody_ledger` makes the ledger
    its custody events go to from the twin's clock (default: in memory); `custody_config` says
    how busy the day is and how often recipients are absent or robots die. The report then has
    a `custody` part: cases by path and state, refused steps, the ledger's verification and
    whether each day's register balances (`custody_report`).
    """
    wall0 = time.perf_counter()
    twin = FastTwin(
        building,
        fleet_specs(building, robots),
        store=store,
        seed=seed,
        solve_time_limit_s=solve_time_limit_s,
        record_events=record_events,
        solver=dispatcher(dispatcher_name, solve_time_limit_s, seed),
        config=twin_config(
            dispatcher_name,
            default_defer_margin_s(workload_name) if defer_margin_s is None else defer_margin_s,
        ),
    )
    start = twin.clock.now()
    orders = workload(
        workload_name,
        building,
        start,
        hours,
        seed,
        robots if demand_robots is None else demand_robots,
    )
    twin.start()
    for timed in orders:
        twin.place(timed)
    custody = None
    if workload_name == CUSTODY_WORKLOAD:
        sink = custody_ledger(twin.clock) if custody_ledger else Ledger(twin.clock)
        custody = CustodyDay(twin, sink, hours, seed, custody_config)
        custody.start()
    end = start + hours * 3600.0
    twin.run_until(end)
    if custody is None:
        twin.run_until(end + DRAIN_S, stop_when_done=True)
    else:
        day = custody
        twin.run_until(
            end + CUSTODY_DRAIN_S, stop=lambda: twin.all_done() and day.open_cases() == 0
        )
    _close_out(twin)
    report = kpi_report(twin, time.perf_counter() - wall0, start)
    if custody is not None:
        report["custody"] = custody_report(custody)
    return SimulationResult(
        report,
        twin.core,
        twin.world,
        twin.robots,
        twin.doors,
        twin.lifts,
        twin.rejected,
        custody,
    )


def custody_report(day: CustodyDay) -> dict[str, Any]:
    """The custody part of the report: the day's cases, the ledger's verification (the whole
    chain) and whether the register of each day balances."""
    events = _ledger_events(day.ledger)
    out = day.result(events).summary()
    check = verify(events)
    out["ledger_verified"] = check.ok
    out["ledger_problem"] = "" if check.ok else str(check)
    return out


def _ledger_events(sink: object) -> list[CustodyEvent]:
    store = getattr(sink, "store", None)  # ClockedSink over a LedgerStore
    if store is not None and hasattr(store, "iter_events"):
        return list(store.iter_events())
    events = getattr(sink, "events", None)
    return list(events) if events is not None else []


def _close_out(twin: FastTwin) -> None:
    """Orders still open when the run ends are failed with the reason, so none is unexplained."""
    now = twin.clock.now()
    open_orders = [o for o in twin.core.orders.values() if not o.state.terminal]
    for order in open_orders:
        order.move_to(
            OrderState.FAILED,
            now,
            f"not delivered by the end of the simulation (was {order.state.value})",
        )
    if open_orders:
        twin.store.update_orders(open_orders)


def main(args: argparse.Namespace) -> int:
    """`fleet simulate`: run the fast twin and print its KPI report."""
    from fleet.building.loader import MapError

    try:
        building = load_building(args.map)
    except MapError as exc:
        print(exc)
        return 1
    try:
        dispatcher(args.dispatcher, 1.0, args.seed)
        workload(args.workload, building, SIM_EPOCH, 0.0, args.seed, args.robots)
    except ValueError as exc:
        print(f"fleet simulate: {exc}", file=sys.stderr)
        return 2
    store: FleetStore | None = None
    ledger: Any = None
    if args.db:
        from fleet.store import open_store

        store = open_store(args.db)
        if args.workload == CUSTODY_WORKLOAD:
            from fleet.custody.lifecycle import ClockedSink
            from fleet.store.ledger import open_ledger

            # The day's custody events go to the same database, append-only.
            ledger = open_ledger(args.db)
    try:
        result = run_simulation(
            building,
            args.robots,
            args.hours,
            args.seed,
            store,
            dispatcher_name=args.dispatcher,
            workload_name=args.workload,
            defer_margin_s=None if args.defer_margin_min is None else args.defer_margin_min * 60.0,
            custody_ledger=(lambda clock: ClockedSink(ledger, clock)) if ledger else None,
        )
    finally:
        if ledger is not None:
            ledger.close()
        if store is not None:
            store.close()
    if args.json:
        print(json.dumps(result.report, sort_keys=True))
    else:
        for key, value in result.report.items():
            print(f"{key:>20}: {value}")
    if result.report["conflicts"] or result.report["safety_violations"]:
        return 2
    custody = result.report.get("custody")
    if custody is not None and not (custody["ledger_verified"] and custody["register_balanced"]):
        return 2
    return 0


__all__ = ["FastTwin", "SimulationResult", "kpi_report", "main", "run_simulation"]
