"""Robots as the dispatcher knows them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from fleet.domain.cargo import CargoClass, Flow, flow_of_classes


class RobotMode(StrEnum):
    """What a robot is doing, as far as dispatch is concerned."""

    IDLE = "IDLE"
    BUSY = "BUSY"
    CHARGING = "CHARGING"
    PAUSED = "PAUSED"
    FAULT = "FAULT"
    OFFLINE = "OFFLINE"


@dataclass(frozen=True)
class RobotCapabilities:
    """What a robot says it can do when it connects.

    `max_payload_kg`: the most weight it may carry at once (None: no limit). `compartments`: how
    many lockable compartments it has, each holding one order (None: no compartment rule).
    """

    vendor: str
    model: str
    cargo_classes: frozenset[CargoClass]
    capacity_slots: int
    max_speed_m_s: float
    max_payload_kg: float | None = None
    compartments: int | None = None

    @property
    def flow(self) -> Flow:
        """The clean or dirty flow this robot works in."""
        return flow_of_classes(self.cargo_classes)

    def can_carry(self, cargo: CargoClass) -> bool:
        """True when the robot is allowed to carry `cargo`."""
        return cargo in self.cargo_classes


@dataclass
class Robot:
    """A robot's identity, capabilities and last known whereabouts."""

    id: str
    capabilities: RobotCapabilities
    node: str
    level: str = ""
    x: float = 0.0
    y: float = 0.0
    battery_percent: float = 100.0
    mode: RobotMode = RobotMode.IDLE
    last_seen: float = 0.0
    carrying: set[str] = field(default_factory=set)  # order ids on board
