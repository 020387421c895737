"""SqlStore against SQLite and PostgreSQL: same behaviour as InMemoryStore, and nothing lost."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
)
from sqlalchemy import inspect

from fleet.dispatch.ports import Assignment, InMemoryStore
from fleet.domain.cargo import CargoClass
from fleet.domain.errors import FailedPrecondition
from fleet.domain.order import Order, OrderEvent, OrderState
from fleet.domain.priority import Priority
from fleet.domain.robot import Robot, RobotCapabilities, RobotMode
from fleet.store import SqlStore, open_store

T0 = 1_760_000_000.123456789  # an epoch time with a fractional part that must survive exactly
TERMINAL = [s for s in OrderState if s.terminal]


def make_order(n: int | str, created_at: float = T0, **fields: object) -> Order:
    order_id = n if isinstance(n, str) else f"ORD-{n}"
    order = Order(
        id=order_id,
        pickup_station="PHARMACY",
        dropoff_station="OR-3",
        cargo_class=CargoClass.STERILE,
        quantity=2,
        priority=Priority.URGENT,
        created_at=created_at,
    )
    for name, value in fields.items():
        setattr(order, name, value)
    return order


def accepted(order: Order) -> Order:
    order.history.append(OrderEvent(order.created_at, OrderState.PENDING, "accepted"))
    return order


def make_robot(robot_id: str = "R1", **fields: object) -> Robot:
    robot = Robot(
        id=robot_id,
        capabilities=RobotCapabilities(
            vendor="Aethon",
            model="TUG T3",
            cargo_classes=frozenset({CargoClass.STERILE, CargoClass.CLEAN, CargoClass.LINEN}),
            capacity_slots=4,
            max_speed_m_s=1.2,
        ),
        node="DOCK-1",
        level="L2",
        x=12.5,
        y=-3.25,
        battery_percent=87.5,
        mode=RobotMode.BUSY,
        last_seen=T0 + 5,
        carrying={"ORD-1", "ORD-2"},
    )
    for name, value in fields.items():
        setattr(robot, name, value)
    return robot


# -- basics --------------------------------------------------------------------------------------


def test_schema_has_the_expected_tables_and_indexes(sql_store: SqlStore) -> None:
    inspector = inspect(sql_store.engine)
    assert {"orders", "order_events", "robots", "assignments"} <= set(inspector.get_table_names())
    indexed = {tuple(ix["column_names"]) for ix in inspector.get_indexes("orders")}
    assert ("state",) in indexed
    assert ("created_at",) in indexed
    assert inspector.get_pk_constraint("order_events")["constrained_columns"] == ["order_id", "seq"]


def test_order_round_trip_with_history(sql_store: SqlStore) -> None:
    order = accepted(
        make_order(
            1,
            needed_by=T0 + 1800.5,
            requested_by="nurse.kim",
            note="tray 4, handle with care — ✓",
        )
    )
    order.move_to(OrderState.ASSIGNED, T0 + 1.000001, "plan 3")
    order.robot_id = "R1"
    order.eta = T0 + 600.25
    sql_store.add_order(order)

    loaded = sql_store.get_order("ORD-1")
    assert loaded == order
    assert loaded is not order
    assert loaded.history == order.history and len(loaded.history) == 2
    assert isinstance(loaded.state, OrderState) and isinstance(loaded.cargo_class, CargoClass)
    assert sql_store.get_order("ORD-404") is None


def test_weight_return_leg_and_compartment_round_trip(sql_store: SqlStore) -> None:
    outbound = accepted(
        make_order(1, cargo_class=CargoClass.CONTROLLED_DRUG, weight_kg=0.375, compartment=0)
    )
    back = accepted(
        make_order(
            2,
            cargo_class=CargoClass.CONTROLLED_DRUG,
            pickup_station="OR-3",
            dropoff_station="PHARMACY",
            weight_kg=0.125,
            return_of="ORD-1",
            compartment=3,
            pinned_robot="R1",
        )
    )
    plain = accepted(make_order(3))
    for order in (outbound, back, plain):
        sql_store.add_order(order)
    assert [sql_store.get_order(o.id) for o in (outbound, back, plain)] == [outbound, back, plain]
    loaded = sql_store.get_order("ORD-2")
    assert loaded is not None and loaded.pinned_compartment == 3
    assert (plain.weight_kg, plain.return_of, plain.compartment, plain.pinned_robot) == (
        0.0,
        "",
        None,
        None,
    )
    # A plan moves an order to another compartment; a failed return keeps its pin.
    plain.move_to(OrderState.ASSIGNED, T0 + 1, "plan 1")
    plain.compartment = 2
    back.move_to(OrderState.CANCELLED, T0 + 2, "case cancelled")
    sql_store.update_orders([plain, back])
    assert sql_store.load_open_orders() == [outbound, plain]
    assert sql_store.get_order("ORD-2") == back


def test_update_orders_appends_only_new_history_and_persists_state(sql_store: SqlStore) -> None:
    a = accepted(make_order(1))
    b = accepted(make_order(2, created_at=T0 + 1))
    sql_store.add_order(a)
    sql_store.add_order(b)

    a.move_to(OrderState.ASSIGNED, T0 + 10, "plan 1")
    a.robot_id = "R1"
    a.move_to(OrderState.PICKED_UP, T0 + 20)
    b.move_to(OrderState.CANCELLED, T0 + 11, "not needed")
    sql_store.update_orders([a, b])
    assert sql_store.get_order("ORD-1") == a
    assert sql_store.get_order("ORD-2") == b

    # A second write of the same history adds nothing; a new entry is appended as seq 3.
    sql_store.update_orders([a])
    a.move_to(OrderState.DELIVERED, T0 + 30)
    sql_store.update_orders([a])
    loaded = sql_store.get_order("ORD-1")
    assert loaded == a
    assert [e.state for e in loaded.history] == [
        OrderState.PENDING,
        OrderState.ASSIGNED,
        OrderState.PICKED_UP,
        OrderState.DELIVERED,
    ]
    assert loaded.delivered_at == T0 + 30 and loaded.eta is None


def test_update_orders_is_all_or_nothing(sql_store: SqlStore) -> None:
    a = accepted(make_order(1))
    sql_store.add_order(a)
    before = copy.deepcopy(a)
    a.move_to(OrderState.CANCELLED, T0 + 5)
    with pytest.raises(KeyError):
        sql_store.update_orders([a, make_order(99)])
    assert sql_store.get_order("ORD-1") == before


def test_update_orders_refuses_shrunken_history(sql_store: SqlStore) -> None:
    a = accepted(make_order(1))
    sql_store.add_order(a)
    a.history.clear()
    with pytest.raises(ValueError, match="append-only"):
        sql_store.update_orders([a])


def test_add_order_twice_raises_and_keeps_the_first(sql_store: SqlStore) -> None:
    first = accepted(make_order(1, note="first"))
    sql_store.add_order(first)
    second = accepted(make_order(1, note="second", quantity=9))
    second.move_to(OrderState.CANCELLED, T0 + 1)
    with pytest.raises(ValueError, match="ORD-1"):
        sql_store.add_order(second)
    assert sql_store.get_order("ORD-1") == first
    assert sql_store.list_orders() == [first]


def test_list_orders_newest_first_with_filter_limit_offset(sql_store: SqlStore) -> None:
    orders = [
        accepted(make_order(1, created_at=T0)),
        accepted(make_order(2, created_at=T0 + 2)),
        accepted(make_order(3, created_at=T0 + 1)),
        accepted(make_order("ORD-3b", created_at=T0 + 1)),  # same time: id breaks the tie
        accepted(make_order(5, created_at=T0 + 3)),
    ]
    for o in orders:
        sql_store.add_order(o)
    orders[1].move_to(OrderState.CANCELLED, T0 + 9)
    orders[4].move_to(OrderState.FAILED, T0 + 9, "blocked corridor")
    sql_store.update_orders([orders[1], orders[4]])

    ids = [o.id for o in sql_store.list_orders()]
    assert ids == ["ORD-5", "ORD-2", "ORD-3b", "ORD-3", "ORD-1"]
    assert [o.id for o in sql_store.list_orders(limit=2)] == ["ORD-5", "ORD-2"]
    assert [o.id for o in sql_store.list_orders(limit=2, offset=2)] == ["ORD-3b", "ORD-3"]
    assert sql_store.list_orders(offset=5) == []
    assert [o.id for o in sql_store.list_orders([OrderState.PENDING])] == [
        "ORD-3b",
        "ORD-3",
        "ORD-1",
    ]
    terminal = sql_store.list_orders(iter(TERMINAL))  # any iterable will do
    assert terminal == [orders[4], orders[1]]
    assert terminal[0].failure_reason == "blocked corridor"

    oracle = InMemoryStore()
    for o in orders:
        oracle.orders[o.id] = copy.deepcopy(o)
    for states, limit, offset in [((), 100, 0), ((OrderState.PENDING,), 2, 1), (TERMINAL, 1, 1)]:
        assert sql_store.list_orders(states, limit, offset) == oracle.list_orders(
            states, limit, offset
        )


def test_load_open_orders_excludes_terminal_oldest_first(sql_store: SqlStore) -> None:
    orders = [accepted(make_order(n, created_at=T0 + 10 - n)) for n in range(1, 7)]
    for o in orders:
        sql_store.add_order(o)
    orders[0].move_to(OrderState.ASSIGNED, T0 + 20)
    orders[0].robot_id = "R1"
    orders[1].move_to(OrderState.ASSIGNED, T0 + 20)
    orders[1].move_to(OrderState.PICKED_UP, T0 + 21)
    orders[1].move_to(OrderState.DELIVERED, T0 + 22)
    orders[2].move_to(OrderState.CANCELLED, T0 + 20)
    orders[3].move_to(OrderState.FAILED, T0 + 20, "lift out of service")
    orders[4].move_to(OrderState.ASSIGNED, T0 + 20)
    orders[4].move_to(OrderState.PICKED_UP, T0 + 21)
    sql_store.update_orders(orders)

    open_orders = sql_store.load_open_orders()
    assert [o.id for o in open_orders] == ["ORD-6", "ORD-5", "ORD-1"]
    assert open_orders == [orders[5], orders[4], orders[0]]


def test_max_order_number(sql_store: SqlStore) -> None:
    assert sql_store.max_order_number() == 0
    for order_id in ["ORD-9", "ORD-10", "ORD-2", "ord-500", "ORD-x7", "ORD-", "XORD-900"]:
        sql_store.add_order(make_order(order_id))
    assert sql_store.max_order_number() == 10  # numeric, not lexicographic; others ignored


def test_robots_upsert_and_load(sql_store: SqlStore) -> None:
    assert sql_store.load_robots() == []
    r1 = make_robot("R1")
    r2 = make_robot(
        "R2",
        capabilities=RobotCapabilities(
            vendor="Swisslog",
            model="TransCar",
            cargo_classes=frozenset({CargoClass.WASTE}),
            capacity_slots=1,
            max_speed_m_s=0.8,
        ),
        carrying=set(),
        mode=RobotMode.IDLE,
    )
    r3 = make_robot(
        "R3",
        capabilities=RobotCapabilities(
            vendor="SimRobotics",
            model="Courier-4",
            cargo_classes=frozenset({CargoClass.CONTROLLED_DRUG, CargoClass.CLEAN}),
            capacity_slots=4,
            max_speed_m_s=1.0,
            max_payload_kg=60.5,
            compartments=4,
        ),
    )
    sql_store.upsert_robot(r1)
    sql_store.upsert_robot(r2)
    sql_store.upsert_robot(r3)
    assert sql_store.load_robots() == [r1, r2, r3]
    assert (r1.capabilities.max_payload_kg, r1.capabilities.compartments) == (None, None)
    sql_store.upsert_robot(r3)  # unchanged: an upsert, not a second row

    r1.node = "OR-3"
    r1.battery_percent = 41.0
    r1.mode = RobotMode.CHARGING
    r1.carrying = {"ORD-7"}
    sql_store.upsert_robot(r1)
    loaded = sql_store.load_robots()
    assert loaded == [r1, r2, r3]
    assert isinstance(loaded[0].carrying, set) and isinstance(loaded[0].mode, RobotMode)


def test_assignments_recorded(sql_store: SqlStore) -> None:
    batch = [
        Assignment("ORD-1", "R1", T0 + 1, 1),
        Assignment("ORD-2", "R1", T0 + 1, 1),
        Assignment("ORD-1", "R2", T0 + 2.5, 2),
    ]
    sql_store.record_assignments(batch[:2])
    sql_store.record_assignments(iter(batch[2:]))
    sql_store.record_assignments([])
    assert sql_store.load_assignments() == batch
    assert sql_store.load_assignments("ORD-1") == [batch[0], batch[2]]


def test_restart_loses_nothing(store_url: str) -> None:
    orders = [accepted(make_order(n, created_at=T0 + n / 7)) for n in range(1, 5)]
    orders[0].move_to(OrderState.ASSIGNED, T0 + 10, "plan 1")
    orders[0].robot_id = "R1"
    orders[3].move_to(OrderState.CANCELLED, T0 + 11, "ward closed")
    robot = make_robot("R1")
    assignment = Assignment("ORD-1", "R1", T0 + 10, 1)

    first = open_store(store_url)
    try:
        for o in orders[:2]:
            first.add_order(o)
        first.add_order(accepted(make_order(3, created_at=orders[2].created_at)))
        first.add_order(orders[3])
        first.update_orders([orders[2]])
        first.upsert_robot(robot)
        first.record_assignments([assignment])
    finally:
        first.close()

    second = open_store(store_url)  # create_all on an existing schema is harmless
    try:
        assert second.load_open_orders() == orders[:3]
        assert second.list_orders(TERMINAL) == [orders[3]]
        assert second.max_order_number() == 4
        assert second.load_robots() == [robot]
        assert second.load_assignments() == [assignment]
    finally:
        second.close()


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'fleet.db'}")
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    finally:
        store.close()


def test_store_usable_from_another_thread(tmp_path: Path) -> None:
    import threading

    store = open_store(f"sqlite:///{tmp_path / 'fleet.db'}")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            store.add_order(make_order(1))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    try:
        store.max_order_number()  # a connection made in this thread...
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        assert errors == []
        assert store.max_order_number() == 1  # ...and used again after the other thread wrote
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/db", "'mysql'"),
        ("postgresql+psycopg2://u@h/db", "'postgresql\\+psycopg2'"),
        ("not a url", "malformed"),
    ],
)
def test_bad_url_is_a_value_error(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)


def test_plain_postgresql_url_is_rewritten_to_psycopg(pg_url: str) -> None:
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    store = open_store(plain)
    try:
        assert store.engine.url.drivername == "postgresql+psycopg"
        store.add_order(make_order(1))
        assert store.max_order_number() == 1
    finally:
        store.close()


def test_memory_sqlite_store() -> None:
    store = open_store("sqlite://")
    try:
        store.add_order(accepted(make_order(1)))
        assert store.load_open_orders() == [accepted(make_order(1))]
    finally:
        store.close()


# -- model-based: random sequences against InMemoryStore as the oracle ---------------------------

_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
    max_size=12,
)
_TIMES = st.floats(min_value=0.0, max_value=4e9, allow_nan=False, allow_infinity=False)


class StoreMachine(RuleBasedStateMachine):
    """The dispatcher's view: orders in memory, written through to SqlStore and the oracle."""

    orders = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.TemporaryDirectory()
        self.url = f"sqlite:///{Path(self._dir.name) / 'fleet.db'}"
        self.store = open_store(self.url)
        self.oracle = InMemoryStore()
        self.live: dict[str, Order] = {}  # the dispatcher's working copies
        self.dirty: set[str] = set()

    @rule(
        target=orders,
        suffix=st.one_of(st.integers(0, 10**12).map(str), st.sampled_from(["x", "1a", ""])),
        prefix=st.sampled_from(["ORD", "ORD", "ORD", "ord", "REQ"]),
        created_at=_TIMES,
        needed_by=st.none() | _TIMES,
        cargo=st.sampled_from(CargoClass),
        priority=st.sampled_from(Priority),
        quantity=st.integers(1, 8),
        note=_TEXT,
        requested_by=_TEXT,
    )
    def add(
        self,
        suffix: str,
        prefix: str,
        created_at: float,
        needed_by: float | None,
        cargo: CargoClass,
        priority: Priority,
        quantity: int,
        note: str,
        requested_by: str,
    ) -> str:
        order = Order(
            id=f"{prefix}-{suffix}",
            pickup_station="WAREHOUSE",
            dropoff_station="WARD-7",
            cargo_class=cargo,
            quantity=quantity,
            priority=priority,
            created_at=created_at,
            needed_by=needed_by,
            requested_by=requested_by,
            note=note,
        )
        order.history.append(OrderEvent(created_at, OrderState.PENDING, "accepted"))
        try:
            self.oracle.add_order(order)
        except ValueError:
            with pytest.raises(ValueError):
                self.store.add_order(order)
            return order.id
        self.store.add_order(order)
        self.live[order.id] = copy.deepcopy(order)
        return order.id

    @rule(
        order_id=orders,
        state=st.sampled_from(OrderState),
        at=_TIMES,
        detail=_TEXT,
        robot=st.none() | st.sampled_from(["R1", "R2"]),
        eta=st.none() | _TIMES,
    )
    def move(
        self,
        order_id: str,
        state: OrderState,
        at: float,
        detail: str,
        robot: str | None,
        eta: float | None,
    ) -> None:
        order = self.live[order_id]
        try:
            order.move_to(state, at, detail)
        except FailedPrecondition:
            return
        if state is OrderState.ASSIGNED:
            order.robot_id = robot
            order.eta = eta
        self.dirty.add(order_id)

    @rule()
    def flush(self) -> None:
        batch = [self.live[i] for i in sorted(self.dirty)]
        self.store.update_orders(batch)
        self.oracle.update_orders(batch)
        self.dirty.clear()

    @rule()
    def restart(self) -> None:
        self.store.close()
        self.store = open_store(self.url)

    @invariant()
    def same_as_oracle(self) -> None:
        assert self.store.load_open_orders() == self.oracle.load_open_orders()
        big = len(self.oracle.orders) + 1
        assert self.store.list_orders(TERMINAL, limit=big) == self.oracle.list_orders(
            TERMINAL, limit=big
        )
        assert self.store.max_order_number() == self.oracle.max_order_number()

    def teardown(self) -> None:
        self.store.close()
        self._dir.cleanup()


StoreMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_store_matches_in_memory_oracle = StoreMachine.TestCase
