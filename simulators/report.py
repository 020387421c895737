"""Reading a run's step log: which deliveries crossed doors and rode lifts."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from fleet.dispatch.messages import StepRecord


@dataclass
class DeliveryPath:
    """What an order went through between its pick-up and its drop-off."""

    doors: int = 0
    lift_rides: int = 0
    delivered: bool = False


def delivery_paths(step_log: list[StepRecord]) -> dict[str, DeliveryPath]:
    """For each order picked up in `step_log`: doors crossed and lift rides made while on board."""
    on_board: dict[str, set[str]] = defaultdict(set)
    paths: dict[str, DeliveryPath] = {}
    for rec in step_log:
        carried = on_board[rec.robot_id]
        if rec.kind == "PICKUP":
            for oid in rec.order_ids:
                carried.add(oid)
                paths[oid] = DeliveryPath()
        elif rec.kind == "DOOR_CLOSE":
            for oid in carried:
                paths[oid].doors += 1
        elif rec.kind == "LIFT_RIDE":
            for oid in carried:
                paths[oid].lift_rides += 1
        elif rec.kind == "DROPOFF":
            for oid in rec.order_ids:
                carried.discard(oid)
                paths[oid].delivered = True
        elif rec.kind == "OFFLINE":
            carried.clear()
    return paths


def door_and_lift_deliveries(step_log: list[StepRecord]) -> int:
    """How many deliveries crossed at least one door and rode at least one lift."""
    return sum(
        1 for p in delivery_paths(step_log).values() if p.delivered and p.doors and p.lift_rides
    )
