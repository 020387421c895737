"""A simulated delivery robot that speaks the real robot protocol (fleet.v1 RobotGateway).

It receives `DispatcherMessage`s and sends `RobotMessage`s, exactly as a vendor's robot does;
whether those travel over gRPC or an in-process transport is not its business.

Its lockable compartments (controlled-drug custody: secure pickups and drop-offs,
SEAL_COMPARTMENT, OPEN_COMPARTMENT) follow `simulators.compartments.Compartments`, in `locks`;
the simulated recipient's timing and absence are set there. Fault injection: `inject_fault` /
`clear_fault` (a robot in fault never opens a compartment) and `tamper` (break a seal).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fleet.api import convert
from fleet.building.graph import LIFT_TRANSFER_S
from fleet.building.model import Building
from fleet.dispatch import messages as m
from fleet.domain.cargo import CargoClass
from fleet.domain.errors import InvalidArgument
from fleet.v1 import common_pb2, robot_pb2
from simulators.compartments import Compartments
from simulators.scheduling import Cancellable, Scheduler
from simulators.world import World

log = logging.getLogger(__name__)

# Battery drawn per metre driven, in percent: a full battery lasts about 10 km.
_DRAIN_PER_M = 0.01
# Battery gained per second on a charger, in percent: empty to full in about 33 minutes.
CHARGE_PER_S = 0.05


@dataclass(frozen=True)
class RobotSpec:
    """What a simulated robot is and where it starts."""

    robot_id: str
    cargo_classes: frozenset[CargoClass]
    start_node: str
    capacity_slots: int = 4
    speed_m_s: float = 1.0
    vendor: str = "SimRobotics"
    model: str = "Courier-4"
    battery_percent: float = 100.0
    max_payload_kg: float = 0.0  # 0: no limit
    compartments: int = 0  # lockable compartments, one order each; 0: no compartment rule


class SimRobot:
    """Executes step commands with timings from the map and reports progress and state."""

    def __init__(
        self,
        spec: RobotSpec,
        building: Building,
        world: World,
        scheduler: Scheduler,
        send: Callable[[robot_pb2.RobotMessage], None],
        state_interval_s: float = 10.0,
    ) -> None:
        self.spec = spec
        self.building = building
        self.world = world
        self.scheduler = scheduler
        self._send = send
        self.state_interval_s = state_interval_s
        self.node = spec.start_node
        self.lift: str | None = None
        self.battery = spec.battery_percent
        self._charging_since: float | None = None
        self.carrying: list[str] = []
        self.compartments: dict[int, str] = {}  # compartment number (from 1) -> order id in it
        self.compartment_conflicts: list[str] = []
        # Locks and seals of the compartments (custody); reported in every state message.
        self.locks = Compartments(spec.compartments, name=spec.robot_id)
        self.fault: str | None = None  # the injected fault's description, while in fault
        self.connected = False
        self.paused = False
        self.steps_done = 0
        self._timer: Cancellable | None = None
        self._state_timer: Cancellable | None = None
        self._locks_timer: Cancellable | None = None
        self._step: robot_pb2.StepCommand | None = None
        # A secure pickup/drop-off whose docking time is over, waiting for a seal or an opening.
        self._waiting_for_locks = False

    @property
    def level(self) -> str:
        """The level it is on (a riding robot is on its car's level)."""
        if self.lift is not None:
            return self.world.lifts[self.lift].level
        return self.building.nodes[self.node].level

    # ---- connection ------------------------------------------------------------------------

    def connect(self) -> None:
        """Say hello and start reporting state."""
        self.connected = True
        if self.lift is None:
            # Where it stands, it is in the way (again, after a reconnect: no double count).
            self.world.occupy(
                self.scheduler.now(), self.world.node_resource(self.node), self.spec.robot_id
            )
        self._send(
            robot_pb2.RobotMessage(
                hello=robot_pb2.RobotHello(
                    robot_id=self.spec.robot_id,
                    vendor=self.spec.vendor,
                    model=self.spec.model,
                    cargo_classes=[convert.CARGO_TO_PB[c] for c in sorted(self.spec.cargo_classes)],
                    capacity_slots=self.spec.capacity_slots,
                    max_speed_m_s=self.spec.speed_m_s,
                    current_node=self.node,
                    carrying_order_ids=self.carrying,
                    battery_percent=self.battery_now(),
                    in_lift=self.lift or "",
                    max_payload_kg=self.spec.max_payload_kg,
                    compartments=self.spec.compartments,
                )
            )
        )
        self._schedule_state()
        self._schedule_locks()

    def disconnect(self) -> None:
        """Stop talking (a dead radio, a crash): abandon the step, stand where it is. Grants
        not yet used lapse (a dead robot never opens); a door already open is closed by its
        person and relocks once the robot is back."""
        self.connected = False
        for timer in (self._timer, self._state_timer, self._locks_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._state_timer = self._locks_timer = None
        self._stop_charging()
        if self._step is not None:
            self._abandon(self._step)
        self._step = None

    def _abandon(self, step: robot_pb2.StepCommand) -> None:
        """Undo what starting `step` took in the world, for a step that will not finish.

        Simplification: a robot that stops during a move is taken to have stopped short at the
        lane's start (where its node still is), so the doorway and an exclusive lane are not
        left occupied and it stands on the start node again. One stopped while driving out of a
        car is still in the car, not in the lobby. It stays where it is, connected or not.
        """
        now = self.scheduler.now()
        robot = self.spec.robot_id
        kind = step.WhichOneof("kind")
        if kind == "move":
            mv = step.move
            if mv.door_id:
                self.world.back_out_of_door(now, mv.door_id, robot)
            self.world.vacate(now, self.world.lane_resource(mv.from_node, mv.to_node), robot)
            self.world.occupy(now, self.world.node_resource(self.node), robot)
        elif kind == "exit_lift":
            self.world.vacate(now, self.world.node_resource(step.exit_lift.to_node), robot)
        elif kind in ("pickup", "dropoff"):
            self.locks.cancel_step(now)
        self._waiting_for_locks = False

    def _schedule_state(self) -> None:
        self._state_timer = self.scheduler.call_later(self.state_interval_s, self._state_tick)

    def _state_tick(self) -> None:
        if not self.connected:
            return
        self.send_state()
        self._schedule_state()

    def send_state(self) -> None:
        """Report pose, battery, mode and compartments now."""
        node = self.building.nodes[self.node]
        mode = (
            robot_pb2.ROBOT_MODE_FAULT
            if self.fault is not None
            else robot_pb2.ROBOT_MODE_PAUSED
            if self.paused
            else robot_pb2.ROBOT_MODE_CHARGING
            if self._charging_since is not None
            else robot_pb2.ROBOT_MODE_BUSY
            if self._step is not None
            else robot_pb2.ROBOT_MODE_IDLE
        )
        self._send(
            robot_pb2.RobotMessage(
                state=robot_pb2.RobotState(
                    robot_id=self.spec.robot_id,
                    pose=common_pb2.Pose(level=self.level, x=node.x, y=node.y),
                    last_node=self.node,
                    battery_percent=self.battery_now(),
                    mode=mode,
                    errors=[self.fault] if self.fault is not None else [],
                    compartments=[convert.compartment_status_to_pb(c) for c in self.locks.status()],
                )
            )
        )

    # ---- commands --------------------------------------------------------------------------

    def receive(self, msg: robot_pb2.DispatcherMessage) -> None:
        """Handle one message from the dispatcher."""
        if not self.connected:
            return
        kind = msg.WhichOneof("msg")
        if kind == "welcome":
            if msg.welcome.state_interval_s > 0:
                self.state_interval_s = msg.welcome.state_interval_s
        elif kind == "step":
            self._start(msg.step)
        elif kind == "action":
            self._instant(msg.action)

    def _instant(self, action: robot_pb2.InstantAction) -> None:
        if action.type == robot_pb2.INSTANT_ACTION_TYPE_PAUSE:
            self.paused = True
        elif action.type == robot_pb2.INSTANT_ACTION_TYPE_RESUME:
            self.paused = False
        elif action.type == robot_pb2.INSTANT_ACTION_TYPE_CANCEL_STEP and self._step is not None:
            # A secure step waiting for its seal or its recipient has no timer running.
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._stop_charging()
            self._abandon(self._step)
            self._step = None
        elif action.type in (
            robot_pb2.INSTANT_ACTION_TYPE_SEAL_COMPARTMENT,
            robot_pb2.INSTANT_ACTION_TYPE_OPEN_COMPARTMENT,
        ):
            self._custody_action(action)
        self._locks_changed()  # reports the state

    def _custody_action(self, action: robot_pb2.InstantAction) -> None:
        """SEAL_COMPARTMENT / OPEN_COMPARTMENT: checked as a vendor's robot would, then handed
        to the compartment model; a refusal is logged and changes nothing."""
        now = self.scheduler.now()
        robot = self.spec.robot_id
        try:
            act = convert.instant_action_from_pb(action, robot)
        except InvalidArgument as exc:
            line = f"{now:.0f}: {robot} refused: action {action.action_id}: {exc}"
            self.locks.refused.append(line)
            log.warning("%s", line)
        else:
            if act.kind is m.InstantKind.SEAL_COMPARTMENT:
                self.locks.seal(now, act.compartment, act.seal_id)
            else:
                self.locks.open_for(
                    now, act.compartment, act.grant_id, act.staff_id, act.open_for_s
                )

    # ---- compartments ----------------------------------------------------------------------

    def _schedule_locks(self) -> None:
        """Wake up when the compartment model next has something to do."""
        if self._locks_timer is not None:
            self._locks_timer.cancel()
            self._locks_timer = None
        at = self.locks.next_event_at()
        if at is not None and self.connected:
            self._locks_timer = self.scheduler.call_later(
                at - self.scheduler.now(), self._locks_tick
            )

    def _locks_tick(self) -> None:
        self._locks_timer = None
        if not self.connected:
            return
        self.locks.advance(self.scheduler.now())
        self._locks_changed()

    def _locks_changed(self) -> None:
        """Report the compartments, and complete a secure step that was only waiting for them."""
        self._schedule_locks()
        self.send_state()
        if self._waiting_for_locks and self.locks.step_done():
            self._waiting_for_locks = False
            self._finish()

    # ---- fault injection -------------------------------------------------------------------

    def inject_fault(self, detail: str = "simulated fault") -> None:
        """Fail now: the robot stops, drops its step (no report: the dispatcher sees the fault
        in its state), and opens no compartment until `clear_fault`."""
        now = self.scheduler.now()
        self.fault = detail
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop_charging()
        if self._step is not None:
            self._abandon(self._step)
        self._step = None
        self.locks.fault(now)
        self.world.note(now, self.spec.robot_id, f"fault: {detail}")
        self._locks_changed()

    def clear_fault(self) -> None:
        """Recovered (by two people on site): it takes steps and obeys OPEN again."""
        self.fault = None
        self.locks.clear_fault()
        self.send_state()

    def forget_cargo(self, detail: str = "") -> None:
        """Two people emptied it on site (recovery after a fault or death): it carries nothing,
        and every compartment that held goods or a seal was opened with the service key (seal
        broken, relocked; see `Compartments.recover`)."""
        sealed = [s.number for s in self.locks.status() if s.seal_id and s.seal_intact]
        self.locks.recover(self.scheduler.now(), [*self.compartments, *sealed], detail)
        self.carrying.clear()
        self.compartments.clear()
        if self.connected:
            self._locks_changed()

    def tamper(self, compartment: int, detail: str = "forced") -> None:
        """Break the seal of `compartment` (forcing, a torn tag); the next state reports it."""
        self.locks.tamper(self.scheduler.now(), compartment, detail)
        self._locks_changed()

    def battery_now(self) -> float:
        """The battery level, counting the charge gained since it docked."""
        if self._charging_since is None:
            return self.battery
        gained = (self.scheduler.now() - self._charging_since) * CHARGE_PER_S
        return min(100.0, self.battery + gained)

    def _stop_charging(self) -> None:
        """Bank the charge gained since docking."""
        if self._charging_since is None:
            return
        self.battery = self.battery_now()
        self._charging_since = None
        self.world.note(
            self.scheduler.now(), self.spec.robot_id, f"charged to {self.battery:.0f} %"
        )

    def _load_compartments(self, now: float, uses: Iterable[robot_pb2.CompartmentUse]) -> None:
        """Lock each loaded order in the compartment named. A compartment that does not exist or
        still holds another order is noted in `compartment_conflicts` (two recipients' goods
        mixed). Not a world safety violation: goods of orders the dispatcher failed while the
        robot was offline stay in their compartments here, as nobody unloads them."""
        for use in uses:
            held = self.compartments.get(use.compartment)
            if not 1 <= use.compartment <= self.spec.compartments or held is not None:
                self.compartment_conflicts.append(
                    f"{now:.0f}: {self.spec.robot_id} told to load {use.order_id} into "
                    f"compartment {use.compartment}"
                    + (f", which holds {held}" if held else ", which it does not have")
                )
            self.compartments[use.compartment] = use.order_id

    def _progress(self, step_id: int, status: int, detail: str = "") -> None:
        self._send(
            robot_pb2.RobotMessage(
                progress=robot_pb2.StepProgress(
                    robot_id=self.spec.robot_id,
                    step_id=step_id,
                    status=status,  # type: ignore[arg-type]
                    detail=detail,
                    node=self.node if self.lift is None else "",
                )
            )
        )

    def _start(self, step: robot_pb2.StepCommand) -> None:
        if self._step is not None:
            self._progress(step.step_id, robot_pb2.STEP_STATUS_FAILED, "busy with another step")
            return
        if self.fault is not None:
            self._progress(step.step_id, robot_pb2.STEP_STATUS_FAILED, f"fault: {self.fault}")
            return
        now = self.scheduler.now()
        kind = step.WhichOneof("kind")
        duration = 0.0
        if kind == "move":
            mv = step.move
            if mv.from_node != self.node or self.lift is not None:
                self._progress(
                    step.step_id,
                    robot_pb2.STEP_STATUS_FAILED,
                    f"not at {mv.from_node} (at {self.node})",
                )
                return
            speed = self.spec.speed_m_s
            if mv.max_speed_m_s > 0:
                speed = min(speed, mv.max_speed_m_s)
            duration = mv.distance_m / speed
            if mv.door_id:
                self.world.enter_door(now, mv.door_id, self.spec.robot_id)
            # Off the node and onto the lane: the node is free as soon as the robot drives.
            robot = self.spec.robot_id
            self.world.vacate(now, self.world.node_resource(mv.from_node), robot)
            self.world.occupy(now, self.world.lane_resource(mv.from_node, mv.to_node), robot)
        elif kind == "enter_lift":
            el = step.enter_lift
            why = self.world.enter_lift(
                now, el.lift_id, self.spec.robot_id, el.level, el.session_id
            )
            if why:
                self._progress(step.step_id, robot_pb2.STEP_STATUS_FAILED, why)
                return
            self.lift = el.lift_id
            self.world.vacate(now, self.world.node_resource(self.node), self.spec.robot_id)
            duration = LIFT_TRANSFER_S
        elif kind == "exit_lift":
            if self.lift != step.exit_lift.lift_id:
                self._progress(
                    step.step_id,
                    robot_pb2.STEP_STATUS_FAILED,
                    f"not in lift {step.exit_lift.lift_id}",
                )
                return
            # Driving out of the car is driving into the lobby: it is there from the start.
            self.world.occupy(
                now, self.world.node_resource(step.exit_lift.to_node), self.spec.robot_id
            )
            duration = LIFT_TRANSFER_S
        elif kind in ("pickup", "dropoff"):
            work = step.pickup if kind == "pickup" else step.dropoff
            duration = self.building.stations[work.station].service_time_s
            self.locks.start_step(
                now,
                "pickup" if kind == "pickup" else "dropoff",
                [use.compartment for use in work.compartments],
                work.secure,
            )
        elif kind == "charge":
            ch = step.charge
            charger = self.building.stations.get(ch.station)
            if charger is None or charger.node != self.node or self.lift is not None:
                self._progress(step.step_id, robot_pb2.STEP_STATUS_FAILED, f"not at {ch.station}")
                return
            duration = max(0.0, ch.target_percent - self.battery) / CHARGE_PER_S
            if ch.max_duration_s > 0:
                duration = min(duration, ch.max_duration_s)
            self._charging_since = now
        else:
            self._progress(step.step_id, robot_pb2.STEP_STATUS_FAILED, f"unknown step {kind}")
            return
        self._step = step
        self._progress(step.step_id, robot_pb2.STEP_STATUS_STARTED)
        self._timer = self.scheduler.call_later(duration, self._finish)

    def _finish(self) -> None:
        step = self._step
        if step is None or not self.connected:
            return
        if self.paused:  # hold position; finish when resumed
            self._timer = self.scheduler.call_later(1.0, self._finish)
            return
        now = self.scheduler.now()
        kind = step.WhichOneof("kind")
        if kind in ("pickup", "dropoff"):
            if not self.locks.step_done():
                # Docked; a secure step waits for its seal or its recipient (_locks_changed).
                self._timer = None
                self._waiting_for_locks = True
                return
            self.locks.finish_step()
        if kind == "move":
            mv = step.move
            if mv.door_id:
                self.world.leave_door(now, mv.door_id, self.spec.robot_id)
            self.world.distance_m += mv.distance_m
            self.battery = max(0.0, self.battery - mv.distance_m * _DRAIN_PER_M)
            self.node = mv.to_node
            robot = self.spec.robot_id
            self.world.vacate(now, self.world.lane_resource(mv.from_node, mv.to_node), robot)
            self.world.occupy(now, self.world.node_resource(mv.to_node), robot)
        elif kind == "enter_lift":
            pass
        elif kind == "exit_lift":
            assert self.lift is not None
            level = self.world.exit_lift(now, self.lift, self.spec.robot_id)
            if level != step.exit_lift.level:
                self.world.violations.append(
                    f"{now:.0f}: {self.spec.robot_id} left {self.lift} at {level}, "
                    f"expected {step.exit_lift.level}"
                )
            self.lift = None
            self.node = step.exit_lift.to_node
        elif kind == "pickup":
            self.carrying.extend(step.order_ids)
            self._load_compartments(now, step.pickup.compartments)
            self.world.note(now, self.spec.robot_id, f"pickup {','.join(step.order_ids)}")
        elif kind == "dropoff":
            for oid in step.order_ids:
                if oid in self.carrying:
                    self.carrying.remove(oid)
            for use in step.dropoff.compartments:
                if self.compartments.get(use.compartment) == use.order_id:
                    del self.compartments[use.compartment]
            self.world.note(now, self.spec.robot_id, f"dropoff {','.join(step.order_ids)}")
        elif kind == "charge":
            self._stop_charging()
        self._step = None
        if kind == "charge":
            self.send_state()  # as a VDA 5050 robot reports its new battery level at once
        self._timer = None
        self.steps_done += 1
        self._progress(step.step_id, robot_pb2.STEP_STATUS_COMPLETED)
