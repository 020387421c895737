"""The traffic day (issue 4): a large fleet in the demo hospital for a working day, with the
traffic layer (doors, lifts, exclusive lanes and nodes) doing its job.

    python -m benchmarks.traffic_day --robots 40 --hours 12 --seed 1 [--solve-time-limit S] [--json]

runs `simulators.fast.run_simulation` (the real dispatcher core in the fast digital twin) as
`fleet simulate --map maps/demo_hospital.yaml --robots 40 --hours 12 --seed 1` does: the
standard workload (its rates scaled with the fleet, `robots / 10`), the "optimizer"
dispatcher, the workload's default late commitment (off for the standard workload), robots
given `simulators.fast.DRAIN_S` after the last order to finish, and anything still open failed
with a reason. Nothing of the twin is set up here.

It prints a table of the KPI report's figures: orders, on-time rate, conflicts, safety
violations, deadlocks resolved and unresolved, lift-session errors, lift waits p50/p95, the
share of robot time spent waiting (lift, door, traffic, blocked) and the wall time. With
`--json` the table goes to stderr and one JSON object to stdout: the whole report, what the
core logged about traffic (`diagnostics`: counts and first examples of back-offs, blocked
robots, re-routes, failed steps, plus the twin's safety violations and the core's lift-session
errors), the run's CPU time and the machine.

The benchmark is also a check: the exit status is 2 when any of conflicts, safety violations,
unresolved deadlocks or lift-session errors is not zero (see `failed_checks`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fleet.building.loader import MapError, load_building

# `_percentile`: per-lift waits computed as the report computes lift_wait_p50_s / p95_s.
from simulators.fast import SIM_EPOCH, SimulationResult, _percentile, run_simulation

WORKLOAD = "standard"  # `fleet simulate`'s default workload
DISPATCHER = "optimizer"  # and its default dispatcher

CHECKS = ("conflicts", "safety_violations", "deadlocks_unresolved", "lift_session_errors")
"""Report figures that must be zero: any other value fails the benchmark."""

# The report's waiting kinds, as the table names them.
WAIT_LABELS = {
    "lift": "waiting for lifts",
    "door": "waiting at doors",
    "traffic": "waiting for traffic",
    "blocked": "waiting, blocked",
}

# Step-log kinds the core writes when traffic goes wrong or gets in the way.
TRAFFIC_LOG_KINDS = (
    "BACK_OFF",
    "BLOCKED",
    "REROUTE",
    "STEP_FAILED",
    "REFUSED",
    "LIFT_RECALL",
    "LIFT_RECOVER",
    "LIFT_BLOCKED",
)
EXAMPLES = 10  # first log lines / violations kept per kind in the JSON


def run_day(
    map_path: str | Path,
    robots: int,
    hours: float,
    seed: int,
    solve_time_limit_s: float = 10.0,
    demand_robots: int | None = None,
) -> SimulationResult:
    """One traffic day: `run_simulation` with `fleet simulate`'s defaults (standard workload,
    the optimizer, the workload's own late-commitment default). `demand_robots`: the standard
    workload sized for that many robots instead of `robots` (see `--demand-robots`)."""
    building = load_building(map_path)
    return run_simulation(
        building,
        robots,
        hours,
        seed,
        solve_time_limit_s=solve_time_limit_s,
        dispatcher_name=DISPATCHER,
        workload_name=WORKLOAD,
        demand_robots=demand_robots,
    )


def failed_checks(report: dict[str, Any]) -> list[str]:
    """The names in `CHECKS` whose figure in `report` is not zero (a missing one counts as
    failed: a report that cannot show the check must not pass it)."""
    return [key for key in CHECKS if report.get(key) != 0]


def exit_code(report: dict[str, Any]) -> int:
    """2 if any check failed (as `fleet simulate` does for conflicts), else 0."""
    return 2 if failed_checks(report) else 0


def diagnostics(result: SimulationResult) -> dict[str, Any]:
    """What the core and the twin recorded about traffic, to find the robots and resources
    behind a bad figure without re-running the day."""
    log = result.core.step_log
    counts = Counter(rec.kind for rec in log if rec.kind in TRAFFIC_LOG_KINDS)
    examples: dict[str, list[str]] = {}
    by_robot: dict[str, Counter[str]] = {}
    for rec in log:
        if rec.kind not in TRAFFIC_LOG_KINDS:
            continue
        by_robot.setdefault(rec.kind, Counter())[rec.robot_id] += 1
        kept = examples.setdefault(rec.kind, [])
        if len(kept) < EXAMPLES:
            kept.append(f"t+{rec.at - SIM_EPOCH:.0f} s {rec.robot_id}: {rec.what}")
    waits: dict[str, list[float]] = {}
    for lift, waited in result.core.lift_wait_log:
        waits.setdefault(lift, []).append(waited)
    deadlocks = [a for a in result.core.alerts if a.code == "DEADLOCK" and not a.cleared]
    return {
        "lift_waits_by_lift": {
            lift: {
                "n": len(w),
                "p50_s": round(_percentile(w, 0.5), 1),
                "p95_s": round(_percentile(w, 0.95), 1),
                "max_s": round(max(w), 1),
            }
            for lift, w in sorted(waits.items())
        },
        "alert_codes": dict(Counter(a.code for a in result.core.alerts if not a.cleared)),
        "deadlock_alerts": [
            f"t+{a.at - SIM_EPOCH:.0f} s {a.subject}: {a.message}" for a in deadlocks[:EXAMPLES]
        ],
        "step_log_counts": {k: counts.get(k, 0) for k in TRAFFIC_LOG_KINDS},
        "step_log_examples": examples,
        "step_log_top_robots": {k: c.most_common(5) for k, c in sorted(by_robot.items())},
        "world_violations": result.world.violations[:EXAMPLES],
        "lift_session_errors": result.core.session_errors[:EXAMPLES],
        "rejected_orders": result.rejected[:EXAMPLES],
    }


def machine() -> dict[str, Any]:
    """Where the benchmark ran, and how busy the machine was (a shared box inflates wall time)."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def _pct(share: float) -> str:
    return f"{share * 100:.2f} %"


