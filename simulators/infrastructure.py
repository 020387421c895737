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
    destination: str = ""
    busy: bool = False  # doors or cabin moving
    calls: deque[tuple[str, str]] = field(default_factory=deque)  # (session, level) waiting


class SimLiftController:
    """Runs every lift car: one session at a time, calls queued first come, first served."""

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
                    destination_level=car.destination,
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
        if req.action == ipb.LIFT_ACTION_CALL:
            if car.session == req.session_id:
                if not car.busy:
                    self._report(req.lift_id)  # a repeat: confirm, change nothing
                return
            if car.session or car.busy:
                if (req.session_id, req.level) not in car.calls:
                    car.calls.append((req.session_id, req.level))
                return
            car.session = req.session_id
            self._travel(req.lift_id, req.level)
        elif req.action == ipb.LIFT_ACTION_GO_TO:
            if car.session != req.session_id or car.busy:
                return
            if car.level == req.level and car.door == ipb.LIFT_DOOR_OPEN:
                self._report(req.lift_id)
                return
            self._travel(req.lift_id, req.level)
        elif req.action == ipb.LIFT_ACTION_RELEASE:
            if car.session != req.session_id:
                if (req.session_id, req.level) in car.calls:
                    car.calls.remove((req.session_id, req.level))
                return
            car.session = ""
            self._close_then(req.lift_id, self._next_call)

    # The car's motions, as chained timers: close door, travel, open door.
    def _close_then(self, name: str, then: Callable[[str], None]) -> None:
        car = self.cars[name]
        spec = self.building.lifts[name]
        if car.door != ipb.LIFT_DOOR_OPEN:
            then(name)
            return
        car.busy = True
        self.world.lifts[name].door_open = False

        def closed() -> None:
            car.door = ipb.LIFT_DOOR_CLOSED
            car.busy = False
            self._report(name)
            then(name)

        self.scheduler.call_later(spec.door_time_s, closed)

    def _travel(self, name: str, level: str) -> None:
        car = self.cars[name]
        spec = self.building.lifts[name]
        car.destination = level

        def move(_: str) -> None:
            elev = self.building.levels
            dz = abs(elev[level].elevation - elev[car.level].elevation)
            car.busy = True
            if dz > 0:
                car.door = ipb.LIFT_DOOR_MOVING
                self._report(name)
            self.scheduler.call_later(dz / spec.speed_m_s, lambda: arrive(dz))

        def arrive(dz: float) -> None:
            truth = self.world.lifts[name]
            if dz > 0 and truth.occupants:
                self.world.lift_rides += 1
                self.world.note(
                    self.scheduler.now(),
                    name,
                    f"ride {car.level} -> {level} with {sorted(truth.occupants)}",
                )
            car.level = level
            truth.level = level
            self.scheduler.call_later(spec.door_time_s, opened)

        def opened() -> None:
            car.door = ipb.LIFT_DOOR_OPEN
            car.destination = ""
            car.busy = False
            truth = self.world.lifts[name]
            truth.door_open = True
            truth.session_id = car.session
            self._report(name)

        self._close_then(name, move)

    def _next_call(self, name: str) -> None:
        car = self.cars[name]
        self.world.lifts[name].session_id = ""
        if car.session or not car.calls:
            return
        session, level = car.calls.popleft()
        car.session = session
        self._travel(name, level)
