"""SQLModel table classes: the database shape of orders, their history, robots and assignments.

Enums are stored as their string values; times as float seconds since the Unix epoch (REAL in
SQLite, double precision in PostgreSQL), so a value read back is exactly the value written.
Set-valued fields (a robot's cargo classes, the order ids it carries) are comma-joined strings.
There are no migrations yet: tables are created when missing, so columns added later (weight,
return leg, compartments) exist only in databases created since.
These classes are rows only: `fleet.store.sql_store` translates them to and from the domain.
"""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class OrderRow(SQLModel, table=True):
    """One order's current fields (table `orders`)."""

    __tablename__ = "orders"

    id: str = Field(primary_key=True)
    pickup_station: str
    dropoff_station: str
    cargo_class: str
    quantity: int
    priority: str
    created_at: float = Field(index=True)
    needed_by: float | None = None
    requested_by: str = ""
    note: str = ""
    state: str = Field(index=True)
    robot_id: str | None = None
    eta: float | None = None
    picked_up_at: float | None = None
    delivered_at: float | None = None
    failure_reason: str = ""
    weight_kg: float = 0.0
    return_of: str = ""  # the outbound order of a return leg
    compartment: int | None = None  # index from 0; NULL while not known
    pinned_robot: str | None = None
    custody_case: str = ""  # the controlled-drug custody case carried ("" for none)


class OrderEventRow(SQLModel, table=True):
    """Entry `seq` (0-based) of an order's append-only history (table `order_events`)."""

    __tablename__ = "order_events"

    order_id: str = Field(primary_key=True, foreign_key="orders.id")
    seq: int = Field(primary_key=True)
    at: float
    state: str
    detail: str = ""


class RobotRow(SQLModel, table=True):
    """A robot's capabilities and last known whereabouts (table `robots`)."""

    __tablename__ = "robots"

    id: str = Field(primary_key=True)
    vendor: str
    model: str
    cargo_classes: str  # comma-joined CargoClass values, sorted
    capacity_slots: int
    max_speed_m_s: float
    max_payload_kg: float | None = None  # NULL: no limit
    compartments: int | None = None  # NULL: no compartment rule
    node: str
    level: str = ""
    x: float = 0.0
    y: float = 0.0
    battery_percent: float = 100.0
    mode: str
    last_seen: float = 0.0
    carrying: str = ""  # comma-joined order ids, sorted


class AssignmentRow(SQLModel, table=True):
    """A robot was given an order by a plan version (table `assignments`)."""

    __tablename__ = "assignments"

    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(index=True)
    robot_id: str
    at: float
    plan_version: int
