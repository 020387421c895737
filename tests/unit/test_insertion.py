"""The cheap insertion that answers a new order at once (`fleet.planning.insertion`).

Travel is faked: nodes "n0".."n9" stand on a line 10 m apart, so travel is |i - j| * 10 / speed
seconds. A brute-force reference enumerates every insertion and simulates it from scratch; the
property tests check that `insert_task` finds its optimum and that every answer keeps the rules.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fleet.domain.cargo import CargoClass, Flow, flow_of
from fleet.domain.priority import Priority
from fleet.planning.insertion import (
    ETA_COST_PER_S,
    LATENESS_COST_PER_S,
    Insertion,
    OrderFacts,
    VehicleRoute,
    insert_task,
    retime,
    without_orders,
)
from fleet.planning.plan import Stop, StopKind
from fleet.planning.problem import OnboardTask, Task, VehicleState

CLEAN = frozenset({CargoClass.STERILE, CargoClass.CLEAN, CargoClass.LINEN})
DIRTY = frozenset({CargoClass.SOILED, CargoClass.WASTE})
DRUG = frozenset({CargoClass.CONTROLLED_DRUG, CargoClass.STERILE})
SERVICE = 5.0


def pos(node: str) -> int:
    return int(node[1:])


def line_travel(a: str, b: str, flow: Flow, speed: float) -> float:
    return abs(pos(a) - pos(b)) * 10.0 / speed


@dataclass(frozen=True)
class Facts:
    quantity: int
    cargo_class: CargoClass
    priority: Priority = Priority.ROUTINE
    needed_by: float | None = None


def task(
    oid: str,
    pickup: str,
    dropoff: str,
    cargo: CargoClass = CargoClass.STERILE,
    quantity: int = 1,
    priority: Priority = Priority.ROUTINE,
    needed_by: float | None = None,
    service: float = SERVICE,
) -> Task:
    return Task(oid, pickup, dropoff, cargo, quantity, priority, 0.0, needed_by, service, service)


def vehicle(
    rid: str,
    start: str = "n0",
    classes: frozenset[CargoClass] = CLEAN,
    capacity: int = 4,
    speed: float = 1.0,
    available_at: float = 0.0,
    onboard: tuple[OnboardTask, ...] = (),
) -> VehicleState:
    flow = flow_of(next(iter(classes)))
    return VehicleState(rid, start, available_at, capacity, speed, classes, flow, onboard)


def route(v: VehicleState, *spec: tuple[str, StopKind, tuple[str, ...]]) -> VehicleRoute:
    """A route whose stops take SERVICE seconds each, timed from the vehicle's start."""
    stops = tuple(Stop(node, kind, ids, 0.0, SERVICE) for node, kind, ids in spec)
    return VehicleRoute(v, retime(v, stops, line_travel, 0.0))


P, D = StopKind.PICKUP, StopKind.DROPOFF


def shape(stops: Sequence[Stop]) -> list[tuple[str, StopKind, tuple[str, ...]]]:
    return [(s.node, s.kind, s.order_ids) for s in stops]


def check_times(ins: Insertion, v: VehicleState, now: float = 0.0) -> None:
    t, here = max(now, v.available_at), v.start_node
    for stop in ins.stops:
        assert stop.arrival == pytest.approx(t + line_travel(here, stop.node, v.flow, v.speed_m_s))
        assert stop.departure >= stop.arrival
        t, here = stop.departure, stop.node


# ---- examples --------------------------------------------------------------------------------


def test_empty_route_gets_pickup_then_dropoff() -> None:
    v = vehicle("R1", start="n0")
    ins = insert_task(task("T", "n2", "n5"), [VehicleRoute(v)], line_travel, 0.0, {})
    assert ins is not None
    assert ins.robot_id == "R1"
    assert shape(ins.stops) == [("n2", P, ("T",)), ("n5", D, ("T",))]
    assert ins.stops[0].arrival == 20.0 and ins.stops[0].departure == 25.0
    assert ins.eta == 55.0 and ins.pickup_eta == 20.0
    # Added route time (60 s) plus the ETA term (55 s from now).
    assert ins.added_cost_s == pytest.approx(60.0 + ETA_COST_PER_S * 55.0)
    check_times(ins, v)


