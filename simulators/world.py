"""The simulated building's physical truth, kept apart from what the dispatcher believes.

Simulated robots, doors and lifts update it; it counts what an observer in the corridors
would count: metres driven, lift rides, door passes, and conflicts (more robots in a door
passage, a lift car, an exclusive node, lane or zone than it admits) and safety violations
(driving through a door that is not open, entering a car that is not there).

Exclusive nodes, lanes and zones (`fleet.traffic.resources`) are occupied physically: a robot
occupies the exclusive node it stands on and the exclusive lane or zone it drives on, whether
or not it is connected (an offline robot is still in the way).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.building.model import Building
from fleet.traffic.resources import TrafficResources


@dataclass
class DoorTruth:
    """A door as it physically is."""

    open: bool = False
    occupants: set[str] = field(default_factory=set)


@dataclass
class LiftTruth:
    """A lift car as it physically is."""

    level: str
    capacity: int
    door_open: bool = False
    session_id: str = ""
    occupants: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class WorldEvent:
    """Something an observer saw."""

    at: float
    actor: str
    what: str


class World:
    """Physical state and the counters a KPI report needs.

    Robots sharing an exclusive node, lane or zone are counted in `exclusive_conflicts`, and in
    `conflicts` too when `count_exclusive_conflicts` is set. It is off by default, so a twin
    whose dispatcher does not reserve nodes, lanes and zones (or a test of doors and cars alone)
    reports conflicts as before; `simulators.fast` turns it on.
    """

    def __init__(
        self,
        building: Building,
        record_events: bool = False,
        *,
        count_exclusive_conflicts: bool = False,
    ) -> None:
        self.building = building
        self.doors = {name: DoorTruth() for name in building.doors}
        self.lifts = {
            name: LiftTruth(level=lift.initial_level or lift.levels[0], capacity=1)
            for name, lift in building.lifts.items()
        }
        self.distance_m = 0.0
        self.lift_rides = 0
        self.door_passes = 0
        self.conflicts = 0
        self.violations: list[str] = []
        self.resources = TrafficResources(building)
        self._occupants: dict[str, set[str]] = {}  # exclusive node/lane/zone -> robots on it
        self.exclusive_entries = 0
        """How many times a robot took an exclusive node, lane or zone."""
        self.exclusive_conflicts = 0
        """How many times a robot joined another on an exclusive node, lane or zone."""
        self.count_exclusive_conflicts = count_exclusive_conflicts
        self.occupancy_conflicts: list[str] = []
        """One line per robot that joined another on an exclusive node, lane or zone."""
        self.record_events = record_events
        self.events: list[WorldEvent] = []

    def note(self, at: float, actor: str, what: str) -> None:
        """Record an observation (only when recording is on: tests and the demo)."""
        if self.record_events:
            self.events.append(WorldEvent(at, actor, what))

    def enter_door(self, at: float, door: str, robot: str) -> None:
        """A robot starts to cross a door."""
        truth = self.doors[door]
        if not truth.open:
            self.violations.append(f"{at:.0f}: {robot} drove into closed door {door}")
        truth.occupants.add(robot)
        if len(truth.occupants) > 1:
            self.conflicts += 1
        self.note(at, robot, f"pass door {door}")

    def leave_door(self, at: float, door: str, robot: str) -> None:
        """A robot is through a door."""
        self.doors[door].occupants.discard(robot)
        self.door_passes += 1

    def back_out_of_door(self, at: float, door: str, robot: str) -> None:
        """A robot stops short of a door it had started to cross (no pass counted)."""
        self.doors[door].occupants.discard(robot)
        self.note(at, robot, f"stopped short of door {door}")

    def enter_lift(self, at: float, lift: str, robot: str, level: str, session_id: str) -> str:
        """A robot drives into a car; returns why it may not ('' when it may)."""
        car = self.lifts[lift]
        if car.level != level or not car.door_open:
            why = f"car {lift} is not open at {level}"
            self.violations.append(f"{at:.0f}: {robot}: {why}")
            return why
        if car.session_id != session_id:
            why = f"car {lift} serves session {car.session_id!r}, not {session_id!r}"
            self.violations.append(f"{at:.0f}: {robot}: {why}")
            return why
        car.occupants.add(robot)
        if len(car.occupants) > car.capacity:
            self.conflicts += 1
        self.note(at, robot, f"enter lift {lift} at {level}")
        return ""

    def exit_lift(self, at: float, lift: str, robot: str) -> str:
        """A robot leaves a car; returns the level it is on."""
        car = self.lifts[lift]
        if not car.door_open:
            self.violations.append(f"{at:.0f}: {robot} left {lift} through a closed door")
        car.occupants.discard(robot)
        self.note(at, robot, f"exit lift {lift} at {car.level}")
        return car.level

    def robots_in_lift(self, lift: str) -> set[str]:
        """Who is in a car now."""
        return set(self.lifts[lift].occupants)

    # ---- exclusive nodes, lanes and zones ----------------------------------------------------

    def occupants(self, resource: str) -> set[str]:
        """The robots on an exclusive resource now (`node:N`, `lane:L`, `zone:Z`; a copy)."""
        return set(self._occupants.get(resource, ()))

    def occupy(self, at: float, resource: str | None, robot: str) -> None:
        """`robot` is now on `resource` (None: nothing exclusive, nothing to do).

        A robot joining another counts one conflict, as a robot entering an occupied door does
        (in `exclusive_conflicts`, and in `conflicts` when `count_exclusive_conflicts` is set).
        """
        if resource is None:
            return
        occupants = self._occupants.setdefault(resource, set())
        if robot in occupants:
            return
        occupants.add(robot)
        self.exclusive_entries += 1
        if len(occupants) > 1:
            self.exclusive_conflicts += 1
            if self.count_exclusive_conflicts:
                self.conflicts += 1
            others = ", ".join(sorted(occupants - {robot}))
            self.occupancy_conflicts.append(f"{at:.0f}: {robot} joined {others} on {resource}")
            self.note(at, robot, f"conflict on {resource} with {others}")

    def vacate(self, at: float, resource: str | None, robot: str) -> None:
        """`robot` has left `resource` (None, or a resource it is not on: nothing to do)."""
        if resource is None:
            return
        occupants = self._occupants.get(resource)
        if occupants is not None:
            occupants.discard(robot)

    def node_resource(self, node: str) -> str | None:
        """The exclusive resource of a node, or None (also for a node not in the map)."""
        try:
            return self.resources.node_resource(node)
        except KeyError:
            return None

    def lane_resource(self, start: str, end: str) -> str | None:
        """The exclusive resource of the lane from `start` to `end`, or None.

        None too when no lane goes that way: a robot told to drive where the map has no lane is
        the dispatcher's error, not an occupancy question.
        """
        try:
            return self.resources.lane_resource(start, end)
        except KeyError:
            return None
