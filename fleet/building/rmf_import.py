"""Convert an Open-RMF traffic-editor building map (`*.building.yaml`) to our native map format.

`rmf_to_map(rmf, overlay)` is pure: parsed YAML in, an `RmfImport` out (our map as a plain dict,
ready for `fleet.building.loader.parse_building`, plus notes on what was left out and comments
for the rendered file). `import_rmf_file` reads the files; `render_yaml` writes the map as
readable YAML. What maps to what, and the overlay format, are described in `maps/README.md`.

In short:

- Levels keep their names and elevations. Pixels become metres with the level's scale (the mean
  of `distance / pixel length` over its measurements) and the y axis flipped, as the RMF tools do;
  a level other than the reference level that shares at least two fiducials with it is aligned
  to it by those fiducials (rotation, scale and offset), again as the RMF tools do.
- Every lane of the imported nav graphs (all of them by default) becomes a lane. Our map has one
  lane network, restricted per hygiene flow by `access`: a corridor drawn once per graph becomes
  one lane; a graph can be given an access (`graph_access` in the overlay). Two-way lanes stay
  two-way, one-way lanes drive from their first vertex to their second.
- A door whose segment strictly crosses a lane becomes that lane's door; doors on no lane are
  left out (our maps have no use for them). RMF door types set the opening and closing times.
- A lift reached by lanes on at least two of the levels it serves becomes a lift: the lane
  vertices inside its shaft (the cabin) are dropped, and the vertex a lane joins to the cabin on
  each level is the lift's lobby there. Lifts no lane reaches are left out.
- Vertices flagged `is_charger`, `pickup_dispenser`, `dropoff_ingestor` or `is_parking_spot`
  become stations; the overlay adds others, changes their kind or removes them.
- Vertices flagged `is_holding_point` become holding points, except lift lobbies (a lobby is
  exclusive, a holding point must not be).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fleet.building.loader import (
    ROOT,
    MapError,
    MapIssue,
    describe_value,
    join_path,
    parse_building,
)
from fleet.building.model import StationKind
from fleet.domain.cargo import Access

# Door timings by RMF door type: (open time, close time) in seconds. Sliding doors are quicker
# than swing doors, double doors a little slower than single ones.
DOOR_TIMES: dict[str, tuple[float, float]] = {
    "sliding": (3.0, 3.0),
    "double_sliding": (4.0, 4.0),
    "hinged": (5.0, 5.0),
    "double_hinged": (6.0, 6.0),
}
DEFAULT_DOOR_TIMES = (5.0, 5.0)
# Lift settings RMF does not give.
DEFAULT_LIFT = {"capacity_robots": 1, "door_time": 4.0, "speed": 1.0}
LIFT_DOOR_TYPES = {
    0: "undefined",
    1: "single sliding",
    2: "double sliding",
    3: "single telescope",
    4: "double telescope",
}
SHAFT_GAP_M = 0.05  # the RMF tools' gap between cabin and shaft on each side
COORD_DIGITS = 3  # millimetres

# The station an RMF vertex flag makes, in order of precedence.
FLAG_STATIONS: tuple[tuple[str, StationKind], ...] = (
    ("is_charger", StationKind.CHARGER),
    ("pickup_dispenser", StationKind.WAREHOUSE_PORT),
    ("dropoff_ingestor", StationKind.WARD),
    ("is_parking_spot", StationKind.PARKING),
)

_OVERLAY_KEYS = ("name", "timezone", "graphs", "graph_access", "doors", "lifts", "stations")
_OVERLAY_DOOR_KEYS = ("kind", "open_time", "close_time")
_OVERLAY_LIFT_KEYS = ("capacity_robots", "door_time", "speed", "access", "expected_wait")
_OVERLAY_STATION_KEYS = ("vertex", "level", "kind", "service_time", "opening_hours", "remove")


@dataclass
class RmfImport:
    """The result of a conversion: our map, and what a reader of it should know."""

    map: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what was left out or chosen, for the user
    comments: dict[str, str] = field(default_factory=dict)  # "doors.NAME" etc. -> end-of-line note
    header: list[str] = field(default_factory=list)  # lines for the top of the rendered file


# --- small helpers ------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _param(params: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """The value of a typed RMF parameter `[type_code, value]`; `default` when absent."""
    raw = params.get(key)
    if isinstance(raw, list) and len(raw) == 2:
        return raw[1]
    return default


def _segments_cross(
    p1: tuple[float, float],
    p2: tuple[float, float],
    q1: tuple[float, float],
    q2: tuple[float, float],
) -> bool:
    """Strict 2-D intersection of segments p1-p2 and q1-q2 (touching or collinear is not)."""

    def orient(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    d1, d2 = orient(q1, q2, p1), orient(q1, q2, p2)
    d3, d4 = orient(p1, p2, q1), orient(p1, p2, q2)
    return d1 * d2 < 0 and d3 * d4 < 0


@dataclass(frozen=True)
class _Transform:
    """Level pixels (y already flipped) to building metres: rotate, scale, then translate."""

    scale: float
    rotation: float = 0.0
    tx: float = 0.0
    ty: float = 0.0

    def apply(self, x: float, y: float) -> tuple[float, float]:
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        return (
            (c * x - s * y) * self.scale + self.tx,
            (s * x + c * y) * self.scale + self.ty,
        )


@dataclass
class _Vertex:
    index: int
    x_px: float
    y_px: float  # flipped for reference_image
    name: str
    params: Mapping[str, Any]
    x: float = 0.0  # metres
    y: float = 0.0
    node: str = ""  # our node name, once it is known to be used


@dataclass
class _Level:
    name: str
    path: str
    elevation: float
    data: Mapping[str, Any]
    vertices: list[_Vertex]
    transform: _Transform | None = None


@dataclass
class _LaneDir:
    """One direction of travel between two vertices, merged over the graphs that have it."""

    accesses: set[Access] = field(default_factory=set)
    speed_limits: list[float] = field(default_factory=list)
    graphs: set[int] = field(default_factory=set)


class _Converter:
    """One conversion; collects issues (as the loader does) and raises them all at the end."""

    def __init__(self, source: str, overlay_source: str) -> None:
        self.source = source
        self.overlay_source = overlay_source
        self.issues: list[MapIssue] = []
        self.notes: list[str] = []
        self.comments: dict[str, str] = {}
        self.y_flip = -1.0  # reference_image: the image's y axis points down

    def error(self, path: str, message: str) -> None:
        self.issues.append(MapIssue(self.source, path, message))

    def overlay_error(self, path: str, message: str) -> None:
        self.issues.append(MapIssue(self.overlay_source, path, message))

    def check(self) -> None:
        if self.issues:
            raise MapError(self.issues)

    # -- reading the RMF file ------------------------------------------------------------------

    def mapping(self, value: object, path: str, *, overlay: bool = False) -> Mapping[Any, Any]:
        if isinstance(value, Mapping):
            return value
        report = self.overlay_error if overlay else self.error
        report(path, f"expected a mapping, got {describe_value(value)}")
        return {}

    def read_levels(self, rmf: Mapping[Any, Any]) -> list[_Level]:
        raw = rmf.get("levels")
        if raw is None:
            self.error("levels", "required field is missing: an RMF building has levels")
            return []
        levels_data = self.mapping(raw, "levels")
        if isinstance(raw, Mapping) and not raw:
            self.error("levels", "the building has no levels")
        system = rmf.get("coordinate_system", "reference_image")
        self.y_flip = y_flip = -1.0 if system == "reference_image" else 1.0
        levels: list[_Level] = []
        for name, data in levels_data.items():
            path = join_path("levels", name)
            if not isinstance(name, str) or not name.strip():
                self.error(path, f"expected a level name, got {describe_value(name)}")
                continue
            level_data = self.mapping(data, path)
            elevation = level_data.get("elevation", 0.0)
            if not _is_number(elevation):
                self.error(
                    join_path(path, "elevation"),
                    f"expected metres, got {describe_value(elevation)}",
                )
                elevation = 0.0
            vertices = self.read_vertices(level_data, path, y_flip)
            levels.append(_Level(name, path, float(elevation), level_data, vertices))
        return levels

    def read_vertices(self, level: Mapping[Any, Any], path: str, y_flip: float) -> list[_Vertex]:
        out: list[_Vertex] = []
        raw = level.get("vertices") or []
        where = join_path(path, "vertices")
        if not isinstance(raw, list):
            self.error(where, f"expected a list of vertices, got {describe_value(raw)}")
            return out
        for i, item in enumerate(raw):
            at = f"{where}[{i}]"
            if (
                not isinstance(item, list)
                or len(item) < 4
                or not _is_number(item[0])
                or not _is_number(item[1])
            ):
                self.error(at, f"expected [x, y, z, name, {{params}}], got {describe_value(item)}")
                out.append(_Vertex(i, 0.0, 0.0, "", {}))
                continue
            name = item[3] if isinstance(item[3], str) else str(item[3] or "")
            params = item[4] if len(item) > 4 and isinstance(item[4], Mapping) else {}
            out.append(_Vertex(i, float(item[0]), float(item[1]) * y_flip, name.strip(), params))
        return out

    def edge(
        self, item: object, at: str, level: _Level, what: str
    ) -> tuple[_Vertex, _Vertex, Mapping[str, Any]] | None:
        """An RMF edge `[v1, v2, {params}]` (lane, door, measurement) with its vertices."""
        if not isinstance(item, list) or len(item) < 2:
            self.error(at, f"expected a {what} [v1, v2, {{params}}], got {describe_value(item)}")
            return None
        ends: list[_Vertex] = []
        for k in (0, 1):
            idx = item[k]
            if not isinstance(idx, int) or isinstance(idx, bool):
                self.error(f"{at}[{k}]", f"expected a vertex index, got {describe_value(idx)}")
                return None
            if not 0 <= idx < len(level.vertices):
                self.error(
                    f"{at}[{k}]",
                    f"vertex index {idx} is out of range: level {level.name!r} has "
                    f"{len(level.vertices)} vertices",
                )
                return None
            ends.append(level.vertices[idx])
        params = item[2] if len(item) > 2 and isinstance(item[2], Mapping) else {}
        return ends[0], ends[1], params

    def edges(self, level: _Level, key: str, what: str) -> list[tuple[int, str, Any]]:
        raw = level.data.get(key) or []
        where = join_path(level.path, key)
        if not isinstance(raw, list):
            self.error(where, f"expected a list, got {describe_value(raw)}")
            return []
        return [(i, f"{where}[{i}]", item) for i, item in enumerate(raw)]

    # -- scale and alignment -------------------------------------------------------------------

    def measured_scale(self, level: _Level) -> float | None:
        """Mean metres per pixel over the level's measurements; None when it has none usable."""
        ratios: list[float] = []
        for _, at, item in self.edges(level, "measurements", "measurement"):
            edge = self.edge(item, at, level, "measurement")
            if edge is None:
                continue
            a, b, params = edge
            metres = _param(params, "distance")
            pixels = math.hypot(a.x_px - b.x_px, a.y_px - b.y_px)
            if not _is_number(metres) or metres <= 0:
                self.error(
                    f"{at}.distance",
                    f"expected a distance in metres > 0, got {describe_value(metres)}",
                )
            elif pixels <= 0:
                self.error(at, f"measurement joins vertices {a.index} and {b.index} at one point")
            else:
                ratios.append(float(metres) / pixels)
        return sum(ratios) / len(ratios) if ratios else None

    def fiducials(self, level: _Level, y_flip: float) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        raw = level.data.get("fiducials") or []
        if not isinstance(raw, list):
            return out
        for item in raw:
            if (
                isinstance(item, list)
                and len(item) >= 3
                and _is_number(item[0])
                and _is_number(item[1])
            ):
                out[str(item[2])] = (float(item[0]), float(item[1]) * y_flip)
        return out

    def set_transforms(self, rmf: Mapping[Any, Any], levels: list[_Level]) -> None:
        """Each level's pixels-to-metres transform, as the RMF building map tools compute it."""
        system = rmf.get("coordinate_system", "reference_image")
        if system == "cartesian_meters":
            for level in levels:
                level.transform = _Transform(1.0)
            return
        if system != "reference_image":
            self.error(
                "coordinate_system",
                f"coordinate system {system!r} is not supported (expected reference_image or "
                "cartesian_meters)",
            )
            return
        if not levels:
            return
        by_name = {level.name: level for level in levels}
        ref_name = rmf.get("reference_level_name", levels[0].name)
        if ref_name not in by_name:
            self.error("reference_level_name", f"unknown level {ref_name!r}")
            return
        ref = by_name[ref_name]
        ref_scale = self.measured_scale(ref)
        if ref_scale is None:
            self.error(
                join_path(ref.path, "measurements"),
                f"level {ref.name!r} (the reference level) has no measurements, so its scale is "
                "unknown: add a measurement (two vertices and the metres between them)",
            )
            return
        ref.transform = _Transform(ref_scale)
        ref_fid = self.fiducials(ref, -1.0)
        for level in levels:
            if level is ref:
                continue
            own_scale = self.measured_scale(level)
            fid = self.fiducials(level, -1.0)
            pairs = [(ref_fid[n], fid[n]) for n in ref_fid if n in fid]
            aligned = _align(pairs, ref_scale) if len(pairs) >= 2 else None
            if aligned is not None:
                level.transform = aligned
            elif own_scale is not None:
                level.transform = _Transform(own_scale)
                if level.data.get("fiducials"):
                    self.notes.append(
                        f"level {level.name!r} shares fewer than 2 fiducials with {ref.name!r}: "
                        "scaled by its own measurements, not aligned to it"
                    )
            else:
                self.error(
                    join_path(level.path, "measurements"),
                    f"level {level.name!r} has no measurements and shares fewer than 2 fiducials "
                    f"with the reference level {ref.name!r}, so its scale is unknown: add a "
                    "measurement or matching fiducials",
                )

    # -- the conversion ------------------------------------------------------------------------

    def convert(self, rmf: object, overlay: object) -> RmfImport:
        if not isinstance(rmf, Mapping):
            self.error(ROOT, f"expected an RMF building map (a mapping), got {describe_value(rmf)}")
            self.check()
        assert isinstance(rmf, Mapping)
        opts = _Overlay.read(overlay, self)
        levels = self.read_levels(rmf)
        self.set_transforms(rmf, levels)
        if any(level.transform is None for level in levels):
            self.check()
        for level in levels:
            assert level.transform is not None
            for v in level.vertices:
                v.x, v.y = level.transform.apply(v.x_px, v.y_px)
        by_level = {level.name: level for level in levels}

        lifts = self.read_lifts(rmf, by_level)
        lanes = self.read_lanes(levels, opts)
        cabins = self.cabin_vertices(levels, lifts, lanes)
        lobbies = self.lobbies(levels, lifts, lanes, cabins)
        lanes = {
            key: dirs
            for key, dirs in lanes.items()
            if (key[0], key[1]) not in cabins and (key[0], key[2]) not in cabins
        }
        self.name_nodes(levels, lanes)
        doors, lane_doors = self.doors(levels, lanes, opts)
        out_lanes = self.emit_lanes(levels, lanes, lane_doors)
        out_lifts = self.emit_lifts(rmf, lifts, lobbies, by_level, opts)
        stations = self.stations(levels, opts)
        holding = self.holding_points(levels, out_lifts)
        self.check()

        out_levels = []
        for level in levels:
            nodes: dict[str, list[float]] = {}
            for v in level.vertices:
                if v.node:
                    nodes[v.node] = [round(v.x, COORD_DIGITS), round(v.y, COORD_DIGITS)]
            out_levels.append({"name": level.name, "elevation": level.elevation, "nodes": nodes})
        name = opts.name or str(rmf.get("name") or "RMF building")
        result: dict[str, Any] = {"name": name}
        if opts.timezone:
            result["timezone"] = opts.timezone
        result["levels"] = out_levels
        if doors:
            result["doors"] = doors
        result["lanes"] = out_lanes
        if out_lifts:
            result["lifts"] = out_lifts
        if holding:
            result["holding_points"] = holding
        if stations:
            result["stations"] = stations
        header = [f"Imported from the Open-RMF building map {Path(self.source).name!r}"]
        if self.overlay_source:
            header.append(f"with the overlay {Path(self.overlay_source).name!r}")
        header.append("by `fleet map import-rmf`; regenerate it rather than editing it.")
        for level in levels:
            assert level.transform is not None
            t = level.transform
            header.append(
                f"Level {level.name}: {t.scale:.6f} m/px"
                + (
                    f", rotated {t.rotation:.4f} rad, offset ({t.tx:.3f}, {t.ty:.3f}) m"
                    if (t.rotation, t.tx, t.ty) != (0.0, 0.0, 0.0)
                    else ""
                )
            )
        graphs = sorted(opts.graphs) if opts.graphs is not None else "all"
        header.append(f"RMF nav graphs imported: {graphs}")
        return RmfImport(result, self.notes, self.comments, header)

    # -- lanes ---------------------------------------------------------------------------------

    def read_lanes(
        self, levels: list[_Level], opts: _Overlay
    ) -> dict[tuple[str, int, int], dict[tuple[int, int], _LaneDir]]:
        """(level, low vertex, high vertex) -> direction (from, to) -> merged lane data."""
        lanes: dict[tuple[str, int, int], dict[tuple[int, int], _LaneDir]] = {}
        seen_graphs: set[int] = set()
        for level in levels:
            for _, at, item in self.edges(level, "lanes", "lane"):
                edge = self.edge(item, at, level, "lane")
                if edge is None:
                    continue
                a, b, params = edge
                graph = _param(params, "graph_idx", 0)
                if not isinstance(graph, int) or isinstance(graph, bool):
                    self.error(f"{at}.graph_idx", f"expected a graph number, got {graph!r}")
                    continue
                seen_graphs.add(graph)
                if opts.graphs is not None and graph not in opts.graphs:
                    continue
                if a.index == b.index:
                    self.notes.append(f"{at}: lane from vertex {a.index} to itself left out")
                    continue
                if math.hypot(a.x - b.x, a.y - b.y) < 10**-COORD_DIGITS:
                    self.error(at, f"lane joins vertices {a.index} and {b.index} at one point")
                    continue
                key = (level.name, min(a.index, b.index), max(a.index, b.index))
                dirs = lanes.setdefault(key, {})
                both = _param(params, "bidirectional", False) is True
                speed = _param(params, "speed_limit", 0.0)
                access = opts.graph_access.get(graph, Access.ANY)
                for d in (
                    ((a.index, b.index), (b.index, a.index)) if both else ((a.index, b.index),)
                ):
                    merged = dirs.setdefault(d, _LaneDir())
                    merged.accesses.add(access)
                    merged.graphs.add(graph)
                    if _is_number(speed) and speed > 0:
                        merged.speed_limits.append(float(speed))
        if opts.graphs is not None:
            for graph in sorted(opts.graphs - seen_graphs):
                self.overlay_error("graphs", f"the RMF map has no lanes in graph {graph}")
        for graph in sorted(set(opts.graph_access) - seen_graphs):
            self.overlay_error(
                join_path("graph_access", graph), f"the RMF map has no lanes in graph {graph}"
            )
        return lanes

    def name_nodes(
        self, levels: list[_Level], lanes: Mapping[tuple[str, int, int], object]
    ) -> None:
        """Give every vertex a lane uses a node name, unique across the building.

        A vertex keeps its RMF name when no other used vertex has it; a name used twice gets the
        vertex index (`NAME_v422`); an unnamed vertex is `LEVEL_vINDEX`."""
        used: dict[str, set[int]] = {level.name: set() for level in levels}
        for level_name, i, j in lanes:
            used[level_name].update((i, j))
        count: dict[str, int] = {}
        for level in levels:
            for i in used[level.name]:
                name = level.vertices[i].name
                if name:
                    count[name] = count.get(name, 0) + 1
        taken: set[str] = set()
        for level in levels:
            for i in sorted(used[level.name]):
                v = level.vertices[i]
                if v.name and count[v.name] == 1:
                    v.node = v.name
                else:
                    base = f"{v.name}_v{i}" if v.name else f"{level.name}_v{i}"
                    v.node = base
                    k = 2
                    while v.node in taken or v.node in count:
                        v.node, k = f"{base}_{k}", k + 1
                    if v.name:
                        self.notes.append(
                            f"vertex name {v.name!r} is used more than once: "
                            f"level {level.name} vertex {i} is node {v.node!r}"
                        )
                taken.add(v.node)

    def emit_lanes(
        self,
        levels: list[_Level],
        lanes: Mapping[tuple[str, int, int], Mapping[tuple[int, int], _LaneDir]],
        lane_doors: Mapping[tuple[str, int, int], str],
    ) -> list[dict[str, Any]]:
        by_name = {level.name: level for level in levels}
        out: list[dict[str, Any]] = []
        for key, dirs in lanes.items():
            level = by_name[key[0]]
            door = lane_doors.get(key)
            emitted: list[tuple[tuple[int, int], bool, _LaneDir]] = []
            pair = sorted(dirs)
            if len(pair) == 2 and _same(dirs[pair[0]], dirs[pair[1]]):
                emitted.append((pair[0], True, dirs[pair[0]]))
            else:
                emitted.extend((d, False, dirs[d]) for d in pair)
            for (i, j), both, data in emitted:
                lane: dict[str, Any] = {
                    "start": level.vertices[i].node,
                    "end": level.vertices[j].node,
                }
                if not both:
                    lane["bidirectional"] = False
                if data.speed_limits:
                    lane["speed_limit"] = min(data.speed_limits)
                access = _merge_access(data.accesses)
                if access is not Access.ANY:
                    lane["access"] = access.value.lower()
                if door:
                    lane["door"] = door
                out.append(lane)
        return out

    # -- doors ---------------------------------------------------------------------------------

    def doors(
        self,
        levels: list[_Level],
        lanes: Mapping[tuple[str, int, int], object],
        opts: _Overlay,
    ) -> tuple[list[dict[str, Any]], dict[tuple[str, int, int], str]]:
        """Doors crossed by a lane, and each such lane's door."""
        out: list[dict[str, Any]] = []
        lane_doors: dict[tuple[str, int, int], str] = {}
        names: set[str] = set()
        found: set[str] = set()
        for level in levels:
            level_lanes = [k for k in lanes if k[0] == level.name]
            for idx, at, item in self.edges(level, "doors", "door"):
                edge = self.edge(item, at, level, "door")
                if edge is None:
                    continue
                a, b, params = edge
                rmf_name = str(_param(params, "name", "") or "").strip()
                crossed = [
                    k
                    for k in level_lanes
                    if _segments_cross(
                        (a.x, a.y),
                        (b.x, b.y),
                        (level.vertices[k[1]].x, level.vertices[k[1]].y),
                        (level.vertices[k[2]].x, level.vertices[k[2]].y),
                    )
                ]
                if not crossed:
                    continue
                name = rmf_name or f"{level.name}_door{idx}"
                if name in names:
                    name = f"{name}_{level.name}_door{idx}"
                names.add(name)
                found.add(rmf_name)
                door_type = str(_param(params, "type", "") or "")
                settings = opts.doors.get(rmf_name, {})
                open_s, close_s = DOOR_TIMES.get(door_type, DEFAULT_DOOR_TIMES)
                out.append(
                    {
                        "name": name,
                        "kind": settings.get("kind", "automatic"),
                        "open_time": settings.get("open_time", open_s),
                        "close_time": settings.get("close_time", close_s),
                    }
                )
                width = math.hypot(a.x - b.x, a.y - b.y)
                plugin = _param(params, "plugin", "")
                self.comments[f"doors.{name}"] = (
                    f"RMF {level.name} door {rmf_name or idx!r}: {door_type or 'no type'}, "
                    f"{width:.2f} m" + (f", plugin {plugin}" if plugin else "")
                )
                for key in crossed:
                    if key in lane_doors:
                        self.notes.append(
                            f"lane {level.vertices[key[1]].node} - {level.vertices[key[2]].node} "
                            f"crosses doors {lane_doors[key]!r} and {name!r}; our lanes have one "
                            f"door: kept {lane_doors[key]!r}"
                        )
                    else:
                        lane_doors[key] = name
        # A door named in the overlay but crossed by no lane is a mistake worth reporting.
        for door_name in opts.doors:
            if door_name not in found:
                self.overlay_error(
                    join_path("doors", door_name),
                    f"no door {door_name!r} on an imported lane of the RMF map",
                )
        # Doors whose only lane lost its door to another door would fail our loader.
        used = set(lane_doors.values())
        return [d for d in out if d["name"] in used], lane_doors

    # -- lifts ---------------------------------------------------------------------------------

    def read_lifts(self, rmf: Mapping[Any, Any], levels: Mapping[str, _Level]) -> dict[str, _Lift]:
        raw = rmf.get("lifts") or {}
        lifts: dict[str, _Lift] = {}
        if not isinstance(raw, Mapping):
            self.error("lifts", f"expected a mapping of lifts, got {describe_value(raw)}")
            return lifts
        for name, data in raw.items():
            path = join_path("lifts", name)
            lift = _Lift.read(str(name), path, self.mapping(data, path), levels, self)
            if lift is not None:
                lifts[str(name)] = lift
        return lifts

    def cabin_vertices(
        self,
        levels: list[_Level],
        lifts: Mapping[str, _Lift],
        lanes: Mapping[tuple[str, int, int], object],
    ) -> dict[tuple[str, int], str]:
        """(level, vertex) -> lift, for lane vertices inside a lift's shaft on a level it serves."""
        cabins: dict[tuple[str, int], str] = {}
        used = {(k[0], i) for k in lanes for i in (k[1], k[2])}
        for level in levels:
            for lift in lifts.values():
                if level.name not in lift.levels:
                    continue
                for v in level.vertices:
                    if (level.name, v.index) in used and lift.contains(v.x, v.y):
                        cabins[(level.name, v.index)] = lift.name
        return cabins

    def lobbies(
        self,
        levels: list[_Level],
        lifts: Mapping[str, _Lift],
        lanes: Mapping[tuple[str, int, int], object],
        cabins: Mapping[tuple[str, int], str],
    ) -> dict[str, dict[str, _Vertex]]:
        """lift -> level -> lobby vertex: where a lane joins the cabin, nearest the car door."""
        by_name = {level.name: level for level in levels}
        candidates: dict[tuple[str, str], set[int]] = {}
        for level_name, i, j in lanes:
            for inside, outside in ((i, j), (j, i)):
                cabin_of = cabins.get((level_name, inside))
                if cabin_of is not None and (level_name, outside) not in cabins:
                    candidates.setdefault((cabin_of, level_name), set()).add(outside)
        out: dict[str, dict[str, _Vertex]] = {}
        for (lift_name, level_name), found in sorted(candidates.items()):
            lift = lifts[lift_name]
            door_x, door_y = lift.door_point(level_name)
            level = by_name[level_name]
            best = min(
                sorted(found),
                key=lambda i: math.hypot(
                    level.vertices[i].x - door_x, level.vertices[i].y - door_y
                ),
            )
            out.setdefault(lift_name, {})[level_name] = level.vertices[best]
        return out

    def emit_lifts(
        self,
        rmf: Mapping[Any, Any],
        lifts: Mapping[str, _Lift],
        lobbies: Mapping[str, Mapping[str, _Vertex]],
        levels: Mapping[str, _Level],
        opts: _Overlay,
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, lift in lifts.items():
            found = lobbies.get(name, {})
            served = [level for level in levels if level in found]  # in the map's level order
            if len(served) < 2:
                why = (
                    "no lane reaches its cabin"
                    if not served
                    else f"lanes reach its cabin only on {served[0]}"
                )
                self.notes.append(f"lift {name!r} left out: {why}")
                if name in opts.lifts:
                    self.overlay_error(
                        join_path("lifts", name), f"lift {name!r} is not imported: {why}"
                    )
                continue
            entry: dict[str, Any] = {
                "name": name,
                "lobbies": {level: found[level].node for level in served},
            }
            entry.update(DEFAULT_LIFT)
            entry.update(opts.lifts.get(name, {}))
            if lift.initial_level in served:
                entry["initial_level"] = lift.initial_level
            out.append(entry)
            doors = ", ".join(
                f"{d} ({LIFT_DOOR_TYPES.get(t, f'type {t}')}, {w:g} m) on "
                + "/".join(lv for lv in served if d in lift.level_doors.get(lv, ()))
                for d, (t, w) in lift.doors.items()
            )
            self.comments[f"lifts.{name}"] = (
                f"RMF cabin at ({lift.x:.2f}, {lift.y:.2f}) m, yaw {lift.yaw:g} rad, "
                f"{lift.width:g} x {lift.depth:g} m; doors: {doors or 'none'}"
            )
        for name in opts.lifts:
            if name not in lifts:
                self.overlay_error(join_path("lifts", name), f"no lift {name!r} in the RMF map")
        return out

    # -- holding points ------------------------------------------------------------------------

    def holding_points(self, levels: list[_Level], lifts: list[dict[str, Any]]) -> list[str]:
        """The nodes of vertices flagged `is_holding_point`, in level and vertex order."""
        lobbies = {node: lift["name"] for lift in lifts for node in lift["lobbies"].values()}
        out: list[str] = []
        for level in levels:
            for v in level.vertices:
                if not _param(v.params, "is_holding_point"):
                    continue
                label = v.name or f"{level.name} vertex {v.index}"
                if not v.node:
                    self.notes.append(f"{label} is a holding point on no imported lane: left out")
                elif v.node in lobbies:
                    # Our lobbies take one robot at a time; waiting there would block the car.
                    self.notes.append(
                        f"{label} is a holding point but the lobby of lift {lobbies[v.node]!r}, "
                        "which is exclusive: not a holding point"
                    )
                else:
                    out.append(v.node)
        return out

    # -- stations ------------------------------------------------------------------------------

    def stations(self, levels: list[_Level], opts: _Overlay) -> list[dict[str, Any]]:
        stations: dict[str, dict[str, Any]] = {}
        for level in levels:
            for v in level.vertices:
                kind = next((k for flag, k in FLAG_STATIONS if _param(v.params, flag)), None)
                if kind is None:
                    continue
                label = v.name or f"{level.name} vertex {v.index}"
                if not v.node:
                    self.notes.append(
                        f"{label} is marked {kind.value.lower()} but is on no imported lane: "
                        "no station"
                    )
                    continue
                stations[v.node] = {"name": v.node, "kind": kind.value.lower(), "node": v.node}
                flags = [
                    f"{flag}={_param(v.params, flag)}"
                    if not isinstance(_param(v.params, flag), bool)
                    else flag
                    for flag, _ in FLAG_STATIONS
                    if _param(v.params, flag)
                ]
                self.comments[f"stations.{v.node}"] = "RMF " + ", ".join(flags)
        for name, spec in opts.stations.items():
            path = join_path("stations", name)
            if spec.get("remove") is True:
                if name not in stations:
                    self.overlay_error(
                        join_path(path, "remove"), f"no imported station {name!r} to remove"
                    )
                else:
                    del stations[name]
                continue
            entry = dict(stations.get(name, {"name": name}))
            if "vertex" in spec:
                vertex = self.find_vertex(levels, spec, path)
                if vertex is None:
                    continue
                entry["node"] = vertex.node
            elif "node" not in entry:
                self.overlay_error(
                    path,
                    f"station {name!r} is not an imported station: give the vertex it stands "
                    "on (vertex, and level when the name is not unique)",
                )
                continue
            if "kind" in spec:
                entry["kind"] = spec["kind"]
            elif "kind" not in entry:
                self.overlay_error(join_path(path, "kind"), "required field is missing")
                continue
            for key in ("service_time", "opening_hours"):
                if key in spec:
                    entry[key] = spec[key]
            if name not in stations:
                self.comments[f"stations.{name}"] = "from the overlay"
            order = ("name", "kind", "node", "service_time", "opening_hours")
            stations[name] = {key: entry[key] for key in order if key in entry}
        return list(stations.values())

    def find_vertex(
        self, levels: list[_Level], spec: Mapping[str, Any], path: str
    ) -> _Vertex | None:
        """The vertex an overlay station names: by name (and level) or by index and level."""
        ref = spec["vertex"]
        level_name = spec.get("level")
        where = join_path(path, "vertex")
        if level_name is not None and level_name not in {level.name for level in levels}:
            self.overlay_error(
                join_path(path, "level"),
                f"unknown level {level_name!r} (the RMF map has "
                + ", ".join(level.name for level in levels)
                + ")",
            )
            return None
        scope = [level for level in levels if level_name is None or level.name == level_name]
        if isinstance(ref, int) and not isinstance(ref, bool):
            if level_name is None:
                self.overlay_error(
                    join_path(path, "level"), "a vertex given by index needs a level"
                )
                return None
            level = scope[0]
            if not 0 <= ref < len(level.vertices):
                self.overlay_error(
                    where,
                    f"vertex index {ref} is out of range: level {level.name!r} has "
                    f"{len(level.vertices)} vertices",
                )
                return None
            matches = [level.vertices[ref]]
        elif isinstance(ref, str) and ref.strip():
            matches = [v for level in scope for v in level.vertices if v.name == ref]
            if not matches:
                names = sorted({v.name for level in scope for v in level.vertices if v.name})
                close = difflib.get_close_matches(ref, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                on = f" on level {level_name!r}" if level_name is not None else ""
                self.overlay_error(where, f"unknown vertex {ref!r}{on}{hint}")
                return None
            if len(matches) > 1:
                used = [v for v in matches if v.node]
                if len(used) == 1:
                    matches = used  # only one of the namesakes is on a lane: that one
                else:
                    where_found = ", ".join(
                        f"{level.name} vertex {v.index}"
                        for level in scope
                        for v in level.vertices
                        if v in matches
                    )
                    self.overlay_error(
                        where,
                        f"vertex name {ref!r} is not unique ({where_found}): give the level, "
                        "or the vertex index and level",
                    )
                    return None
        else:
            self.overlay_error(where, f"expected a vertex name or index, got {describe_value(ref)}")
            return None
        vertex = matches[0]
        if not vertex.node:
            self.overlay_error(
                where,
                f"vertex {ref!r} is on no imported lane, so robots cannot reach it",
            )
            return None
        return vertex


def _same(a: _LaneDir, b: _LaneDir) -> bool:
    return _merge_access(a.accesses) is _merge_access(b.accesses) and min(
        a.speed_limits, default=0.0
    ) == min(b.speed_limits, default=0.0)


def _merge_access(accesses: set[Access]) -> Access:
    """A lane several graphs share admits what any of them admits."""
    if Access.ANY in accesses or {Access.CLEAN, Access.DIRTY} <= accesses:
        return Access.ANY
    return next(iter(accesses)) if accesses else Access.ANY


def _align(
    pairs: list[tuple[tuple[float, float], tuple[float, float]]], ref_scale: float
) -> _Transform | None:
    """The RMF tools' fiducial alignment of a level to the reference level.

    `pairs` are (reference level px, this level px) of fiducials with the same name, y flipped.
    Rotation is the circular mean of the bearing differences, relative scale the mean distance
    ratio, and the translation the mean residual."""
    sin_sum = cos_sum = 0.0
    ratios: list[float] = []
    for k, (r0, t0) in enumerate(pairs):
        for r1, t1 in pairs[k + 1 :]:
            ref_bearing = math.atan2(r1[1] - r0[1], r1[0] - r0[0])
            bearing = math.atan2(t1[1] - t0[1], t1[0] - t0[0])
            sin_sum += math.sin(bearing - ref_bearing)
            cos_sum += math.cos(bearing - ref_bearing)
            ref_d = math.hypot(r1[0] - r0[0], r1[1] - r0[1])
            d = math.hypot(t1[0] - t0[0], t1[1] - t0[1])
            if ref_d <= 0 or d <= 0:
                return None
            ratios.append(d / ref_d)
    if not ratios:
        return None
    rotation = -math.atan2(sin_sum, cos_sum)
    rel = sum(ratios) / len(ratios)
    c, s = math.cos(rotation), math.sin(rotation)
    tx = ty = 0.0
    for r, t in pairs:
        x, y = t[0] / rel, t[1] / rel
        tx += c * x - s * y - r[0]
        ty += s * x + c * y - r[1]
    n = len(pairs)
    return _Transform(ref_scale / rel, rotation, -tx * ref_scale / n, -ty * ref_scale / n)


@dataclass
class _Lift:
    """An RMF lift: cabin centre (metres), yaw, size, served levels and doors."""

    name: str
    x: float
    y: float
    yaw: float
    width: float
    depth: float
    levels: list[str]
    level_doors: dict[str, list[str]]
    doors: dict[str, tuple[int, float]]  # door -> (RMF door type, width m)
    door_xy: dict[str, tuple[float, float]]  # door -> position in the cabin frame, m
    initial_level: str

    @staticmethod
    def read(
        name: str,
        path: str,
        data: Mapping[Any, Any],
        levels: Mapping[str, _Level],
        conv: _Converter,
    ) -> _Lift | None:
        ok = True
        numbers: dict[str, float] = {}
        for key in ("x", "y", "width", "depth"):
            value = data.get(key)
            if isinstance(value, int | float) and _is_number(value):
                numbers[key] = float(value)
            else:
                conv.error(join_path(path, key), f"expected a number, got {describe_value(value)}")
                ok = False
        yaw = data.get("yaw", 0.0)
        if not _is_number(yaw):
            conv.error(join_path(path, "yaw"), f"expected radians, got {describe_value(yaw)}")
            ok = False
        ref_name = data.get("reference_floor_name", next(iter(levels), ""))
        if ref_name not in levels:
            conv.error(join_path(path, "reference_floor_name"), f"unknown level {ref_name!r}")
            ok = False
        level_doors: dict[str, list[str]] = {}
        raw_doors = data.get("level_doors") or {}
        for level, names in raw_doors.items() if isinstance(raw_doors, Mapping) else []:
            if level not in levels:
                conv.error(
                    join_path(join_path(path, "level_doors"), level), f"unknown level {level!r}"
                )
                ok = False
            elif isinstance(names, list) and names:
                level_doors[str(level)] = [str(n) for n in names]
        doors: dict[str, tuple[int, float]] = {}
        door_xy: dict[str, tuple[float, float]] = {}
        raw_cabin_doors = data.get("doors") or {}
        for door, spec in raw_cabin_doors.items() if isinstance(raw_cabin_doors, Mapping) else []:
            if isinstance(spec, Mapping):
                dtype = spec.get("door_type", 0)
                width = spec.get("width", 0.0)
                doors[str(door)] = (
                    dtype if isinstance(dtype, int) else 0,
                    float(width) if _is_number(width) else 0.0,
                )
                dx, dy = spec.get("x", 0.0), spec.get("y", 0.0)
                door_xy[str(door)] = (
                    float(dx) if _is_number(dx) else 0.0,
                    float(dy) if _is_number(dy) else 0.0,
                )
        if not ok:
            return None
        # Levels served: those with a cabin door, between the lowest and highest floor.
        low = data.get("lowest_floor")
        high = data.get("highest_floor")
        low_e = levels[low].elevation if isinstance(low, str) and low in levels else -math.inf
        high_e = levels[high].elevation if isinstance(high, str) and high in levels else math.inf
        served = [
            lv for lv in levels if lv in level_doors and low_e <= levels[lv].elevation <= high_e
        ]
        transform = levels[ref_name].transform
        assert transform is not None
        x, y = transform.apply(numbers["x"], numbers["y"] * conv.y_flip)
        initial = data.get("initial_floor_name") or (served[0] if served else "")
        return _Lift(
            name,
            x,
            y,
            float(yaw),
            numbers["width"],
            numbers["depth"],
            served,
            level_doors,
            doors,
            door_xy,
            str(initial),
        )

    def local(self, x: float, y: float) -> tuple[float, float]:
        """World metres to the cabin frame (x along the width, y along the depth)."""
        dx, dy = x - self.x, y - self.y
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return c * dx + s * dy, -s * dx + c * dy

    def contains(self, x: float, y: float) -> bool:
        """Whether a point is inside the shaft (the cabin plus the RMF tools' gap)."""
        lx, ly = self.local(x, y)
        return abs(lx) <= self.width / 2 + SHAFT_GAP_M and abs(ly) <= self.depth / 2 + SHAFT_GAP_M

    def door_point(self, level: str) -> tuple[float, float]:
        """Where the car door open on `level` is (its first), in world metres; else the centre."""
        for door in self.level_doors.get(level, []):
            if door in self.door_xy:
                dx, dy = self.door_xy[door]
                c, s = math.cos(self.yaw), math.sin(self.yaw)
                return self.x + c * dx - s * dy, self.y + s * dx + c * dy
        return self.x, self.y


# --- the overlay --------------------------------------------------------------------------------


@dataclass
class _Overlay:
    """Settings the RMF file lacks (see maps/README.md, "Importing an Open-RMF map")."""

    name: str = ""
    timezone: str = ""
    graphs: set[int] | None = None
    graph_access: dict[int, Access] = field(default_factory=dict)
    doors: dict[str, dict[str, Any]] = field(default_factory=dict)
    lifts: dict[str, dict[str, Any]] = field(default_factory=dict)
    stations: dict[str, dict[str, Any]] = field(default_factory=dict)

    @staticmethod
    def read(data: object, conv: _Converter) -> _Overlay:
        opts = _Overlay()
        if data is None:
            return opts
        root = conv.mapping(data, ROOT, overlay=True)
        _known_keys(root, ROOT, _OVERLAY_KEYS, conv)
        for key in ("name", "timezone"):
            if key in root:
                value = root[key]
                if isinstance(value, str) and value.strip():
                    setattr(opts, key, value)
                else:
                    conv.overlay_error(key, f"expected text, got {describe_value(value)}")
        if "graphs" in root:
            value = root["graphs"]
            if isinstance(value, list) and value and all(_is_graph(g) for g in value):
                opts.graphs = set(value)
            else:
                conv.overlay_error(
                    "graphs", f"expected a list of graph numbers such as [0, 1], got {value!r}"
                )
        for graph, access in conv.mapping(
            root.get("graph_access", {}), "graph_access", overlay=True
        ).items():
            at = join_path("graph_access", graph)
            if not _is_graph(graph):
                conv.overlay_error(at, f"expected a graph number, got {describe_value(graph)}")
            elif not isinstance(access, str) or access.strip().upper() not in Access.__members__:
                conv.overlay_error(
                    at, f"expected clean, dirty or any, got {describe_value(access)}"
                )
            else:
                opts.graph_access[graph] = Access[access.strip().upper()]
        for section, keys, target in (
            ("doors", _OVERLAY_DOOR_KEYS, opts.doors),
            ("lifts", _OVERLAY_LIFT_KEYS, opts.lifts),
            ("stations", _OVERLAY_STATION_KEYS, opts.stations),
        ):
            for name, spec in conv.mapping(root.get(section, {}), section, overlay=True).items():
                at = join_path(section, name)
                entry = conv.mapping(spec, at, overlay=True)
                _known_keys(entry, at, keys, conv)
                target[str(name)] = {k: v for k, v in entry.items() if k in keys}
        for name, spec in opts.stations.items():
            kind = spec.get("kind")
            if kind is not None and (
                not isinstance(kind, str) or kind.strip().upper() not in StationKind.__members__
            ):
                choices = ", ".join(k.value.lower() for k in StationKind)
                conv.overlay_error(
                    join_path(join_path("stations", name), "kind"),
                    f"unknown station kind {kind!r} (expected one of: {choices})",
                )
        return opts


def _is_graph(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _known_keys(
    data: Mapping[Any, Any], path: str, keys: tuple[str, ...], conv: _Converter
) -> None:
    for key in data:
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            why = (
                f"unknown key; did you mean {close[0]!r}?"
                if close
                else f"unknown key (expected one of: {', '.join(keys)})"
            )
            conv.overlay_error(join_path(path, key), why)


# --- public API ---------------------------------------------------------------------------------


def rmf_to_map(
    rmf: object,
    overlay: object = None,
    *,
    source: str = "<rmf>",
    overlay_source: str = "<overlay>",
) -> RmfImport:
    """Convert a parsed RMF building map (and an optional parsed overlay) to our map format.

    Raises `MapError` listing every problem found; issues name `source` or `overlay_source`, the
    path inside that file and what is wrong. The map is not validated by our loader here:
    `import_rmf_file` does that.
    """
    return _Converter(source, overlay_source if overlay is not None else "").convert(rmf, overlay)


_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read(path: Path) -> object:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MapError([MapIssue(source, ROOT, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MapError([MapIssue(source, ROOT, f"cannot read file: {exc}")]) from None
    try:
        return yaml.load(text, Loader=_SAFE_LOADER)  # a safe loader, libyaml's when there
    except yaml.YAMLError as exc:
        raise MapError([MapIssue(source, ROOT, f"YAML syntax error: {exc}")]) from None


def import_rmf_file(
    path: str | Path, overlay: str | Path | None = None, *, out_name: str = "<output>"
) -> tuple[RmfImport, str]:
    """Read an RMF building file (and overlay), convert it, check the result with our loader.

    Returns the conversion and its YAML text. Raises `MapError`; a map our loader refuses is
    reported against `out_name`, the file it would have been written to.
    """
    rmf = _read(Path(path))
    data = _read(Path(overlay)) if overlay is not None else None
    if overlay is not None and data is None:
        data = {}
    result = rmf_to_map(
        rmf, data, source=str(path), overlay_source=str(overlay) if overlay is not None else ""
    )
    text = render_yaml(result)
    parse_building(yaml.load(text, Loader=_SAFE_LOADER), out_name)
    return result, text


# --- rendering ----------------------------------------------------------------------------------


def _flow(value: object) -> str:
    """One value as YAML flow text on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1 << 30)
    lines = [line for line in text.splitlines() if line != "..."]
    return " ".join(lines).strip()


def render_yaml(result: RmfImport) -> str:
    """Our map as readable YAML: a header, one line per node, lane, door and station."""
    data = result.map
    out = [f"# {line}" for line in result.header]
    out.append(f"name: {_flow(data['name'])}")
    if "timezone" in data:
        out.append(f"timezone: {_flow(data['timezone'])}")
    out.append("levels:")
    for level in data["levels"]:
        out.append(f"  - name: {_flow(level['name'])}")
        out.append(f"    elevation: {_flow(level['elevation'])}")
        if not level["nodes"]:
            out.append("    nodes: {}")
            continue
        out.append("    nodes:")
        for node, xy in level["nodes"].items():
            out.append(f"      {_flow(node)}: {_flow(xy)}")
    for section in ("doors", "lanes", "lifts", "holding_points", "stations"):
        items = data.get(section)
        if not items:
            continue
        out.append(f"{section}:")
        if section == "holding_points":
            out.extend(f"  - {_flow(node)}" for node in items)
            continue
        for item in items:
            comment = result.comments.get(f"{section}.{item.get('name')}")
            if section == "lifts":
                if comment:
                    out.append(f"  # {comment}")
                out.append(f"  - {_flow(item)}")
            else:
                out.append(f"  - {_flow(item)}" + (f"  # {comment}" if comment else ""))
    return "\n".join(out) + "\n"


__all__ = ["RmfImport", "import_rmf_file", "render_yaml", "rmf_to_map"]