def test_goes_into_an_existing_route_at_the_cheapest_place() -> None:
    v = vehicle("R1", start="n0")
    r = route(v, ("n1", P, ("A",)), ("n8", D, ("A",)))
    orders = {"A": Facts(1, CargoClass.STERILE)}
    ins = insert_task(task("T", "n3", "n5"), [r], line_travel, 0.0, orders)
    assert ins is not None
    assert shape(ins.stops) == [
        ("n1", P, ("A",)),
        ("n3", P, ("T",)),
        ("n5", D, ("T",)),
        ("n8", D, ("A",)),
    ]
    check_times(ins, v)


def test_prefers_the_robot_with_the_smaller_detour() -> None:
    near = vehicle("NEAR", start="n4")
    far = vehicle("FAR", start="n9")
    ins = insert_task(
        task("T", "n3", "n1"), [VehicleRoute(far), VehicleRoute(near)], line_travel, 0.0, {}
    )
    assert ins is not None and ins.robot_id == "NEAR"


def test_merges_into_a_stop_at_the_same_node() -> None:
    v = vehicle("R1", start="n0")
    r = route(v, ("n2", P, ("A",)), ("n6", D, ("A",)))
    orders = {"A": Facts(1, CargoClass.STERILE)}
    ins = insert_task(task("T", "n2", "n6"), [r], line_travel, 0.0, orders)
    assert ins is not None
    assert shape(ins.stops) == [("n2", P, ("A", "T")), ("n6", D, ("A", "T"))]
    assert ins.added_cost_s == pytest.approx(ins.eta)  # no extra route time at all
    check_times(ins, v)


def test_capacity_is_respected() -> None:
    v = vehicle("R1", start="n0", capacity=3)
    # A loads 3 slots at n1 and keeps them until n8: the new task cannot ride along.
    r = route(v, ("n1", P, ("A",)), ("n8", D, ("A",)))
    orders = {"A": Facts(3, CargoClass.STERILE)}
    ins = insert_task(task("T", "n3", "n5"), [r], line_travel, 0.0, orders)
    assert ins is not None
    kinds = shape(ins.stops)
    assert kinds.index(("n3", P, ("T",))) < kinds.index(("n5", D, ("T",)))
    assert kinds.index(("n3", P, ("T",))) > kinds.index(("n8", D, ("A",))) or kinds.index(
        ("n5", D, ("T",))
    ) < kinds.index(("n1", P, ("A",)))
    assert max_load(ins.stops, v, {**orders, "T": Facts(1, CargoClass.STERILE)}) <= 3


def test_too_big_for_anybody_is_none() -> None:
    v = vehicle("R1", capacity=2)
    assert (
        insert_task(task("T", "n1", "n2", quantity=3), [VehicleRoute(v)], line_travel, 0, {})
        is None
    )


def test_waste_never_goes_on_a_clean_robot() -> None:
    clean = vehicle("CLEAN", start="n3")
    dirty = vehicle("DIRTY", start="n9", classes=DIRTY)
    waste = task("W", "n3", "n4", cargo=CargoClass.WASTE)
    ins = insert_task(waste, [VehicleRoute(clean), VehicleRoute(dirty)], line_travel, 0.0, {})
    assert ins is not None and ins.robot_id == "DIRTY"
    assert insert_task(waste, [VehicleRoute(clean)], line_travel, 0.0, {}) is None
    # Sterile supplies never ride a waste robot either.
    assert insert_task(task("S", "n3", "n4"), [VehicleRoute(dirty)], line_travel, 0.0, {}) is None


def test_a_locked_robot_takes_nothing_new() -> None:
    dirty_load = OnboardTask("X", "n5", CargoClass.WASTE, 1, Priority.ROUTINE, None, SERVICE)
    v = vehicle("R1", onboard=(dirty_load,))  # a clean robot with waste on board: locked
    assert v.locked
    r = VehicleRoute(v, retime(v, (Stop("n5", D, ("X",), 0.0, SERVICE),), line_travel, 0.0))
    assert insert_task(task("T", "n1", "n2"), [r], line_travel, 0.0, {}) is None


def test_a_controlled_drug_travels_alone() -> None:
    v = vehicle("R1", start="n0", classes=DRUG)
    r = route(v, ("n1", P, ("A",)), ("n8", D, ("A",)))
    orders = {"A": Facts(1, CargoClass.STERILE)}
    ins = insert_task(
        task("CD", "n3", "n5", cargo=CargoClass.CONTROLLED_DRUG), [r], line_travel, 0.0, orders
    )
    assert ins is not None
    # Riding along with A (n1..n8) is cheapest but forbidden: the drug goes before or after.
    assert shape(ins.stops) in (
        [("n1", P, ("A",)), ("n8", D, ("A",)), ("n3", P, ("CD",)), ("n5", D, ("CD",))],
        [("n3", P, ("CD",)), ("n5", D, ("CD",)), ("n1", P, ("A",)), ("n8", D, ("A",))],
    )


