"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.building.loader import load_building
from fleet.building.model import Building

ROOT = Path(__file__).resolve().parent.parent
DEMO_MAP = ROOT / "maps" / "demo_hospital.yaml"


@pytest.fixture(scope="session")
def demo_building() -> Building:
    """The demo hospital map, loaded once."""
    return load_building(DEMO_MAP)
