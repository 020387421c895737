"""Invariants of dispatch under random orders, cancellations and robot failures.

After every simulated event: no exclusive resource (door passage, lift car) has more holders
than it admits, the physical world saw no conflict and no unsafe move (a robot entering a car
that is not its session's, or a door that is not open), and the store holds every order
exactly as the core does. At the end every order is delivered, cancelled, or failed with a
reason.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.building.model import Building
from fleet.dispatch.messages import CancelOrder
from fleet.domain.cargo import CargoClass
from fleet.domain.errors import DomainError
from fleet.domain.order import OrderState
from fleet.domain.priority import Priority
from simulators.fast import FastTwin
from tests.unit.twin_helpers import clean_robot, dirty_robot, order

CLEAN_ROUTES = [
    ("WH-PORT-1", "OR-01"),
    ("WH-PORT-2", "OR-07"),
    ("WH-PORT-1", "WARD-A"),
    ("STERILE-CORE", "OR-04"),
    ("WH-PORT-2", "GOWN-DISPENSER"),
    ("PHARMACY", "OR-03"),
    ("WH-PORT-1", "WARD-C"),
]
DIRTY_ROUTES = [("SOILED-UTIL-1", "WASTE-STATION"), ("WARD-SOILED", "WASTE-STATION")]

event = st.one_of(
    st.tuples(
        st.just("order"),
        st.sampled_from(CLEAN_ROUTES + DIRTY_ROUTES),
        st.integers(1, 4),
        st.sampled_from(list(Priority)),
        st.floats(0, 900),
    ),
    st.tuples(st.just("cancel"), st.integers(0, 30), st.floats(0, 600)),
    st.tuples(st.just("robot_down"), st.integers(0, 3), st.floats(0, 900)),
    st.tuples(st.just("robot_up"), st.integers(0, 3), st.floats(0, 900)),
)


def _check(t: FastTwin) -> bool:
    core = t.core
    assert core.traffic.over_capacity() == []
    assert t.world.conflicts == 0
    assert t.world.violations == []
    for lift, car in t.world.lifts.items():
        for rid in car.occupants:
            # A robot rides only a car whose session is its own.
            assert car.session_id.startswith(f"{rid}/lift:{lift}/"), (rid, car.session_id)
    return False


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=st.lists(event, min_size=1, max_size=14))
def test_invariants_hold_under_random_orders_and_faults(
    demo_building: Building, events: list[tuple[object, ...]]
) -> None:
    specs = [
        clean_robot("AMR-01", "B1-CHARGER-1"),
        clean_robot("AMR-02", "B1-PARK-1"),
        clean_robot("AMR-03", "B1-CHARGER-2"),
        dirty_robot("WST-01", "B1-CHARGER-4"),
    ]
    t = FastTwin(demo_building, specs)
    t.start()
    ids = [s.robot_id for s in specs]
    created: list[str] = []
    for ev in events:
        kind, *args = ev
        if kind == "order":
            (pick, drop), qty, prio, wait = args
            assert isinstance(wait, float)
            t.run_until(t.clock.now() + wait, stop=lambda: _check(t))
            dirty = (pick, drop) in DIRTY_ROUTES
            cargo = CargoClass.WASTE if dirty else CargoClass.CLEAN
            o = t.handle(order(str(pick), str(drop), cargo, int(qty), prio))  # type: ignore[arg-type]
            assert o is not None
            created.append(o.id)
        elif kind == "cancel":
            idx, wait = args
            assert isinstance(wait, float) and isinstance(idx, int)
            t.run_until(t.clock.now() + wait, stop=lambda: _check(t))
            if created:
                oid = created[idx % len(created)]
                before = t.core.orders[oid].state
                try:
                    t.handle(CancelOrder(oid, "changed my mind"))
                    assert before in (OrderState.PENDING, OrderState.ASSIGNED)
                except DomainError:
                    assert t.core.orders[oid].state is not OrderState.CANCELLED or (
                        before is OrderState.CANCELLED
                    )
        else:
            idx, wait = args
            assert isinstance(wait, float) and isinstance(idx, int)
            t.run_until(t.clock.now() + wait, stop=lambda: _check(t))
            robot = t.robots[ids[idx]]
            if kind == "robot_down" and robot.connected:
                robot.disconnect()
            elif kind == "robot_up" and not robot.connected:
                robot.connect()
        _store_matches_core(t)
    # Bring every robot back and let the fleet finish.
    for rid in ids:
        if not t.robots[rid].connected:
            t.robots[rid].connect()
    t.run_until(t.clock.now() + 6 * 3600, stop=lambda: _check(t) or t.all_done())
    _store_matches_core(t)
    for oid in created:
        o = t.core.orders[oid]
        assert o.state in (OrderState.DELIVERED, OrderState.CANCELLED, OrderState.FAILED), o
        if o.state is OrderState.FAILED:
            assert o.failure_reason
    assert len(t.core.orders) == len(created)


def _store_matches_core(t: FastTwin) -> None:
    """No order is lost: the store has each one, in the state the core has."""
    stored = {o.id: o for o in t.store.list_orders(limit=10_000)}
    assert set(stored) == set(t.core.orders)
    for oid, o in t.core.orders.items():
        assert stored[oid].state is o.state
        assert stored[oid].history == o.history


def test_run_until_stop_hook_is_checked(demo_building: Building) -> None:
    """The invariant hook really runs after events (a check that could not fail is useless)."""
    t = FastTwin(demo_building, [clean_robot("AMR-01")])
    t.start()
    calls = []
    t.run_until(t.clock.now() + 30, stop=lambda: calls.append(1) is not None)
    assert calls
