"""Weight, compartments and controlled-drug return legs, end to end in the dispatcher.

The planner's rules (fleet/planning) are tested on their own elsewhere; here the running core
and the fast twin must keep them: an order too heavy for every robot is refused, a robot's
payload is never exceeded, every order rides in a compartment of its own that the robot is told
to open, and a return leg rides back on the robot, and in the compartment, that brought the
outbound, or waits for that robot.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from fleet.api import convert
from fleet.building.model import Building
from fleet.dispatch.messages import CreateOrder, SendStep
from fleet.dispatch.ports import InMemoryStore
from fleet.domain.cargo import CargoClass
from fleet.domain.errors import InvalidArgument
from fleet.domain.order import Order, OrderEvent, OrderState
from fleet.domain.priority import Priority
from fleet.domain.robot import Robot, RobotCapabilities
from fleet.traffic.steps import Step, StepKind
from fleet.v1 import common_pb2, orders_pb2, robot_pb2
from simulators.fast import CLEAN_CLASSES, FastTwin
from simulators.robot import RobotSpec
from simulators.workload import TimedOrder, hospital_day_workload

T_DELIVERED = 1_767_590_000.0  # before the twin's epoch: an outbound delivered earlier


def material(rid: str, node: str = "B1-CHARGER-1", payload: float = 60.0) -> RobotSpec:
    """A material robot with four compartments and a payload."""
    return RobotSpec(rid, CLEAN_CLASSES, node, max_payload_kg=payload, compartments=4)


def started(building: Building, *specs: RobotSpec, store: InMemoryStore | None = None) -> FastTwin:
    t = FastTwin(building, list(specs), store=store, record_events=True)
    t.start()
    t.run_until(t.clock.now() + 1)
    return t


def drug(pickup: str = "PHARMACY", dropoff: str = "OR-03", **fields: object) -> CreateOrder:
    cmd = CreateOrder(pickup, dropoff, CargoClass.CONTROLLED_DRUG, 1, Priority.ROUTINE)
    return dataclasses.replace(cmd, **fields)  # type: ignore[arg-type]


def deliver(t: FastTwin, order_id: str, hours: float = 2.0) -> Order:
    t.run_until(
        t.clock.now() + hours * 3600,
        stop=lambda: t.core.orders[order_id].state.terminal,
    )
    done = t.core.orders[order_id]
    assert done.state is OrderState.DELIVERED, done
    return done


def delivered_outbound(
    order_id: str = "ORD-000900", robot_id: str = "AMR-02", compartment: int | None = 2
) -> Order:
    """A controlled-drug order PHARMACY -> OR-03 that a robot delivered before the twin started."""
    o = Order(
        id=order_id,
        pickup_station="PHARMACY",
        dropoff_station="OR-03",
        cargo_class=CargoClass.CONTROLLED_DRUG,
        quantity=1,
        priority=Priority.ROUTINE,
        created_at=T_DELIVERED - 3600,
        state=OrderState.DELIVERED,
        robot_id=robot_id,
        picked_up_at=T_DELIVERED - 1800,
        delivered_at=T_DELIVERED,
        compartment=compartment,
        weight_kg=0.4,
    )
    o.history = [
        OrderEvent(T_DELIVERED - 3600, OrderState.PENDING, "accepted"),
        OrderEvent(T_DELIVERED - 3500, OrderState.ASSIGNED, f"assigned to {robot_id}"),
        OrderEvent(T_DELIVERED - 1800, OrderState.PICKED_UP, f"on board {robot_id}"),
        OrderEvent(T_DELIVERED, OrderState.DELIVERED, f"delivered by {robot_id}"),
    ]
    return o


def store_with(*orders: Order) -> InMemoryStore:
    store = InMemoryStore()
    for o in orders:
        store.add_order(o)
    return store


def field_of(exc: pytest.ExceptionInfo[InvalidArgument]) -> str:
    return exc.value.field


# ---- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weight", "reason"),
    [(-0.5, "finite"), (math.nan, "finite"), (math.inf, "finite"), (61.0, "too heavy")],
)
def test_bad_weight_is_refused_naming_weight_kg(
    demo_building: Building, weight: float, reason: str
) -> None:
    t = started(demo_building, material("AMR-01", payload=60.0))
    cmd = CreateOrder("WH-PORT-1", "OR-03", CargoClass.STERILE, 2, weight_kg=weight)
    with pytest.raises(InvalidArgument) as caught:
        t.handle(cmd)
    assert field_of(caught) == "weight_kg" and reason in caught.value.reason
    assert t.core.orders == {}


def test_weight_is_judged_against_robots_allowed_to_carry_the_cargo(
    demo_building: Building,
) -> None:
    # A 100 kg waste cart does not make a 80 kg sterile load acceptable.
    waste = RobotSpec(
        "WST-01",
        frozenset({CargoClass.WASTE, CargoClass.SOILED}),
        "B1-CHARGER-4",
        max_payload_kg=100.0,
    )
    t = started(demo_building, material("AMR-01", payload=60.0), waste)
    with pytest.raises(InvalidArgument) as caught:
        t.handle(CreateOrder("WH-PORT-1", "OR-03", CargoClass.STERILE, 1, weight_kg=80.0))
    assert field_of(caught) == "weight_kg"
    assert "60 kg" in caught.value.reason
    heavy_waste = t.handle(
        CreateOrder("SOILED-UTIL-1", "WASTE-STATION", CargoClass.WASTE, 1, weight_kg=80.0)
    )
    assert heavy_waste is not None and heavy_waste.weight_kg == 80.0
    # Exactly the payload fits; a robot without a limit takes anything.
    assert t.handle(CreateOrder("WH-PORT-1", "OR-03", CargoClass.STERILE, 1, weight_kg=60.0))
    unlimited = started(demo_building, RobotSpec("AMR-09", CLEAN_CLASSES, "B1-CHARGER-1"))
    assert unlimited.handle(CreateOrder("WH-PORT-1", "OR-03", CargoClass.STERILE, 1, weight_kg=500))


def test_weight_is_accepted_while_no_robot_for_the_cargo_has_said_hello(
    demo_building: Building,
) -> None:
    t = started(demo_building)
    created = t.handle(CreateOrder("WH-PORT-1", "OR-03", CargoClass.STERILE, 1, weight_kg=250.0))
    assert created is not None and created.state is OrderState.PENDING


def test_a_robot_model_is_remembered_across_a_dispatcher_restart(demo_building: Building) -> None:
    store = InMemoryStore()
    first = started(demo_building, material("AMR-01", payload=60.0), store=store)
    assert first.core.robots["AMR-01"].robot.capabilities.compartments == 4
    # A new dispatcher on the same store, before any robot reconnects.
    again = FastTwin(demo_building, [], store=store)
    with pytest.raises(InvalidArgument) as caught:
        again.handle(CreateOrder("WH-PORT-1", "OR-03", CargoClass.STERILE, 1, weight_kg=61.0))
    assert field_of(caught) == "weight_kg"


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (dict(return_of="ORD-404404"), "return_of", "unknown order"),
        (dict(return_of="ORD-000901"), "return_of", "not a controlled-drug order"),
        (dict(return_of="ORD-000902"), "return_of", "only a delivered order"),
        (dict(return_of="ORD-000903"), "return_of", "itself a return"),
        (dict(return_of="ORD-000904"), "return_of", "no longer known"),
        (dict(cargo_class=CargoClass.STERILE), "cargo_class", "CONTROLLED_DRUG"),
        (dict(pickup_station="OR-04"), "pickup_station", "OR-03"),
        (dict(dropoff_station="WH-PORT-1"), "dropoff_station", "PHARMACY"),
        (dict(quantity=2), "quantity", "at most the 1 slot"),
        (dict(weight_kg=61.0), "weight_kg", "robot AMR-02"),
    ],
)
def test_bad_return_is_refused_naming_the_field(
    demo_building: Building, change: dict[str, object], field: str, words: str
) -> None:
    outbound = delivered_outbound()
    sterile = dataclasses.replace(
        delivered_outbound("ORD-000901"), cargo_class=CargoClass.STERILE, history=[]
    )
    on_board = dataclasses.replace(
        delivered_outbound("ORD-000902"), state=OrderState.PICKED_UP, delivered_at=None
    )
    a_return = dataclasses.replace(
        delivered_outbound("ORD-000903"),
        pickup_station="OR-03",
        dropoff_station="PHARMACY",
        return_of="ORD-000900",
    )
    ghost = delivered_outbound("ORD-000904", robot_id="AMR-77")
    store = store_with(outbound, sterile, on_board, a_return, ghost)
    t = started(demo_building, material("AMR-01"), material("AMR-02", "B1-CHARGER-2"), store=store)
    good = drug("OR-03", "PHARMACY", return_of="ORD-000900")
    bad = dataclasses.replace(good, **change)  # type: ignore[arg-type]
    before = set(t.core.orders)  # the open order of the store (ORD-000902)
    with pytest.raises(InvalidArgument) as caught:
        t.handle(bad)
    assert field_of(caught) == field, caught.value
    assert words in caught.value.reason, caught.value
    assert set(t.core.orders) == before
    # The well-formed return is accepted; a second one while it is open is not.
    assert t.handle(good) is not None
    with pytest.raises(InvalidArgument) as again:
        t.handle(good)
    assert field_of(again) == "return_of" and "already has an open return" in again.value.reason


def test_bad_robot_capabilities_are_refused_naming_the_field() -> None:
    hello = robot_pb2.RobotHello(
        robot_id="AMR-01",
        cargo_classes=[common_pb2.CARGO_CLASS_CLEAN],
        capacity_slots=4,
        max_speed_m_s=1.0,
        current_node="B1-PARK-1",
    )
    ok = convert.hello_from_pb(hello)
    assert ok.capabilities.max_payload_kg is None and ok.capabilities.compartments is None
    for name, value, field in (
        ("max_payload_kg", -1.0, "hello.max_payload_kg"),
        ("max_payload_kg", math.nan, "hello.max_payload_kg"),
        ("compartments", -2, "hello.compartments"),
    ):
        bad = robot_pb2.RobotHello()
        bad.CopyFrom(hello)
        setattr(bad, name, value)
        with pytest.raises(InvalidArgument) as caught:
            convert.hello_from_pb(bad)
        assert field_of(caught) == field
    hello.max_payload_kg, hello.compartments = 60.0, 4
    caps = convert.hello_from_pb(hello).capabilities
    assert (caps.max_payload_kg, caps.compartments) == (60.0, 4)


# ---- the wire ----------------------------------------------------------------------------------


def test_compartments_are_numbered_from_one_on_the_wire(demo_building: Building) -> None:
    o = delivered_outbound(compartment=0)
    assert convert.order_to_pb(o).compartment == 1
    assert convert.order_to_pb(dataclasses.replace(o, compartment=None)).compartment == 0
    pb = convert.order_to_pb(dataclasses.replace(o, return_of="ORD-000001"))
    assert (pb.weight_kg, pb.return_of) == (0.4, "ORD-000001")
    request = orders_pb2.CreateOrderRequest(weight_kg=2.5, return_of=" ORD-000007 ")
    cmd = convert.create_order_from_pb(request)
    assert (cmd.weight_kg, cmd.return_of) == (2.5, "ORD-000007")
    step = Step(
        StepKind.PICKUP,
        station="OR-03",
        order_ids=("ORD-1", "ORD-2"),
        quantity=2,
        compartments=(("ORD-1", 0), ("ORD-2", 3)),
    )
    wire = convert.dispatcher_message_to_pb(SendStep("AMR-01", 7, step), demo_building)
    assert [(u.order_id, u.compartment) for u in wire.step.pickup.compartments] == [
        ("ORD-1", 1),
        ("ORD-2", 4),
    ]


# ---- compartments and payload in the running twin ----------------------------------------------


def test_each_order_on_board_has_a_compartment_of_its_own(demo_building: Building) -> None:
    t = started(demo_building, material("AMR-01"))
    ids = []
    for dropoff in ("OR-01", "OR-02", "OR-03"):
        created = t.handle(CreateOrder("WH-PORT-1", dropoff, CargoClass.STERILE, 1))
        assert created is not None
        ids.append(created.id)
    t.run_until(t.clock.now() + 3 * 3600, stop_when_done=True)
    orders = [t.core.orders[i] for i in ids]
    assert all(o.state is OrderState.DELIVERED for o in orders)
    # All three on board together: three different compartments, as the robot was told.
    assert max(o.picked_up_at or math.inf for o in orders) < min(
        o.delivered_at or 0.0 for o in orders
    )
    assert sorted(o.compartment for o in orders if o.compartment is not None) == [0, 1, 2]
    robot = t.robots["AMR-01"]
    assert robot.compartment_conflicts == [] and robot.compartments == {}


def test_payload_is_never_exceeded_in_the_twin(demo_building: Building) -> None:
    t = started(demo_building, material("AMR-01", payload=60.0))
    ids = []
    for dropoff, kg in (("OR-01", 35.0), ("OR-02", 35.0), ("OR-03", 20.0), ("OR-04", 5.0)):
        created = t.handle(CreateOrder("WH-PORT-1", dropoff, CargoClass.STERILE, 1, weight_kg=kg))
        assert created is not None
        ids.append(created.id)
    t.run_until(t.clock.now() + 6 * 3600, stop_when_done=True)
    orders = [t.core.orders[i] for i in ids]
    assert all(o.state is OrderState.DELIVERED for o in orders)
    assert max_load_kg(orders) <= 60.0
    # Without the weight rule all four would fit the four slots at once: it did bind.
    assert len({o.picked_up_at for o in orders}) > 1


def max_load_kg(orders: list[Order]) -> float:
    """The most weight on board at any moment, from pickup and delivery times."""
    events = sorted(
        [(o.picked_up_at, o.weight_kg) for o in orders if o.picked_up_at is not None]
        + [(o.delivered_at, -o.weight_kg) for o in orders if o.delivered_at is not None],
        key=lambda e: (e[0], e[1]),  # deliveries before pickups at the same instant
    )
    load = most = 0.0
    for _, kg in events:
        load += kg
        most = max(most, load)
    return most


# ---- controlled-drug return legs ---------------------------------------------------------------


def test_return_rides_on_the_outbound_robot_in_its_compartment(demo_building: Building) -> None:
    t = started(
        demo_building, material("AMR-01", "B1-CHARGER-1"), material("AMR-02", "B1-CHARGER-2")
    )
    outbound = t.handle(drug())
    assert outbound is not None
    out = deliver(t, outbound.id)
    assert out.robot_id is not None and out.compartment is not None
    carrier = out.robot_id
    other = "AMR-02" if carrier == "AMR-01" else "AMR-01"
    # Keep the carrier busy far away, so that the other robot would be the better choice.
    for _ in range(3):
        assert t.handle(CreateOrder("WH-PORT-1", "WARD-C", CargoClass.LINEN, 1))
    back = t.handle(drug("OR-03", "PHARMACY", return_of=outbound.id, weight_kg=0.2))
    assert back is not None
    assert back.return_of == outbound.id and back.compartment == out.compartment
    assert back.robot_id in (None, carrier)
    returned = deliver(t, back.id, hours=4)
    assert returned.robot_id == carrier
    assert returned.compartment == out.compartment
    assert t.core.store.get_order(back.id) == returned
    # The robot was told to open that compartment, and nothing else rode with the drugs.
    assert t.robots[carrier].compartment_conflicts == []
    assert t.robots[other].compartment_conflicts == []
    onboard_with = [
        o.id
        for o in t.core.orders.values()
        if o.id != back.id
        and o.robot_id == carrier
        and o.picked_up_at is not None
        and returned.picked_up_at is not None
        and returned.delivered_at is not None
        and o.picked_up_at < returned.delivered_at
        and (o.delivered_at or math.inf) > returned.picked_up_at
    ]
    assert onboard_with == []


def test_return_keeps_a_compartment_other_than_the_first(demo_building: Building) -> None:
    # The outbound rode in compartment index 2 of AMR-02; AMR-01 stands right at the OR.
    store = store_with(delivered_outbound(robot_id="AMR-02", compartment=2))
    t = started(
        demo_building,
        material("AMR-01", "L1-OR-03"),
        material("AMR-02", "B1-CHARGER-2"),
        store=store,
    )
    back = t.handle(drug("OR-03", "PHARMACY", return_of="ORD-000900"))
    assert back is not None and back.compartment == 2
    t.run_until(t.clock.now() + 5)
    assert t.core.orders[back.id].robot_id == "AMR-02"
    t.run_until(
        t.clock.now() + 3600, stop=lambda: t.core.orders[back.id].state is OrderState.PICKED_UP
    )
    # Compartment number 3 on the robot (numbered from 1 on the wire) holds the return.
    assert t.robots["AMR-02"].compartments == {3: back.id}
    done = deliver(t, back.id)
    assert (done.robot_id, done.compartment) == ("AMR-02", 2)
    assert t.robots["AMR-02"].compartments == {}
    assert t.robots["AMR-02"].compartment_conflicts == []


def test_return_waits_for_its_robot_and_never_goes_to_another(demo_building: Building) -> None:
    store = store_with(delivered_outbound(robot_id="AMR-02", compartment=1))
    t = started(
        demo_building,
        material("AMR-01", "L1-OR-03"),
        material("AMR-02", "B1-CHARGER-2"),
        store=store,
    )
    t.robots["AMR-02"].disconnect()
    t.run_until(t.clock.now() + t.core.config.offline_timeout_s + 15)
    assert t.core.robots["AMR-02"].robot.mode.value == "OFFLINE"
    back = t.handle(drug("OR-03", "PHARMACY", return_of="ORD-000900"))
    assert back is not None
    t.run_until(t.clock.now() + 1800)
    waiting = t.core.orders[back.id]
    assert waiting.state is OrderState.PENDING and waiting.compartment == 1
    assert t.robots["AMR-01"].carrying == []
    t.robots["AMR-02"].connect()
    done = deliver(t, back.id)
    assert (done.robot_id, done.compartment) == ("AMR-02", 1)


def test_hospital_day_returns_point_at_their_outbound(demo_building: Building) -> None:
    from simulators.fast import SIM_EPOCH

    day = hospital_day_workload(demo_building, SIM_EPOCH, 24.0, seed=3)
    tags = {t.tag: t for t in day if t.tag}
    returns = [t for t in day if t.return_of_tag]
    assert returns and all(r.return_of_tag in tags for r in returns)
    for r in returns:
        out = tags[r.return_of_tag]
        assert r.at > out.at
        assert (r.order.pickup_station, r.order.dropoff_station) == (
            out.order.dropoff_station,
            out.order.pickup_station,
        )
        assert r.order.cargo_class is out.order.cargo_class is CargoClass.CONTROLLED_DRUG
    assert all(t.order.weight_kg > 0 for t in day)
    assert hospital_day_workload(demo_building, SIM_EPOCH, 24.0, seed=3) == day


def test_twin_places_returns_with_the_outbound_id(demo_building: Building) -> None:
    t = started(demo_building, material("AMR-01"), material("AMR-02", "B1-CHARGER-2"))
    now = t.clock.now()
    outbound = TimedOrder(now + 10, drug(), tag="case 1")
    # Placed before the drugs can have arrived: the twin waits until they did.
    back = TimedOrder(now + 20, drug("OR-03", "PHARMACY"), return_of_tag="case 1")
    t.place(outbound)
    t.place(back)
    t.run_until(now + 4 * 3600, stop=lambda: len(t.core.orders) == 2 and t.all_done())
    assert t.rejected == []
    orders = sorted(t.core.orders.values(), key=lambda o: o.id)
    assert [o.return_of for o in orders] == ["", orders[0].id]
    first, second = orders
    assert second.state is OrderState.DELIVERED
    assert first.delivered_at is not None and second.created_at >= first.delivered_at
    assert (second.robot_id, second.compartment) == (first.robot_id, first.compartment)


def test_store_round_trip_of_the_new_fields() -> None:
    store = InMemoryStore()
    o = dataclasses.replace(
        delivered_outbound(), return_of="ORD-000001", pinned_robot="AMR-02", compartment=3
    )
    store.add_order(o)
    assert store.get_order(o.id) == o
    assert o.pinned_compartment == 3
    robot = Robot(
        "AMR-01",
        RobotCapabilities("v", "m", frozenset({CargoClass.CLEAN}), 4, 1.0, 60.0, 4),
        "B1-PARK-1",
    )
    store.upsert_robot(robot)
    assert store.load_robots() == [robot]
