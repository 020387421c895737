"""The building as data: levels, nodes, lanes, doors, lifts and stations.

Coordinates are metres on each level's plane; elevations are metres. Everything here is
immutable and validated by the loader (`fleet.building.loader`), so code that receives a
`Building` may trust its references.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from fleet.building.hours import ALWAYS_OPEN, OpeningHours, utc_offset_s
from fleet.domain.cargo import Access


@dataclass(frozen=True)
class Level:
    """One floor of the building."""

    name: str
    elevation: float


@dataclass(frozen=True)
class Node:
    """A named point robots can stand on."""

    name: str
    level: str
    x: float
    y: float


class DoorKind(StrEnum):
    """How a door opens for a robot."""

    AUTOMATIC = "AUTOMATIC"  # opens on request, no credential
    ACCESS_CONTROLLED = "ACCESS_CONTROLLED"  # opens when the controller accepts the robot's id
    # A fire door: held open for robots on request, but it closes on a fire alarm and then no
    # robot may hold it open (the fire-safety system overrides the door controller).
    FIRE = "FIRE"


@dataclass(frozen=True)
class Door:
    """A door on a lane; a robot must have it open before it may cross."""

    name: str
    kind: DoorKind
    open_time_s: float
    close_time_s: float


@dataclass(frozen=True)
class Lane:
    """A drivable connection between two nodes of one level.

    An `exclusive` lane takes one robot at a time, in either direction (too narrow to pass). All
    lanes with the same `zone` form one exclusive resource together (a narrow corridor of several
    lanes), so a lane with a zone is exclusive whatever `exclusive` says; the loader sets both.
    """

    start: str
    end: str
    length_m: float
    bidirectional: bool = True
    speed_limit_m_s: float | None = None
    access: Access = Access.ANY
    door: str | None = None
    exclusive: bool = False
    zone: str | None = None

    @property
    def name(self) -> str:
        """A stable name: `start--end` for two-way lanes, `start->end` for one-way."""
        return f"{self.start}{'--' if self.bidirectional else '->'}{self.end}"


@dataclass(frozen=True)
class Lift:
    """A lift car with the levels it serves and, on each, the lobby node in front of its door.

    `shares_with_people` is False for a robot-only car. Cars of one `bank` serve the same lobbies
    (a robot may take another car of the bank). On a fire recall the car goes to `recall_level`
    and stays there; "" means the first level served (the loader always fills it in).
    """

    name: str
    lobbies: dict[str, str]  # level name -> lobby node name
    capacity_robots: int
    door_time_s: float  # to open, and again to close
    speed_m_s: float  # vertical travel speed
    access: Access = Access.ANY
    expected_wait_s: float = 30.0  # planning estimate of a call's wait, before learning
    initial_level: str = ""
    shares_with_people: bool = True
    bank: str = ""
    recall_level: str = ""

    @property
    def levels(self) -> tuple[str, ...]:
        """The levels the car serves."""
        return tuple(self.lobbies)

    @property
    def fire_recall_level(self) -> str:
        """The level the car goes to on a fire recall (`recall_level`, else the first served)."""
        return self.recall_level or self.levels[0]


class StationKind(StrEnum):
    """What a station is for."""

    WAREHOUSE_PORT = "WAREHOUSE_PORT"
    PHARMACY = "PHARMACY"
    STERILE_CORE = "STERILE_CORE"
    OR = "OR"
    WARD = "WARD"
    WASTE = "WASTE"
    SOILED_UTILITY = "SOILED_UTILITY"
    DISPENSER = "DISPENSER"
    CHARGER = "CHARGER"
    PARKING = "PARKING"


@dataclass(frozen=True)
class Station:
    """A place where robots load, unload, charge or park; it stands on a node."""

    name: str
    kind: StationKind
    node: str
    service_time_s: float = 30.0  # time to load or unload at this station
    # When robots may load or unload here, in the building's local time (`Building.timezone`).
    opening_hours: OpeningHours = ALWAYS_OPEN


@dataclass(frozen=True)
class Building:
    """A whole validated building map.

    `exclusive_nodes` take one robot at a time: the map's `exclusive_nodes` plus every lift lobby
    (one robot in front of a car door). `holding_points` are nodes where a robot may wait or back
    off to let others pass; none of them is exclusive.
    """

    name: str
    levels: dict[str, Level]
    nodes: dict[str, Node]
    lanes: tuple[Lane, ...]
    doors: dict[str, Door]
    lifts: dict[str, Lift]
    stations: dict[str, Station]
    source: str = field(default="", compare=False)
    timezone: str = "UTC"  # IANA name; the local time of stations' opening hours
    exclusive_nodes: frozenset[str] = frozenset()
    holding_points: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # Lobbies are exclusive by definition, so a Building built by hand (tests, importers)
        # keeps the rule without every caller having to list them.
        lobbies = {node for lift in self.lifts.values() for node in lift.lobbies.values()}
        if not lobbies <= self.exclusive_nodes:
            object.__setattr__(self, "exclusive_nodes", self.exclusive_nodes | lobbies)

    def utc_offset_s(self, t: float) -> float:
        """The building's offset from UTC at absolute time `t`, for `OpeningHours` queries."""
        return utc_offset_s(self.timezone, t)

    def level_of(self, node: str) -> str:
        """The level a node is on."""
        return self.nodes[node].level

    def station_node(self, station: str) -> str:
        """The node a station stands on."""
        return self.stations[station].node


def distance(a: Node, b: Node) -> float:
    """Straight-line distance between two nodes on one level, in metres."""
    return math.hypot(a.x - b.x, a.y - b.y)
