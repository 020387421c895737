"""The traffic-day benchmark, run tiny: it runs the twin as `fleet simulate` does, prints the
KPI report's own figures, and fails when a traffic check fails.

No assertions on the figures' values here (they live in BENCHMARKS.md): these tests check where
the printed figures come from and what makes the exit status non-zero.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from benchmarks import traffic_day
from fleet.dispatch import messages as m
from simulators.fast import SimulationResult, run_simulation

DEMO_MAP = Path(__file__).resolve().parents[2] / "maps" / "demo_hospital.yaml"
TINY = ["--map", str(DEMO_MAP), "--robots", "6", "--hours", "0.25", "--solve-time-limit", "0.5"]


class Spy:
    """Stands in for `run_simulation` in the benchmark: runs the real one, keeps its result
    and arguments, and lets a test change the result before the benchmark sees it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, change: Any = None) -> None:
        self.real = run_simulation
        self.change = change
        self.result: SimulationResult | None = None
        self.args: tuple[Any, ...] = ()
        self.kwargs: dict[str, Any] = {}
        monkeypatch.setattr(traffic_day, "run_simulation", self)

    def __call__(self, *args: Any, **kwargs: Any) -> SimulationResult:
        self.args, self.kwargs = args, kwargs
        self.result = self.real(*args, **kwargs)
        if self.change is not None:
            self.change(self.result)
        return self.result


def parse_table(text: str) -> dict[str, str]:
    """The printed table as {row name: value}."""
    rows = {}
    for line in text.strip().splitlines():
        name, value = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        rows[name] = value
    return rows


def test_tiny_day_prints_the_figures_of_the_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spy = Spy(monkeypatch)
    code = traffic_day.main([*TINY, "--seed", "1", "--json"])
    captured = capsys.readouterr()
    assert spy.result is not None
    report = spy.result.report

    # As `fleet simulate` runs it: the standard workload, our optimizer, the workload's own
    # late-commitment default (not passed), the solve cap asked for.
    assert spy.args[1:4] == (6, 0.25, 1)
    assert spy.kwargs == {
        "solve_time_limit_s": 0.5,
        "dispatcher_name": "optimizer",
        "workload_name": "standard",
        "demand_robots": None,
    }
    assert code == 0
    assert report["orders_created"] > 0 and report["robots"] == 6

    out = json.loads(captured.out)
    assert out["report"] == report
    assert out["checks_failed"] == []
    assert out["robots"] == 6 and out["seed"] == 1 and out["solve_time_limit_s"] == 0.5
    assert set(out["diagnostics"]["step_log_counts"]) == set(traffic_day.TRAFFIC_LOG_KINDS)
    assert out["machine"]["cpus"] >= 1 and out["cpu_seconds"] >= 0
    by_lift = out["diagnostics"]["lift_waits_by_lift"]
    assert sum(w["n"] for w in by_lift.values()) == len(spy.result.core.lift_wait_log)

    rows = parse_table(captured.err)  # with --json the table goes to stderr
    expected = {
        "robots": str(report["robots"]),
        "orders created": str(report["orders_created"]),
        "orders delivered": str(report["orders_delivered"]),
        "orders failed": str(report["orders_failed"]),
        "orders open": str(report["orders_open"]),
        "on-time rate": f"{report['on_time_rate'] * 100:.2f} %",
        "conflicts": str(report["conflicts"]),
        "safety violations": str(report["safety_violations"]),
        "deadlocks resolved": str(report["deadlocks_resolved"]),
        "deadlocks unresolved": str(report["deadlocks_unresolved"]),
        "longest deadlock": f"{report['deadlock_longest_s']:.1f} s",
        "lift-session errors": str(report["lift_session_errors"]),
        "lift rides": str(report["lift_rides"]),
        "lift wait p50": f"{report['lift_wait_p50_s']:.1f} s",
        "lift wait p95": f"{report['lift_wait_p95_s']:.1f} s",
        "waiting for lifts": f"{report['waiting_share']['lift'] * 100:.2f} %",
        "waiting at doors": f"{report['waiting_share']['door'] * 100:.2f} %",
        "waiting for traffic": f"{report['waiting_share']['traffic'] * 100:.2f} %",
        "waiting, blocked": f"{report['waiting_share']['blocked'] * 100:.2f} %",
        "wall time": f"{report['wall_seconds']:.1f} s",
        "checks": "passed",
    }
    assert {k: rows[k] for k in expected} == expected
    # The tiny day does use the lifts, so the lift figures are not vacuous.
    assert report["lift_rides"] > 0


def test_without_json_the_table_goes_to_stdout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spy = Spy(monkeypatch)
    assert traffic_day.main(TINY) == 0
    captured = capsys.readouterr()
    assert spy.result is not None
    assert captured.err == ""
    rows = parse_table(captured.out)
    assert rows["orders delivered"] == str(spy.result.report["orders_delivered"])


def test_demand_robots_sizes_the_workload_apart_from_the_fleet(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same fleet with the standard demand of 30 robots instead of 6: more orders.
    small = Spy(monkeypatch)
    assert traffic_day.main([*TINY, "--json"]) == 0
    capsys.readouterr()
    big = Spy(monkeypatch)
    assert traffic_day.main([*TINY, "--demand-robots", "30", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert big.kwargs["demand_robots"] == 30 and out["demand_robots"] == 30
    assert small.result is not None and big.result is not None
    assert big.result.report["robots"] == small.result.report["robots"] == 6
    assert big.result.report["orders_created"] > small.result.report["orders_created"]
    with pytest.raises(SystemExit):
        traffic_day.main([*TINY, "--demand-robots", "0"])


def _clean_report() -> dict[str, Any]:
    return {
        "conflicts": 0,
        "safety_violations": 0,
        "deadlocks_resolved": 3,  # resolved deadlocks are the traffic layer working
        "deadlocks_unresolved": 0,
        "lift_session_errors": 0,
    }


@pytest.mark.parametrize("check", traffic_day.CHECKS)
def test_any_failed_check_makes_the_exit_status_non_zero(check: str) -> None:
    report = _clean_report()
    assert traffic_day.failed_checks(report) == []
    assert traffic_day.exit_code(report) == 0
    report[check] = 1
    assert traffic_day.failed_checks(report) == [check]
    assert traffic_day.exit_code(report) == 2


def test_a_report_without_a_check_does_not_pass_it() -> None:
    report = _clean_report()
    del report["lift_session_errors"]
    assert traffic_day.failed_checks(report) == ["lift_session_errors"]
    assert traffic_day.exit_code(report) == 2


def test_a_day_with_conflicts_exits_non_zero_and_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def spoil(result: SimulationResult) -> None:
        result.report["conflicts"] = 2
        result.report["deadlocks_unresolved"] = 1
        # And something for the diagnostics to find, as the core would log it.
        result.core.step_log.append(
            m.StepRecord(at=result.core.clock.now(), robot_id="AMR-01", what="x", kind="BACK_OFF")
        )

    Spy(monkeypatch, spoil)
    code = traffic_day.main([*TINY, "--json"])
    captured = capsys.readouterr()
    assert code == 2
    out = json.loads(captured.out)
    assert out["checks_failed"] == ["conflicts", "deadlocks_unresolved"]
    assert out["diagnostics"]["step_log_counts"]["BACK_OFF"] >= 1
    top = out["diagnostics"]["step_log_top_robots"]["BACK_OFF"]
    assert any(rid == "AMR-01" for rid, _ in top)
    rows = parse_table(captured.err)
    assert rows["conflicts"] == "2"
    assert rows["checks"] == "FAILED: conflicts, deadlocks_unresolved"
