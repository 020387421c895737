"""Small builders for tests that run the fast digital twin."""

from __future__ import annotations

from fleet.building.model import Building
from fleet.dispatch.messages import CreateOrder
from fleet.domain.cargo import CargoClass
from fleet.domain.priority import Priority
from simulators.fast import CLEAN_CLASSES, DIRTY_CLASSES, FastTwin
from simulators.robot import RobotSpec


def clean_robot(rid: str, node: str = "B1-CHARGER-1") -> RobotSpec:
    """A material robot."""
    return RobotSpec(rid, CLEAN_CLASSES, node)


def dirty_robot(rid: str, node: str = "B1-CHARGER-4") -> RobotSpec:
    """A waste robot."""
    return RobotSpec(rid, DIRTY_CLASSES, node)


def twin(building: Building, *specs: RobotSpec, record: bool = True) -> FastTwin:
    """A started twin with these robots."""
    t = FastTwin(building, list(specs), record_events=record)
    t.start()
    t.run_until(t.clock.now() + 1)
    return t


def order(
    pickup: str = "WH-PORT-1",
    dropoff: str = "OR-03",
    cargo: CargoClass | None = CargoClass.STERILE,
    quantity: int = 1,
    priority: Priority = Priority.ROUTINE,
    needed_by: float | None = None,
) -> CreateOrder:
    """A CreateOrder command with sensible defaults."""
    return CreateOrder(pickup, dropoff, cargo, quantity, priority, needed_by)