def test_nothing_rides_along_with_a_controlled_drug() -> None:
    v = vehicle("R1", start="n0", classes=DRUG)
    r = route(v, ("n1", P, ("CD",)), ("n8", D, ("CD",)))
    orders = {"CD": Facts(1, CargoClass.CONTROLLED_DRUG)}
    ins = insert_task(task("T", "n3", "n5"), [r], line_travel, 0.0, orders)
    assert ins is not None
    s = shape(ins.stops)
    assert s.index(("n3", P, ("T",))) > s.index(("n8", D, ("CD",))) or s.index(
        ("n5", D, ("T",))
    ) < s.index(("n1", P, ("CD",)))
    # A drug on board at the start blocks the task until it is delivered.
    onboard = OnboardTask("CD", "n8", CargoClass.CONTROLLED_DRUG, 1, Priority.ROUTINE, None, 5.0)
    v2 = vehicle("R2", start="n0", classes=DRUG, onboard=(onboard,))
    r2 = VehicleRoute(v2, retime(v2, (Stop("n8", D, ("CD",), 0.0, 5.0),), line_travel, 0.0))
    ins2 = insert_task(task("T", "n3", "n5"), [r2], line_travel, 0.0, {})
    assert ins2 is not None
    assert shape(ins2.stops)[0] == ("n8", D, ("CD",))


def test_stat_goes_before_routine_stops_when_that_avoids_lateness() -> None:
    v = vehicle("R1", start="n0")
    r = route(
        v,
        ("n1", P, ("A",)),
        ("n9", D, ("A",)),
        ("n1", P, ("B",)),
        ("n9", D, ("B",)),
    )
    orders = {"A": Facts(1, CargoClass.STERILE), "B": Facts(1, CargoClass.STERILE)}
    stat = task("S", "n2", "n3", priority=Priority.STAT, needed_by=60.0)
    ins = insert_task(stat, [r], line_travel, 0.0, orders)
    assert ins is not None
    assert ins.eta <= 60.0
    assert shape(ins.stops)[:2] in (
        [("n1", P, ("A",)), ("n2", P, ("S",))],
        [("n2", P, ("S",)), ("n3", D, ("S",))],
    )
    # A ROUTINE order with the same places and no deadline would go where it costs least.
    routine = insert_task(task("R", "n2", "n3"), [r], line_travel, 0.0, orders)
    assert routine is not None and routine.added_cost_s <= ins.added_cost_s


def test_lateness_added_to_orders_on_the_route_counts() -> None:
    # Robot X already has a STAT due right on time; robot Y is idle a little further away.
    x = vehicle("X", start="n0")
    rx = route(x, ("n1", P, ("S",)), ("n9", D, ("S",)))
    orders = {"S": Facts(1, CargoClass.STERILE, Priority.STAT, needed_by=rx.stops[1].arrival)}
    y = vehicle("Y", start="n3")
    ins = insert_task(task("T", "n2", "n4"), [rx, VehicleRoute(y)], line_travel, 0.0, orders)
    assert ins is not None and ins.robot_id == "Y"


def test_nobody_can_carry_is_none() -> None:
    v = vehicle("R1", classes=DIRTY)
    assert insert_task(task("T", "n1", "n2"), [VehicleRoute(v)], line_travel, 0.0, {}) is None
    assert insert_task(task("T", "n1", "n2"), [], line_travel, 0.0, {}) is None


def test_unreachable_places_are_skipped() -> None:
    def travel(a: str, b: str, flow: Flow, speed: float) -> float:
        return math.inf if "n9" in (a, b) and a != b else line_travel(a, b, flow, speed)

    v = vehicle("R1")
    assert insert_task(task("T", "n1", "n9"), [VehicleRoute(v)], travel, 0.0, {}) is None
    ins = insert_task(task("T", "n1", "n2"), [VehicleRoute(v)], travel, 0.0, {})
    assert ins is not None


