"""Simulated door and lift controllers that speak fleet.v1 InfrastructureGateway.

Each receives `InfrastructureCommand`s and reports `InfrastructureMessage`s with the timings of
the building map: doors take their open and close times, lift cars their door and travel times.

They follow the session rules of infrastructure.proto: a request repeated with the same session
id changes nothing (but renews a lift session's lease); a lift session whose lease runs out is
dropped and the next waiting call served; each request that would start a session is answered
once with a `RequestAck`, and a session the controller ends on its own gets a refused ack.

Tests and scenarios drive faults and modes through methods, as a building's own systems would:
`SimDoorController.set_fault` / `clear_fault` / `fire_alarm`, `SimLiftController.set_mode` /
`fire_alarm`. With `heartbeat_s` > 0 every device is also reported at that interval (the live
twin; the fast twin leaves it off, as a report that changes nothing only costs events).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from fleet.building.model import Building, DoorKind
from fleet.v1 import infrastructure_pb2 as ipb
from simulators.scheduling import Cancellable, Scheduler
from simulators.world import World

Send = Callable[[ipb.InfrastructureMessage], None]

# Door modes `SimDoorController.set_fault` accepts: the door is stuck closed while in one.
DOOR_FAULT_MODES = (ipb.DOOR_MODE_BLOCKED, ipb.DOOR_MODE_FAULT, ipb.DOOR_MODE_OFFLINE)
# Lift modes in which a car takes new sessions.
_SERVING = (ipb.LIFT_MODE_NORMAL, ipb.LIFT_MODE_ROBOT_EXCLUSIVE)
# A lease counts as run out this close to its end: timers and clocks are floats.
_LEASE_EPS_S = 1e-9
# A lease that ran out while its robot was inside is looked at again this often.
_LEASE_RECHECK_S = 5.0


def _ack(device: str, session: str, accepted: bool, reason: str = "") -> ipb.InfrastructureMessage:
    return ipb.InfrastructureMessage(
        ack=ipb.RequestAck(device_id=device, session_id=session, accepted=accepted, reason=reason)
    )


def _door_mode_word(mode: int) -> str:
    """ "blocked", "fault", "offline", ... for a DoorMode value."""
    return ipb.DoorMode.Name(mode).removeprefix("DOOR_MODE_").lower()  # type: ignore[arg-type]


LIFT_HEARTBEAT_S = 5.0
"""How often the twin's lift controllers report every car, changed or not, as the protocol asks
(the dispatcher never sends a robot into a car on a stale report)."""


class _Heartbeat:
    """Reports every device every `interval_s` (0: never); restarting it stops the old loop, so
    a reconnecting controller never runs two."""

    def __init__(self, scheduler: Scheduler, interval_s: float, beat: Callable[[], None]) -> None:
        self._scheduler = scheduler
        self._interval_s = interval_s
        self._beat = beat
        self._generation = 0

    def start(self) -> None:
        self._generation += 1
        if self._interval_s > 0:
            self._schedule(self._generation)

    def _schedule(self, gen: int) -> None:
        def fire() -> None:
            if gen == self._generation:
                self._beat()
                self._schedule(gen)

        self._scheduler.call_later(self._interval_s, fire)


# ---- doors -------------------------------------------------------------------------------------


@dataclass
class _Door:
    mode: int = ipb.DOOR_MODE_CLOSED
    sessions: list[str] = field(default_factory=list)
    generation: int = 0  # invalidates timers of an interrupted opening or closing
    fault: int = 0  # a DOOR_FAULT_MODES value while faulted (the door is then stuck closed)
    detail: str = ""  # what is wrong, while faulted


class SimDoorController:
    """Runs every door of the building: open on request, held open while any session needs it.

    A faulted door (`set_fault`) is stuck closed and refuses to open; while the fire alarm is on
    (`fire_alarm`) every fire door closes and refuses to open, the others work as usual.
    """

    def __init__(
        self,
        controller_id: str,
        building: Building,
        world: World,
        scheduler: Scheduler,
        send: Send,
        heartbeat_s: float = 0.0,
    ) -> None:
        self.controller_id = controller_id
        self.building = building
        self.world = world
        self.scheduler = scheduler
        self._send = send
        self.doors = {name: _Door() for name in building.doors}
        self.requests: list[tuple[float, str, str, str]] = []  # (t, door, action, session)
        self.fire_alarm_active = False
        self._heartbeat = _Heartbeat(scheduler, heartbeat_s, self._report_all)

    def connect(self) -> None:
        """Say hello and report every door."""
        self._send(
            ipb.InfrastructureMessage(
                hello=ipb.ControllerHello(
                    controller_id=self.controller_id, door_ids=sorted(self.doors)
                )
            )
        )
        self._report_all()
        self._heartbeat.start()

    def _report_all(self) -> None:
        for name in sorted(self.doors):
            self._report(name)

    def _report(self, name: str, force: bool = False) -> None:
        door = self.doors[name]
        if door.fault == ipb.DOOR_MODE_OFFLINE and not force:
            return  # no contact: reported once, when contact was lost
        session = door.sessions[-1] if door.sessions else ""
        self._send(
            ipb.InfrastructureMessage(
                door_state=ipb.DoorState(
                    door_id=name,
                    mode=door.fault or door.mode,  # type: ignore[arg-type]
                    session_id=session,
                    fault_detail=door.detail if door.fault else "",
                )
            )
        )

    def _is_fire_door(self, name: str) -> bool:
        return self.building.doors[name].kind is DoorKind.FIRE

    def _refusal(self, name: str) -> str:
        """Why the door may not open now; "" when it may."""
        door = self.doors[name]
        if door.fault:
            what = _door_mode_word(door.fault)
            return f"door {what}: {door.detail}" if door.detail else f"door {what}"
        if self.fire_alarm_active and self._is_fire_door(name):
            return "fire alarm"
        return ""

    def receive(self, cmd: ipb.InfrastructureCommand) -> None:
        """Handle a door request (lift requests are not this controller's)."""
        if cmd.WhichOneof("cmd") != "door":
            return
        req = cmd.door
        door = self.doors.get(req.door_id)
        if door is None:
            return
        now = self.scheduler.now()
        spec = self.building.doors[req.door_id]
        action = "open" if req.action == ipb.DOOR_ACTION_OPEN else "close"
        self.world.note(now, req.door_id, f"{action} requested by {req.robot_id}")
        if req.action == ipb.DOOR_ACTION_OPEN:
            self.requests.append((now, req.door_id, "open", req.session_id))
            refusal = self._refusal(req.door_id)
            if refusal:
                self.world.note(now, req.door_id, f"refused to open: {refusal}")
                self._send(_ack(req.door_id, req.session_id, False, refusal))
                return
            if req.session_id not in door.sessions:
                door.sessions.append(req.session_id)
                self._send(_ack(req.door_id, req.session_id, True))
            if door.mode == ipb.DOOR_MODE_OPEN:
                self._report(req.door_id)  # already open: confirm for this session
                return
            if door.mode == ipb.DOOR_MODE_OPENING:
                return
            door.generation += 1
            door.mode = ipb.DOOR_MODE_OPENING
            self._report(req.door_id)
            gen = door.generation
            self.scheduler.call_later(spec.open_time_s, lambda: self._opened(req.door_id, gen))
        elif req.action == ipb.DOOR_ACTION_CLOSE:
            self.requests.append((now, req.door_id, "close", req.session_id))
            if req.session_id in door.sessions:
                door.sessions.remove(req.session_id)
            if door.sessions or door.mode in (ipb.DOOR_MODE_CLOSED, ipb.DOOR_MODE_CLOSING):
                return
            self._start_closing(req.door_id)

    def _start_closing(self, name: str) -> None:
        door = self.doors[name]
        door.generation += 1
        door.mode = ipb.DOOR_MODE_CLOSING
        self.world.doors[name].open = False
        self.world.note(self.scheduler.now(), name, "closing")
        self._report(name)
        gen = door.generation
        spec = self.building.doors[name]
        self.scheduler.call_later(spec.close_time_s, lambda: self._closed(name, gen))

    def _drop_sessions(self, name: str, reason: str) -> None:
        """End every session holding the door, each with a refused ack."""
        door = self.doors[name]
        for session in door.sessions:
            self._send(_ack(name, session, False, reason))
        door.sessions.clear()

    def _opened(self, name: str, gen: int) -> None:
        door = self.doors[name]
        if door.generation != gen:
            return
        door.mode = ipb.DOOR_MODE_OPEN
        self.world.doors[name].open = True
        self.world.note(self.scheduler.now(), name, "open")
        self._report(name)

    def _closed(self, name: str, gen: int) -> None:
        door = self.doors[name]
        if door.generation != gen:
            return
        door.mode = ipb.DOOR_MODE_CLOSED
        self.world.note(self.scheduler.now(), name, "closed")
        self._report(name)

    # ---- faults and the fire alarm (driven by tests and scenarios) ---------------------------

    def set_fault(self, name: str, mode: int, detail: str = "") -> None:
        """The door goes into `mode` (DOOR_MODE_BLOCKED, _FAULT or _OFFLINE): it is stuck
        closed at once (an open door shuts, in the twin without a closing time), every session
        holding it is ended with a refused ack, and it refuses to open until `clear_fault`.
        An OFFLINE door is reported once and then not at all until cleared."""
        if mode not in DOOR_FAULT_MODES:
            raise ValueError(f"not a door fault mode: {mode}")
        door = self.doors[name]
        door.fault, door.detail = mode, detail
        what = _door_mode_word(mode)
        self._drop_sessions(name, self._refusal(name))
        door.generation += 1  # an opening or closing in progress does not finish
        door.mode = ipb.DOOR_MODE_CLOSED
        self.world.doors[name].open = False
        self.world.note(self.scheduler.now(), name, f"{what}: {detail}, stuck closed")
        self._report(name, force=True)

    def clear_fault(self, name: str) -> None:
        """The door is back: closed, in normal service, reported."""
        door = self.doors[name]
        if not door.fault:
            return
        door.fault, door.detail = 0, ""
        door.mode = ipb.DOOR_MODE_CLOSED
        self.world.note(self.scheduler.now(), name, "fault cleared, closed")
        self._report(name)

    def fire_alarm(self, active: bool, detail: str = "") -> None:
        """The building's fire alarm goes on or off; the controller relays it to the dispatcher.
        While it is on, every fire door closes (its sessions ended with refused acks "fire
        alarm") and refuses to open; other doors work as usual."""
        self.fire_alarm_active = active
        now = self.scheduler.now()
        self.world.note(now, self.controller_id, f"fire alarm {'on' if active else 'off'}")
        self._send(
            ipb.InfrastructureMessage(fire_alarm=ipb.FireAlarm(active=active, detail=detail))
        )
        if not active:
            return
        for name in sorted(self.doors):
            door = self.doors[name]
            if not self._is_fire_door(name) or door.fault:
                continue  # a faulted door is closed already and its sessions were ended
            self._drop_sessions(name, "fire alarm")
            if door.mode not in (ipb.DOOR_MODE_CLOSED, ipb.DOOR_MODE_CLOSING):
                self._start_closing(name)
            else:
                self._report(name)  # its sessions are gone


# ---- lifts -------------------------------------------------------------------------------------


@dataclass
class _Call:
    """A CALL waiting for the car."""

    session: str
    level: str
    robot: str
    lease_s: float


@dataclass
class _Car:
    level: str
    door: int = ipb.LIFT_DOOR_CLOSED
    session: str = ""
    robot: str = ""  # the session's robot
    target: str = ""  # level the session wants the car at, door open; "" when there
    busy: bool = False  # a door or the cabin is moving
    calls: deque[_Call] = field(default_factory=deque)  # waiting, first come first served
    mode: int = ipb.LIFT_MODE_NORMAL
    detail: str = ""  # why the car is not NORMAL, as reported in fault_detail
    lease_until: float | None = None  # the session's lease runs out then; None: no lease
    lease_timer: Cancellable | None = None
    # The mode (and detail) to return to when the fire alarm that recalled the car clears.
    before_alarm: tuple[int, str] | None = None


class SimLiftController:
    """Runs every lift car: one session at a time, calls queued first come, first served.

    Each car is driven by `_pump`: whenever it is not moving, it takes the next step towards
    what its session wants (close the door, travel, open the door), or closes and serves the
    next queued call once the session is released. In FIRE_RECALL it goes to the recall level
    instead and stands there open; OUT_OF_SERVICE and FIRE_RECALL cars take no new session;
    an OFFLINE car neither reports nor serves requests.
    """

    def __init__(
        self,
        controller_id: str,
        building: Building,
        world: World,
        scheduler: Scheduler,
        send: Send,
        heartbeat_s: float = 0.0,
    ) -> None:
        self.controller_id = controller_id
        self.building = building
        self.world = world
        self.scheduler = scheduler
        self._send = send
        self.cars = {name: _Car(level=world.lifts[name].level) for name in building.lifts}
        self.requests: list[tuple[float, str, str, str, str]] = []  # (t, lift, action, s, lvl)
        self._heartbeat = _Heartbeat(scheduler, heartbeat_s, self._report_all)

    def connect(self) -> None:
        """Say hello and report every car."""
        self._send(
            ipb.InfrastructureMessage(
                hello=ipb.ControllerHello(
                    controller_id=self.controller_id, lift_ids=sorted(self.cars)
                )
            )
        )
        self._report_all()
        self._heartbeat.start()

    def _report_all(self) -> None:
        for name in sorted(self.cars):
            self._report(name)

    def _report(self, name: str, force: bool = False) -> None:
        car = self.cars[name]
        if car.mode == ipb.LIFT_MODE_OFFLINE and not force:
            return  # no contact: reported once, when contact was lost
        lease_left = 0.0
        if car.session and car.lease_until is not None:
            lease_left = max(0.0, car.lease_until - self.scheduler.now())
        self._send(
            ipb.InfrastructureMessage(
                lift_state=ipb.LiftState(
                    lift_id=name,
                    current_level=car.level,
                    destination_level=car.target,
                    door=car.door,  # type: ignore[arg-type]
                    mode=car.mode,  # type: ignore[arg-type]
                    session_id=car.session,
                    fault_detail=car.detail,
                    lease_remaining_s=lease_left,
                )
            )
        )

    def recall_level(self, name: str) -> str:
        """Where the car goes on a fire recall."""
        return self.building.lifts[name].fire_recall_level

    def _refusal(self, car: _Car) -> str:
        """Why the car takes no new session now; "" when it does."""
        if car.mode == ipb.LIFT_MODE_OUT_OF_SERVICE:
            return f"out of service: {car.detail}" if car.detail else "out of service"
        if car.mode == ipb.LIFT_MODE_FIRE_RECALL:
            return "fire recall"
        return ""

    def receive(self, cmd: ipb.InfrastructureCommand) -> None:
        """Handle a lift request (door requests are not this controller's)."""
        if cmd.WhichOneof("cmd") != "lift":
            return
        req = cmd.lift
        name = req.lift_id
        car = self.cars.get(name)
        if car is None:
            return
        now = self.scheduler.now()
        action = ipb.LiftAction.Name(req.action)
        if car.mode == ipb.LIFT_MODE_OFFLINE:
            self.world.note(now, name, f"{action} ignored: offline")
            return
        self.requests.append((now, name, action, req.session_id, req.level))
        self.world.note(
            now,
            name,
            f"{action.removeprefix('LIFT_ACTION_')} {req.level} requested by {req.robot_id}",
        )
        mine = car.session == req.session_id and car.session != ""
        queued = next((c for c in car.calls if c.session == req.session_id), None)
        if mine:
            self._set_lease(name, req.lease_s)  # any request of the session renews its lease
        elif queued is not None:
            queued.lease_s = req.lease_s  # the lease starts when the car is assigned
        if req.action == ipb.LIFT_ACTION_CALL:
            if mine:
                if not car.busy:
                    self._report(name)  # a repeat changes nothing: confirm where the car is
                return
            if queued is not None:
                return
            refusal = self._refusal(car)
            if refusal:
                self._send(_ack(name, req.session_id, False, refusal))
                return
            call = _Call(req.session_id, req.level, req.robot_id, req.lease_s)
            if car.session:
                car.calls.append(call)
                return
            self._assign(name, call)
        elif req.action == ipb.LIFT_ACTION_GO_TO:
            if not mine:
                self._send(_ack(name, req.session_id, False, "the session does not hold the car"))
                return
            if car.mode == ipb.LIFT_MODE_FIRE_RECALL:
                self._send(_ack(name, req.session_id, False, "fire recall"))
                return
            car.target = req.level
        elif req.action == ipb.LIFT_ACTION_RELEASE:
            if not mine:
                car.calls = deque(c for c in car.calls if c.session != req.session_id)
                return
            self._clear_session(name)
            self._pump(name)
            if not car.busy:  # the car stays as it is (fire recall, out of service): say so
                self._report(name)
            return
        elif req.action == ipb.LIFT_ACTION_RENEW:
            if not mine and queued is None:
                self._send(_ack(name, req.session_id, False, "no such session"))
            return  # renewing changes nothing else
        self._pump(name)

    def _assign(self, name: str, call: _Call) -> None:
        """The car takes the call on: the session holds it, its lease starts, it is told."""
        car = self.cars[name]
        car.session, car.robot, car.target = call.session, call.robot, call.level
        self._set_lease(name, call.lease_s)
        self._send(_ack(name, call.session, True))

    def _set_lease(self, name: str, lease_s: float) -> None:
        car = self.cars[name]
        if car.lease_timer is not None:
            car.lease_timer.cancel()
            car.lease_timer = None
        if lease_s > 0:
            car.lease_until = self.scheduler.now() + lease_s
            car.lease_timer = self.scheduler.call_later(lease_s, lambda: self._check_lease(name))
        else:
            car.lease_until = None

    def _check_lease(self, name: str) -> None:
        """Drop the car's session if its lease ran out (not while the car is offline: the
        controller cannot act on it then; it checks again when contact is back; and not while
        its robot is inside: the dispatcher renews it, or it ends once the robot is out)."""
        car = self.cars[name]
        if car.mode == ipb.LIFT_MODE_OFFLINE or not car.session or car.lease_until is None:
            return
        if self.world.lifts[name].occupants:
            car.lease_timer = self.scheduler.call_later(
                _LEASE_RECHECK_S, lambda: self._check_lease(name)
            )
            return
        if self.scheduler.now() < car.lease_until - _LEASE_EPS_S:
            return
        self._end_session(name, "lease expired")
        self._pump(name)

    def _clear_session(self, name: str) -> None:
        car = self.cars[name]
        car.session, car.robot, car.target = "", "", ""
        self._set_lease(name, 0.0)
        self.world.lifts[name].session_id = ""

    def _end_session(self, name: str, reason: str) -> None:
        """The controller ends the car's session on its own: refused ack, then a report."""
        car = self.cars[name]
        session = car.session
        self.world.note(self.scheduler.now(), name, f"session {session} ended: {reason}")
        self._clear_session(name)
        self._send(_ack(name, session, False, reason))
        self._report(name)

    # ---- modes (driven by tests and scenarios) -----------------------------------------------

    def set_mode(self, name: str, mode: int, detail: str = "") -> None:
        """Run the car in `mode` (an ipb.LIFT_MODE_* value); `detail` is reported as
        fault_detail.

        - NORMAL / ROBOT_EXCLUSIVE: in service; waiting calls are served again.
        - OUT_OF_SERVICE: no new session (a CALL is refused with an ack); waiting calls are
          refused and dropped; the session is ended unless its robot is inside the car, which
          may finish its ride and the exit; then the car closes and stands.
        - FIRE_RECALL: waiting calls and a session without its robot inside are refused and
          ended; the car closes, travels to its recall level without stopping, opens and stays
          open; a robot inside keeps its session so it may leave there (GO_TO is refused).
        - OFFLINE: one report with mode OFFLINE, then no reports for the car and its requests
          are ignored until another mode is set.
        """
        self.cars[name].before_alarm = None  # an explicit mode overrides a fire recall's
        self._apply_mode(name, mode, detail)

    def fire_alarm(self, active: bool, detail: str = "") -> None:
        """The fire alarm recalls every car (FIRE_RECALL) and, when cleared, returns each car
        it recalled to the mode it had before. An OFFLINE car cannot be commanded and is left
        as it is. (The door controller relays the alarm itself to the dispatcher.)"""
        for name in sorted(self.cars):
            car = self.cars[name]
            if active:
                if car.mode in (ipb.LIFT_MODE_OFFLINE, ipb.LIFT_MODE_FIRE_RECALL):
                    continue
                car.before_alarm = (car.mode, car.detail)
                self._apply_mode(name, ipb.LIFT_MODE_FIRE_RECALL, detail or "fire alarm")
            elif car.before_alarm is not None and car.mode == ipb.LIFT_MODE_FIRE_RECALL:
                mode, was = car.before_alarm
                car.before_alarm = None
                self._apply_mode(name, mode, was)

    def _apply_mode(self, name: str, mode: int, detail: str) -> None:
        car = self.cars[name]
        was_offline = car.mode == ipb.LIFT_MODE_OFFLINE
        car.mode, car.detail = mode, detail
        now = self.scheduler.now()
        word = ipb.LiftMode.Name(mode).removeprefix("LIFT_MODE_")  # type: ignore[arg-type]
        self.world.note(now, name, f"{word} {detail}".rstrip())
        if mode == ipb.LIFT_MODE_OFFLINE:
            self._report(name, force=True)
            return
        if mode not in _SERVING:
            reason = self._refusal(car)
            for call in car.calls:
                self._send(_ack(name, call.session, False, reason))
            car.calls.clear()
            if car.session and not self.world.lifts[name].occupants:
                self._end_session(name, reason)
            if mode == ipb.LIFT_MODE_FIRE_RECALL:
                car.target = ""  # where the session wanted to go no longer counts
        if was_offline:
            self._check_lease(name)
        self._report(name)
        self._pump(name)

    # ---- driving the car ---------------------------------------------------------------------

    def _pump(self, name: str) -> None:
        car = self.cars[name]
        if car.busy or car.mode == ipb.LIFT_MODE_OFFLINE:
            return
        spec = self.building.lifts[name]
        truth = self.world.lifts[name]
        if car.mode == ipb.LIFT_MODE_FIRE_RECALL:
            recall = self.recall_level(name)
            if car.level != recall:
                car.target = recall
                if car.door == ipb.LIFT_DOOR_OPEN:
                    self._close(name, spec.door_time_s)
                else:
                    self._travel(name, recall)
            elif car.door != ipb.LIFT_DOOR_OPEN:
                car.target = recall
                self._open(name, spec.door_time_s)
            elif car.target:
                car.target = ""
                truth.session_id = car.session
                self._report(name)
            return
        if not car.session and car.calls and car.mode in _SERVING:
            self._assign(name, car.calls.popleft())
        if car.session and car.target:
            if car.level == car.target and car.door == ipb.LIFT_DOOR_OPEN:
                car.target = ""
                truth.session_id = car.session
                self._report(name)
            elif car.door == ipb.LIFT_DOOR_OPEN:
                self._close(name, spec.door_time_s)
            elif car.level != car.target:
                self._travel(name, car.target)
            else:
                self._open(name, spec.door_time_s)
        elif not car.session and car.door == ipb.LIFT_DOOR_OPEN:
            self._close(name, spec.door_time_s)

    def _after(self, name: str, delay: float, then: Callable[[], None]) -> None:
        car = self.cars[name]
        car.busy = True

        def done() -> None:
            car.busy = False
            then()
            self._report(name)
            self._pump(name)

        self.scheduler.call_later(delay, done)

    def _close(self, name: str, door_time_s: float) -> None:
        # A closing door is no longer open: reports made while it closes (a heartbeat, a new
        # session's confirmation) must not invite a robot in.
        self.world.lifts[name].door_open = False
        self.cars[name].door = ipb.LIFT_DOOR_CLOSED
        self._after(name, door_time_s, lambda: None)

    def _open(self, name: str, door_time_s: float) -> None:
        car = self.cars[name]
        truth = self.world.lifts[name]

        def opened() -> None:
            car.door = ipb.LIFT_DOOR_OPEN
            truth.door_open = True
            truth.session_id = car.session
            self.world.note(self.scheduler.now(), name, f"open at {car.level}")

        self._after(name, door_time_s, opened)

    def _travel(self, name: str, level: str) -> None:
        car = self.cars[name]
        spec = self.building.lifts[name]
        levels = self.building.levels
        dz = abs(levels[level].elevation - levels[car.level].elevation)
        car.door = ipb.LIFT_DOOR_MOVING
        self._report(name)
        truth = self.world.lifts[name]

        def arrived() -> None:
            if truth.occupants:
                self.world.lift_rides += 1
                self.world.note(
                    self.scheduler.now(),
                    name,
                    f"ride {car.level} -> {level} with {sorted(truth.occupants)}",
                )
            car.level = truth.level = level
            car.door = ipb.LIFT_DOOR_CLOSED

        self._after(name, dz / spec.speed_m_s, arrived)
