"""The native YAML map loader: the demo map loads, and every bad map gets a precise report."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.building.loader import (
    MapError,
    MapIssue,
    check_map,
    load_building,
    parse_building,
    summary,
)
from fleet.building.model import DoorKind, StationKind
from fleet.domain.cargo import Access

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "maps" / "demo_hospital.yaml"
SRC = "m.yaml"


def small_map() -> dict[str, Any]:
    """A valid two-level map; each test breaks one thing in a fresh copy."""
    return copy.deepcopy(
        {
            "name": "Small",
            "levels": [
                {
                    "name": "L1",
                    "elevation": 0.0,
                    "nodes": {"A": [0, 0], "B": [10, 0], "C": [10, 5]},
                },
                {"name": "L2", "elevation": 4.0, "nodes": {"D": [0, 0], "E": [6, 0]}},
            ],
            "doors": [{"name": "D1", "kind": "automatic", "open_time": 3, "close_time": 3}],
            "lanes": [
                {"start": "A", "end": "B"},
                {"start": "B", "end": "C", "door": "D1"},
                {"start": "D", "end": "E"},
            ],
            "lifts": [
                {
                    "name": "LIFT",
                    "lobbies": {"L1": "A", "L2": "D"},
                    "capacity_robots": 1,
                    "door_time": 4,
                    "speed": 1.0,
                }
            ],
            "stations": [
                {"name": "S1", "kind": "ward", "node": "C"},
                {"name": "S2", "kind": "charger", "node": "E"},
            ],
        }
    )


def issues(data: object) -> list[str]:
    """The issue lines for `data`, which must be invalid."""
    with pytest.raises(MapError) as caught:
        parse_building(data, SRC)
    return [str(issue) for issue in caught.value.issues]


def write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- valid maps --------------------------------------------------------------------------------


def test_demo_map_loads_with_its_stations() -> None:
    building = load_building(DEMO)
    assert building.name == "Demo Hospital"
    assert set(building.levels) == {"B1", "L1", "L2"}
    assert building.levels["B1"].elevation == -4.5
    assert {f"OR-0{i}" for i in range(1, 9)} <= set(building.stations)
    assert building.stations["WASTE-STATION"].kind is StationKind.WASTE
    assert building.lifts["LIFT-CLEAN"].access is Access.CLEAN
    assert building.lifts["LIFT-DIRTY"].levels == ("B1", "L1", "L2")
    assert building.source == str(DEMO)


def test_small_map_loads_with_defaults() -> None:
    building = parse_building(small_map(), SRC)
    lane = building.lanes[0]
    assert (lane.length_m, lane.bidirectional, lane.access, lane.door) == (
        10.0,
        True,
        Access.ANY,
        None,
    )
    assert lane.speed_limit_m_s is None
    assert building.doors["D1"].kind is DoorKind.AUTOMATIC
    lift = building.lifts["LIFT"]
    assert (lift.expected_wait_s, lift.initial_level, lift.access) == (30.0, "L1", Access.ANY)
    assert building.stations["S1"].service_time_s == 30.0
    assert building.stations["S1"].kind is StationKind.WARD


def test_explicit_values_and_case_insensitive_kinds() -> None:
    data = small_map()
    data["lanes"][0].update(length=12.5, bidirectional=False, speed_limit=0.8, access="Clean")
    data["doors"][0]["kind"] = "ACCESS_CONTROLLED"
    data["lifts"][0].update(access="dirty", expected_wait=0, initial_level="L2")
    data["stations"][0].update(kind="Soiled_Utility", service_time=0)
    data["lanes"].append({"start": "B", "end": "A", "bidirectional": False})  # the way back
    building = parse_building(data, SRC)
    lane = building.lanes[0]
    assert (lane.length_m, lane.bidirectional, lane.speed_limit_m_s) == (12.5, False, 0.8)
    assert lane.access is Access.CLEAN
    assert building.doors["D1"].kind is DoorKind.ACCESS_CONTROLLED
    assert building.lifts["LIFT"].initial_level == "L2"
    assert building.lifts["LIFT"].expected_wait_s == 0.0
    assert building.stations["S1"].kind is StationKind.SOILED_UTILITY


def test_readme_example_is_a_valid_map(tmp_path: Path) -> None:
    readme = (REPO / "maps" / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```yaml\n(.*?)```", readme, re.DOTALL)
    assert example is not None
    building = load_building(write(tmp_path, example.group(1), "clinic.yaml"))
    assert summary(building) == (
        "clinic.yaml: Small Clinic: 2 levels, 6 nodes, 4 lanes, 1 door, 1 lift, 2 stations"
    )


def test_summary_of_the_demo_map() -> None:
    line = summary(load_building(DEMO))
    assert re.fullmatch(
        r"demo_hospital\.yaml: Demo Hospital: 3 levels, \d+ nodes, \d+ lanes, \d+ doors, "
        r"2 lifts, \d+ stations",
        line,
    )


# --- check_map ---------------------------------------------------------------------------------


def test_check_map_ok_prints_the_summary() -> None:
    code, lines = check_map(DEMO)
    assert code == 0
    assert lines == [summary(load_building(DEMO))]


def test_check_map_bad_prints_the_issue_lines(tmp_path: Path) -> None:
    data = small_map()
    data["lanes"][0]["end"] = "X"
    data["stations"][1]["kind"] = "kitchen"
    path = write(tmp_path, yaml.safe_dump(data, sort_keys=False))
    code, lines = check_map(path)
    assert code == 1
    assert lines[0] == f"{path}: lanes[0].end: unknown node 'X'"
    assert lines[1].startswith(f"{path}: stations[1].kind: unknown station kind 'kitchen' (")
    assert len(lines) == 2


def test_check_map_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert check_map(path) == (1, [f"{path}: <root>: file not found"])


def test_load_missing_file_raises_map_error(tmp_path: Path) -> None:
    with pytest.raises(MapError, match="file not found"):
        load_building(tmp_path / "nope.yaml")


# --- issue shape -------------------------------------------------------------------------------


def test_issue_and_error_text() -> None:
    one = MapIssue("a.yaml", "lanes[3].end", "unknown node 'X'")
    two = MapIssue("a.yaml", "<root>", "boom")
    assert str(one) == "a.yaml: lanes[3].end: unknown node 'X'"
    assert (
        str(MapError([one, two])) == "a.yaml: lanes[3].end: unknown node 'X'\na.yaml: <root>: boom"
    )


def test_collects_several_issues_at_once() -> None:
    data = small_map()
    data["levels"][0]["elevation"] = "ground"
    data["lanes"][0]["end"] = "X"
    data["doors"][0]["open_time"] = -1
    data["lifts"][0]["lobbies"] = {"L1": "A", "L3": "D"}
    data["stations"][0]["node"] = "Q"
    data["stations"][1]["servce_time"] = 5
    assert issues(data) == [
        f"{SRC}: levels[0].elevation: expected a number (metres), got text 'ground'",
        f"{SRC}: doors[0].open_time: must be greater than 0, got -1",
        f"{SRC}: lanes[0].end: unknown node 'X'",
        f"{SRC}: lifts[0].lobbies.L3: unknown level 'L3'",
        f"{SRC}: stations[0].node: unknown node 'Q'",
        f"{SRC}: stations[1].servce_time: unknown key; did you mean 'service_time'?",
    ]


# --- syntax and structure ----------------------------------------------------------------------


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: X\nlevels:\n  - name: L1\n    nodes: {A: [0, 0]\nlanes: []\n")
    with pytest.raises(MapError) as caught:
        load_building(path)
    [line] = [str(issue) for issue in caught.value.issues]
    assert re.fullmatch(rf"{re.escape(str(path))}: <root>: YAML syntax error at line 5, .*", line)


def test_empty_map() -> None:
    assert issues(None) == [f"{SRC}: <root>: the map is empty"]


def test_root_must_be_a_mapping() -> None:
    assert issues(["a", "b"]) == [f"{SRC}: <root>: expected a mapping, got a list"]


def test_unknown_key_at_every_level() -> None:
    data = small_map()
    data["statons"] = []
    data["levels"][1]["elevaton"] = 1
    data["lanes"][0]["lenght"] = 5
    data["doors"][0]["colour"] = "red"
    data["lifts"][0]["lobbys"] = {}
    assert issues(data) == [
        f"{SRC}: statons: unknown key; did you mean 'stations'?",
        f"{SRC}: levels[1].elevaton: unknown key; did you mean 'elevation'?",
        f"{SRC}: doors[0].colour: unknown key (expected one of: name, kind, open_time, close_time)",
        f"{SRC}: lanes[0].lenght: unknown key; did you mean 'length'?",
        f"{SRC}: lifts[0].lobbys: unknown key; did you mean 'lobbies'?",
    ]


def test_missing_required_fields() -> None:
    data = small_map()
    del data["lanes"][0]["end"]
    del data["stations"][0]["kind"]
    del data["name"]
    assert issues(data) == [
        f"{SRC}: name: required field is missing",
        f"{SRC}: lanes[0].end: required field is missing",
        f"{SRC}: stations[0].kind: required field is missing",
    ]


def test_wrong_types() -> None:
    data = small_map()
    data["levels"][0]["nodes"]["A"] = [0]
    data["lanes"][0]["bidirectional"] = "maybe"
    data["lanes"][1]["access"] = "sterile"
    data["lifts"][0]["speed"] = True
    data["stations"] = {"S1": "C"}
    assert issues(data) == [
        f"{SRC}: levels[0].nodes.A: expected [x, y] in metres, got a list",
        f"{SRC}: lanes[0].bidirectional: expected true or false, got text 'maybe'",
        f"{SRC}: lanes[1].access: expected one of clean, dirty, any, got text 'sterile'",
        f"{SRC}: lifts[0].speed: expected a number (m/s), got boolean true",
        f"{SRC}: stations: expected a list, got a mapping",
    ]


SMALL_YAML = """\
name: Small
levels:
  - name: L1
    elevation: 0
    nodes:
      A: [0, 0]
      B: [10, 0]
      A: [5, 5]