def table(report: dict[str, Any]) -> str:
    """The benchmark's figures, one per line, every one read from the KPI `report`."""
    shares = report["waiting_share"]
    rows: list[tuple[str, str]] = [
        ("robots", str(report["robots"])),
        ("simulated hours", f"{report['sim_seconds'] / 3600:.2f}"),
        ("orders created", str(report["orders_created"])),
        ("orders delivered", str(report["orders_delivered"])),
        ("orders failed", str(report["orders_failed"])),
        ("orders open", str(report["orders_open"])),
        ("on-time rate", _pct(report["on_time_rate"])),
        ("conflicts", str(report["conflicts"])),
        ("safety violations", str(report["safety_violations"])),
        ("deadlocks resolved", str(report["deadlocks_resolved"])),
        ("deadlocks unresolved", str(report["deadlocks_unresolved"])),
        ("longest deadlock", f"{report['deadlock_longest_s']:.1f} s"),
        ("lift-session errors", str(report["lift_session_errors"])),
        ("lift rides", str(report["lift_rides"])),
        ("door passes", str(report["door_passes"])),
        ("lift wait p50", f"{report['lift_wait_p50_s']:.1f} s"),
        ("lift wait p95", f"{report['lift_wait_p95_s']:.1f} s"),
        *((label, _pct(shares[kind])) for kind, label in WAIT_LABELS.items()),
        ("wall time", f"{report['wall_seconds']:.1f} s"),
    ]
    failed = failed_checks(report)
    rows.append(("checks", "FAILED: " + ", ".join(failed) if failed else "passed"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the traffic day, print the table (and with `--json` the JSON object); the exit
    status says whether the checks passed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.traffic_day", description=__doc__)
    parser.add_argument("--map", default="maps/demo_hospital.yaml")
    parser.add_argument("--robots", type=int, default=40)
    parser.add_argument("--hours", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--solve-time-limit",
        type=float,
        default=10.0,
        metavar="S",
        help="the optimizer's cap per solve in seconds (10, as `fleet simulate`)",
    )
    parser.add_argument(
        "--demand-robots",
        type=int,
        default=None,
        metavar="N",
        help="size the standard workload for N robots (default: --robots); the demo hospital's "
        "one clean lift carries the standard demand of about 20 robots, not 40",
    )
    parser.add_argument("--json", action="store_true", help="table to stderr, JSON to stdout")
    args = parser.parse_args(argv)
    if args.robots < 1 or args.hours <= 0 or args.solve_time_limit <= 0:
        parser.error("--robots must be >= 1, --hours and --solve-time-limit > 0")
    if args.demand_robots is not None and args.demand_robots < 1:
        parser.error("--demand-robots must be >= 1")
    try:
        load_building(args.map)
    except MapError as exc:
        print(exc, file=sys.stderr)
        return 1

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    machine_at_start = machine()
    cpu0 = time.process_time()
    result = run_day(
        args.map, args.robots, args.hours, args.seed, args.solve_time_limit, args.demand_robots
    )
    cpu_s = time.process_time() - cpu0
    report = result.report

    print(table(report), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        out = {
            "benchmark": "traffic_day",
            "map": args.map,
            "robots": args.robots,
            "hours": args.hours,
            "seed": args.seed,
            "workload": WORKLOAD,
            "demand_robots": args.demand_robots or args.robots,
            "dispatcher": DISPATCHER,
            "solve_time_limit_s": args.solve_time_limit,
            "started": started,
            "report": report,
            "checks_failed": failed_checks(report),
            "diagnostics": diagnostics(result),
            # Process CPU time next to the report's wall time: the gap is what other work on
            # the machine took from this run.
            "cpu_seconds": round(cpu_s, 1),
            "machine": {
                **machine_at_start,
                "load_average_1m_at_end": machine()["load_average_1m"],
            },
        }
        print(json.dumps(out, sort_keys=True))
    return exit_code(report)


if __name__ == "__main__":
    raise SystemExit(main())
