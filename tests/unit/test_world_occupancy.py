"""The twin's physical occupancy of exclusive nodes, lanes and zones, and the conflicts it counts:
driven directly, and by simulated robots carrying out step commands in virtual time."""

from __future__ import annotations

import pytest

from fleet.building.model import Building, Lane, Level, Lift, Node
from fleet.clock import ManualClock
from fleet.domain.cargo import CargoClass
from fleet.v1 import robot_pb2
from simulators.robot import RobotSpec, SimRobot
from simulators.scheduling import VirtualLoop
from simulators.world import World


def building() -> Building:
    """L1: HOME-A, HOME-B - J - P (exclusive port); J - N1 - N2 a narrow zone; J - X one-way
    exclusive lane; J - LOBBY (lift to L2's TOP)."""
    nodes = {
        "HOME-A": Node("HOME-A", "L1", 0, 0),
        "HOME-B": Node("HOME-B", "L1", 0, 10),
        "J": Node("J", "L1", 10, 0),
        "P": Node("P", "L1", 20, 0),
        "N1": Node("N1", "L1", 10, 10),
        "N2": Node("N2", "L1", 10, 20),
        "X": Node("X", "L1", 10, -10),
        "LOBBY": Node("LOBBY", "L1", 0, -10),
        "TOP": Node("TOP", "L2", 0, -10),
    }
    return Building(
        name="occupancy",
        levels={"L1": Level("L1", 0.0), "L2": Level("L2", 4.0)},
        nodes=nodes,
        lanes=(
            Lane("HOME-A", "J", 10.0),
            Lane("HOME-B", "J", 10.0),
            Lane("J", "P", 10.0),
            Lane("J", "N1", 10.0, exclusive=True, zone="NARROW"),
            Lane("N1", "N2", 10.0, exclusive=True, zone="NARROW"),
            Lane("J", "X", 10.0, bidirectional=False, exclusive=True),
            Lane("J", "LOBBY", 10.0),
        ),
        doors={},
        lifts={"LIFT": Lift("LIFT", {"L1": "LOBBY", "L2": "TOP"}, 1, 4.0, 1.0)},
        stations={},
        exclusive_nodes=frozenset({"P"}),
        holding_points=frozenset({"J"}),
    )


# --- the World on its own ----------------------------------------------------------------------


def test_a_second_robot_on_a_resource_is_one_conflict() -> None:
    world = World(building(), count_exclusive_conflicts=True)
    world.occupy(1.0, "node:P", "R1")
    assert world.occupants("node:P") == {"R1"}
    assert (world.conflicts, world.exclusive_entries) == (0, 1)
    world.occupy(2.0, "node:P", "R1")  # still there: nothing new
    assert (world.conflicts, world.exclusive_entries) == (0, 1)
    world.occupy(3.0, "node:P", "R2")
    assert world.occupants("node:P") == {"R1", "R2"}
    assert (world.conflicts, world.exclusive_conflicts, world.exclusive_entries) == (1, 1, 2)
    assert world.occupancy_conflicts == ["3: R2 joined R1 on node:P"]
    world.occupy(4.0, "node:P", "R3")  # a third robot is another conflict, as at a door
    assert world.conflicts == 2
    for robot in ("R1", "R2", "R3"):
        world.vacate(5.0, "node:P", robot)
    assert world.occupants("node:P") == set()
    world.occupy(6.0, "node:P", "R2")
    assert (world.conflicts, world.exclusive_entries) == (2, 4)


def test_nothing_exclusive_is_nothing_to_do() -> None:
    world = World(building(), count_exclusive_conflicts=True)
    world.occupy(1.0, None, "R1")
    world.occupy(1.0, None, "R2")
    world.vacate(1.0, None, "R1")
    world.vacate(1.0, "node:P", "R1")  # not there: nothing to do
    assert (world.conflicts, world.exclusive_entries) == (0, 0)
    assert world.occupants("node:J") == set()


def test_occupancy_conflicts_count_in_conflicts_only_when_asked() -> None:
    world = World(building())
    world.occupy(1.0, "zone:NARROW", "R1")
    world.occupy(2.0, "zone:NARROW", "R2")
    assert (world.conflicts, world.exclusive_conflicts) == (0, 1)


def test_the_world_names_node_and_lane_resources() -> None:
    world = World(building())
    assert [world.node_resource(n) for n in ("P", "J", "LOBBY", "TOP")] == [
        "node:P",
        None,
        "node:LOBBY",
        "node:TOP",
    ]
    assert world.node_resource("NOWHERE") is None
    assert world.lane_resource("N2", "N1") == "zone:NARROW"
    assert world.lane_resource("J", "X") == "lane:J->X"
    assert world.lane_resource("X", "J") is None  # no lane that way: not an occupancy question
    assert world.lane_resource("J", "P") is None


# --- simulated robots --------------------------------------------------------------------------


class Fleet:
    """Simulated robots on `building()` in virtual time, with what they sent."""

    def __init__(self) -> None:
        self.loop = VirtualLoop(ManualClock(1000.0))
        self.world = World(building(), count_exclusive_conflicts=True)
        self.sent: list[robot_pb2.RobotMessage] = []
        self.robots: dict[str, SimRobot] = {}
        self.step_id = 0

    def robot(self, rid: str, node: str) -> SimRobot:
        spec = RobotSpec(rid, frozenset({CargoClass.STERILE}), node)
        robot = SimRobot(spec, self.world.building, self.world, self.loop, self.sent.append)
        robot.connect()
        self.robots[rid] = robot
        return robot

    def step(self, rid: str, **kind: object) -> None:
        self.step_id += 1
        msg = robot_pb2.DispatcherMessage(
            step=robot_pb2.StepCommand(step_id=self.step_id, **kind)  # type: ignore[arg-type]
        )
        self.robots[rid].receive(msg)

    def move(self, rid: str, start: str, end: str) -> None:
        self.step(rid, move=robot_pb2.MoveStep(from_node=start, to_node=end, distance_m=10.0))

    def run(self, seconds: float) -> None:
        self.loop.run_until(self.loop.now() + seconds)


