"""`SqlStore`: the durable `FleetStore` on SQLite (default, WAL) or PostgreSQL.

Every write method is one transaction, committed before it returns. Reads return fresh domain
objects equal to what was written, history included.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, col, create_engine, select

from fleet.dispatch.ports import Assignment, FleetStore, order_number
from fleet.domain.cargo import CargoClass
from fleet.domain.order import Order, OrderEvent, OrderState
from fleet.domain.priority import Priority
from fleet.domain.robot import Robot, RobotCapabilities, RobotMode
from fleet.store.tables import AssignmentRow, OrderEventRow, OrderRow, RobotRow

_TERMINAL_STATES = [s.value for s in OrderState if s.terminal]
# Ids per IN (...) list: far below every backend's bound-parameter limit.
_CHUNK = 500

_SUPPORTED = "use sqlite:///path/fleet.db or postgresql+psycopg://user@host:port/dbname"


def open_store(url: str) -> SqlStore:
    """Open (creating tables if missing) the store at `url` and return it.

    Accepted URLs: `sqlite:///path/fleet.db` (the default form; the file's directory is created
    if missing; `sqlite://` is an in-memory database), `postgresql+psycopg://...`, and the plain
    `postgresql://...` / `postgres://...`, which are rewritten to use psycopg 3.
    Raises ValueError for a malformed URL or an unsupported scheme.
    """
    return SqlStore(create_store_engine(url))


def create_store_engine(url: str) -> Engine:
    """An engine for `url` configured as `open_store` describes; tables are created if missing."""
    parsed = _parse_url(url)
    engine: Engine
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            # One shared connection, or every pooled connection would see its own empty database.
            engine = create_engine(
                parsed, connect_args={"check_same_thread": False}, poolclass=StaticPool
            )
        else:
            if not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(parsed, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(parsed, pool_pre_ping=True)
    try:
        # Every table registered with SQLModel: ours (imported above) and any other module's.
        SQLModel.metadata.create_all(engine)
        if "custody_events" in SQLModel.metadata.tables:
            # The custody ledger's tables never exist without their append-only triggers.
            from fleet.store.ledger import install_ledger_schema

            install_ledger_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"malformed database URL {url!r}: {_SUPPORTED}") from exc
    driver = parsed.drivername
    if driver in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    if driver in ("postgresql+psycopg", "sqlite", "sqlite+pysqlite"):
        return parsed
    raise ValueError(
        f"unsupported database URL scheme {driver!r} in "
        f"{parsed.render_as_string(hide_password=True)!r}: {_SUPPORTED}"
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


class SqlStore:
    """A `FleetStore` on a SQLAlchemy engine (see `open_store`).

    Not safe for concurrent use: it may be called from any thread, but one call at a time (the
    dispatcher core is the single writer).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- orders ------------------------------------------------------------------------------

    def add_order(self, order: Order) -> None:
        """Insert a new order and its history; raises ValueError if the id exists."""
        with Session(self.engine) as session:
            if session.get(OrderRow, order.id) is not None:
                raise ValueError(f"order {order.id} already stored")
            try:
                session.add(_order_row(order))
                session.flush()  # the order row before its history rows (foreign key)
                session.add_all(_event_rows(order, start=0))
                session.commit()
            except IntegrityError as exc:
                raise ValueError(f"order {order.id} already stored") from exc

    def update_orders(self, orders: Iterable[Order]) -> None:
        """Write the current fields of existing orders and their history entries not yet stored,
        all in one transaction.

        Raises KeyError (writing nothing) if an order is not stored, and ValueError if an order's
        history is shorter than what is stored (history is append-only).
        """
        batch = list(orders)
        if not batch:
            return
        ids = list(dict.fromkeys(o.id for o in batch))
        with Session(self.engine) as session:
            rows: dict[str, OrderRow] = {}
            stored: dict[str, int] = {}
            for chunk in _chunks(ids):
                for found in session.exec(select(OrderRow).where(col(OrderRow.id).in_(chunk))):
                    rows[found.id] = found
                for order_id, seq in session.exec(
                    select(OrderEventRow.order_id, OrderEventRow.seq).where(
                        col(OrderEventRow.order_id).in_(chunk)
                    )
                ):
                    stored[order_id] = max(stored.get(order_id, 0), seq + 1)
            for order in batch:
                row = rows.get(order.id)
                if row is None:
                    raise KeyError(order.id)
                have = stored.get(order.id, 0)
                if len(order.history) < have:
                    raise ValueError(
                        f"order {order.id} has {len(order.history)} history entries but "
                        f"{have} are stored: history is append-only"
                    )
                _copy_order_fields(order, row)
                session.add_all(_event_rows(order, start=have))
                stored[order.id] = len(order.history)
            session.commit()

    def get_order(self, order_id: str) -> Order | None:
        """The stored order `order_id` with its history, or None."""
        with Session(self.engine) as session:
            row = session.get(OrderRow, order_id)
            if row is None:
                return None
            return _orders_with_history(session, [row])[0]

    def list_orders(
        self, states: Iterable[OrderState] = (), limit: int = 100, offset: int = 0
    ) -> list[Order]:
        """Orders, newest first by (created_at, id), optionally only those in `states`."""
        wanted = [OrderState(s).value for s in states]
        query = select(OrderRow)
        if wanted:
            query = query.where(col(OrderRow.state).in_(wanted))
        query = (
            query.order_by(col(OrderRow.created_at).desc(), col(OrderRow.id).desc())
            .limit(limit)
            .offset(offset)
        )
        with Session(self.engine) as session:
            return _orders_with_history(session, session.exec(query).all())

    def load_open_orders(self) -> list[Order]:
        """Every order not in a terminal state, oldest first by (created_at, id), with history."""
        open_rows = col(OrderRow.state).not_in(_TERMINAL_STATES)
        with Session(self.engine) as session:
            rows = session.exec(
                select(OrderRow)
                .where(open_rows)
                .order_by(col(OrderRow.created_at), col(OrderRow.id))
            ).all()
            events = session.exec(
                select(OrderEventRow)
                .join(OrderRow, col(OrderRow.id) == col(OrderEventRow.order_id))
                .where(open_rows)
                .order_by(col(OrderEventRow.order_id), col(OrderEventRow.seq))
            ).all()
            return _assemble(rows, events)

    def max_order_number(self) -> int:
        """The largest N among stored order ids of the form ORD-N, or 0."""
        with Session(self.engine) as session:
            ids = session.exec(select(OrderRow.id).where(col(OrderRow.id).like("ORD-%"))).all()
        return max((order_number(i) for i in ids), default=0)

    # -- robots ------------------------------------------------------------------------------

    def upsert_robot(self, robot: Robot) -> None:
        """Insert the robot, or overwrite the stored robot with the same id."""
        with Session(self.engine) as session:
            session.merge(_robot_row(robot))
            session.commit()

    def load_robots(self) -> list[Robot]:
        """Every stored robot, ordered by id."""
        with Session(self.engine) as session:
            rows = session.exec(select(RobotRow).order_by(col(RobotRow.id))).all()
            return [_robot(r) for r in rows]

    # -- assignments -------------------------------------------------------------------------

    def record_assignments(self, assignments: Iterable[Assignment]) -> None:
        """Append the assignments, in order, in one transaction."""
        rows = [
            AssignmentRow(
                order_id=a.order_id, robot_id=a.robot_id, at=a.at, plan_version=a.plan_version
            )
            for a in assignments
        ]
        if not rows:
            return
        with Session(self.engine) as session:
            session.add_all(rows)
            session.commit()

    def load_assignments(self, order_id: str | None = None) -> list[Assignment]:
        """Recorded assignments in the order they were recorded, optionally of one order only.

        Not part of `FleetStore`: for audits, reports and tests.
        """
        query = select(AssignmentRow).order_by(col(AssignmentRow.id))
        if order_id is not None:
            query = query.where(col(AssignmentRow.order_id) == order_id)
        with Session(self.engine) as session:
            return [
                Assignment(
                    order_id=r.order_id, robot_id=r.robot_id, at=r.at, plan_version=r.plan_version
                )
                for r in session.exec(query)
            ]

    def close(self) -> None:
        """Release every database connection (the store is unusable afterwards)."""
        self.engine.dispose()


