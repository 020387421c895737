"""The building as a weighted graph per hygiene flow: routes and travel times.

Lanes become directed edges (two for a two-way lane) weighted by driving time plus the door's
opening time; a lift becomes an edge between every ordered pair of its lobbies weighted by the
expected wait, the door cycles, driving in and out and the vertical ride. A flow only sees the
lanes and lifts whose access admits it, so clean traffic never plans through a dirty lift and
the reverse.

The wait for a car starts as the map's `expected_wait` of each lift. The dispatcher may replace
it with the waits it has observed (`BuildingGraph.set_lift_waits`, fed by
`fleet.traffic.lift_waits.LiftWaitEstimator`); every other part of a ride's time stays as the map
gives it.

Lanes, doors, lifts and nodes can be closed (`BuildingGraph.set_closed`: a blocked corridor, a
door out of order or shut by a fire alarm, a car out of service, a spill on a spot). Routes and
travel times then go round them, or are `NoRoute` / `math.inf` when there is no way round.
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx

from fleet.building.model import Building, Lane, Lift
from fleet.domain.cargo import Access, Flow

LIFT_TRANSFER_S = 5.0
"""Time for a robot to drive into, or out of, a lift car, in seconds."""


@dataclass(frozen=True)
class LaneLeg:
    """Driving one lane, in the direction of travel (`start` to `end`)."""

    start: str
    end: str
    length_m: float
    door: str | None
    time_s: float
    access: Access


@dataclass(frozen=True)
class LiftLeg:
    """A ride from the lobby node `start` on `from_level` to the lobby `end` on `to_level`."""

    lift: str
    from_level: str
    to_level: str
    start: str
    end: str
    time_s: float


Leg = LaneLeg | LiftLeg


@dataclass(frozen=True)
class Route:
    """The fastest way from one node to another for a flow and a robot speed."""

    start: str
    end: str
    legs: tuple[Leg, ...]
    time_s: float
    length_m: float  # horizontal metres driven on lanes; lift rides add none


class NoRoute(Exception):
    """No lanes and lifts open to the flow join the two nodes."""

    def __init__(self, start: str, end: str, flow: Flow) -> None:
        super().__init__(f"no route for {flow.value} flow from {start!r} to {end!r}")
        self.start = start
        self.end = end
        self.flow = flow


def lane_time_s(lane: Lane, door_open_time_s: float, speed_m_s: float) -> float:
    """Time to drive `lane` at the robot's `speed_m_s`, within the lane's limit, door included."""
    limit = lane.speed_limit_m_s or speed_m_s
    return lane.length_m / min(speed_m_s, limit) + door_open_time_s


def lift_ride_time_s(lift: Lift, elevation_change_m: float, wait_s: float | None = None) -> float:
    """Planning time for one ride: wait, three door cycles, drive in and out, and travel.

    The wait is `wait_s` when given (an observed estimate), else the map's `expected_wait_s`.
    """
    return (
        (lift.expected_wait_s if wait_s is None else wait_s)
        + 3 * lift.door_time_s
        + 2 * LIFT_TRANSFER_S
        + abs(elevation_change_m) / lift.speed_m_s
    )


@dataclass(frozen=True)
class _LaneOption:
    """A lane crossed in one direction; its time depends on the robot's speed."""

    start: str
    end: str
    lane: Lane
    door_s: float

    def time(self, speed: float) -> float:
        return lane_time_s(self.lane, self.door_s, speed)

    def leg(self, speed: float) -> LaneLeg:
        lane = self.lane
        return LaneLeg(
            self.start, self.end, lane.length_m, lane.door, self.time(speed), lane.access
        )


@dataclass(frozen=True)
class _LiftOption:
    """A lift ride between two lobbies; its time does not depend on the robot."""

    ride: LiftLeg

    def time(self, speed: float) -> float:
        return self.ride.time_s

    def leg(self, speed: float) -> LiftLeg:
        return self.ride


_Option = _LaneOption | _LiftOption


@dataclass(frozen=True)
class Closures:
    """What is closed to robots now (`BuildingGraph.closed`).

    `lanes` by `Lane.name` (`A--B`, `A->B`), closed both ways; a closed door closes every lane
    through it; a closed lift has no rides; a closed node cannot be entered (a robot on it can
    still leave).
    """

    lanes: frozenset[str] = frozenset()
    doors: frozenset[str] = frozenset()
    lifts: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.lanes or self.doors or self.lifts or self.nodes)


NO_CLOSURES = Closures()
_OPTIONS = "options"  # edge attribute: every lane or lift joining the pair in that direction

