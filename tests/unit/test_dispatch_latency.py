"""The dispatch-latency benchmark, run tiny: it times the real core and checks every answer.

No timing assertions here (the figures live in BENCHMARKS.md): these tests check that the timed
arrivals go through `FleetCore.handle(CreateOrder)` and come back assigned with an ETA, that the
plan keeps its size, and that an answer without a robot is counted as a failure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import dispatch_latency

DEMO_MAP = Path(__file__).resolve().parents[2] / "maps" / "demo_hospital.yaml"


def _run(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any]]:
    code = dispatch_latency.main(["--map", str(DEMO_MAP), "--seed", "3", "--json", *extra])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    return code, json.loads(last)


def test_tiny_run_answers_every_arrival_with_a_robot_and_an_eta(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, result = _run(capsys, "--robots", "6", "--orders", "25", "--arrivals", "8")
    assert code == 0
    assert result["timed"].startswith("FleetCore.handle(CreateOrder)")
    assert result["store"] == "InMemoryStore"
    assert result["failures"] == 0 and result["failure_examples"] == []
    assert result["setup"]["plan_build_failures"] == 0
    assert result["robots"] == 6 and result["arrivals"] == 8
    # The plan keeps its size: one open order leaves for each one that arrives.
    assert result["open_orders"] == result["open_orders_at_end"] == 25
    assert result["setup"]["robots_committed_to_a_stop"] >= 1
    for key in ("p50", "p90", "p99", "max"):
        assert result["latency_ms"][key] > 0
    assert result["eta"]["wait_s_p50"] > 0
    assert result["machine"]["cpus"] >= 1


def test_tiny_run_on_the_sql_store(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    code, result = _run(capsys, "--robots", "4", "--orders", "10", "--arrivals", "4", "--db", url)
    assert code == 0
    assert result["store"] == "SqlStore sqlite"
    assert result["failures"] == 0
    assert result["open_orders"] == result["open_orders_at_end"] == 10
    assert result["of_which_store_ms"]["p50"] > 0


def test_answers_without_a_robot_are_counted_as_failures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # One clean robot: waste and soiled orders find nobody and stay PENDING without an ETA.
    code, result = _run(capsys, "--robots", "1", "--orders", "10", "--arrivals", "12")
    assert code == 1
    assert result["failures"] > 0
    assert all("PENDING" in f for f in result["failure_examples"])
