"""Load and validate building maps in the native YAML format (described in `maps/README.md`).

Every problem is reported as a `MapIssue` naming the file, a dotted path inside it (such as
`lanes[3].end` or `lifts[0].lobbies.L2`) and what is wrong. The loader collects all the issues it
can find in one pass, so a map author fixes a file in one round instead of one error at a time.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import yaml

from fleet.building.hours import (
    ALWAYS_OPEN,
    WEEKDAYS,
    Interval,
    OpeningHours,
    check_timezone,
    overlaps,
    parse_interval,
    parse_weekdays,
)
from fleet.building.model import (
    Building,
    Door,
    DoorKind,
    Lane,
    Level,
    Lift,
    Node,
    Station,
    StationKind,
    distance,
)
from fleet.domain.cargo import Access

ROOT = "<root>"

_DEFAULT_EXPECTED_WAIT_S = 30.0
_DEFAULT_SERVICE_TIME_S = 30.0


@dataclass(frozen=True)
class MapIssue:
    """One problem in a map file: where it is and what is wrong."""

    file: str
    path: str  # dotted path inside the file, e.g. `lanes[3].end`; `<root>` for the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"


class MapError(Exception):
    """A map file that cannot be used; `issues` lists every problem found."""

    def __init__(self, issues: Sequence[MapIssue]) -> None:
        self.issues: list[MapIssue] = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


# --- YAML reading -------------------------------------------------------------------------------


class _Mapping(dict[Any, Any]):
    """A YAML mapping that remembers keys given twice (PyYAML silently keeps the last one)."""

    def __init__(self) -> None:
        super().__init__()
        self.key_lines: dict[Any, int] = {}
        self.duplicates: list[tuple[Any, int, int]] = []  # (key, first line, repeated line)


class _Loader(yaml.SafeLoader):
    """A safe loader whose mappings report duplicate keys instead of dropping them."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)
    result = _Mapping()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool | None):
            key = repr(key)  # unhashable keys (lists, mappings) become text; the check rejects them
        value = loader.construct_object(value_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in result:
            result.duplicates.append((key, result.key_lines[key], line))
            continue  # keep the first, so the report names what was silently lost
        result[key] = value
        result.key_lines[key] = line
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def yaml_error_at(exc: yaml.MarkedYAMLError) -> str:
    """Where and what a YAML parse error is: " at line L, column C: problem" (1-based)."""
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {exc.problem or exc.context or 'invalid YAML'}"


def _read_yaml(path: Path, source: str) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MapError([MapIssue(source, ROOT, "file not found")]) from None
    except IsADirectoryError:
        raise MapError([MapIssue(source, ROOT, "is a directory, not a map file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MapError([MapIssue(source, ROOT, f"cannot read file: {exc}")]) from None
    try:
        return yaml.load(text, Loader=_Loader)  # safe: _Loader derives from SafeLoader
    except yaml.MarkedYAMLError as exc:
        raise MapError([MapIssue(source, ROOT, f"YAML syntax error{yaml_error_at(exc)}")]) from None
    except yaml.YAMLError as exc:
        raise MapError([MapIssue(source, ROOT, f"YAML syntax error: {exc}")]) from None


# --- public API ---------------------------------------------------------------------------------


def load_building(path: str | Path) -> Building:
    """Read, validate and return the building map at `path`.

    Raises `MapError` listing every problem found, including a missing file or bad YAML.
    """
    source = str(path)
    data = _read_yaml(Path(path), source)
    return parse_building(data, source)


def parse_building(data: object, source: str) -> Building:
    """Validate already-parsed map data (as from `yaml.safe_load`) and build a `Building`.

    `source` names the data in issues (usually the file path). Raises `MapError`.
    """
    return _Parser(source).parse(data)


def summary(building: Building) -> str:
    """One line describing a loaded map, e.g. `demo.yaml: Demo: 3 levels, 120 nodes, ...`."""
    counts = [
        _count(len(building.levels), "level"),
        _count(len(building.nodes), "node"),
        _count(len(building.lanes), "lane"),
        _count(len(building.doors), "door"),
        _count(len(building.lifts), "lift"),
        _count(len(building.stations), "station"),
    ]
    file = Path(building.source).name if building.source else "<map>"
    return f"{file}: {building.name}: {', '.join(counts)}"


def check_map(path: str | Path) -> tuple[int, list[str]]:
    """Validate the map at `path` for a command line: (exit code, lines to print).

    Exit code 0 with the summary line when the map is valid, 1 with one line per issue otherwise.
    """
    try:
        building = load_building(path)
    except MapError as exc:
        return 1, [str(issue) for issue in exc.issues]
    return 0, [summary(building)]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


# --- validation ---------------------------------------------------------------------------------

# Each section's allowed keys, mapped to whether the key is required.
_ROOT_KEYS = {
    "name": True,
    "levels": True,
    "lanes": False,
    "doors": False,
    "lifts": False,
    "stations": False,
    "timezone": False,
    "exclusive_nodes": False,
    "holding_points": False,
}
_LEVEL_KEYS = {"name": True, "elevation": True, "nodes": True}
_LANE_KEYS = {
    "start": True,
    "end": True,
    "length": False,
    "bidirectional": False,
    "speed_limit": False,
    "access": False,
    "door": False,
    "exclusive": False,
    "zone": False,
}
_DOOR_KEYS = {"name": True, "kind": True, "open_time": True, "close_time": True}
_LIFT_KEYS = {
    "name": True,
    "lobbies": True,
    "capacity_robots": True,
    "door_time": True,
    "speed": True,
    "access": False,
    "expected_wait": False,
    "initial_level": False,
    "shares_with_people": False,
    "bank": False,
    "recall_level": False,
}
_STATION_KEYS = {
    "name": True,
    "kind": True,
    "node": True,
    "service_time": False,
    "opening_hours": False,
}


def join_path(path: str, key: object) -> str:
    """The error path of `key` inside `path` (`a.b`, or `b` at the root)."""
    return str(key) if path == ROOT else f"{path}.{key}"


def _index(path: str, i: int) -> str:
    return f"[{i}]" if path == ROOT else f"{path}[{i}]"


def describe_value(value: object) -> str:
    """A short description of a bad value for an error message."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"boolean {value}".lower()
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"text {value!r}"
    return f"{type(value).__name__} {value!r}"


def _is_number(value: object) -> bool:
    # YAML reads `yes`/`no` as booleans, and bool is an int in Python: refuse them as numbers.
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Parser:
    """One validation pass over a map's data; collects issues and builds the model."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.issues: list[MapIssue] = []
        # Set when a lane, lift or station could not be read: the graph is then incomplete and a
        # reachability check would only repeat the same mistake as "unreachable" reports.
        self.graph_incomplete = False
        # Every name declared, even with a problem of its own: a reference to such a name is not
        # reported again as "unknown", since the declaration's issue already explains it.
        self.declared: dict[str, set[str]] = {"level": set(), "node": set(), "door": set()}

    def error(self, path: str, message: str) -> None:
        self.issues.append(MapIssue(self.source, path, message))

    # -- generic field readers -----------------------------------------------------------------

    def mapping(
        self, value: object, path: str, keys: Mapping[str, bool] | None = None
    ) -> Mapping[Any, Any] | None:
        """Check `value` is a mapping; report duplicate, unknown and missing keys.

        `keys` maps each allowed key to whether it is required; None allows any key.
        """
        if not isinstance(value, Mapping):
            self.error(path, f"expected a mapping, got {describe_value(value)}")
            return None
        if isinstance(value, _Mapping):
            for key, first, again in value.duplicates:
                self.error(join_path(path, key), f"duplicate key (lines {first} and {again})")
        if keys is not None:
            for key in value:
                if key not in keys:
                    self.error(join_path(path, key), _unknown_key(key, keys))
            for key, required in keys.items():
                if required and key not in value:
                    self.error(join_path(path, key), "required field is missing")
        return value

    def items(self, data: Mapping[Any, Any], key: str, path: str) -> Iterator[tuple[int, str, Any]]:
        """Yield (index, path, item) for the list under `key`; absent means empty."""
        value = data.get(key)
        if value is None:
            return
        where = join_path(path, key)
        if not isinstance(value, list):
            self.error(where, f"expected a list, got {describe_value(value)}")
            return
        for i, item in enumerate(value):
            yield i, _index(where, i), item

    def text(self, data: Mapping[Any, Any], key: str, path: str) -> str | None:
        """A required non-empty string field; None (after reporting) when absent or wrong."""
        if key not in data:
            return None  # reported by `mapping` as missing
        value = data[key]
        if not isinstance(value, str) or not value.strip():
            self.error(
                join_path(path, key), f"expected a non-empty name, got {describe_value(value)}"
            )
            return None
        return value

    def number(
        self,
        data: Mapping[Any, Any],
        key: str,
        path: str,
        *,
        minimum: float | None = 0.0,
        inclusive: bool = False,
        unit: str = "",
    ) -> float | None:
        """A numeric field, checked against `minimum` (exclusive unless `inclusive`)."""
        if key not in data:
            return None
        value = data[key]
        where = join_path(path, key)
        if not _is_number(value):
            self.error(where, f"expected a number{unit}, got {describe_value(value)}")
            return None
        number = float(value)
        if not math.isfinite(number):
            self.error(where, f"must be a finite number, got {value}")
            return None
        if minimum is not None:
            if inclusive and number < minimum:
                self.error(where, f"must be at least {minimum:g}, got {value}")
                return None
            if not inclusive and number <= minimum:
                self.error(where, f"must be greater than {minimum:g}, got {value}")
                return None
        return number

    def access(self, data: Mapping[Any, Any], path: str) -> Access | None:
        if "access" not in data:
            return Access.ANY
        value = data["access"]
        if isinstance(value, str) and value.strip().upper() in Access.__members__:
            return Access[value.strip().upper()]
        self.error(
            join_path(path, "access"),
            f"expected one of clean, dirty, any, got {describe_value(value)}",
        )
        return None

    def known(self, what: str, name: str, table: Mapping[str, object], path: str) -> bool:
        """True when `name` is in `table`; else reports an unknown `what` (unless declared)."""
        if name in table:
            return True
        if name not in self.declared[what]:
            self.error(path, f"unknown {what} {name!r}")
        return False

    def unique(self, seen: dict[str, str], name: str, path: str, what: str) -> bool:
        """Record `name` at `path`; report and return False when it was seen before."""
        if name in seen:
            self.error(
                join_path(path, "name"), f"duplicate {what} name {name!r} (first at {seen[name]})"
            )
            return False
        seen[name] = path
        return True

    # -- sections --------------------------------------------------------------------------------

    def parse(self, data: object) -> Building:
        if data is None:
            self.error(ROOT, "the map is empty")
            raise MapError(self.issues)
        root = self.mapping(data, ROOT, _ROOT_KEYS)
        if root is None:
            raise MapError(self.issues)
        name = self.text(root, "name", ROOT)
        timezone = self.timezone(root)
        levels, nodes = self.parse_levels(root)
        doors, door_paths = self.parse_doors(root)
        lanes = self.parse_lanes(root, nodes, doors, door_paths)
        lifts, lift_paths = self.parse_lifts(root, levels, nodes)
        self.check_banks(lifts, lift_paths)
        exclusive = self.node_list(root, "exclusive_nodes", nodes)
        holding = self.node_list(root, "holding_points", nodes)
        self.check_holding_points(holding, exclusive, lifts, lift_paths)
        stations, station_paths = self.parse_stations(root, nodes)
        if not self.graph_incomplete:
            self.check_reachable(nodes, lanes, lifts, stations, station_paths)
        if self.issues or name is None:
            raise MapError(self.issues)
        return Building(
            name=name,
            levels=levels,
            nodes=nodes,
            lanes=tuple(lanes),
            doors=doors,
            lifts=lifts,
            stations=stations,
            source=self.source,
            timezone=timezone,
            exclusive_nodes=frozenset(exclusive)
            | {node for lift in lifts.values() for node in lift.lobbies.values()},
            holding_points=frozenset(holding),
        )

    def timezone(self, root: Mapping[Any, Any]) -> str:
        """The map's IANA time zone (default UTC); reports an unknown one."""
        value = root.get("timezone", "UTC")
        if not isinstance(value, str) or not value.strip():
            self.error("timezone", f"expected a time zone name, got {describe_value(value)}")
            return "UTC"
        problem = check_timezone(value)
        if problem is not None:
            self.error("timezone", problem)
        return value

    def parse_levels(self, root: Mapping[Any, Any]) -> tuple[dict[str, Level], dict[str, Node]]:
        levels: dict[str, Level] = {}
        nodes: dict[str, Node] = {}
        level_paths: dict[str, str] = {}
        node_paths: dict[str, str] = {}
        if "levels" in root and not root["levels"]:
            self.error("levels", "a map needs at least one level")
        for _, path, item in self.items(root, "levels", ROOT):
            data = self.mapping(item, path, _LEVEL_KEYS)
            if data is None:
                continue
            name = self.text(data, "name", path)
            elevation = self.number(data, "elevation", path, minimum=None, unit=" (metres)")
            if name is not None:
                self.declared["level"].add(name)
            known = name is not None and self.unique(level_paths, name, path, "level")
            if known and name is not None and elevation is not None:
                levels[name] = Level(name, elevation)
            if "nodes" not in data:
                continue
            nodes_path = join_path(path, "nodes")
            # `nodes:` with nothing under it is an empty level, not an error.
            raw_nodes = data["nodes"] if data["nodes"] is not None else {}
            level_nodes = self.mapping(raw_nodes, nodes_path)
            for node_name, coords in (level_nodes or {}).items():
                node_path = join_path(nodes_path, node_name)
                if not isinstance(node_name, str) or not node_name.strip():
                    self.error(
                        node_path, f"node names must be text, got {describe_value(node_name)}"
                    )
                    continue
                if node_name in node_paths:
                    self.error(
                        node_path,
                        f"duplicate node name {node_name!r} (first at {node_paths[node_name]})",
                    )
                    continue
                node_paths[node_name] = node_path
                self.declared["node"].add(node_name)
                xy = self.coordinates(coords, node_path)
                if xy is not None and name is not None and known:
                    nodes[node_name] = Node(node_name, name, xy[0], xy[1])
        return levels, nodes

    def coordinates(self, value: object, path: str) -> tuple[float, float] | None:
        if (
            isinstance(value, list)
            and len(value) == 2
            and all(_is_number(v) and math.isfinite(v) for v in value)
        ):
            return float(value[0]), float(value[1])
        self.error(path, f"expected [x, y] in metres, got {describe_value(value)}")
        return None

    def parse_doors(self, root: Mapping[Any, Any]) -> tuple[dict[str, Door], dict[str, str]]:
        doors: dict[str, Door] = {}
        paths: dict[str, str] = {}
        for _, path, item in self.items(root, "doors", ROOT):
            data = self.mapping(item, path, _DOOR_KEYS)
            if data is None:
                continue
            name = self.text(data, "name", path)
            kind = self.door_kind(data, path)
            open_s = self.number(data, "open_time", path, unit=" (seconds)")
            close_s = self.number(data, "close_time", path, unit=" (seconds)")
            if name is not None:
                self.declared["door"].add(name)
            if name is None or not self.unique(paths, name, path, "door"):
                continue
            if kind is not None and open_s is not None and close_s is not None:
                doors[name] = Door(name, kind, open_s, close_s)
        return doors, paths

    def door_kind(self, data: Mapping[Any, Any], path: str) -> DoorKind | None:
        if "kind" not in data:
            return None
        value = data["kind"]
        if isinstance(value, str) and value.strip().upper() in DoorKind.__members__:
            return DoorKind[value.strip().upper()]
        self.error(
            join_path(path, "kind"),
            f"expected automatic, access_controlled or fire, got {describe_value(value)}",
        )
        return None

    def parse_lanes(
        self,
        root: Mapping[Any, Any],
        nodes: dict[str, Node],
        doors: dict[str, Door],
        door_paths: dict[str, str],
    ) -> list[Lane]:
        lanes: list[Lane] = []
        used_doors: set[str] = set()
        directed: dict[tuple[str, str], str] = {}  # (from, to) -> path of the lane giving it
        zones: dict[str, tuple[str, str]] = {}  # zone -> (its level, path of its first lane)
        for _, path, item in self.items(root, "lanes", ROOT):
            lane = self.parse_lane(item, path, nodes, doors, used_doors)
            if lane is None:
                self.graph_incomplete = True
                continue
            pairs = [(lane.start, lane.end)]
            if lane.bidirectional:
                pairs.append((lane.end, lane.start))
            clash = next((directed[p] for p in pairs if p in directed), None)
            if clash is not None:
                self.error(
                    path, f"duplicate lane between {lane.start} and {lane.end} (first at {clash})"
                )
                continue
            for pair in pairs:
                directed[pair] = path
            lanes.append(lane)
            if lane.zone is not None:
                # A zone is one narrow stretch of corridor: lanes on another level are a typo.
                level = nodes[lane.start].level
                first_level, first = zones.setdefault(lane.zone, (level, path))
                if first_level != level:
                    self.error(
                        join_path(path, "zone"),
                        f"zone {lane.zone!r} is on level {first_level} ({first}), this lane on "
                        f"{level}; a zone is one stretch of corridor on one level",
                    )
        if not self.graph_incomplete:
            # Only when every lane was read: a lane we could not read may have named the door.
            for name, path in door_paths.items():
                if name not in used_doors:
                    self.error(path, f"door {name!r} is not on any lane")
        return lanes

    def parse_lane(
        self,
        item: object,
        path: str,
        nodes: dict[str, Node],
        doors: dict[str, Door],
        used_doors: set[str],
    ) -> Lane | None:
        data = self.mapping(item, path, _LANE_KEYS)
        if data is None:
            return None
        ok = True
        ends: list[Node] = []
        for key in ("start", "end"):
            name = self.text(data, key, path)
            if name is None or not self.known("node", name, nodes, join_path(path, key)):
                ok = False
            else:
                ends.append(nodes[name])
        length = self.number(data, "length", path, unit=" (metres)")
        if "length" in data and length is None:
            ok = False
        speed_limit = self.number(data, "speed_limit", path, unit=" (m/s)")
        if "speed_limit" in data and speed_limit is None:
            ok = False
        bidirectional = data.get("bidirectional", True)
        if not isinstance(bidirectional, bool):
            self.error(
                join_path(path, "bidirectional"),
                f"expected true or false, got {describe_value(bidirectional)}",
            )
            ok = False
        access = self.access(data, path)
        exclusive = data.get("exclusive", False)
        if not isinstance(exclusive, bool):
            self.error(
                join_path(path, "exclusive"),
                f"expected true or false, got {describe_value(exclusive)}",
            )
            ok = False
        zone = data.get("zone")
        if "zone" in data:
            if not isinstance(zone, str) or not zone.strip():
                self.error(
                    join_path(path, "zone"), f"expected a zone name, got {describe_value(zone)}"
                )
                ok = False
            elif exclusive is False and "exclusive" in data:
                # Saying both is a contradiction the author should resolve, not us guess at.
                self.error(
                    join_path(path, "exclusive"),
                    f"a lane in zone {zone!r} is exclusive; leave out exclusive or make it true",
                )
                ok = False
        door = data.get("door")
        if door is not None:
            if not isinstance(door, str):
                self.error(
                    join_path(path, "door"), f"expected a door name, got {describe_value(door)}"
                )
                ok = False
            else:
                used_doors.add(door)
                if not self.known("door", door, doors, join_path(path, "door")):
                    ok = False
        if len(ends) == 2:
            a, b = ends
            if a.name == b.name:
                self.error(path, f"lane starts and ends at the same node {a.name!r}")
                ok = False
            elif a.level != b.level:
                self.error(
                    path,
                    f"lane joins nodes on different levels ({a.name} on {a.level}, "
                    f"{b.name} on {b.level}); use a lift to change level",
                )
                ok = False
            elif length is None and "length" not in data and distance(a, b) <= 0.0:
                self.error(
                    path, f"nodes {a.name} and {b.name} are at the same point; give a length"
                )
                ok = False
        if not ok or access is None or len(ends) != 2:
            return None
        return Lane(
            start=ends[0].name,
            end=ends[1].name,
            length_m=length if length is not None else distance(ends[0], ends[1]),
            bidirectional=bool(bidirectional),
            speed_limit_m_s=speed_limit,
            access=access,
            door=door if isinstance(door, str) else None,
            # A zone is one exclusive resource, so each of its lanes is exclusive too.
            exclusive=exclusive is True or isinstance(zone, str),
            zone=zone if isinstance(zone, str) else None,
        )

    def parse_lifts(
        self, root: Mapping[Any, Any], levels: dict[str, Level], nodes: dict[str, Node]
    ) -> tuple[dict[str, Lift], dict[str, str]]:
        lifts: dict[str, Lift] = {}
        paths: dict[str, str] = {}
        for _, path, item in self.items(root, "lifts", ROOT):
            lift = self.parse_lift(item, path, levels, nodes)
            if lift is None:
                self.graph_incomplete = True
            elif self.unique(paths, lift.name, path, "lift"):
                lifts[lift.name] = lift
        return lifts, paths

    def parse_lift(
        self, item: object, path: str, levels: dict[str, Level], nodes: dict[str, Node]
    ) -> Lift | None:
        data = self.mapping(item, path, _LIFT_KEYS)
        if data is None:
            return None
        name = self.text(data, "name", path)
        capacity: int | None = None
        if "capacity_robots" in data:
            value = data["capacity_robots"]
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                capacity = value
            else:
                self.error(
                    join_path(path, "capacity_robots"),
                    f"expected a whole number of robots, at least 1, got {describe_value(value)}",
                )
        door_time = self.number(data, "door_time", path, unit=" (seconds)")
        speed = self.number(data, "speed", path, unit=" (m/s)")
        # A lift already waiting at the floor is a fair planning estimate, so 0 is allowed.
        wait = self.number(data, "expected_wait", path, inclusive=True, unit=" (seconds)")
        access = self.access(data, path)
        lobbies = self.lobbies(data, path, levels, nodes)
        initial = data.get("initial_level")
        initial_ok = self.served_level(data, "initial_level", path, lobbies)
        recall = data.get("recall_level")
        recall_ok = self.served_level(data, "recall_level", path, lobbies)
        shares = data.get("shares_with_people", True)
        shares_ok = isinstance(shares, bool)
        if not shares_ok:
            self.error(
                join_path(path, "shares_with_people"),
                f"expected true or false, got {describe_value(shares)}",
            )
        bank = data.get("bank", "")
        bank_ok = "bank" not in data or (isinstance(bank, str) and bool(bank.strip()))
        if not bank_ok:
            self.error(join_path(path, "bank"), f"expected a bank name, got {describe_value(bank)}")
        if (
            name is None
            or capacity is None
            or door_time is None
            or speed is None
            or ("expected_wait" in data and wait is None)
            or access is None
            or lobbies is None
            or not initial_ok
            or not recall_ok
            or not shares_ok
            or not bank_ok
        ):
            return None
        return Lift(
            name=name,
            lobbies=lobbies,
            capacity_robots=capacity,
            door_time_s=door_time,
            speed_m_s=speed,
            access=access,
            expected_wait_s=wait if wait is not None else _DEFAULT_EXPECTED_WAIT_S,
            # Default to the first lobby listed so every Lift names a real starting level.
            initial_level=initial if isinstance(initial, str) else next(iter(lobbies)),
            shares_with_people=bool(shares),
            bank=str(bank),
            recall_level=recall if isinstance(recall, str) else next(iter(lobbies)),
        )

    def served_level(
        self, data: Mapping[Any, Any], key: str, path: str, lobbies: dict[str, str] | None
    ) -> bool:
        """Check an optional level field of a lift names a level the lift serves."""
        value = data.get(key)
        if value is None:
            return True
        where = join_path(path, key)
        if not isinstance(value, str):
            self.error(where, f"expected a level name, got {describe_value(value)}")
            return False
        if lobbies is not None and value not in lobbies:
            served = ", ".join(lobbies)
            self.error(where, f"level {value!r} is not served by this lift (serves {served})")
            return False
        return True

    def check_banks(self, lifts: dict[str, Lift], paths: dict[str, str]) -> None:
        """The cars of one bank serve the same lobbies, so any of them can take a robot's ride."""
        first: dict[str, Lift] = {}
        for lift in lifts.values():
            if not lift.bank:
                continue
            other = first.setdefault(lift.bank, lift)
            if other is not lift and other.lobbies != lift.lobbies:
                self.error(
                    join_path(paths[lift.name], "bank"),
                    f"lift {lift.name!r} is in bank {lift.bank!r} but does not serve the same "
                    f"lobbies as {other.name!r} ({paths[other.name]}); cars of a bank share "
                    "their lobbies",
                )

    def node_list(
        self, root: Mapping[Any, Any], key: str, nodes: dict[str, Node]
    ) -> dict[str, str]:
        """The node names listed under `key` (absent: none), each with its path."""
        listed: dict[str, str] = {}
        for _, path, item in self.items(root, key, ROOT):
            if not isinstance(item, str) or not item.strip():
                self.error(path, f"expected a node name, got {describe_value(item)}")
            elif item in listed:
                self.error(path, f"node {item!r} is listed twice (first at {listed[item]})")
            elif self.known("node", item, nodes, path):
                listed[item] = path
        return listed

    def check_holding_points(
        self,
        holding: dict[str, str],
        exclusive: dict[str, str],
        lifts: dict[str, Lift],
        lift_paths: dict[str, str],
    ) -> None:
        """A holding point is where robots wait for each other: it must take more than one."""
        lobbies = {
            node: join_path(join_path(lift_paths[lift.name], "lobbies"), level)
            for lift in lifts.values()
            for level, node in lift.lobbies.items()
        }
        for node, path in holding.items():
            if node in exclusive:
                self.error(
                    path,
                    f"node {node!r} is exclusive (at {exclusive[node]}); a holding point must "
                    "not be exclusive",
                )
            elif node in lobbies:
                self.error(
                    path,
                    f"node {node!r} is a lift lobby (at {lobbies[node]}), and lobbies are "
                    "exclusive; a holding point must not be exclusive",
                )

    def lobbies(
        self,
        data: Mapping[Any, Any],
        path: str,
        levels: dict[str, Level],
        nodes: dict[str, Node],
    ) -> dict[str, str] | None:
        if "lobbies" not in data:
            return None
        where = join_path(path, "lobbies")
        value = self.mapping(data["lobbies"], where)
        if value is None:
            return None
        lobbies: dict[str, str] = {}
        ok = True
        for level, node in value.items():
            at = join_path(where, level)
            if not isinstance(level, str):
                self.error(at, f"expected a level name, got {describe_value(level)}")
                ok = False
            elif not self.known("level", level, levels, at):
                ok = False
            elif not isinstance(node, str):
                self.error(at, f"expected a lobby node name, got {describe_value(node)}")
                ok = False
            elif not self.known("node", node, nodes, at):
                ok = False
            elif nodes[node].level != level:
                self.error(at, f"node {node!r} is on level {nodes[node].level}, not {level}")
                ok = False
            else:
                lobbies[level] = node
        if len(value) < 2:
            self.error(where, f"a lift must serve at least 2 levels, got {len(value)}")
            ok = False
        return lobbies if ok else None

    def parse_stations(
        self, root: Mapping[Any, Any], nodes: dict[str, Node]
    ) -> tuple[dict[str, Station], dict[str, str]]:
        stations: dict[str, Station] = {}
        paths: dict[str, str] = {}
        for _, path, item in self.items(root, "stations", ROOT):
            station = self.parse_station(item, path, nodes)
            if station is None:
                self.graph_incomplete = True
            elif self.unique(paths, station.name, path, "station"):
                stations[station.name] = station
        return stations, paths

    def parse_station(self, item: object, path: str, nodes: dict[str, Node]) -> Station | None:
        data = self.mapping(item, path, _STATION_KEYS)
        if data is None:
            return None
        name = self.text(data, "name", path)
        kind: StationKind | None = None
        if "kind" in data:
            value = data["kind"]
            if isinstance(value, str) and value.strip().upper() in StationKind.__members__:
                kind = StationKind[value.strip().upper()]
            else:
                choices = ", ".join(k.value.lower() for k in StationKind)
                self.error(
                    join_path(path, "kind"),
                    f"unknown station kind {value!r} (expected one of: {choices})",
                )
        node = self.text(data, "node", path)
        if node is not None and not self.known("node", node, nodes, join_path(path, "node")):
            node = None
        # Zero is a fair service time for a parking spot, so only negative times are refused.
        service = self.number(data, "service_time", path, inclusive=True, unit=" (seconds)")
        # Bad hours leave the station usable for the other checks; the issue fails the map.
        hours = self.opening_hours(data, path)
        if name is None or kind is None or node is None:
            return None
        if "service_time" in data and service is None:
            return None
        return Station(
            name=name,
            kind=kind,
            node=node,
            service_time_s=service if service is not None else _DEFAULT_SERVICE_TIME_S,
            opening_hours=hours if hours is not None else ALWAYS_OPEN,
        )

    def opening_hours(self, data: Mapping[Any, Any], path: str) -> OpeningHours | None:
        """A station's `opening_hours`: a list of daily intervals, or weekdays to such lists.

        Absent means always open; None (after reporting) when anything in it is wrong.
        """
        if "opening_hours" not in data:
            return ALWAYS_OPEN
        where = join_path(path, "opening_hours")
        value = data["opening_hours"]
        if isinstance(value, list):
            daily = self.intervals(value, where)
            if daily is None:
                return None
            hours = OpeningHours.daily(daily)
        elif isinstance(value, Mapping):
            week = self.weekdays(value, where)
            if week is None:
                return None
            hours = OpeningHours.weekly(week)
        else:
            self.error(
                where,
                "expected a list of intervals such as ['07:00-19:00'], or a mapping of "
                f"weekdays (mon-fri, sat, ...) to such lists, got {describe_value(value)}",
            )
            return None
        if hours.never_open:
            self.error(
                where,
                "the station never opens; leave opening_hours out for a station open round the "
                "clock",
            )
            return None
        return hours

    def weekdays(self, value: Mapping[Any, Any], where: str) -> dict[int, list[Interval]] | None:
        """Weekday number -> intervals from a mapping such as `{mon-fri: [...], sat: [...]}`."""
        self.mapping(value, where)  # reports duplicate keys
        week: dict[int, list[Interval]] = {}
        given: dict[int, str] = {}  # weekday -> the key that gave it
        ok = True
        for key, intervals in value.items():
            at = join_path(where, key)
            if not isinstance(key, str):
                self.error(at, f"expected weekdays such as 'mon-fri', got {describe_value(key)}")
                ok = False
                continue
            try:
                days = parse_weekdays(key)
            except ValueError as exc:
                self.error(at, str(exc))
                ok = False
                continue
            for day in days:
                if day in given:
                    self.error(
                        at, f"weekday {WEEKDAYS[day]!r} given twice (also in {given[day]!r})"
                    )
                    ok = False
                given.setdefault(day, key)
            if not isinstance(intervals, list):
                self.error(
                    at,
                    "expected a list of intervals such as ['07:00-19:00'] ([] for closed), "
                    f"got {describe_value(intervals)}",
                )
                ok = False
                continue
            parsed = self.intervals(intervals, at)
            if parsed is None:
                ok = False
                continue
            for day in days:
                week.setdefault(day, parsed)
        return week if ok else None

    def intervals(self, items: list[Any], where: str) -> list[Interval] | None:
        """Parse `HH:MM-HH:MM` texts; report bad ones and overlaps between them."""
        parsed: list[Interval] = []
        texts: list[str] = []
        ok = True
        for i, item in enumerate(items):
            at = _index(where, i)
            if not isinstance(item, str):
                # YAML 1.1 reads an unquoted 19:00 as base-60 1140: say so, or the error baffles.
                hint = "; quote times, YAML reads 19:00 as a number" if _is_number(item) else ""
                self.error(
                    at,
                    f"expected an interval such as '07:00-19:00', got {describe_value(item)}{hint}",
                )
                ok = False
                continue
            try:
                parsed.append(parse_interval(item))
                texts.append(item)
            except ValueError as exc:
                self.error(at, str(exc))
                ok = False
        if not ok:
            return None
        for i, j in overlaps(parsed):
            self.error(_index(where, j), f"interval {texts[j]!r} overlaps {texts[i]!r}")
            ok = False
        return parsed if ok else None

    def check_reachable(
        self,
        nodes: dict[str, Node],
        lanes: list[Lane],
        lifts: dict[str, Lift],
        stations: dict[str, Station],
        station_paths: dict[str, str],
    ) -> None:
        """Every station must reach every other one, whatever the access restrictions."""
        if len(stations) < 2:
            return
        graph = nx.DiGraph()
        graph.add_nodes_from(nodes)
        for lane in lanes:
            graph.add_edge(lane.start, lane.end)
            if lane.bidirectional:
                graph.add_edge(lane.end, lane.start)
        for lift in lifts.values():
            for a in lift.lobbies.values():
                for b in lift.lobbies.values():
                    if a != b:
                        graph.add_edge(a, b)
        component: dict[str, int] = {}
        for i, members in enumerate(nx.strongly_connected_components(graph)):
            for member in members:
                component[member] = i
        # The main group is the component holding the most stations (ties: the first listed), so
        # the report names the few stations cut off rather than the many that are fine.
        count: dict[int, int] = {}
        for station in stations.values():
            count[component[station.node]] = count.get(component[station.node], 0) + 1
        main = max(count, key=lambda c: count[c])  # max keeps the first of equal counts
        reference = next(s for s in stations.values() if component[s.node] == main)
        for station in stations.values():
            if component[station.node] == main:
                continue
            there = nx.has_path(graph, reference.node, station.node)
            back = nx.has_path(graph, station.node, reference.node)
            if not there and not back:
                why = "no route to or from the other stations"
            elif not there:
                why = "no route to it from the other stations"
            else:
                why = "no route from it to the other stations"
            self.error(
                station_paths[station.name],
                f"station {station.name!r} is unreachable: {why} (e.g. {reference.name!r})",
            )


def _unknown_key(key: object, keys: Mapping[str, bool]) -> str:
    close = difflib.get_close_matches(str(key), list(keys), n=1)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key (expected one of: {', '.join(keys)})"
