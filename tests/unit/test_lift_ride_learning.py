"""The dispatcher learns how long rides really take, not only how long the wait for a car is."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from fleet.building.loader import load_building
from fleet.dispatch import messages as m
from fleet.dispatch.core import CoreConfig
from fleet.domain.cargo import CargoClass
from fleet.planning.solver import solve
from simulators.fast import CLEAN_CLASSES, FastTwin
from simulators.robot import RobotSpec

MAP = Path(__file__).parents[1] / "data" / "maps" / "traffic_block.yaml"


def _rides(slow_factor: float) -> FastTwin:
    building = load_building(MAP)
    t = FastTwin(
        building,
        [RobotSpec("R1", CLEAN_CLASSES, "L1-PARK-1", capacity_slots=1)],
        config=CoreConfig(finished_retention_s=None, battery_drain_pct_per_s=0.0),
        solver=functools.partial(solve, time_limit_s=0.2, seed=1),
    )
    # The real cars are slower than the map says (the controller runs on its own physics).
    t.lifts.building = dataclasses.replace(
        building,
        lifts={
            name: dataclasses.replace(lift, speed_m_s=lift.speed_m_s / slow_factor)
            for name, lift in building.lifts.items()
        },
    )
    t.start()
    for i in range(6):
        pickup, dropoff = ("DOCK", "WARD") if i % 2 == 0 else ("WARD", "DOCK")
        t.handle(m.CreateOrder(pickup, dropoff, CargoClass.STERILE, 1))
        t.run_until(t.clock.now() + 3600, stop_when_done=True)
    return t


def test_rides_as_the_map_says_change_nothing() -> None:
    t = _rides(1.0)
    rides = sum(t.core.lift_ride_excess.observations(x) for x in ("LIFT-A", "LIFT-B"))
    assert rides >= 6
    assert t.core.lift_ride_excess.estimates() == {"LIFT-A": 0.0, "LIFT-B": 0.0}


def test_slow_rides_are_learned_and_planned_with() -> None:
    t = _rides(4.0)  # 4.5 m at 0.25 m/s instead of 1 m/s: 13.5 s longer per ride
    core = t.core
    learned = [x for x in ("LIFT-A", "LIFT-B") if core.lift_ride_excess.learned(x)]
    assert learned
    for lift in learned:
        assert 12.0 < core.lift_ride_excess.estimate(lift) < 15.0
        # Travel times now carry the slower ride on top of the learned wait for the car.
        assert core.graph.lift_waits[lift] == core.lift_waits.estimate(
            lift
        ) + core.lift_ride_excess.estimate(lift)
