"""Names of the exclusive resources robots take in turn: doors, lift cars, nodes, lanes, zones.

The dispatcher reserves these (`fleet.traffic.control.TrafficControl`) and the digital twin
counts robots sharing one (`simulators.world.World`); both name them the same way here:

- `door:NAME`  a door passage (every door)
- `lift:NAME`  a lift car (every lift)
- `node:NAME`  an exclusive node: the map's `exclusive_nodes` and every lift lobby
- `lane:NAME`  an exclusive lane, by `Lane.name` (`A--B`, `A->B`), both directions at once
- `zone:NAME`  all the lanes of one zone together

Every one of them takes one robot at a time. A lane in a zone is named by its zone only: the
zone is the resource, its lanes are parts of it.
"""

from __future__ import annotations

from fleet.building.model import Building, Lane


def door_resource(door: str) -> str:
    """The resource of a door passage."""
    return f"door:{door}"


def lift_resource(lift: str) -> str:
    """The resource of a lift car."""
    return f"lift:{lift}"


def zone_resource(zone: str) -> str:
    """The resource of a zone (all its lanes)."""
    return f"zone:{zone}"


def node_resource(building: Building, node: str) -> str | None:
    """`node:NAME` when `node` takes one robot at a time, else None. KeyError: unknown node."""
    if node not in building.nodes:
        raise KeyError(node)
    return f"node:{node}" if node in building.exclusive_nodes else None


def resource_of_lane(lane: Lane) -> str | None:
    """`zone:Z` for a lane in a zone, `lane:NAME` for an exclusive lane, else None."""
    if lane.zone is not None:
        return zone_resource(lane.zone)
    if lane.exclusive:
        return f"lane:{lane.name}"
    return None


def exclusive_capacities(building: Building) -> dict[str, int]:
    """Every exclusive resource of the building with its capacity (1), for `TrafficControl`.

    Doors and lift cars first, then nodes, lanes and zones, each in map order.
    """
    names = [door_resource(door) for door in building.doors]
    names += [lift_resource(lift) for lift in building.lifts]
    names += [f"node:{node}" for node in building.nodes if node in building.exclusive_nodes]
    for lane in building.lanes:
        resource = resource_of_lane(lane)
        if resource is not None:
            names.append(resource)
    return dict.fromkeys(names, 1)  # a zone's lanes give its name once


class TrafficResources:
    """The resource names of one building, with the lane lookup built once.

    `lane_resource(start, end)` is what a MOVE step from `start` to `end` needs; the others are
    the free functions of this module bound to the building.
    """

    def __init__(self, building: Building) -> None:
        self.building = building
        self._lanes: dict[tuple[str, str], Lane] = {}
        for lane in building.lanes:
            self._lanes[(lane.start, lane.end)] = lane
            if lane.bidirectional:
                self._lanes[(lane.end, lane.start)] = lane

    def lane(self, start: str, end: str) -> Lane:
        """The lane driven from `start` to `end`; KeyError when none goes that way."""
        try:
            return self._lanes[(start, end)]
        except KeyError:
            raise KeyError(f"no lane from {start!r} to {end!r}") from None

    def lane_resource(self, start: str, end: str) -> str | None:
        """The resource taken while driving from `start` to `end` (see `resource_of_lane`).

        KeyError when no lane goes from `start` to `end` in that direction.
        """
        return resource_of_lane(self.lane(start, end))

    def node_resource(self, node: str) -> str | None:
        """`node:NAME` when `node` is exclusive, else None; KeyError for an unknown node."""
        return node_resource(self.building, node)

    def exclusive_capacities(self) -> dict[str, int]:
        """Every exclusive resource with its capacity (see `exclusive_capacities`)."""
        return exclusive_capacities(self.building)

    @staticmethod
    def door_resource(door: str) -> str:
        """The resource of a door passage."""
        return door_resource(door)

    @staticmethod
    def lift_resource(lift: str) -> str:
        """The resource of a lift car."""
        return lift_resource(lift)


def lane_resource(building: Building, start: str, end: str) -> str | None:
    """`TrafficResources(building).lane_resource(start, end)`, for one-off use.

    Builds the lane lookup on every call: hold a `TrafficResources` when asking often.
    """
    return TrafficResources(building).lane_resource(start, end)
