"""Simulated door and lift controllers that speak fleet.v1 InfrastructureGateway.

Each receives `InfrastructureCommand`s and reports `InfrastructureMessage`s with the timings of
the building map: doors take their open and close times, lift cars their door and travel times.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from fleet.building.model import Building
from fleet.v1 import infrastructure_pb2 as ipb
from simulators.scheduling import Scheduler
from simulators.world import World

Send = Callable[[ipb.InfrastructureMessage], None]


@dataclass
class _Door:
    mode: int = ipb.DOOR_MODE_CLOSED
    sessions: list[str] = field(default_factory=list)
    generation: int = 0  # invalidates timers of an interrupted opening or closing


class SimDoorController:
    """Runs every door of the building: open on request, held open while any session needs it."""

    def __init__(
        self,
        controller_id: str,
        building: Building,
        world: World,
        scheduler: Scheduler,
        send: Send,
    ) -> None:
        self.controller_id = controller_id
        self.building = building
        self.world = world
        self.scheduler = scheduler
        self._send = send
        self.doors = {name: _Door() for name in building.doors}
        self.requests: list[tuple[float, str, str, str]] = []  # (t, door, action, session)

    def connect(self) -> None:
        """Say hello and report every door."""
        self._send(
            ipb.InfrastructureMessage(
                hello=ipb.ControllerHello(
                    controller_id=self.controller_id, door_ids=sorted(self.doors)
                )
            )
        )
        for name in sorted(self.doors):
            self._report(name)

    def _report(self, name: str) -> None:
        door = self.doors[name]
        session = door.sessions[-1] if door.sessions else ""
        self._send(
            ipb.InfrastructureMessage(
                door_state=ipb.DoorState(
                    door_id=name,
                    mode=door.mode,  # type: ignore[arg-type]
                    session_id=session,
                )
            )
        )

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
            if req.session_id not in door.sessions:
                door.sessions.append(req.session_id)
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
            door.generation += 1
            door.mode = ipb.DOOR_MODE_CLOSING
            self.world.doors[req.door_id].open = False
            self.world.note(now, req.door_id, "closing")
            self._report(req.door_id)
            gen = door.generation
            self.scheduler.call_later(spec.close_time_s, lambda: self._closed(req.door_id, gen))

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


@dataclass
class _Car:
    level: str
    door: int = ipb.LIFT_DOOR_CLOSED
    session: str = ""
    target: str = ""  # level the session wants the car at, door open; "" when there
    busy: bool = False  # a door or the cabin is moving
    calls: deque[tuple[str, str]] = field(default_factory=deque)  # (session, level) waiting


class SimLiftController:
    """Runs every lift car: one session at a time, calls queued first come, first served.

    Each car is driven by `_pump`: whenever it is not moving, it takes the next step towards
    what its session wants (close the door, travel, open the door), or closes and serves the
    next queued call once the session is released.
    """

    def __init__(
        self,
        controller_id: str,
        building: Building,
        world: World,
        scheduler: Scheduler,
        send: Send,
    ) -> None:
        self.controller_id = controller_id
        self.building = building
        self.world = world
        self.scheduler = scheduler
        self._send = send
        self.cars = {name: _Car(level=world.lifts[name].level) for name in building.lifts}
        self.requests: list[tuple[float, str, str, str, str]] = []  # (t, lift, action, s, lvl)

    def connect(self) -> None:
        """Say hello and report every car."""
        self._send(
            ipb.InfrastructureMessage(
                hello=ipb.ControllerHello(
                    controller_id=self.controller_id, lift_ids=sorted(self.cars)
                )
            )
        )
        for name in sorted(self.cars):
            self._report(name)

    def _report(self, name: str) -> None:
        car = self.cars[name]
        self._send(
            ipb.InfrastructureMessage(
                lift_state=ipb.LiftState(
                    lift_id=name,
                    current_level=car.level,
                    destination_level=car.target,
                    door=car.door,  # type: ignore[arg-type]
                    mode=ipb.LIFT_MODE_NORMAL,
                    session_id=car.session,
                )
            )
        )

    def receive(self, cmd: ipb.InfrastructureCommand) -> None:
        """Handle a lift request (door requests are not this controller's)."""
        if cmd.WhichOneof("cmd") != "lift":
            return
        req = cmd.lift
        car = self.cars.get(req.lift_id)
        if car is None:
            return
        self.requests.append(
            (
                self.scheduler.now(),
                req.lift_id,
                ipb.LiftAction.Name(req.action),
                req.session_id,
                req.level,
            )
        )
        self.world.note(
            self.scheduler.now(),
            req.lift_id,
            f"{ipb.LiftAction.Name(req.action).removeprefix('LIFT_ACTION_')} {req.level} "
            f"requested by {req.robot_id}",
        )
        mine = car.session == req.session_id and car.session != ""
        if req.action == ipb.LIFT_ACTION_CALL:
            if mine:
                car.target = req.level
            elif car.session:
                if all(s != req.session_id for s, _ in car.calls):
                    car.calls.append((req.session_id, req.level))
                return
            else:
                car.session, car.target = req.session_id, req.level
        elif req.action == ipb.LIFT_ACTION_GO_TO:
            if not mine:
                return
            car.target = req.level
        elif req.action == ipb.LIFT_ACTION_RELEASE:
            if not mine:
                car.calls = deque(c for c in car.calls if c[0] != req.session_id)
                return
            car.session, car.target = "", ""
        if not car.busy and car.target == car.level and car.door == ipb.LIFT_DOOR_OPEN:
            self._report(req.lift_id)  # already there: confirm (a repeated request changes nothing)
        self._pump(req.lift_id)

    def _pump(self, name: str) -> None:
        car = self.cars[name]
        if car.busy:
            return
        if not car.session and car.calls:
            car.session, car.target = car.calls.popleft()
        spec = self.building.lifts[name]
        truth = self.world.lifts[name]
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
        self.world.lifts[name].door_open = False

        def closed() -> None:
            self.cars[name].door = ipb.LIFT_DOOR_CLOSED

        self._after(name, door_time_s, closed)

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
