"""The acceptance point of the Open-RMF import: the digital twin on the imported demo clinic
(`maps/clinic.yaml`, from `tests/data/rmf/clinic.building.yaml` and `maps/clinic_overlay.yaml`),
with robots moving between its two levels through its lifts, delivers every order with no
conflicts."""

from __future__ import annotations

from pathlib import Path

from fleet.building.loader import load_building
from simulators.fast import run_simulation

CLINIC = Path(__file__).resolve().parents[2] / "maps" / "clinic.yaml"


def test_twin_on_the_imported_clinic_delivers_every_order_across_levels() -> None:
    building = load_building(CLINIC)
    result = run_simulation(
        building, robots=4, hours=0.5, seed=1, solve_time_limit_s=1.0, record_events=True
    )
    report = result.report
    orders = list(result.core.orders.values())
    assert report["orders_created"] == len(orders) > 10
    assert report["orders_delivered"] == report["orders_created"], report["failure_reasons"]
    assert report["orders_rejected"] == 0
    assert report["conflicts"] == 0
    assert report["safety_violations"] == 0
    # Supplies, drugs and waste are on L1, their destinations and the soiled-utility room on L2:
    # every order spans both levels, so every delivery rode a lift.
    level = building.level_of
    assert all(
        level(building.station_node(o.pickup_station))
        != level(building.station_node(o.dropoff_station))
        for o in orders
    )
    assert report["lift_rides"] > 0
    assert report["door_passes"] > 0
    # Both of the clinic's connected lifts carried robots.
    entered = {e.what.split()[2] for e in result.world.events if e.what.startswith("enter lift")}
    assert entered == set(building.lifts) == {"lift_1", "lift_25"}