def _conforms(store: SqlStore) -> FleetStore:
    """Never called: mypy checks here that SqlStore matches the FleetStore protocol."""
    return store


# -- translation between rows and the domain ---------------------------------------------------


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _order_row(order: Order) -> OrderRow:
    row = OrderRow(
        id=order.id,
        pickup_station=order.pickup_station,
        dropoff_station=order.dropoff_station,
        cargo_class=order.cargo_class.value,
        quantity=order.quantity,
        priority=order.priority.value,
        created_at=order.created_at,
        state=order.state.value,
    )
    _copy_order_fields(order, row)
    return row


def _copy_order_fields(order: Order, row: OrderRow) -> None:
    row.pickup_station = order.pickup_station
    row.dropoff_station = order.dropoff_station
    row.cargo_class = order.cargo_class.value
    row.quantity = order.quantity
    row.priority = order.priority.value
    row.created_at = order.created_at
    row.needed_by = order.needed_by
    row.requested_by = order.requested_by
    row.note = order.note
    row.state = order.state.value
    row.robot_id = order.robot_id
    row.eta = order.eta
    row.picked_up_at = order.picked_up_at
    row.delivered_at = order.delivered_at
    row.failure_reason = order.failure_reason
    row.weight_kg = order.weight_kg
    row.return_of = order.return_of
    row.compartment = order.compartment
    row.pinned_robot = order.pinned_robot
    row.custody_case = order.custody_case


