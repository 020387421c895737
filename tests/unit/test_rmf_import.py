"""Open-RMF building maps to our map format: the two rmf_demos maps convert and load, and what
they hold (levels, scale, lanes per graph, doors, lifts, stations) comes through; the overlay;
bad input gets an error naming the file, the place and what is wrong."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.building.loader import MapError, load_building, parse_building
from fleet.building.model import Building, DoorKind, StationKind
from fleet.building.rmf_import import RmfImport, import_rmf_file, render_yaml, rmf_to_map
from fleet.cli import main
from fleet.domain.cargo import Access

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "rmf"
CLINIC = DATA / "clinic.building.yaml"
OFFICE = DATA / "office.building.yaml"
SAFE: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
CLINIC_SCALE = 0.7 / (1255.033 - 1229.032)  # measurement [0, 1]: 0.7 m over 26.001 px


@pytest.fixture(scope="module")
def clinic_rmf() -> dict[str, Any]:
    data = yaml.load(CLINIC.read_text(encoding="utf-8"), Loader=SAFE)
    assert isinstance(data, dict)
    return data


def load(result: RmfImport, source: str = "out.yaml") -> Building:
    """The converted map through our own loader, as `fleet map check` reads it."""
    return parse_building(yaml.load(render_yaml(result), Loader=SAFE), source)


def lane_between(building: Building, a: str, b: str) -> Any:
    return next(ln for ln in building.lanes if {ln.start, ln.end} == {a, b})


# ---- the demo maps ------------------------------------------------------------------------------


def test_both_demo_maps_convert_and_pass_our_loader(tmp_path: Path) -> None:
    for path, levels, lifts in ((CLINIC, 2, 2), (OFFICE, 1, 0)):
        out = tmp_path / f"{path.stem}.yaml"
        assert main(["map", "import-rmf", str(path), "-o", str(out)]) == 0
        building = load_building(out)
        assert len(building.levels) == levels
        assert len(building.lifts) == lifts
        assert building.lanes and building.stations
        assert main(["map", "check", str(out)]) == 0


def test_clinic_levels_keep_names_and_elevations(clinic_rmf: dict[str, Any]) -> None:
    building = load(rmf_to_map(clinic_rmf))
    assert {n: lv.elevation for n, lv in building.levels.items()} == {"L1": 0.0, "L2": 10.0}
    assert building.level_of("L1_left_nurse_center") == "L1"
    assert building.level_of("L2_left_nurse_center") == "L2"


def test_scale_from_measurements_matches_a_hand_computation(clinic_rmf: dict[str, Any]) -> None:
    building = load(rmf_to_map(clinic_rmf))
    # L1 vertex 398 (L1_left_nurse_center) at (799.486, 728.99) px, y axis flipped.
    node = building.nodes["L1_left_nurse_center"]
    assert node.x == pytest.approx(799.486 * CLINIC_SCALE, abs=1e-3)
    assert node.y == pytest.approx(-728.99 * CLINIC_SCALE, abs=1e-3)
    # The lane from vertex 397 (797.929, 549.851) px to 398 is 179.146 px = 4.823 m.
    lane = lane_between(building, "L1_v397", "L1_left_nurse_center")
    pixels = math.hypot(799.486 - 797.929, 728.99 - 549.851)
    assert lane.length_m == pytest.approx(pixels * CLINIC_SCALE, abs=2e-3)
    assert lane.length_m == pytest.approx(4.823, abs=2e-3)
    # The office has three measurements: the scale is their mean (about 0.008465 m/px).
    office = rmf_to_map(yaml.load(OFFICE.read_text(encoding="utf-8"), Loader=SAFE))
    assert any("0.008465 m/px" in line for line in office.header)


def _pairs_per_graph(rmf: dict[str, Any], graphs: set[int]) -> int:
    """Vertex pairs joined by a lane of `graphs`, not counting lanes into a lift cabin (the
    editor marks cabin vertices `lift_cabin`; the importer finds them by geometry)."""
    pairs = set()
    for name, level in rmf["levels"].items():
        cabin = {i for i, v in enumerate(level["vertices"]) if len(v) > 4 and "lift_cabin" in v[4]}
        for a, b, params in level["lanes"]:
            if params.get("graph_idx", [2, 0])[1] in graphs and not {a, b} & cabin:
                pairs.add((name, min(a, b), max(a, b)))
    return len(pairs)


def test_lanes_per_graph_and_merged(clinic_rmf: dict[str, Any]) -> None:
    for graphs in ({0}, {1}, {0, 1}):
        overlay = {"graphs": sorted(graphs)}
        building = load(rmf_to_map(clinic_rmf, overlay))
        assert len(building.lanes) == _pairs_per_graph(clinic_rmf, graphs)
        assert all(lane.bidirectional for lane in building.lanes)  # as the clinic marks them
    # A corridor in both graphs is one lane; lanes of the tinyRobot graph only are fewer.
    assert _pairs_per_graph(clinic_rmf, {0, 1}) < _pairs_per_graph(
        clinic_rmf, {0}
    ) + _pairs_per_graph(clinic_rmf, {1})
    # Graph 0's treatment rooms are not in graph 1.
    only_1 = load(rmf_to_map(clinic_rmf, {"graphs": [1]}))
    assert "L1_right_procedure" not in only_1.nodes


def test_graph_access_restricts_lanes_a_graph_has_alone(clinic_rmf: dict[str, Any]) -> None:
    result = rmf_to_map(clinic_rmf, {"graph_access": {0: "clean", 1: "dirty"}})
    building = load(result)
    # Both graphs: any flow; graph 0 only: clean; graph 1 only: dirty.
    assert lane_between(building, "L1_v397", "L1_left_nurse_center").access is Access.ANY
    assert lane_between(building, "L1_right_procedure", "L1_v448").access is Access.CLEAN
    assert any(lane.access is Access.DIRTY for lane in building.lanes)


def test_doors_crossing_lanes_become_lane_doors(clinic_rmf: dict[str, Any]) -> None:
    result = rmf_to_map(clinic_rmf)
    building = load(result)
    on_routes = {
        "L1_clinic_a",
        "L1_clinic_b",
        "L1_left_inner",
        "L1_right_inner",
        "L1_left_treatment_1",
        "L1_left_negative_air_pressure",
        "L1_right_procedure",
        "L1_right_treatment",
        "L1_right_negative_air_pressure",
        "L2_clinic_a",
        "L2_clinic_b",
        "m",
        "L2_right_inner",
    }
    assert set(building.doors) == on_routes  # the consult-room doors no lane crosses are left out
    assert lane_between(building, "L1_v387", "L1_v388").door == "L1_clinic_a"
    assert lane_between(building, "L1_right_procedure", "L1_v448").door == "L1_right_procedure"
    # The RMF type sets the times: double sliding 4 s, sliding 3 s; all open on request.
    assert building.doors["L1_clinic_a"].open_time_s == 4.0
    assert building.doors["m"].open_time_s == 3.0
    assert {d.kind for d in building.doors.values()} == {DoorKind.AUTOMATIC}
    assert "double_sliding" in result.comments["doors.L1_clinic_a"]
    # Office: two hinged doors on lanes (the main door is crossed by none).
    office = load(rmf_to_map(yaml.load(OFFICE.read_text(encoding="utf-8"), Loader=SAFE)))
    assert set(office.doors) == {"coe_door", "hardware_door"}
    assert office.doors["coe_door"].open_time_s == 5.0


def test_lifts_with_levels_and_lobbies(clinic_rmf: dict[str, Any]) -> None:
    result = rmf_to_map(clinic_rmf)
    building = load(result)
    assert set(building.lifts) == {"lift_1", "lift_25"}
    # The lobby is the vertex a lane joins to the cabin: L1 404-370 and 386-363, L2 291-281 and
    # 307-280; the cabin vertices themselves are not nodes.
    assert building.lifts["lift_1"].lobbies == {"L1": "L1_v404", "L2": "L2_v291"}
    assert building.lifts["lift_25"].lobbies == {"L1": "L1_v386", "L2": "L2_v307"}
    assert building.lifts["lift_1"].initial_level == "L1"
    assert not {"L1_v370", "L1_v363", "L2_v281", "L2_v280"} & set(building.nodes)
    # Lobbies stand in front of the car door: lift_1 (yaw 3.14) opens towards -y, about 1.6 m
    # from its centre (43.08, -7.43), and its L1 lobby is below it.
    lobby = building.nodes["L1_v404"]
    assert lobby.x == pytest.approx(1600 * CLINIC_SCALE, abs=0.1)
    assert lobby.y < -276 * CLINIC_SCALE - 1.5
    assert "lift_1_door (double sliding, 1.4 m) on L1/L2" in result.comments["lifts.lift_1"]
    # The decorative lifts have cabin vertices but no lanes: left out, with a note.
    assert any("'lift_2' left out" in note for note in result.notes)
    assert any("'lift_24' left out" in note for note in result.notes)


def test_marked_vertices_become_stations(clinic_rmf: dict[str, Any]) -> None:
    building = load(rmf_to_map(clinic_rmf))
    chargers = {n for n, s in building.stations.items() if s.kind is StationKind.CHARGER}
    assert chargers == {
        "L1_sub_waiting_area_1",
        "deliveryRobot_2_charger",
        "tinyRobot_1_charger",
        "tinyRobot_2_charger",
    }
    assert "deliveryRobot_1_charger" not in building.stations  # named so, but not marked
    assert building.stations["L2_north_counter"].kind is StationKind.PARKING
    # The duplicate name L1_sub_waiting_area_4 (vertices 422 and 445) gets the vertex index.
    assert {"L1_sub_waiting_area_4_v422", "L1_sub_waiting_area_4_v445"} <= set(building.stations)
    office = load(rmf_to_map(yaml.load(OFFICE.read_text(encoding="utf-8"), Loader=SAFE)))
    kinds = {n: s.kind for n, s in office.stations.items()}
    assert kinds["pantry"] is StationKind.WAREHOUSE_PORT  # pickup_dispenser
    assert kinds["hardware_2"] is StationKind.WARD  # dropoff_ingestor
    assert kinds["coe"] is StationKind.WARD
    assert kinds["tinyRobot1_charger"] is StationKind.CHARGER


def test_holding_points_come_through_but_not_on_a_lobby(clinic_rmf: dict[str, Any]) -> None:
    building = load(rmf_to_map(clinic_rmf))
    assert len(building.holding_points) == 29  # every is_holding_point vertex is on a lane
    assert {
        "L1_left_nurse_center",
        "L1_sub_waiting_area_4_v422",
        "deliveryRobot_1_charger",
        "L2_north_counter",
    } <= building.holding_points
    assert not building.holding_points & building.exclusive_nodes
    rmf = copy.deepcopy(clinic_rmf)
    vertex = rmf["levels"]["L1"]["vertices"][404]  # lift_1's lobby on L1
    while len(vertex) < 5:
        vertex.append("" if len(vertex) == 3 else {})
    vertex[4]["is_holding_point"] = [4, True]
    result = rmf_to_map(rmf)
    assert "L1_v404" not in result.map["holding_points"]
    note = (
        "L1 vertex 404 is a holding point but the lobby of lift 'lift_1', which is exclusive: "
        "not a holding point"
    )
    assert note in result.notes
    assert load(result).holding_points == building.holding_points


def test_a_holding_point_on_no_lane_is_left_out_with_a_note() -> None:
    rmf = tiny([lane(0, 1)])
    vertices = rmf["levels"]["L1"]["vertices"]
    vertices[1].append({"is_holding_point": [4, True]})
    vertices[2].append({"is_holding_point": [4, True]})
    result = rmf_to_map(rmf)
    assert result.map["holding_points"] == ["b"]
    assert result.notes == ["c is a holding point on no imported lane: left out"]
    assert render_yaml(result).endswith("holding_points:\n  - b\n")
    assert load(result).holding_points == {"b"}


# ---- the overlay --------------------------------------------------------------------------------


def test_overlay_adds_changes_and_removes_stations_and_sets_doors_and_lifts(
    clinic_rmf: dict[str, Any],
) -> None:
    overlay = {
        "name": "Clinic",
        "timezone": "Europe/Berlin",
        "stations": {
            "STORE": {"vertex": "L1_right_treatment", "kind": "warehouse_port", "service_time": 45},
            "WARD-A": {
                "vertex": "L2_west_counter",
                "level": "L2",
                "kind": "ward",
                "opening_hours": ["07:00-19:00"],
            },
            "TINY": {"vertex": 445, "level": "L1", "kind": "parking"},
            "L2_north_counter": {"kind": "or"},
            "L2_south_counter": {"remove": True},
        },
        "doors": {"L1_clinic_a": {"kind": "access_controlled", "open_time": 6}},
        "lifts": {"lift_25": {"access": "dirty", "capacity_robots": 2, "speed": 1.5}},
    }
    building = load(rmf_to_map(clinic_rmf, overlay))
    assert building.name == "Clinic" and building.timezone == "Europe/Berlin"
    store = building.stations["STORE"]
    assert (store.kind, store.node, store.service_time_s) == (
        StationKind.WAREHOUSE_PORT,
        "L1_right_treatment",
        45.0,
    )
    assert building.stations["WARD-A"].node == "L2_west_counter"
    assert not building.stations["WARD-A"].opening_hours.always_open
    assert building.stations["TINY"].node == "L1_sub_waiting_area_4_v445"
    assert building.stations["L2_north_counter"].kind is StationKind.OR
    assert "L2_south_counter" not in building.stations
    door = building.doors["L1_clinic_a"]
    assert (door.kind, door.open_time_s, door.close_time_s) == (
        DoorKind.ACCESS_CONTROLLED,
        6.0,
        4.0,
    )
    lift = building.lifts["lift_25"]
    assert (lift.access, lift.capacity_robots, lift.speed_m_s) == (Access.DIRTY, 2, 1.5)


def test_committed_clinic_map_is_the_import_of_its_overlay() -> None:
    """maps/clinic.yaml is generated (command in maps/README.md); it must not drift."""
    _, text = import_rmf_file(CLINIC, REPO / "maps" / "clinic_overlay.yaml")
    assert (REPO / "maps" / "clinic.yaml").read_text(encoding="utf-8") == text
    building = load_building(REPO / "maps" / "clinic.yaml")
    kinds = {s.kind for s in building.stations.values()}
    assert {StationKind.WAREHOUSE_PORT, StationKind.OR, StationKind.WARD} <= kinds
    # Every delivery crosses levels: supplies on L1, their destinations on L2.
    for station in building.stations.values():
        if station.kind in (StationKind.OR, StationKind.WARD, StationKind.SOILED_UTILITY):
            assert building.level_of(station.node) == "L2"
        if station.kind in (StationKind.WAREHOUSE_PORT, StationKind.PHARMACY, StationKind.WASTE):
            assert building.level_of(station.node) == "L1"


# ---- bad input ----------------------------------------------------------------------------------


def errors(rmf: object, overlay: object = None) -> list[str]:
    with pytest.raises(MapError) as info:
        rmf_to_map(rmf, overlay, source="c.building.yaml", overlay_source="o.yaml")
    return [str(issue) for issue in info.value.issues]


def test_reference_level_without_measurements_is_named(clinic_rmf: dict[str, Any]) -> None:
    rmf = copy.deepcopy(clinic_rmf)
    del rmf["levels"]["L1"]["measurements"]
    (line,) = errors(rmf)
    assert line.startswith("c.building.yaml: levels.L1.measurements: level 'L1'")
    assert "no measurements" in line


def test_other_level_without_measurements_or_fiducials_is_named(
    clinic_rmf: dict[str, Any],
) -> None:
    rmf = copy.deepcopy(clinic_rmf)
    del rmf["levels"]["L2"]["measurements"]
    # With the reference level's fiducials it is aligned to them, as the RMF tools do ...
    building = load(rmf_to_map(rmf))
    assert building.nodes["L2_left_nurse_center"].x == pytest.approx(799.2 * CLINIC_SCALE, abs=0.01)
    # ... without them its scale is unknown.
    del rmf["levels"]["L2"]["fiducials"]
    (line,) = errors(rmf)
    assert line.startswith("c.building.yaml: levels.L2.measurements: level 'L2' has no")


def test_bad_rmf_structure_is_reported_with_its_path(clinic_rmf: dict[str, Any]) -> None:
    rmf = copy.deepcopy(clinic_rmf)
    rmf["levels"]["L1"]["lanes"][3][1] = 9999
    rmf["levels"]["L2"]["elevation"] = "high"
    found = errors(rmf)
    assert (
        "c.building.yaml: levels.L1.lanes[3][1]: vertex index 9999 is out of range: level 'L1' "
        "has 449 vertices"
    ) in found
    assert "c.building.yaml: levels.L2.elevation: expected metres, got text 'high'" in found
    assert errors([1, 2]) == [
        "c.building.yaml: <root>: expected an RMF building map (a mapping), got a list"
    ]
    assert errors({"name": "x"}) == [
        "c.building.yaml: levels: required field is missing: an RMF building has levels"
    ]
    rmf = copy.deepcopy(clinic_rmf)
    rmf["coordinate_system"] = "wgs84"
    assert errors(rmf) == [
        "c.building.yaml: coordinate_system: coordinate system 'wgs84' is not supported "
        "(expected reference_image or cartesian_meters)"
    ]


def test_bad_overlay_is_reported_against_the_overlay(clinic_rmf: dict[str, Any]) -> None:
    found = errors(
        clinic_rmf,
        {
            "stations": {
                "A": {"vertex": "L2_west_countr", "kind": "ward"},
                "B": {"vertex": "L1_sub_waiting_area_4", "kind": "ward"},
                "C": {"vertex": "L2_west_counter", "kind": "kitchen"},
                "D": {"vertex": "L2_west_counter"},
                "E": {"kind": "ward"},
                "F": {"vertex": 3, "level": "L1", "kind": "ward"},
                "G": {"vertex": "L2_west_counter", "level": "L3", "kind": "ward"},
                "deliveryRobot_1_charger": {"remove": True},
            },
            "lifts": {"lift_2": {"speed": 2}, "lift_9": {"speed": 2}},
            "doors": {"L1_wc_1": {"kind": "access_controlled"}},
            "graphs": [0, 1, 7],
            "colour": "blue",
        },
    )
    expected = [
        "o.yaml: colour: unknown key (expected one of: name, timezone, graphs, graph_access, "
        "doors, lifts, stations)",
        "o.yaml: stations.C.kind: unknown station kind 'kitchen' (expected one of: "
        "warehouse_port, pharmacy, sterile_core, or, ward, waste, soiled_utility, dispenser, "
        "charger, parking)",
        "o.yaml: graphs: the RMF map has no lanes in graph 7",
        "o.yaml: doors.L1_wc_1: no door 'L1_wc_1' on an imported lane of the RMF map",
        "o.yaml: lifts.lift_2: lift 'lift_2' is not imported: no lane reaches its cabin",
        "o.yaml: lifts.lift_9: no lift 'lift_9' in the RMF map",
        "o.yaml: stations.A.vertex: unknown vertex 'L2_west_countr'; did you mean "
        "'L2_west_counter'?",
        "o.yaml: stations.B.vertex: vertex name 'L1_sub_waiting_area_4' is not unique "
        "(L1 vertex 422, L1 vertex 445): give the level, or the vertex index and level",
        "o.yaml: stations.D.kind: required field is missing",
        "o.yaml: stations.E: station 'E' is not an imported station: give the vertex it stands "
        "on (vertex, and level when the name is not unique)",
        "o.yaml: stations.F.vertex: vertex 3 is on no imported lane, so robots cannot reach it",
        "o.yaml: stations.G.level: unknown level 'L3' (the RMF map has L1, L2)",
        "o.yaml: stations.deliveryRobot_1_charger.remove: no imported station "
        "'deliveryRobot_1_charger' to remove",
    ]
    assert sorted(found) == sorted(expected)


def test_cli_reports_errors_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overlay = tmp_path / "o.yaml"
    overlay.write_text("stations:\n  X: {vertex: nowhere, kind: ward}\n", encoding="utf-8")
    out = tmp_path / "out.yaml"
    assert main(["map", "import-rmf", str(CLINIC), "--overlay", str(overlay), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{overlay}: stations.X.vertex: unknown vertex 'nowhere'" in err
    assert not out.exists()
    assert main(["map", "import-rmf", str(tmp_path / "missing.yaml"), "-o", str(out)]) == 1
    assert "missing.yaml: <root>: file not found" in capsys.readouterr().err
    # A map our loader refuses (here: a bad time zone) is reported against the output file.
    overlay.write_text("timezone: Mars/Olympus\n", encoding="utf-8")
    assert main(["map", "import-rmf", str(CLINIC), "--overlay", str(overlay), "-o", str(out)]) == 1
    assert f"{out}: timezone:" in capsys.readouterr().err
    assert not out.exists()


# ---- small synthetic maps: one-way lanes, graph merging, fiducial alignment ---------------------


def tiny(lanes: list[list[Any]], l2: dict[str, Any] | None = None) -> dict[str, Any]:
    """A one-level RMF map, 10 px = 1 m, vertices a (0,0), b (100,0), c (100,100) px."""
    level = {
        "elevation": 0,
        "vertices": [[0, 0, 0, "a"], [100, 0, 0, "b"], [100, 100, 0, "c"], [0, 10, 0, ""]],
        "measurements": [[0, 1, {"distance": [3, 10.0]}]],
        "lanes": lanes,
        "doors": [],
    }
    levels: dict[str, Any] = {"L1": level}
    if l2 is not None:
        levels["L2"] = l2
    return {"name": "tiny", "coordinate_system": "reference_image", "levels": levels, "lifts": {}}


def lane(a: int, b: int, graph: int = 0, both: bool = True) -> list[Any]:
    return [a, b, {"graph_idx": [2, graph], "bidirectional": [4, both]}]


def test_one_way_lanes_keep_their_direction_and_opposites_merge() -> None:
    result = rmf_to_map(tiny([lane(0, 1, both=False), lane(2, 1, both=False)]))
    assert result.map["lanes"] == [
        {"start": "a", "end": "b", "bidirectional": False},
        {"start": "c", "end": "b", "bidirectional": False},
    ]
    assert result.map["levels"][0]["nodes"] == {
        "a": [0.0, 0.0],
        "b": [10.0, 0.0],
        "c": [10.0, -10.0],
    }
    # Opposite one-way lanes in two graphs: together, a two-way lane.
    merged = rmf_to_map(tiny([lane(0, 1, 0, both=False), lane(1, 0, 1, both=False)]))
    assert merged.map["lanes"] == [{"start": "a", "end": "b"}]
    # ... unless the graphs admit different flows: then two one-way lanes.
    split = rmf_to_map(
        tiny([lane(0, 1, 0, both=False), lane(1, 0, 1, both=False)]),
        {"graph_access": {0: "clean", 1: "dirty"}},
    )
    assert split.map["lanes"] == [
        {"start": "a", "end": "b", "bidirectional": False, "access": "clean"},
        {"start": "b", "end": "a", "bidirectional": False, "access": "dirty"},
    ]
    load(split)


def test_a_level_is_aligned_to_the_reference_by_fiducials() -> None:
    # L2's drawing is shifted by (+50, +20) px and drawn at half the resolution (5 px = 1 m).
    fid1: list[list[Any]] = [[0, 0, "f1"], [100, 0, "f2"], [0, 100, "f3"]]
    fid2 = [[50 + x / 2, 20 + y / 2, n] for x, y, n in fid1]
    l2 = {
        "elevation": 4,
        "vertices": [[50, 20, 0, "p"], [100, 20, 0, "q"]],
        "lanes": [lane(0, 1)],
        "fiducials": fid2,
    }
    rmf = tiny([lane(0, 1)], l2)
    rmf["levels"]["L1"]["fiducials"] = fid1
    nodes = rmf_to_map(rmf).map["levels"][1]["nodes"]
    assert nodes["p"] == pytest.approx([0.0, 0.0], abs=1e-9)
    assert nodes["q"] == pytest.approx([10.0, 0.0], abs=1e-9)


def test_a_lane_crossing_a_door_gets_it_and_a_door_on_no_lane_is_dropped() -> None:
    rmf = tiny([lane(0, 1), lane(1, 2)])
    level = rmf["levels"]["L1"]
    level["vertices"] += [[50, -10, 0, ""], [50, 10, 0, ""], [0, 50, 0, ""], [0, 60, 0, ""]]
    level["doors"] = [
        [4, 5, {"name": [1, "D1"], "type": [1, "hinged"]}],
        [6, 7, {"name": [1, "D2"], "type": [1, "sliding"]}],
    ]
    result = rmf_to_map(rmf)
    assert result.map["doors"] == [
        {"name": "D1", "kind": "automatic", "open_time": 5.0, "close_time": 5.0}
    ]
    assert result.map["lanes"][0] == {"start": "a", "end": "b", "door": "D1"}
    load(result)