def test_a_robot_takes_its_start_node_and_moves_node_lane_node() -> None:
    fleet = Fleet()
    world = fleet.world
    fleet.robot("R1", "P")
    assert world.occupants("node:P") == {"R1"}
    fleet.move("R1", "P", "J")
    assert world.occupants("node:P") == set()  # off the node as soon as it drives
    fleet.run(11)
    fleet.move("R1", "J", "N1")
    assert world.occupants("zone:NARROW") == {"R1"}
    fleet.run(11)
    assert world.occupants("zone:NARROW") == set()  # N1 itself is not exclusive
    fleet.move("R1", "N1", "N2")
    fleet.run(5)
    assert world.occupants("zone:NARROW") == {"R1"}
    fleet.run(6)
    assert fleet.robots["R1"].node == "N2"
    assert world.exclusive_entries == 3  # P, the zone twice
    assert world.conflicts == 0


def test_two_robots_in_a_zone_is_a_conflict_counted_when_the_second_arrives() -> None:
    fleet = Fleet()
    fleet.robot("R1", "N2")
    fleet.robot("R2", "J")
    fleet.move("R1", "N2", "N1")
    fleet.run(5)
    assert fleet.world.conflicts == 0
    fleet.move("R2", "J", "N1")  # the other lane of the same zone
    assert fleet.world.conflicts == 1
    assert fleet.world.occupants("zone:NARROW") == {"R1", "R2"}
    fleet.run(20)
    assert fleet.world.occupants("zone:NARROW") == set()
    assert fleet.world.conflicts == 1


def test_arriving_on_an_occupied_node_is_a_conflict() -> None:
    fleet = Fleet()
    fleet.robot("R1", "P")
    fleet.robot("R2", "J")
    fleet.move("R2", "J", "P")
    fleet.run(5)
    assert fleet.world.conflicts == 0  # still on the lane
    fleet.run(6)
    assert fleet.world.conflicts == 1
    assert fleet.world.occupancy_conflicts == ["1010: R2 joined R1 on node:P"]


def test_robots_starting_on_one_exclusive_node_conflict_at_connect() -> None:
    fleet = Fleet()
    fleet.robot("R1", "P")
    fleet.robot("R2", "P")
    assert fleet.world.conflicts == 1


def test_the_lift_lobby_is_left_on_entering_and_taken_on_exiting() -> None:
    fleet = Fleet()
    world = fleet.world
    robot = fleet.robot("R1", "LOBBY")
    assert world.occupants("node:LOBBY") == {"R1"}
    car = world.lifts["LIFT"]
    car.door_open, car.session_id = True, "S1"
    fleet.step(
        "R1", enter_lift=robot_pb2.EnterLiftStep(lift_id="LIFT", level="L1", session_id="S1")
    )
    assert world.occupants("node:LOBBY") == set()
    fleet.run(6)
    car.level = "L2"
    fleet.step("R1", exit_lift=robot_pb2.ExitLiftStep(lift_id="LIFT", level="L2", to_node="TOP"))
    assert world.occupants("node:TOP") == {"R1"}  # driving out of the car is driving into it
    fleet.run(6)
    assert (robot.node, robot.lift) == ("TOP", None)
    assert world.occupants("node:TOP") == {"R1"}
    assert (world.exclusive_entries, world.conflicts, world.violations) == (2, 0, [])


def test_an_offline_robot_stays_in_the_way() -> None:
    fleet = Fleet()
    robot = fleet.robot("R1", "P")
    robot.disconnect()
    assert fleet.world.occupants("node:P") == {"R1"}
    fleet.robot("R2", "J")
    fleet.move("R2", "J", "P")
    fleet.run(11)
    assert fleet.world.conflicts == 1
    robot.connect()  # back online where it stood: not a new entry
    assert fleet.world.exclusive_entries == 2


@pytest.mark.parametrize("how", ["disconnect", "cancel"])
def test_a_robot_stopped_on_a_lane_is_back_on_its_start_node(how: str) -> None:
    fleet = Fleet()
    on_port = fleet.robot("R1", "P")
    on_junction = fleet.robot("R2", "J")
    fleet.move("R1", "P", "J")
    fleet.move("R2", "J", "X")
    fleet.run(2)
    assert fleet.world.occupants("node:P") == set()
    assert fleet.world.occupants("lane:J->X") == {"R2"}
    for robot in (on_port, on_junction):
        if how == "disconnect":
            robot.disconnect()
        else:
            cancel = robot_pb2.InstantAction(
                action_id=1, type=robot_pb2.INSTANT_ACTION_TYPE_CANCEL_STEP
            )
            robot.receive(robot_pb2.DispatcherMessage(action=cancel))
    fleet.run(20)
    assert (on_port.node, on_junction.node) == ("P", "J")
    assert fleet.world.occupants("node:P") == {"R1"}
    assert fleet.world.occupants("lane:J->X") == set()
    assert fleet.world.conflicts == 0