def test_a_busy_robot_starts_when_free() -> None:
    v = vehicle("R1", start="n5", available_at=100.0)
    ins = insert_task(task("T", "n5", "n6"), [VehicleRoute(v)], line_travel, 50.0, {})
    assert ins is not None
    assert ins.pickup_eta == 100.0 and ins.eta == 115.0
    check_times(ins, v, now=50.0)


def test_times_are_consistent() -> None:
    v = vehicle("R1", start="n4", speed=0.5)
    r = route(v, ("n1", P, ("A",)), ("n8", D, ("A",)), ("n2", P, ("B",)), ("n6", D, ("B",)))
    orders = {"A": Facts(1, CargoClass.STERILE), "B": Facts(2, CargoClass.CLEAN)}
    ins = insert_task(task("T", "n7", "n3", service=12.0), [r], line_travel, 0.0, orders)
    assert ins is not None
    check_times(ins, v)
    arrivals = [s.arrival for s in ins.stops]
    assert arrivals == sorted(arrivals)
    for stop in ins.stops:
        expected = 12.0 if "T" in stop.order_ids else SERVICE
        assert stop.departure - stop.arrival == pytest.approx(expected)


def test_unknown_order_in_a_route_is_an_error() -> None:
    v = vehicle("R1")
    r = route(v, ("n1", P, ("A",)), ("n2", D, ("A",)))
    with pytest.raises(ValueError, match="'A'"):
        insert_task(task("T", "n1", "n2"), [r], line_travel, 0.0, {})


def test_bad_task_is_an_error() -> None:
    with pytest.raises(ValueError, match="quantity"):
        insert_task(task("T", "n1", "n2", quantity=0), [], line_travel, 0.0, {})
    with pytest.raises(ValueError, match="service"):
        insert_task(task("T", "n1", "n2", service=-1.0), [], line_travel, 0.0, {})


def test_benchmark_only_options_are_out_of_scope() -> None:
    windowed = dataclasses.replace(task("T", "n1", "n2"), pickup_latest=100.0)
    with pytest.raises(ValueError, match="pickup_latest"):
        insert_task(windowed, [VehicleRoute(vehicle("R1"))], line_travel, 0.0, {})
    closed = dataclasses.replace(vehicle("R1"), end_node="n0")
    assert insert_task(task("T", "n1", "n2"), [VehicleRoute(closed)], line_travel, 0, {}) is None


def test_without_orders_drops_ids_and_merges_neighbours() -> None:
    v = vehicle("R1")
    r = route(v, ("n1", P, ("A",)), ("n2", P, ("X",)), ("n1", P, ("B",)), ("n5", D, ("A", "B")))
    left = without_orders(r.stops, lambda oid: oid == "X")
    assert shape(left) == [("n1", P, ("A", "B")), ("n5", D, ("A", "B"))]
    assert left[0].departure - left[0].arrival == SERVICE
    assert without_orders(r.stops, lambda oid: False) == r.stops


def test_lateness_weights_match_the_solver() -> None:
    solver = pytest.importorskip("fleet.planning.solver")
    weights = getattr(solver, "LATENESS_COST_PER_S", None)
    if weights is None:
        pytest.skip("the solver has no LATENESS_COST_PER_S")
    assert {p: float(w) for p, w in weights.items()} == dict(LATENESS_COST_PER_S)


# ---- brute-force reference and properties ----------------------------------------------------


def max_load(stops: Sequence[Stop], v: VehicleState, orders: Mapping[str, OrderFacts]) -> int:
    load = v.onboard_load
    top = load
    for stop in stops:
        for oid in stop.order_ids:
            load += orders[oid].quantity if stop.kind is P else -orders[oid].quantity
        top = max(top, load)
    return top


def drug_shares(stops: Sequence[Stop], v: VehicleState, orders: Mapping[str, OrderFacts]) -> bool:
    """True if a controlled drug is ever on board together with another order."""
    aboard = {o.order_id: o.cargo_class for o in v.onboard}
    for stop in stops:
        for oid in stop.order_ids:
            if stop.kind is P:
                aboard[oid] = orders[oid].cargo_class
            else:
                aboard.pop(oid, None)
        if len(aboard) > 1 and CargoClass.CONTROLLED_DRUG in aboard.values():
            return True
    return False


_Item = tuple[str, StopKind, tuple[str, ...], float]


