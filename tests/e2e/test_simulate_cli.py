"""The acceptance command: `fleet simulate --map maps/demo_hospital.yaml --robots 10 --hours 8
--seed 1 --json`, run twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet.cli import main
from fleet.store import open_store
from tests.conftest import DEMO_MAP

ARGS = ["simulate", "--map", str(DEMO_MAP), "--robots", "10", "--hours", "8", "--seed", "1"]


def _run(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, object]:
    assert main([*ARGS, *extra, "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert isinstance(report, dict)
    return report


def test_eight_hours_ten_robots_replays_and_accounts_for_every_order(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'sim.db'}"
    first = _run(capsys, "--db", db)
    second = _run(capsys)
    assert first["conflicts"] == 0 and first["safety_violations"] == 0
    created = first["orders_created"]
    assert isinstance(created, int) and created > 200
    assert first["orders_delivered"] + first["orders_failed"] == created  # type: ignore[operator]
    assert first["orders_failed"] == sum(first["failure_reasons"].values())  # type: ignore[union-attr]
    first.pop("wall_seconds"), second.pop("wall_seconds")
    assert first == second
    # The run kept its store: every order is there, finished.
    store = open_store(db)
    try:
        stored = store.list_orders(limit=10_000)
        assert len(stored) == created
        assert all(o.state.terminal for o in stored)
    finally:
        store.close()