def _event_rows(order: Order, start: int) -> list[OrderEventRow]:
    return [
        OrderEventRow(order_id=order.id, seq=seq, at=e.at, state=e.state.value, detail=e.detail)
        for seq, e in enumerate(order.history[start:], start=start)
    ]


def _orders_with_history(session: Session, rows: Sequence[OrderRow]) -> list[Order]:
    """Domain orders for `rows` (in that order), each with its history."""
    ids = [r.id for r in rows]
    events: list[OrderEventRow] = []
    for chunk in _chunks(ids):
        events.extend(
            session.exec(
                select(OrderEventRow)
                .where(col(OrderEventRow.order_id).in_(chunk))
                .order_by(col(OrderEventRow.order_id), col(OrderEventRow.seq))
            )
        )
    return _assemble(rows, events)


def _assemble(rows: Sequence[OrderRow], events: Iterable[OrderEventRow]) -> list[Order]:
    """Orders for `rows` in that order; `events` sorted by seq within each order."""
    history: dict[str, list[OrderEvent]] = {r.id: [] for r in rows}
    for e in events:
        entries = history.get(e.order_id)
        if entries is not None:
            entries.append(OrderEvent(at=e.at, state=OrderState(e.state), detail=e.detail))
    return [_order(r, history[r.id]) for r in rows]


def _order(row: OrderRow, history: list[OrderEvent]) -> Order:
    return Order(
        id=row.id,
        pickup_station=row.pickup_station,
        dropoff_station=row.dropoff_station,
        cargo_class=CargoClass(row.cargo_class),
        quantity=row.quantity,
        priority=Priority(row.priority),
        created_at=row.created_at,
        needed_by=row.needed_by,
        requested_by=row.requested_by,
        note=row.note,
        state=OrderState(row.state),
        robot_id=row.robot_id,
        eta=row.eta,
        picked_up_at=row.picked_up_at,
        delivered_at=row.delivered_at,
        failure_reason=row.failure_reason,
        history=history,
        weight_kg=row.weight_kg,
        return_of=row.return_of,
        compartment=row.compartment,
        pinned_robot=row.pinned_robot,
        custody_case=row.custody_case,
    )


def _robot_row(robot: Robot) -> RobotRow:
    caps = robot.capabilities
    return RobotRow(
        id=robot.id,
        vendor=caps.vendor,
        model=caps.model,
        cargo_classes=_join(c.value for c in caps.cargo_classes),
        capacity_slots=caps.capacity_slots,
        max_speed_m_s=caps.max_speed_m_s,
        max_payload_kg=caps.max_payload_kg,
        compartments=caps.compartments,
        node=robot.node,
        level=robot.level,
        x=robot.x,
        y=robot.y,
        battery_percent=robot.battery_percent,
        mode=robot.mode.value,
        last_seen=robot.last_seen,
        carrying=_join(robot.carrying),
    )


def _robot(row: RobotRow) -> Robot:
    return Robot(
        id=row.id,
        capabilities=RobotCapabilities(
            vendor=row.vendor,
            model=row.model,
            cargo_classes=frozenset(CargoClass(c) for c in _split(row.cargo_classes)),
            capacity_slots=row.capacity_slots,
            max_speed_m_s=row.max_speed_m_s,
            max_payload_kg=row.max_payload_kg,
            compartments=row.compartments,
        ),
        node=row.node,
        level=row.level,
        x=row.x,
        y=row.y,
        battery_percent=row.battery_percent,
        mode=RobotMode(row.mode),
        last_seen=row.last_seen,
        carrying=set(_split(row.carrying)),
    )


def _join(values: Iterable[str]) -> str:
    items = sorted(values)
    for item in items:
        if "," in item or not item:
            raise ValueError(f"cannot store {item!r} in a comma-joined list")
    return ",".join(items)


def _split(joined: str) -> list[str]:
    return joined.split(",") if joined else []