def simulate(v: VehicleState, items: Sequence[_Item], now: float) -> tuple[list[float], float]:
    t, here = max(now, v.available_at), v.start_node
    arrivals = []
    for node, _, _, service in items:
        t += line_travel(here, node, v.flow, v.speed_m_s)
        arrivals.append(t)
        t += service
        here = node
    return arrivals, t


def brute_force(
    t: Task, routes: Sequence[VehicleRoute], now: float, orders: Mapping[str, OrderFacts]
) -> float:
    """The least cost over every insertion (merges and stops next to same-node stops too)."""
    facts = {**orders, t.order_id: Facts(t.quantity, t.cargo_class, t.priority, t.needed_by)}
    best = math.inf
    for r in routes:
        v = r.vehicle
        if (
            t.cargo_class not in v.cargo_classes
            or flow_of(t.cargo_class) is not v.flow
            or t.quantity > v.capacity_slots
            or v.locked
        ):
            continue
        every = {**facts, **{o.order_id: o for o in v.onboard}}
        base: list[_Item] = [
            (s.node, s.kind, s.order_ids, s.departure - s.arrival) for s in r.stops
        ]
        old_arr, old_end = simulate(v, base, now)
        old_late = lateness(base, old_arr, every, skip=t.order_id)
        pickups: list[tuple[list[_Item], int]] = []
        for i in range(len(base) + 1):
            pickups.append(
                ([*base[:i], (t.pickup_node, P, (t.order_id,), t.pickup_service_s), *base[i:]], i)
            )
        for k, (node, kind, ids, service) in enumerate(base):
            if kind is P and node == t.pickup_node:
                merged = (node, kind, (*ids, t.order_id), max(service, t.pickup_service_s))
                pickups.append(([*base[:k], merged, *base[k + 1 :]], k))
        for items, at in pickups:
            options: list[list[_Item]] = []
            for j in range(at + 1, len(items) + 1):
                new = (t.dropoff_node, D, (t.order_id,), t.dropoff_service_s)
                options.append([*items[:j], new, *items[j:]])
            for m in range(at + 1, len(items)):
                node, kind, ids, service = items[m]
                if kind is D and node == t.dropoff_node:
                    merged = (node, kind, (*ids, t.order_id), max(service, t.dropoff_service_s))
                    options.append([*items[:m], merged, *items[m + 1 :]])
            for option in options:
                stops = [Stop(n, k, ids, 0.0, 0.0) for n, k, ids, _ in option]
                if max_load(stops, v, every) > v.capacity_slots or drug_shares(stops, v, every):
                    continue
                arr, end = simulate(v, option, now)
                if any(a == math.inf for a in arr):
                    continue
                eta = next(
                    a
                    for a, it in zip(arr, option, strict=True)
                    if it[1] is D and t.order_id in it[2]
                )
                late = lateness(option, arr, every, skip=t.order_id) - old_late
                own = 0.0
                if t.needed_by is not None:
                    own = LATENESS_COST_PER_S[t.priority] * max(0.0, eta - t.needed_by)
                best = min(best, (end - old_end) + late + own + ETA_COST_PER_S * (eta - now))
    return best


def lateness(
    items: Sequence[_Item], arrivals: Sequence[float], facts: Mapping[str, OrderFacts], skip: str
) -> float:
    total = 0.0
    for (_, kind, ids, _), arrival in zip(items, arrivals, strict=True):
        if kind is not D:
            continue
        for oid in ids:
            f = facts[oid]
            if oid != skip and f.needed_by is not None:
                total += LATENESS_COST_PER_S[f.priority] * max(0.0, arrival - f.needed_by)
    return total


