"""Order streams for the digital twin: who asks for what, from where to where, how urgently.

A workload is a seeded generator of (time, CreateOrder) pairs: the same seed gives the same
hospital day.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from fleet.building.model import Building, StationKind
from fleet.dispatch.messages import CreateOrder
from fleet.domain.cargo import CargoClass
from fleet.domain.priority import Priority


@dataclass(frozen=True)
class TimedOrder:
    """An order and the simulated time it is placed.

    Order ids are only known once the dispatcher accepts an order, so a return leg names its
    outbound by a tag: `tag` labels an order of the workload, and `return_of_tag` makes this one
    the return of the order with that tag. The twin (`FastTwin.place`) fills in
    `CreateOrder.return_of` with the outbound's id when it places the return.
    """

    at: float
    order: CreateOrder
    tag: str = ""
    return_of_tag: str = ""


KG_PER_SLOT: dict[CargoClass, float] = {
    CargoClass.STERILE: 5.0,
    CargoClass.CLEAN: 4.0,
    CargoClass.LINEN: 3.0,
    CargoClass.SOILED: 6.0,
    CargoClass.WASTE: 8.0,
    CargoClass.CONTROLLED_DRUG: 1.0,
}
"""Typical weight of one compartment slot of each cargo class: the workloads' order weights
(a fixed table rather than a draw, so adding weights changed no seeded workload)."""


def weight_kg(cargo: CargoClass, quantity: int) -> float:
    """The weight the workloads give `quantity` slots of `cargo`."""
    return KG_PER_SLOT[cargo] * quantity


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
            cargo = rng.choice(line.cargo)
            quantity = rng.randint(*line.quantity)
            out.append(
                TimedOrder(
                    at=t,
                    order=CreateOrder(
                        pickup_station=rng.choice(pickups),
                        dropoff_station=rng.choice(drops),
                        cargo_class=cargo,
                        quantity=quantity,
                        priority=priority,
                        needed_by=t + minutes * 60.0,
                        requested_by="sim-nurse",
                        weight_kg=weight_kg(cargo, quantity),
                    ),
                )
            )
    out.sort(key=lambda o: o.at)
    return out


# ---- the hospital day ---------------------------------------------------------------------------

DAY_S = 86_400.0
HOUR_S = 3_600.0
MIN_S = 60.0


def _hour_of_day(t: float) -> float:
    """Hour of the (UTC) day of absolute time `t`, in [0, 24)."""
    return (t % DAY_S) / HOUR_S


def _day_starts(start: float, end: float) -> list[float]:
    """Midnights (UTC) of every day that overlaps [start, end)."""
    first = start - start % DAY_S
    days = []
    d = first
    while d < end:
        days.append(d)
        d += DAY_S
    return days


@dataclass
class _DayBuilder:
    """Collects the orders of a hospital day inside [start, end), drawing from one RNG."""

    building: Building
    start: float
    end: float
    rng: random.Random
    out: list[TimedOrder]
    tags: set[str] = field(default_factory=set)  # tags of the orders kept

    def stations(self, *kinds: StationKind) -> list[str]:
        return _stations(self.building, kinds)

    def add(
        self,
        at: float,
        pickup: str,
        dropoff: str,
        cargo: CargoClass,
        quantity: int,
        priority: Priority,
        needed_by: float,
        note: str,
        tag: str = "",
        return_of_tag: str = "",
    ) -> None:
        """Keep the order if it is placed inside the run; needed-by never before placement.

        `tag` / `return_of_tag`: see `TimedOrder`. A return whose outbound fell before the
        run is an ordinary order (its drugs were sent before the twin started)."""
        if not self.start <= at < self.end:
            return
        if tag:
            self.tags.add(tag)
        if return_of_tag not in self.tags:
            return_of_tag = ""
        self.out.append(
            TimedOrder(
                at=at,
                order=CreateOrder(
                    pickup_station=pickup,
                    dropoff_station=dropoff,
                    cargo_class=cargo,
                    quantity=quantity,
                    priority=priority,
                    needed_by=max(needed_by, at + 5 * MIN_S),
                    requested_by="sim-hospital-day",
                    note=note,
                    weight_kg=weight_kg(cargo, quantity),
                ),
                tag=tag,
                return_of_tag=return_of_tag,
            )
        )

    def poisson(self, t0: float, t1: float, rate_per_h: float) -> list[float]:
        """Arrival times of a Poisson process of `rate_per_h` on [t0, t1)."""
        times: list[float] = []
        if rate_per_h <= 0:
            return times
        t = t0
        while True:
            t += self.rng.expovariate(rate_per_h / HOUR_S)
            if t >= t1:
                return times
            times.append(t)


def hospital_day_workload(
    building: Building, start: float, hours: float, seed: int
) -> list[TimedOrder]:
    """A realistic hospital day (or several), seeded; orders placed in [start, start + hours).

    Times of day are UTC hours of the absolute time (the twin starts at 07:00, `SIM_EPOCH`), so a
    24-hour run from 07:00 covers a full day shift, the evening and the night. What it holds:

    - Surgery: each OR runs cases from about 08:00 until no case can start after 16:00 (60-180
      minutes each, 30 minutes turnover). Per case: a sterile kit from STERILE-CORE (or a
      warehouse port when the map has no sterile core) needed 30-60 minutes before the case and
      ordered 45-75 minutes before that; consumables from a warehouse port for half the cases;
      the controlled drugs from PHARMACY needed 15-30 minutes before the case; the return of
      the unused drugs to PHARMACY 5-20 minutes after the case (needed back within an hour), a
      real return leg (`TimedOrder.return_of_tag`: on the robot and in the compartment that
      brought them);
      for a quarter of the cases an URGENT intra-operative request (needed in 30-45 minutes).
    - Wards: replenishment of clean supplies and linen from the warehouse, two rounds a day
      (08:00-11:00 and 13:00-16:00, about 2.5 orders an hour per ward, a fifth of them URGENT),
      and about one order an hour in all in the evening and at night.
    - Gowns and shoes: the RFID dispensers restocked with linen at 06:30, 11:30 and 17:30.
    - STAT: needed within 15-20 minutes, any time of day (about 4 % of all orders): instruments
      from the sterile core, supplies to an OR or a ward, controlled drugs to an OR.
    - Waste rounds: every two hours, every soiled-utility room sends its waste (and, half the
      time, soiled linen) to the waste station, needed within the hour.

    Every order weighs `KG_PER_SLOT` per slot. Stations the map lacks are left out. The same
    seed gives the same day.
    """
    rng = random.Random(seed)
    end = start + hours * HOUR_S
    day = _DayBuilder(building, start, end, rng, [])
    for midnight in _day_starts(start, end):
        _surgery(day, midnight)
        _wards(day, midnight)
        _dispensers(day, midnight)
        _waste_rounds(day, midnight)
    _stat_orders(day, start, end, len(day.out))
    day.out.sort(key=lambda o: (o.at, o.order.pickup_station, o.order.dropoff_station))
    return day.out


def _surgery(day: _DayBuilder, midnight: float) -> None:
    rng = day.rng
    ors = day.stations(StationKind.OR)
    kits = day.stations(StationKind.STERILE_CORE) or day.stations(StationKind.WAREHOUSE_PORT)
    ports = day.stations(StationKind.WAREHOUSE_PORT)
    pharmacy = day.stations(StationKind.PHARMACY)
    for room in ors:
        case = midnight + 8 * HOUR_S + rng.uniform(0, 15) * MIN_S
        while case <= midnight + 16 * HOUR_S:
            length = rng.uniform(60, 180) * MIN_S
            if kits:
                kit_by = case - rng.uniform(30, 60) * MIN_S
                day.add(
                    kit_by - rng.uniform(45, 75) * MIN_S,
                    rng.choice(kits),
                    room,
                    CargoClass.STERILE,
                    rng.randint(1, 2),
                    Priority.ROUTINE,
                    kit_by,
                    "sterile kit",
                )
            if ports and rng.random() < 0.5:
                by = case - rng.uniform(20, 40) * MIN_S
                day.add(
                    by - rng.uniform(45, 75) * MIN_S,
                    rng.choice(ports),
                    room,
                    CargoClass.CLEAN,
                    rng.randint(1, 3),
                    Priority.ROUTINE,
                    by,
                    "case consumables",
                )
            if pharmacy:
                drug_by = case - rng.uniform(15, 30) * MIN_S
                day.add(
                    drug_by - rng.uniform(40, 60) * MIN_S,
                    pharmacy[0],
                    room,
                    CargoClass.CONTROLLED_DRUG,
                    1,
                    Priority.ROUTINE,
                    drug_by,
                    "controlled drugs for the case",
                    tag=f"drugs {room} {case:.0f}",
                )
                back_at = case + length + rng.uniform(5, 20) * MIN_S
                # The return leg of those drugs: same robot, same compartment, back to the
                # pharmacy that issued them.
                day.add(
                    back_at,
                    room,
                    pharmacy[0],
                    CargoClass.CONTROLLED_DRUG,
                    1,
                    Priority.ROUTINE,
                    back_at + 60 * MIN_S,
                    "controlled drugs returned",
                    return_of_tag=f"drugs {room} {case:.0f}",
                )
            if ports and rng.random() < 0.25:
                at = case + rng.uniform(0.2, 0.8) * length
                day.add(
                    at,
                    rng.choice(ports),
                    room,
                    rng.choice((CargoClass.STERILE, CargoClass.CLEAN)),
                    1,
                    Priority.URGENT,
                    at + rng.uniform(30, 45) * MIN_S,
                    "intra-operative request",
                )
            case += length + 30 * MIN_S


def _wards(day: _DayBuilder, midnight: float) -> None:
    rng = day.rng
    ports = day.stations(StationKind.WAREHOUSE_PORT)
    wards = day.stations(StationKind.WARD)
    if not ports or not wards:
        return
    # (from hour, to hour, orders per hour per ward); the night runs into the next morning.
    windows = ((8.0, 11.0, 2.5), (13.0, 16.0, 2.5), (0.0, 8.0, 1.0 / 3), (16.0, 24.0, 1.0 / 3))
    for ward in wards:
        for h0, h1, rate in windows:
            for at in day.poisson(midnight + h0 * HOUR_S, midnight + h1 * HOUR_S, rate):
                urgent = rng.random() < 0.2
                day.add(
                    at,
                    rng.choice(ports),
                    ward,
                    rng.choice((CargoClass.CLEAN, CargoClass.LINEN)),
                    rng.randint(1, 3),
                    Priority.URGENT if urgent else Priority.ROUTINE,
                    at + (rng.uniform(30, 45) if urgent else rng.uniform(90, 150)) * MIN_S,
                    "ward replenishment",
                )


def _dispensers(day: _DayBuilder, midnight: float) -> None:
    rng = day.rng
    ports = day.stations(StationKind.WAREHOUSE_PORT)
    if not ports:
        return
    for dispenser in day.stations(StationKind.DISPENSER):
        for hour in (6.5, 11.5, 17.5):
            at = midnight + hour * HOUR_S + rng.uniform(0, 10) * MIN_S
            day.add(
                at,
                rng.choice(ports),
                dispenser,
                CargoClass.LINEN,
                rng.randint(2, 4),
                Priority.ROUTINE,
                at + 90 * MIN_S,
                "gown and shoe restock",
            )


def _waste_rounds(day: _DayBuilder, midnight: float) -> None:
    rng = day.rng
    waste = day.stations(StationKind.WASTE)
    rooms = day.stations(StationKind.SOILED_UTILITY)
    if not waste or not rooms:
        return
    for hour in range(0, 24, 2):
        busy = 7 <= hour < 19
        for room in rooms:
            at = midnight + hour * HOUR_S + rng.uniform(0, 10) * MIN_S
            day.add(
                at,
                room,
                waste[0],
                CargoClass.WASTE,
                rng.randint(1, 3) if busy else 1,
                Priority.ROUTINE,
                at + 60 * MIN_S,
                "waste round",
            )
            if rng.random() < 0.5:
                day.add(
                    at,
                    room,
                    waste[0],
                    CargoClass.SOILED,
                    rng.randint(1, 2),
                    Priority.ROUTINE,
                    at + 60 * MIN_S,
                    "soiled linen round",
                )


def _stat_orders(day: _DayBuilder, start: float, end: float, others: int) -> None:
    """About 4 % of all orders, spread with the day's activity (day three times the night)."""
    rng = day.rng
    ors = day.stations(StationKind.OR)
    wards = day.stations(StationKind.WARD)
    ports = day.stations(StationKind.WAREHOUSE_PORT)
    core = day.stations(StationKind.STERILE_CORE)
    pharmacy = day.stations(StationKind.PHARMACY)
    kinds: list[tuple[list[str], list[str], tuple[CargoClass, ...], str]] = [
        (core, ors, (CargoClass.STERILE,), "STAT instruments"),
        (ports, ors, (CargoClass.STERILE, CargoClass.CLEAN), "STAT supplies"),
        (ports, wards, (CargoClass.CLEAN,), "STAT ward supplies"),
        (pharmacy, ors, (CargoClass.CONTROLLED_DRUG,), "STAT controlled drug"),
    ]
    usable = [k for k in kinds if k[0] and k[1]]
    if not usable or end <= start:
        return
    # Thinning: candidates at the day rate, kept with probability 1 (day) or 1/3 (night).
    hours = (end - start) / HOUR_S
    wanted = others * 0.04 / 0.96
    weight = sum(
        1.0 if 7 <= _hour_of_day(start + (i + 0.5) * 60) < 19 else 1 / 3
        for i in range(int(hours * 60))
    ) / max(1.0, hours * 60)
    rate_per_h = wanted / max(hours * weight, 1e-9)
    for at in day.poisson(start, end, rate_per_h):
        if not 7 <= _hour_of_day(at) < 19 and rng.random() >= 1 / 3:
            continue
        pickups, drops, cargo, note = rng.choice(usable)
        day.add(
            at,
            rng.choice(pickups),
            rng.choice(drops),
            rng.choice(cargo),
            1,
            Priority.STAT,
            at + rng.uniform(15, 20) * MIN_S,
            note,
        )


WorkloadFn = Callable[[Building, float, float, int], list[TimedOrder]]


def _standard(building: Building, start: float, hours: float, seed: int) -> list[TimedOrder]:
    return standard_workload(building, start, hours, seed)


WORKLOADS: dict[str, WorkloadFn] = {
    "standard": _standard,
    "hospital-day": hospital_day_workload,
}
"""Workload name -> generator `(building, start, hours, seed) -> orders` (standard at scale 1)."""