# A shortest-path tree from one source: travel time and node path to every reachable node.
_Tree = tuple[dict[str, float], dict[str, list[str]]]


def _reversed_lane(name: str) -> str:
    """`B--A` for `A--B`: a two-way lane is named in the map's order, easy to get backwards."""
    start, sep, end = name.partition("--")
    return f"{end}--{start}" if sep else name


class BuildingGraph:
    """Routes and travel times over a building, per flow and robot speed.

    Single-source shortest-path trees are cached per (source, flow, speed). The building is
    immutable; what changes travel times is `set_lift_waits` and `set_closed`, which rebuild the
    graphs, empty the cache and bump `version` so callers holding travel times of their own (a
    planner's matrix) can tell they are stale.
    """

    def __init__(self, building: Building, lift_waits: Mapping[str, float] | None = None) -> None:
        self.building = building
        self._waits: dict[str, float] = self._checked_waits(lift_waits or {})
        self._closed = NO_CLOSURES
        self._lanes_by_name = {lane.name: lane for lane in building.lanes}
        self.version = 0
        """Incremented whenever travel times change (by `set_lift_waits` or `set_closed`)."""
        # One graph per flow: a flow's graph holds only what its access admits.
        self._graphs: dict[Flow, nx.DiGraph] = {flow: self._build(flow) for flow in Flow}
        self._trees: dict[tuple[str, Flow, float], _Tree] = {}

    @property
    def lift_waits(self) -> dict[str, float]:
        """The wait for a car, per lift, that travel times use now (a copy)."""
        return dict(self._waits)

    def set_lift_waits(self, waits: Mapping[str, float]) -> bool:
        """Use `waits` (seconds, per lift name) as the wait part of every ride's time.

        Replaces the previous waits as a whole: a lift not named goes back to the map's
        `expected_wait`, so `set_lift_waits({})` restores the map's times exactly and the result
        depends only on this call, not on the history. Returns True when travel times changed
        (graphs rebuilt, caches emptied, `version` bumped); False, keeping the caches, when the
        waits are the ones in use. Raises ValueError, changing nothing, for an unknown lift or a
        wait that is negative or not finite. Cheap: one rebuild of a few hundred edges.
        """
        new = self._checked_waits(waits)
        if new == self._waits:
            return False
        self._waits = new
        self._rebuild()
        return True

    @property
    def closed(self) -> Closures:
        """What is closed now (`set_closed`)."""
        return self._closed

    def set_closed(
        self,
        *,
        lanes: Iterable[str] = (),
        doors: Iterable[str] = (),
        lifts: Iterable[str] = (),
        nodes: Iterable[str] = (),
    ) -> bool:
        """Close these lanes (by `Lane.name`), doors, lifts and nodes; open everything else.

        Replaces the previous closures as a whole, like `set_lift_waits`: `set_closed()` opens
        everything. A closed lane is closed both ways; a closed door closes every lane through
        it; a closed lift has no rides; a closed node has no edges into it, so routes avoid it
        but a robot standing on it can still leave. Returns True when travel times changed
        (graphs rebuilt, caches emptied, `version` bumped); False when these are the closures
        in force. Raises ValueError naming an unknown lane, door, lift or node, changing nothing.
        """
        new = Closures(
            lanes=self._known("lane", lanes, self._lanes_by_name),
            doors=self._known("door", doors, self.building.doors),
            lifts=self._known("lift", lifts, self.building.lifts),
            nodes=self._known("node", nodes, self.building.nodes),
        )
        if new == self._closed:
            return False
        self._closed = new
        self._rebuild()
        return True

    @staticmethod
    def _known(what: str, names: Iterable[str], table: Mapping[str, object]) -> frozenset[str]:
        chosen = frozenset(names) if not isinstance(names, str) else frozenset((names,))
        for name in sorted(chosen):
            if name not in table:
                if what == "lane" and _reversed_lane(name) in table:
                    close = [_reversed_lane(name)]
                else:
                    close = difflib.get_close_matches(name, list(table), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown {what} {name!r}{hint}")
        return chosen

    def _rebuild(self) -> None:
        self._graphs = {flow: self._build(flow) for flow in Flow}
        self._trees.clear()
        self.version += 1

    def _checked_waits(self, waits: Mapping[str, float]) -> dict[str, float]:
        lifts = self.building.lifts
        for name, wait in waits.items():
            if name not in lifts:
                raise ValueError(f"unknown lift {name!r}")
            if not (math.isfinite(wait) and wait >= 0):
                raise ValueError(f"lift {name!r}: wait must be finite seconds >= 0, got {wait}")
        return {name: float(waits.get(name, lift.expected_wait_s)) for name, lift in lifts.items()}

    def _build(self, flow: Flow) -> nx.DiGraph:
        building = self.building
        closed = self._closed
        graph = nx.DiGraph()
        graph.add_nodes_from(building.nodes)

        def add(u: str, v: str, option: _Option) -> None:
            if v in closed.nodes:
                return  # nothing may enter a closed node; leaving it stays possible
            # Parallel lanes or lifts (e.g. two cars sharing lobbies) share one edge holding all
            # options; the weight is the best of them at the robot's speed.
            if graph.has_edge(u, v):
                graph[u][v][_OPTIONS].append(option)
            else:
                graph.add_edge(u, v, **{_OPTIONS: [option]})

        for lane in building.lanes:
            if not lane.access.admits(flow) or lane.name in closed.lanes:
                continue
            if lane.door is not None and lane.door in closed.doors:
                continue
            door_s = building.doors[lane.door].open_time_s if lane.door is not None else 0.0
            add(lane.start, lane.end, _LaneOption(lane.start, lane.end, lane, door_s))
            if lane.bidirectional:
                add(lane.end, lane.start, _LaneOption(lane.end, lane.start, lane, door_s))
        for lift in building.lifts.values():
            if not lift.access.admits(flow) or lift.name in closed.lifts:
                continue
            for from_level, start in lift.lobbies.items():
                for to_level, end in lift.lobbies.items():
                    if from_level == to_level:
                        continue
                    climb = (
                        building.levels[to_level].elevation - building.levels[from_level].elevation
                    )
                    time_s = lift_ride_time_s(lift, climb, self._waits[lift.name])
                    ride = LiftLeg(lift.name, from_level, to_level, start, end, time_s)
                    add(start, end, _LiftOption(ride))
        return graph

    def _check(self, nodes: Sequence[str], speed_m_s: float) -> None:
        for node in nodes:
            if node not in self.building.nodes:
                raise ValueError(f"unknown node {node!r}")
        if not (speed_m_s > 0 and math.isfinite(speed_m_s)):
            raise ValueError(f"robot speed must be a positive number of m/s, got {speed_m_s}")

    def _tree(self, source: str, flow: Flow, speed_m_s: float) -> _Tree:
        key = (source, flow, speed_m_s)
        tree = self._trees.get(key)
        if tree is None:

            def weight(u: str, v: str, data: dict[str, list[_Option]]) -> float:
                return min(option.time(speed_m_s) for option in data[_OPTIONS])

            tree = nx.single_source_dijkstra(self._graphs[flow], source, weight=weight)
            self._trees[key] = tree
        return tree

    def route(self, start: str, end: str, flow: Flow, speed_m_s: float) -> Route:
        """The fastest route for `flow` at `speed_m_s`; raises `NoRoute` when there is none.

        Lane legs run in the direction of travel. A route from a node to itself is empty.
        """
        self._check((start, end), speed_m_s)
        if start == end:
            return Route(start, end, (), 0.0, 0.0)
        times, paths = self._tree(start, flow, speed_m_s)
        if end not in times:
            raise NoRoute(start, end, flow)
        graph = self._graphs[flow]
        path = paths[end]
        legs: list[Leg] = []
        for u, v in itertools.pairwise(path):
            best = min(graph[u][v][_OPTIONS], key=lambda option: option.time(speed_m_s))
            legs.append(best.leg(speed_m_s))
        length = sum(leg.length_m for leg in legs if isinstance(leg, LaneLeg))
        # The tree's time, not a re-summed one, so route() and travel_time() agree exactly.
        return Route(start, end, tuple(legs), times[end], length)

    def travel_time(self, start: str, end: str, flow: Flow, speed_m_s: float) -> float:
        """Seconds from `start` to `end` for `flow` at `speed_m_s`; `math.inf` if unreachable."""
        self._check((start, end), speed_m_s)
        if start == end:
            return 0.0
        return self._tree(start, flow, speed_m_s)[0].get(end, math.inf)

    def travel_times(self, nodes: Sequence[str], flow: Flow, speed_m_s: float) -> list[list[float]]:
        """The matrix of `travel_time(nodes[i], nodes[j])`, for the optimizer."""
        self._check(nodes, speed_m_s)
        matrix: list[list[float]] = []
        for source in nodes:
            times = self._tree(source, flow, speed_m_s)[0]
            matrix.append(
                [0.0 if target == source else times.get(target, math.inf) for target in nodes]
            )
        return matrix
