"""Order streams for the digital twin: who asks for what, from where to where, how urgently.

A workload is a seeded generator of (time, CreateOrder) pairs: the same seed gives the same
hospital day.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from fleet.building.model import Building, StationKind
from fleet.dispatch.messages import CreateOrder
from fleet.domain.cargo import CargoClass
from fleet.domain.priority import Priority


@dataclass(frozen=True)
class TimedOrder:
    """An order and the simulated time it is placed."""

    at: float
    order: CreateOrder


@dataclass(frozen=True)
class Flowline:
    """One kind of recurring order: from stations of one kind to stations of another."""

    rate_per_h: float
    pickup_kinds: tuple[StationKind, ...]
    dropoff_kinds: tuple[StationKind, ...]
    cargo: tuple[CargoClass, ...]
    quantity: tuple[int, int]


# About 48 orders an hour in all: a busy surgical day for ten robots.
STANDARD: tuple[Flowline, ...] = (
    Flowline(
        18.0,
        (StationKind.WAREHOUSE_PORT,),
        (StationKind.OR,),
        (CargoClass.STERILE, CargoClass.CLEAN),
        (1, 3),
    ),
    Flowline(
        9.0,
        (StationKind.WAREHOUSE_PORT,),
        (StationKind.WARD,),
        (CargoClass.CLEAN, CargoClass.LINEN),
        (1, 3),
    ),
    Flowline(6.0, (StationKind.STERILE_CORE,), (StationKind.OR,), (CargoClass.STERILE,), (1, 2)),
    Flowline(
        3.0, (StationKind.WAREHOUSE_PORT,), (StationKind.DISPENSER,), (CargoClass.LINEN,), (2, 4)
    ),
    Flowline(
        4.5, (StationKind.PHARMACY,), (StationKind.OR,), (CargoClass.CONTROLLED_DRUG,), (1, 1)
    ),
    Flowline(
        7.5,
        (StationKind.SOILED_UTILITY,),
        (StationKind.WASTE,),
        (CargoClass.WASTE, CargoClass.SOILED),
        (1, 3),
    ),
)

# (priority, share, minutes from creation to needed-by)
PRIORITIES = (
    (Priority.STAT, 0.05, 20.0),
    (Priority.URGENT, 0.20, 45.0),
    (Priority.ROUTINE, 0.75, 120.0),
)


def _stations(building: Building, kinds: tuple[StationKind, ...]) -> list[str]:
    return sorted(n for n, s in building.stations.items() if s.kind in kinds)


def standard_workload(
    building: Building, start: float, hours: float, seed: int, scale: float = 1.0
) -> list[TimedOrder]:
    """A day of material, sterile, linen, controlled-drug and waste orders.

    Arrivals are Poisson per flowline; `scale` multiplies every rate (more robots, more work).
    Flowlines whose stations the map does not have are left out.
    """
    rng = random.Random(seed)
    out: list[TimedOrder] = []
    end = start + hours * 3600.0
    for line in STANDARD:
        pickups = _stations(building, line.pickup_kinds)
        drops = _stations(building, line.dropoff_kinds)
        if not pickups or not drops:
            continue
        rate = line.rate_per_h * scale / 3600.0
        t = start
        while True:
            t += rng.expovariate(rate)
            if t >= end:
                break
            roll = rng.random()
            acc = 0.0
            priority, minutes = Priority.ROUTINE, 120.0
            for p, share, mins in PRIORITIES:
                acc += share
                if roll < acc:
                    priority, minutes = p, mins
                    break
            out.append(
                TimedOrder(
                    at=t,
                    order=CreateOrder(
                        pickup_station=rng.choice(pickups),
                        dropoff_station=rng.choice(drops),
                        cargo_class=rng.choice(line.cargo),
                        quantity=rng.randint(*line.quantity),
                        priority=priority,
                        needed_by=t + minutes * 60.0,
                        requested_by="sim-nurse",
                    ),
                )
            )
    out.sort(key=lambda o: o.at)
    return out
