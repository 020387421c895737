"""What the dispatcher core needs from the outside world, as protocols.

The store (`fleet.store`) implements `FleetStore` with SQLModel; `InMemoryStore` here serves
unit tests and store-less simulations. Every method that writes is durable when it returns:
the core acknowledges an order only after `add_order` returned.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from fleet.domain.order import Order, OrderState
from fleet.domain.robot import Robot


@dataclass(frozen=True)
class Assignment:
    """A robot was given an order by plan version `plan_version` at time `at`."""

    order_id: str
    robot_id: str
    at: float
    plan_version: int


class FleetStore(Protocol):
    """Durable storage of orders (with their history), robots and assignments."""

    def add_order(self, order: Order) -> None:
        """Insert a new order and its history; raises if the id exists."""
        ...

    def update_orders(self, orders: Iterable[Order]) -> None:
        """Write the current fields of existing orders and any history entries not yet stored,
        all in one transaction."""
        ...

    def get_order(self, order_id: str) -> Order | None: ...

    def list_orders(
        self, states: Iterable[OrderState] = (), limit: int = 100, offset: int = 0
    ) -> list[Order]:
        """Orders, newest first, optionally only those in `states`."""
        ...

    def load_open_orders(self) -> list[Order]:
        """Every order not in a terminal state, oldest first, with its history."""
        ...

    def max_order_number(self) -> int:
        """The largest N among stored order ids of the form ORD-N, or 0."""
        ...

    def upsert_robot(self, robot: Robot) -> None: ...

    def load_robots(self) -> list[Robot]: ...

    def record_assignments(self, assignments: Iterable[Assignment]) -> None: ...

    def close(self) -> None: ...


class InMemoryStore:
    """A FleetStore that keeps copies in dictionaries: for tests and store-less runs."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.robots: dict[str, Robot] = {}
        self.assignments: list[Assignment] = []

    def add_order(self, order: Order) -> None:
        if order.id in self.orders:
            raise ValueError(f"order {order.id} already stored")
        self.orders[order.id] = copy.deepcopy(order)

    def update_orders(self, orders: Iterable[Order]) -> None:
        for order in orders:
            if order.id not in self.orders:
                raise KeyError(order.id)
            self.orders[order.id] = copy.deepcopy(order)

    def get_order(self, order_id: str) -> Order | None:
        order = self.orders.get(order_id)
        return copy.deepcopy(order) if order else None

    def list_orders(
        self, states: Iterable[OrderState] = (), limit: int = 100, offset: int = 0
    ) -> list[Order]:
        wanted = set(states)
        rows = [o for o in self.orders.values() if not wanted or o.state in wanted]
        rows.sort(key=lambda o: (o.created_at, o.id), reverse=True)
        return [copy.deepcopy(o) for o in rows[offset : offset + limit]]

    def load_open_orders(self) -> list[Order]:
        rows = [o for o in self.orders.values() if not o.state.terminal]
        rows.sort(key=lambda o: (o.created_at, o.id))
        return [copy.deepcopy(o) for o in rows]

    def max_order_number(self) -> int:
        return max((order_number(i) for i in self.orders), default=0)

    def upsert_robot(self, robot: Robot) -> None:
        self.robots[robot.id] = copy.deepcopy(robot)

    def load_robots(self) -> list[Robot]:
        return [copy.deepcopy(r) for r in self.robots.values()]

    def record_assignments(self, assignments: Iterable[Assignment]) -> None:
        self.assignments.extend(assignments)

    def close(self) -> None:
        pass


def order_number(order_id: str) -> int:
    """N for an id `ORD-N`; 0 for any other id."""
    prefix, _, digits = order_id.partition("-")
    return int(digits) if prefix == "ORD" and digits.isascii() and digits.isdigit() else 0
