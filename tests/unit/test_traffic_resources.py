"""Names of exclusive resources: doors, lift cars, exclusive nodes and lanes, zones."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.building.loader import load_building
from fleet.building.model import Building, Door, DoorKind, Lane, Level, Lift, Node
from fleet.traffic.resources import (
    TrafficResources,
    door_resource,
    exclusive_capacities,
    lane_resource,
    lift_resource,
    node_resource,
    resource_of_lane,
    zone_resource,
)

DEMO = Path(__file__).resolve().parents[2] / "maps" / "demo_hospital.yaml"


def small() -> Building:
    """L1: A-B-C-D in a row, C-E off it; L2: F. Lift between A and F."""
    nodes = {
        "A": Node("A", "L1", 0, 0),
        "B": Node("B", "L1", 10, 0),
        "C": Node("C", "L1", 20, 0),
        "D": Node("D", "L1", 30, 0),
        "E": Node("E", "L1", 20, 10),
        "F": Node("F", "L2", 0, 0),
    }
    return Building(
        name="small",
        levels={"L1": Level("L1", 0.0), "L2": Level("L2", 4.0)},
        nodes=nodes,
        lanes=(
            Lane("A", "B", 10.0),
            Lane("B", "C", 10.0, zone="NARROW", exclusive=True),
            Lane("C", "D", 10.0, zone="NARROW", exclusive=True),
            Lane("C", "E", 10.0, bidirectional=False, exclusive=True, door="DE"),
        ),
        doors={"DE": Door("DE", DoorKind.FIRE, 2.0, 2.0)},
        lifts={"LIFT": Lift("LIFT", {"L1": "A", "L2": "F"}, 1, 4.0, 1.0)},
        stations={},
        exclusive_nodes=frozenset({"E"}),
        holding_points=frozenset({"B"}),
    )


def test_names_of_doors_lifts_and_zones() -> None:
    assert door_resource("D-1") == "door:D-1"
    assert lift_resource("LIFT-CLEAN") == "lift:LIFT-CLEAN"
    assert zone_resource("Z") == "zone:Z"


def test_lobbies_are_exclusive_even_in_a_building_built_by_hand() -> None:
    b = small()
    assert b.exclusive_nodes == {"A", "E", "F"}
    assert [node_resource(b, n) for n in "ABCDEF"] == [
        "node:A",
        None,
        None,
        None,
        "node:E",
        "node:F",
    ]
    with pytest.raises(KeyError):
        node_resource(b, "Z")


def test_lane_resources_in_the_direction_driven() -> None:
    res = TrafficResources(small())
    assert res.lane_resource("A", "B") is None
    assert res.lane_resource("B", "A") is None
    assert res.lane_resource("B", "C") == "zone:NARROW"
    assert res.lane_resource("D", "C") == "zone:NARROW"  # the zone, whichever of its lanes
    assert res.lane_resource("C", "E") == "lane:C->E"
    with pytest.raises(KeyError, match="no lane from 'E' to 'C'"):
        res.lane_resource("E", "C")  # one-way
    with pytest.raises(KeyError):
        res.lane_resource("A", "C")  # no lane joins them
    assert lane_resource(small(), "C", "B") == "zone:NARROW"
    assert res.lane("D", "C").name == "C--D"


def test_a_zone_lane_is_named_by_its_zone_even_when_not_flagged_exclusive() -> None:
    assert resource_of_lane(Lane("A", "B", 1.0, zone="Z")) == "zone:Z"
    assert resource_of_lane(Lane("A", "B", 1.0, exclusive=True)) == "lane:A--B"
    assert resource_of_lane(Lane("A", "B", 1.0)) is None


def test_capacities_list_every_exclusive_resource_once() -> None:
    b = small()
    expected = {
        "door:DE": 1,
        "lift:LIFT": 1,
        "node:A": 1,
        "node:E": 1,
        "node:F": 1,
        "zone:NARROW": 1,
        "lane:C->E": 1,
    }
    assert exclusive_capacities(b) == expected
    assert TrafficResources(b).exclusive_capacities() == expected
    res = TrafficResources(b)
    assert (res.door_resource("DE"), res.lift_resource("LIFT"), res.node_resource("E")) == (
        "door:DE",
        "lift:LIFT",
        "node:E",
    )


def test_demo_hospital_resources() -> None:
    b = load_building(DEMO)
    res = TrafficResources(b)
    caps = res.exclusive_capacities()
    assert set(caps.values()) == {1}
    for lift in b.lifts.values():
        for lobby in lift.lobbies.values():
            assert res.node_resource(lobby) == f"node:{lobby}"
    for docking in ("B1-WH-PORT-1", "B1-WH-PORT-2", "B1-PHARMACY"):
        assert f"node:{docking}" in caps
    assert res.lane_resource("B1-WASTE-YARD", "B1-WASTE-CORR") == "zone:WASTE-CORRIDOR"
    assert res.lane_resource("B1-C-00", "B1-C-01") is None  # the wide basement corridor
    assert not b.holding_points & b.exclusive_nodes