lanes:
  - {start: A, end: B}
stations:
  - {name: S1, kind: ward, node: A}
  - {name: S2, kind: ward, node: B, kind: or}
"""


def test_duplicate_yaml_keys_are_reported(tmp_path: Path) -> None:
    path = write(tmp_path, SMALL_YAML)
    with pytest.raises(MapError) as caught:
        load_building(path)
    assert [str(issue) for issue in caught.value.issues] == [
        f"{path}: levels[0].nodes.A: duplicate key (lines 6 and 8)",
        f"{path}: stations[1].kind: duplicate key (lines 13 and 13)",
    ]


def test_the_same_text_without_duplicates_loads(tmp_path: Path) -> None:
    text = SMALL_YAML.replace("      A: [5, 5]\n", "").replace(", kind: or", "")
    building = load_building(write(tmp_path, text))
    assert building.nodes["A"].x == 0.0
    assert (
        summary(building)
        == "bad.yaml: Small: 1 level, 2 nodes, 1 lane, 0 doors, 0 lifts, 2 stations"
    )


# --- names and references ----------------------------------------------------------------------


def test_duplicate_names() -> None:
    data = small_map()
    data["levels"].append({"name": "L1", "elevation": 8.0, "nodes": {}})
    data["levels"][1]["nodes"]["B"] = [3, 3]
    data["doors"].append(dict(data["doors"][0]))
    data["lanes"].append({"start": "C", "end": "B", "door": "D1"})
    data["lifts"].append(copy.deepcopy(data["lifts"][0]))
    data["stations"].append({"name": "S1", "kind": "parking", "node": "A"})
    assert issues(data) == [
        f"{SRC}: levels[1].nodes.B: duplicate node name 'B' (first at levels[0].nodes.B)",
        f"{SRC}: levels[2].name: duplicate level name 'L1' (first at levels[0])",
        f"{SRC}: doors[1].name: duplicate door name 'D1' (first at doors[0])",
        f"{SRC}: lanes[3]: duplicate lane between C and B (first at lanes[1])",
        f"{SRC}: lifts[1].name: duplicate lift name 'LIFT' (first at lifts[0])",
        f"{SRC}: stations[2].name: duplicate station name 'S1' (first at stations[0])",
    ]


def test_opposite_one_way_lanes_are_not_duplicates_but_same_way_ones_are() -> None:
    data = small_map()
    data["lanes"][0]["bidirectional"] = False
    data["lanes"].append({"start": "B", "end": "A", "bidirectional": False})
    parse_building(data, SRC)
    data["lanes"].append({"start": "A", "end": "B", "bidirectional": False, "length": 20})
    assert issues(data) == [f"{SRC}: lanes[4]: duplicate lane between A and B (first at lanes[0])"]


def test_unknown_node_in_a_lane() -> None:
    data = small_map()
    data["lanes"][2]["start"] = "Z"
    assert issues(data) == [f"{SRC}: lanes[2].start: unknown node 'Z'"]


def test_lane_between_levels() -> None:
    data = small_map()
    data["lanes"][0]["end"] = "D"
    assert issues(data) == [
        f"{SRC}: lanes[0]: lane joins nodes on different levels (A on L1, D on L2); "
        "use a lift to change level"
    ]


def test_lane_to_itself_and_lane_of_zero_length() -> None:
    data = small_map()
    data["levels"][0]["nodes"]["A2"] = [0, 0]
    data["lanes"].append({"start": "A", "end": "A"})
    data["lanes"].append({"start": "A", "end": "A2"})
    assert issues(data) == [
        f"{SRC}: lanes[3]: lane starts and ends at the same node 'A'",
        f"{SRC}: lanes[4]: nodes A and A2 are at the same point; give a length",
    ]


def test_lane_with_unknown_door() -> None:
    data = small_map()
    data["lanes"][1]["door"] = "D9"
    assert issues(data) == [f"{SRC}: lanes[1].door: unknown door 'D9'"]


def test_door_on_no_lane() -> None:
    data = small_map()
    data["doors"].append({"name": "D2", "kind": "automatic", "open_time": 3, "close_time": 3})
    assert issues(data) == [f"{SRC}: doors[1]: door 'D2' is not on any lane"]


def test_bad_door_kind() -> None:
    data = small_map()
    data["doors"][0]["kind"] = "revolving"
    assert issues(data) == [
        f"{SRC}: doors[0].kind: expected automatic, access_controlled or fire, got text 'revolving'"
    ]


# --- numbers -----------------------------------------------------------------------------------


def test_negative_length() -> None:
    data = small_map()
    data["lanes"][0]["length"] = -3
    assert issues(data) == [f"{SRC}: lanes[0].length: must be greater than 0, got -3"]


def test_zero_and_negative_speeds_times_and_capacities() -> None:
    data = small_map()
    data["lanes"][0]["speed_limit"] = 0
    data["doors"][0]["close_time"] = 0
    data["lifts"][0].update(capacity_robots=0, door_time=-4, speed=0.0, expected_wait=-1)
    data["stations"][0]["service_time"] = -5
    assert issues(data) == [
        f"{SRC}: doors[0].close_time: must be greater than 0, got 0",
        f"{SRC}: lanes[0].speed_limit: must be greater than 0, got 0",
        f"{SRC}: lifts[0].capacity_robots: "
        "expected a whole number of robots, at least 1, got int 0",
        f"{SRC}: lifts[0].door_time: must be greater than 0, got -4",
        f"{SRC}: lifts[0].speed: must be greater than 0, got 0.0",
        f"{SRC}: lifts[0].expected_wait: must be at least 0, got -1",
        f"{SRC}: stations[0].service_time: must be at least 0, got -5",
    ]


def test_non_finite_numbers() -> None:
    data = small_map()
    data["lanes"][0]["length"] = float("inf")
    assert issues(data) == [f"{SRC}: lanes[0].length: must be a finite number, got inf"]


# --- lifts -------------------------------------------------------------------------------------


def test_lift_serving_a_missing_level() -> None:
    data = small_map()
    data["lifts"][0]["lobbies"] = {"L1": "A", "L2": "D", "L3": "E"}
    assert issues(data) == [f"{SRC}: lifts[0].lobbies.L3: unknown level 'L3'"]


def test_lift_lobby_unknown_node_or_on_another_level() -> None:
    data = small_map()
    data["lifts"][0]["lobbies"] = {"L1": "NOPE", "L2": "B"}
    assert issues(data) == [
        f"{SRC}: lifts[0].lobbies.L1: unknown node 'NOPE'",
        f"{SRC}: lifts[0].lobbies.L2: node 'B' is on level L1, not L2",
    ]


def test_lift_serving_one_level() -> None:
    data = small_map()
    data["lifts"][0]["lobbies"] = {"L1": "A"}
    assert issues(data) == [f"{SRC}: lifts[0].lobbies: a lift must serve at least 2 levels, got 1"]


def test_lift_initial_level_not_served() -> None:
    data = small_map()
    data["lifts"][0]["initial_level"] = "L9"
    assert issues(data) == [
        f"{SRC}: lifts[0].initial_level: level 'L9' is not served by this lift (serves L1, L2)"
    ]


# --- stations ----------------------------------------------------------------------------------


def test_unknown_station_kind_and_node() -> None:
    data = small_map()
    data["stations"][0]["kind"] = "kitchen"
    data["stations"][1]["node"] = "NOWHERE"
    assert issues(data) == [
        f"{SRC}: stations[0].kind: unknown station kind 'kitchen' (expected one of: "
        "warehouse_port, pharmacy, sterile_core, or, ward, waste, soiled_utility, dispenser, "
        "charger, parking)",
        f"{SRC}: stations[1].node: unknown node 'NOWHERE'",
    ]


def test_unreachable_station_is_named() -> None:
    data = small_map()
    data["levels"][1]["nodes"]["F"] = [20, 20]
    data["stations"].append({"name": "ISLAND", "kind": "parking", "node": "F"})
    assert issues(data) == [
        f"{SRC}: stations[2]: station 'ISLAND' is unreachable: "
        "no route to or from the other stations (e.g. 'S1')"
    ]


def test_one_way_dead_end_and_one_way_entry_are_unreachable() -> None:
    data = small_map()
    data["levels"][1]["nodes"].update(F=[20, 0], G=[0, 9])
    data["lanes"].append({"start": "E", "end": "F", "bidirectional": False})  # in, no way out
    data["lanes"].append({"start": "G", "end": "D", "bidirectional": False})  # out, no way in
    data["stations"].append({"name": "TRAP", "kind": "parking", "node": "F"})
    data["stations"].append({"name": "SOURCE", "kind": "parking", "node": "G"})
    assert issues(data) == [
        f"{SRC}: stations[2]: station 'TRAP' is unreachable: "
        "no route from it to the other stations (e.g. 'S1')",
        f"{SRC}: stations[3]: station 'SOURCE' is unreachable: "
        "no route to it from the other stations (e.g. 'S1')",
    ]


def test_reachability_ignores_access() -> None:
    data = small_map()
    data["lanes"][0]["access"] = "clean"
    data["lanes"][2]["access"] = "dirty"
    data["lifts"][0]["access"] = "dirty"
    parse_building(data, SRC)  # some robot can make each trip, so the map is fine


# --- traffic: exclusive nodes and lanes, zones, holding points, fire doors, lift banks ----------


def test_traffic_keys_default_to_nothing_exclusive_but_the_lobbies() -> None:
    building = parse_building(small_map(), SRC)
    assert all(not lane.exclusive and lane.zone is None for lane in building.lanes)
    assert building.exclusive_nodes == {"A", "D"}  # the lift's lobbies
    assert building.holding_points == frozenset()
    lift = building.lifts["LIFT"]
    assert (lift.shares_with_people, lift.bank, lift.recall_level) == (True, "", "L1")
    assert lift.fire_recall_level == "L1"


def test_exclusive_lanes_zones_nodes_and_holding_points_load() -> None:
    data = small_map()
    data["levels"][0]["nodes"].update(F=[20, 0], G=[20, 5])
    data["lanes"][0]["exclusive"] = True
    data["lanes"][1]["exclusive"] = False
    data["lanes"] += [
        {"start": "B", "end": "F", "zone": "NARROW"},
        {"start": "F", "end": "G", "zone": "NARROW", "exclusive": True},
    ]
    data["exclusive_nodes"] = ["C", "A"]  # A is a lobby anyway: harmless
    data["holding_points"] = ["B", "E"]
    building = parse_building(data, SRC)
    flags = [(lane.name, lane.exclusive, lane.zone) for lane in building.lanes]
    assert flags == [
        ("A--B", True, None),
        ("B--C", False, None),
        ("D--E", False, None),
        ("B--F", True, "NARROW"),  # a zone implies exclusive
        ("F--G", True, "NARROW"),
    ]
    assert building.exclusive_nodes == {"A", "C", "D"}
    assert building.holding_points == {"B", "E"}


def test_fire_door_kind() -> None:
    data = small_map()
    data["doors"][0]["kind"] = "Fire"
    assert parse_building(data, SRC).doors["D1"].kind is DoorKind.FIRE


def test_lift_people_bank_and_recall_level() -> None:
    data = small_map()
    data["lifts"][0].update(shares_with_people=False, bank="WEST", recall_level="L2")
    second = copy.deepcopy(data["lifts"][0])
    second.update(name="LIFT-2", shares_with_people=True)
    del second["recall_level"]
    data["lifts"].append(second)
    building = parse_building(data, SRC)
    lift, other = building.lifts["LIFT"], building.lifts["LIFT-2"]
    assert (lift.shares_with_people, lift.bank, lift.recall_level) == (False, "WEST", "L2")
    assert (other.shares_with_people, other.bank, other.recall_level) == (True, "WEST", "L1")


def test_bad_lane_traffic_keys() -> None:
    data = small_map()
    data["lanes"][0]["exclusive"] = "yes please"
    data["lanes"][1]["zone"] = ""
    data["lanes"][2].update(zone="Z", exclusive=False)
    data["lanes"].append({"start": "A", "end": "C", "zoen": "Z"})
    assert issues(data) == [
        f"{SRC}: lanes[0].exclusive: expected true or false, got text 'yes please'",
        f"{SRC}: lanes[1].zone: expected a zone name, got text ''",
        f"{SRC}: lanes[2].exclusive: a lane in zone 'Z' is exclusive; "
        "leave out exclusive or make it true",
        f"{SRC}: lanes[3].zoen: unknown key; did you mean 'zone'?",
    ]


def test_a_zone_on_two_levels() -> None:
    data = small_map()
    data["lanes"][0]["zone"] = "Z"
    data["lanes"][2]["zone"] = "Z"
    assert issues(data) == [
        f"{SRC}: lanes[2].zone: zone 'Z' is on level L1 (lanes[0]), this lane on L2; "
        "a zone is one stretch of corridor on one level"
    ]


def test_bad_exclusive_nodes_and_holding_points() -> None:
    data = small_map()
    data["exclusive_nodes"] = ["B", "NOPE", 7, "B"]
    data["holding_points"] = "C"
    assert issues(data) == [
        f"{SRC}: exclusive_nodes[1]: unknown node 'NOPE'",
        f"{SRC}: exclusive_nodes[2]: expected a node name, got int 7",
        f"{SRC}: exclusive_nodes[3]: node 'B' is listed twice (first at exclusive_nodes[0])",
        f"{SRC}: holding_points: expected a list, got text 'C'",
    ]


def test_a_holding_point_must_not_be_exclusive() -> None:
    data = small_map()
    data["exclusive_nodes"] = ["C", "B"]
    data["holding_points"] = ["E", "B", "A"]
    assert issues(data) == [
        f"{SRC}: holding_points[1]: node 'B' is exclusive (at exclusive_nodes[1]); "
        "a holding point must not be exclusive",
        f"{SRC}: holding_points[2]: node 'A' is a lift lobby (at lifts[0].lobbies.L1), and "
        "lobbies are exclusive; a holding point must not be exclusive",
    ]


def test_bad_lift_traffic_keys() -> None:
    data = small_map()
    data["lifts"][0].update(shares_with_people="no", bank=3, recall_level="L9", sharing=1)
    assert issues(data) == [
        f"{SRC}: lifts[0].sharing: unknown key (expected one of: name, lobbies, capacity_robots, "
        "door_time, speed, access, expected_wait, initial_level, shares_with_people, bank, "
        "recall_level)",
        f"{SRC}: lifts[0].recall_level: level 'L9' is not served by this lift (serves L1, L2)",
        f"{SRC}: lifts[0].shares_with_people: expected true or false, got text 'no'",
        f"{SRC}: lifts[0].bank: expected a bank name, got int 3",
    ]


def test_cars_of_a_bank_share_their_lobbies() -> None:
    data = small_map()
    data["lifts"][0]["bank"] = "WEST"
    data["lifts"].append(
        {
            "name": "LIFT-2",
            "lobbies": {"L1": "B", "L2": "D"},
            "capacity_robots": 1,
            "door_time": 4,
            "speed": 1.0,
            "bank": "WEST",
        }
    )
    assert issues(data) == [
        f"{SRC}: lifts[1].bank: lift 'LIFT-2' is in bank 'WEST' but does not serve the same "
        "lobbies as 'LIFT' (lifts[0]); cars of a bank share their lobbies"
    ]


def test_unknown_root_key_suggests_the_traffic_keys() -> None:
    data = small_map()
    data["exclusive_node"] = ["B"]
    data["holding_point"] = ["B"]
    assert issues(data) == [
        f"{SRC}: exclusive_node: unknown key; did you mean 'exclusive_nodes'?",
        f"{SRC}: holding_point: unknown key; did you mean 'holding_points'?",
    ]
