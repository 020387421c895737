"""Cargo classes and the clean/dirty flows they belong to."""

from __future__ import annotations

import functools
from enum import StrEnum


class CargoClass(StrEnum):
    """What a load is; decides who may carry it and along which lanes, doors and lifts."""

    STERILE = "STERILE"
    CLEAN = "CLEAN"
    LINEN = "LINEN"
    SOILED = "SOILED"
    WASTE = "WASTE"
    CONTROLLED_DRUG = "CONTROLLED_DRUG"


class Flow(StrEnum):
    """The hygiene flow of a load: hospitals keep clean and dirty traffic apart."""

    CLEAN = "CLEAN"
    DIRTY = "DIRTY"


class Access(StrEnum):
    """Which flow a lane, door or lift admits."""

    ANY = "ANY"
    CLEAN = "CLEAN"
    DIRTY = "DIRTY"

    def admits(self, flow: Flow) -> bool:
        """True when traffic of `flow` may use something restricted to this access."""
        return self is Access.ANY or self.value == flow.value


_DIRTY = frozenset({CargoClass.SOILED, CargoClass.WASTE})


def flow_of(cargo: CargoClass) -> Flow:
    """The flow a cargo class travels in: soiled goods and waste are dirty, all else clean."""
    return Flow.DIRTY if cargo in _DIRTY else Flow.CLEAN


@functools.cache  # asked for every robot at every planning step; few distinct sets exist
def flow_of_classes(classes: frozenset[CargoClass]) -> Flow:
    """The single flow a robot allowed to carry `classes` works in.

    Raises ValueError when the classes mix clean and dirty cargo: such a robot could carry both
    in one load, which the hygiene rules forbid.
    """
    flows = {flow_of(c) for c in classes}
    if len(flows) != 1:
        raise ValueError(
            "a robot's cargo classes must all be clean or all be dirty, got "
            + ", ".join(sorted(c.value for c in classes))
        )
    return flows.pop()