CARGO = [CargoClass.STERILE, CargoClass.CLEAN, CargoClass.WASTE, CargoClass.CONTROLLED_DRUG]
nodes = st.integers(0, 9).map(lambda i: f"n{i}")
priorities = st.sampled_from(list(Priority))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Task, list[VehicleRoute], dict[str, OrderFacts]]:
    orders: dict[str, OrderFacts] = {}
    routes: list[VehicleRoute] = []
    for r in range(draw(st.integers(1, 3))):
        classes = draw(st.sampled_from([CLEAN, DIRTY, DRUG]))
        cargo_choices = sorted(classes)
        n_orders = draw(st.integers(0, 4))
        onboard: list[OnboardTask] = []
        events: list[str] = []
        pickup_of: dict[str, str] = {}
        dropoff_of: dict[str, str] = {}
        for k in range(n_orders):
            oid = f"R{r}O{k}"
            cargo = draw(st.sampled_from(cargo_choices))
            qty = draw(st.integers(1, 3))
            prio = draw(priorities)
            nb = draw(st.one_of(st.none(), st.floats(0, 400)))
            orders[oid] = Facts(qty, cargo, prio, nb)
            pickup_of[oid] = draw(nodes)
            dropoff_of[oid] = draw(nodes)
            if draw(st.booleans()):
                onboard.append(OnboardTask(oid, dropoff_of[oid], cargo, qty, prio, nb, SERVICE))
                events.append(oid)
            else:
                events += [oid, oid]
        events = draw(st.permutations(events))
        seen: set[str] = {o.order_id for o in onboard}
        stops: list[Stop] = []
        for oid in events:
            kind = D if oid in seen else P
            seen.add(oid)
            node = dropoff_of[oid] if kind is D else pickup_of[oid]
            service = float(draw(st.sampled_from([0, 5, 20])))
            if stops and stops[-1].node == node and stops[-1].kind is kind:
                last = stops[-1]
                stops[-1] = Stop(
                    node, kind, (*last.order_ids, oid), 0.0, max(last.departure, service)
                )
            else:
                stops.append(Stop(node, kind, (oid,), 0.0, service))
        capacity = draw(st.integers(1, 6))
        v = VehicleState(
            f"R{r}",
            draw(nodes),
            draw(st.sampled_from([0.0, 30.0])),
            capacity,
            draw(st.sampled_from([0.5, 1.0, 2.0])),
            classes,
            flow_of(cargo_choices[0]),
            tuple(onboard),
        )
        every = {**orders, **{o.order_id: o for o in onboard}}
        # Only routes that keep the rules themselves (what a plan gives).
        assume(max_load(stops, v, every) <= capacity and not drug_shares(stops, v, every))
        routes.append(VehicleRoute(v, retime(v, stops, line_travel, 0.0)))
    pickup, dropoff = draw(nodes), draw(nodes)
    assume(pickup != dropoff)
    t = Task(
        "NEW",
        pickup,
        dropoff,
        draw(st.sampled_from(CARGO)),
        draw(st.integers(1, 3)),
        draw(priorities),
        0.0,
        draw(st.one_of(st.none(), st.floats(0, 400))),
        float(draw(st.sampled_from([0, 5, 20]))),
        float(draw(st.sampled_from([0, 5, 20]))),
    )
    return t, routes, orders


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(scenarios())
def test_property_rules_kept_and_optimal(
    scenario: tuple[Task, list[VehicleRoute], dict[str, OrderFacts]],
) -> None:
    t, routes, orders = scenario
    ins = insert_task(t, routes, line_travel, 0.0, orders)
    best = brute_force(t, routes, 0.0, orders)
    if ins is None:
        assert best == math.inf
        return
    assert ins.added_cost_s == pytest.approx(best, rel=1e-9, abs=1e-6)
    old = next(r for r in routes if r.vehicle.robot_id == ins.robot_id)
    v = old.vehicle
    assert t.cargo_class in v.cargo_classes and not v.locked
    # The task's pickup comes before its drop-off, each exactly once.
    where = {
        kind: [k for k, s in enumerate(ins.stops) if s.kind is kind and t.order_id in s.order_ids]
        for kind in (P, D)
    }
    assert len(where[P]) == 1 and len(where[D]) == 1 and where[P][0] < where[D][0]
    assert ins.stops[where[P][0]].node == t.pickup_node
    assert ins.stops[where[D][0]].node == t.dropoff_node
    # Every previous stop is kept, in the same order.
    without = [
        (s.node, s.kind, tuple(o for o in s.order_ids if o != t.order_id)) for s in ins.stops
    ]
    assert [x for x in without if x[2]] == shape(old.stops)
    # The load never exceeds the capacity; a controlled drug never shares.
    every = {
        **orders,
        **{o.order_id: o for o in v.onboard},
        t.order_id: Facts(t.quantity, t.cargo_class),
    }
    assert max_load(ins.stops, v, every) <= v.capacity_slots
    assert not drug_shares(ins.stops, v, every)
    # Times: consistent with travel and non-decreasing; ETA is the drop-off's arrival.
    check_times(ins, v)
    assert ins.eta == ins.stops[where[D][0]].arrival
    assert ins.pickup_eta == ins.stops[where[P][0]].arrival
