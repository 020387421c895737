"""Orders: what a person asked for, and the states an order moves through."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from fleet.domain.cargo import CargoClass
from fleet.domain.errors import FailedPrecondition
from fleet.domain.priority import Priority


class OrderState(StrEnum):
    """Where an order is in its life."""

    PENDING = "PENDING"  # accepted, waiting for a robot
    ASSIGNED = "ASSIGNED"  # a robot's plan holds it, not yet picked up
    PICKED_UP = "PICKED_UP"  # on board a robot
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        """True for states an order never leaves."""
        return self in _TERMINAL


_TERMINAL = frozenset({OrderState.DELIVERED, OrderState.CANCELLED, OrderState.FAILED})

_ALLOWED: dict[OrderState, frozenset[OrderState]] = {
    OrderState.PENDING: frozenset({OrderState.ASSIGNED, OrderState.CANCELLED, OrderState.FAILED}),
    OrderState.ASSIGNED: frozenset(
        {
            OrderState.PENDING,
            OrderState.ASSIGNED,
            OrderState.PICKED_UP,
            OrderState.CANCELLED,
            OrderState.FAILED,
        }
    ),
    OrderState.PICKED_UP: frozenset({OrderState.DELIVERED, OrderState.FAILED}),
    OrderState.DELIVERED: frozenset(),
    OrderState.CANCELLED: frozenset(),
    OrderState.FAILED: frozenset(),
}


@dataclass(frozen=True)
class OrderEvent:
    """One entry of an order's history."""

    at: float
    state: OrderState
    detail: str = ""


@dataclass
class Order:
    """A request to move `quantity` slots of `cargo_class` from one station to another.

    Times are seconds since the Unix epoch, from the injected clock.

    - `weight_kg`: the load's weight (0: not given, counted as weightless).
    - `return_of`: for a controlled drug's return leg, the id of the outbound order it returns
      from ("" for every other order).
    - `compartment`: the robot compartment (index from 0) the order rides in; None while not
      known (not planned yet, or the robot has no compartments). Plans may move an order that is
      not yet on board to another compartment; once loaded it stays.
    - `pinned_robot`: the only robot that may carry the order (a return leg stays on the robot
      that brought the outbound); None: any robot. A pinned order's `compartment` is fixed from
      the start: the outbound's (see `pinned_compartment`).
    - `custody_case`: the controlled-drug custody case it carries ("" for none); its pickup and
      drop-off wait for people (secure steps).
    """

    id: str
    pickup_station: str
    dropoff_station: str
    cargo_class: CargoClass
    quantity: int
    priority: Priority
    created_at: float
    needed_by: float | None = None
    requested_by: str = ""
    note: str = ""
    state: OrderState = OrderState.PENDING
    robot_id: str | None = None
    eta: float | None = None
    picked_up_at: float | None = None
    delivered_at: float | None = None
    failure_reason: str = ""
    history: list[OrderEvent] = field(default_factory=list)
    weight_kg: float = 0.0
    return_of: str = ""
    compartment: int | None = None
    pinned_robot: str | None = None
    custody_case: str = ""

    @property
    def pinned_compartment(self) -> int | None:
        """The compartment the order must ride in: its own for a pinned order, else None.

        (The insertion reads this name from the orders it finds in routes, as on `Task`.)
        """
        return self.compartment if self.pinned_robot is not None else None

    def move_to(self, state: OrderState, at: float, detail: str = "") -> None:
        """Change state, enforcing the allowed transitions and recording history."""
        if state not in _ALLOWED[self.state]:
            raise FailedPrecondition(
                f"order {self.id} is {self.state.value} and cannot become {state.value}"
            )
        self.state = state
        self.history.append(OrderEvent(at=at, state=state, detail=detail))
        if state is OrderState.PICKED_UP:
            self.picked_up_at = at
        elif state is OrderState.DELIVERED:
            self.delivered_at = at
            self.eta = None
        elif state is OrderState.FAILED:
            self.failure_reason = detail
            self.eta = None
        elif state is OrderState.CANCELLED:
            self.eta = None
        elif state is OrderState.PENDING:
            self.robot_id = None
            self.eta = None
            if self.pinned_robot is None:
                self.compartment = None  # a plan's choice; a pinned compartment stays

    @property
    def on_time(self) -> bool | None:
        """Whether a delivered order met its needed-by time (None when not applicable)."""
        if self.delivered_at is None or self.needed_by is None:
            return None
        return self.delivered_at <= self.needed_by
