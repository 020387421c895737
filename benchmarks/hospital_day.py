"""The hospital-day benchmark: our optimizer against the Open-RMF and openTCS baselines.

    python -m benchmarks.hospital_day --map maps/demo_hospital.yaml --hours 24 --seed 1 \
        --robots 6 --json

runs the digital twin (`simulators.fast.FastTwin`, the real dispatcher core) once per
dispatcher on the very same workload, and prints one JSON object per dispatcher, then one with
the comparison (robot distance, on-time rate per priority, lead time p50/p95, the issue-3
target, and the robots each dispatcher needs: the smallest fleet in `--robots-range` with STAT
on time at least 99 % and all orders on time at least 95 %).

`run_day` is the reusable piece: one dispatcher, one workload, one fleet size, one KPI dict.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from fleet.building.loader import MapError, load_building
from fleet.building.model import Building
from fleet.domain.order import Order
from fleet.domain.priority import Priority
from simulators.fast import DEFER_MARGIN_S, run_simulation
from simulators.workload import WORKLOADS

OPTIMIZER = "optimizer"
GREEDY = "greedy-earliest-finish"
NEAREST = "nearest-idle"


DISPATCHERS = (OPTIMIZER, GREEDY, NEAREST)

# Robots needed: the smallest fleet reaching both rates.
STAT_TARGET = 0.99
OVERALL_TARGET = 0.95
# Issue 3: at least this much less distance than greedy-earliest-finish.
DISTANCE_TARGET = 0.20


def on_time_by_priority(orders: Sequence[Order]) -> dict[str, float]:
    """Priority name -> share of delivered orders with a needed-by time that were on time.

    Every priority is present; a priority without such orders reads 1.0.
    """
    out: dict[str, float] = {}
    for p in Priority:
        flags = [o.on_time for o in orders if o.priority is p and o.on_time is not None]
        out[p.value] = round(sum(flags) / len(flags), 4) if flags else 1.0
    return out


def _met_by_priority(orders: Sequence[Order]) -> dict[str, float]:
    """Like `on_time_by_priority`, but an order that was never delivered counts as late."""
    out: dict[str, float] = {}
    for p in Priority:
        due = [o for o in orders if o.priority is p and o.needed_by is not None]
        good = sum(bool(o.on_time) for o in due)
        out[p.value] = round(good / len(due), 4) if due else 1.0
    return out


def run_day(
    building: Building,
    robots: int,
    hours: float,
    seed: int,
    dispatcher_name: str,
    workload_name: str = "hospital-day",
    time_limit_s: float = 10.0,
    defer_margin_s: float | None = DEFER_MARGIN_S,
) -> dict[str, Any]:
    """Run `hours` of a workload with `robots` robots under one dispatcher; its KPI report.

    As `fleet simulate` does: orders are placed at their times, robots then get up to
    `simulators.fast.DRAIN_S` to finish, and whatever is still open is failed with a reason.
    The report adds `dispatcher`, `workload`, `seed`, `orders_by_priority`,
    `on_time_rate_by_priority` (delivered orders) and `service_rate_by_priority` (on time among
    all orders with a needed-by time, undelivered ones counted late).
    """
    if workload_name not in WORKLOADS:
        raise ValueError(
            f"workload: unknown {workload_name!r}, expected one of {', '.join(WORKLOADS)}"
        )
    result = run_simulation(
        building,
        robots,
        hours,
        seed,
        solve_time_limit_s=time_limit_s,
        dispatcher_name=dispatcher_name,
        workload_name=workload_name,
        defer_margin_s=defer_margin_s,
    )
    report = dict(result.report)
    orders = list(result.core.orders.values())
    report.update(
        dispatcher=dispatcher_name,
        workload=workload_name,
        seed=seed,
        hours=hours,
        orders_by_priority={p.value: sum(o.priority is p for o in orders) for p in Priority},
        on_time_rate_by_priority=on_time_by_priority(orders),
        service_rate_by_priority=_met_by_priority(orders),
    )
    return report


def meets_service(report: dict[str, Any]) -> bool:
    """STAT on time >= 99 % and all orders on time >= 95 %, nothing failed or left open."""
    stat: float = report["on_time_rate_by_priority"]["STAT"]
    overall: float = report["on_time_rate"]
    failed: int = report["orders_failed"] + report["orders_open"]
    return stat >= STAT_TARGET and overall >= OVERALL_TARGET and failed == 0


def compare(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The side-by-side view and the issue-3 target (our optimizer vs greedy-earliest-finish)."""
    keys = (
        "robot_distance_m",
        "on_time_rate",
        "on_time_rate_by_priority",
        "lead_time_p50_s",
        "lead_time_p95_s",
        "orders_delivered",
        "orders_failed",
        "conflicts",
    )
    out: dict[str, Any] = {
        "comparison": {name: {k: r[k] for k in keys} for name, r in reports.items()}
    }
    ours, greedy = reports.get(OPTIMIZER), reports.get(GREEDY)
    if ours is not None and greedy is not None:
        saving = 1.0 - ours["robot_distance_m"] / max(greedy["robot_distance_m"], 1e-9)
        ours_rates = ours["on_time_rate_by_priority"]
        greedy_rates = greedy["on_time_rate_by_priority"]
        not_worse = {p: ours_rates[p] >= greedy_rates[p] for p in ours_rates}
        stat = ours_rates["STAT"]
        out["target"] = {
            "distance_saving_vs_greedy": round(saving, 4),
            "distance_saving_needed": DISTANCE_TARGET,
            "on_time_not_worse_than_greedy": not_worse,
            "stat_on_time": stat,
            "met": saving >= DISTANCE_TARGET and all(not_worse.values()) and stat >= STAT_TARGET,
        }
    return out


def _one(args: tuple[str, int, float, int, str, str, float, float]) -> dict[str, Any]:
    """A worker process's run (the building is loaded there: plain arguments pickle cheaply)."""
    map_path, robots, hours, seed, dispatcher, workload, time_limit_s, margin_s = args
    building = load_building(map_path)
    return run_day(building, robots, hours, seed, dispatcher, workload, time_limit_s, margin_s)


def robots_needed(
    runs: dict[tuple[str, int], dict[str, Any]], dispatchers: Sequence[str], fleet: Sequence[int]
) -> dict[str, int | None]:
    """Per dispatcher, the smallest fleet size in `fleet` that meets the service targets."""
    out: dict[str, int | None] = {}
    for name in dispatchers:
        ok = [n for n in fleet if (name, n) in runs and meets_service(runs[(name, n)])]
        out[name] = min(ok) if ok else None
    return out


def machine() -> dict[str, Any]:
    """Where the benchmark ran."""
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hospital_day", description=__doc__)
    parser.add_argument("--map", default="maps/demo_hospital.yaml")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--robots", type=int, default=6, help="fleet size of the main comparison")
    parser.add_argument("--workload", default="hospital-day", choices=sorted(WORKLOADS))
    parser.add_argument(
        "--dispatchers",
        default=",".join(DISPATCHERS),
        help="comma-separated, of " + ", ".join(DISPATCHERS),
    )
    parser.add_argument(
        "--robots-range",
        default="3-8",
        help="LO-HI fleet sizes searched for 'robots needed' (empty: skip the search)",
    )
    parser.add_argument("--time-limit", type=float, default=10.0, help="optimizer cap per solve")
    parser.add_argument(
        "--defer-margin-min",
        type=float,
        default=DEFER_MARGIN_S / 60.0,
        help="late commitment of the optimizer in minutes (0: off), as `fleet simulate`",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    dispatchers = [d.strip() for d in args.dispatchers.split(",") if d.strip()]
    for d in dispatchers:
        if d not in DISPATCHERS:
            parser.error(f"--dispatchers: unknown {d!r}, expected some of {', '.join(DISPATCHERS)}")
    try:
        load_building(args.map)
    except MapError as exc:
        print(exc, file=sys.stderr)
        return 1
    fleet: list[int] = []
    if args.robots_range:
        lo, _, hi = args.robots_range.partition("-")
        fleet = list(range(int(lo), int(hi or lo) + 1))
    sizes = sorted({args.robots, *fleet})
    jobs = [
        (
            args.map,
            n,
            args.hours,
            args.seed,
            d,
            args.workload,
            args.time_limit,
            args.defer_margin_min * 60.0,
        )
        for d in dispatchers
        for n in sizes
    ]
    wall0 = time.perf_counter()
    if args.jobs > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(_one, jobs))
    else:
        results = [_one(j) for j in jobs]
    runs = {(j[4], j[1]): r for j, r in zip(jobs, results, strict=True)}

    main_reports = {d: runs[(d, args.robots)] for d in dispatchers}
    summary = compare(main_reports)
    summary.update(
        robots=args.robots,
        hours=args.hours,
        seed=args.seed,
        workload=args.workload,
        defer_margin_min=args.defer_margin_min,
        robots_needed=robots_needed(runs, dispatchers, fleet) if fleet else None,
        robots_needed_rule=(
            f"smallest fleet in {args.robots_range} with STAT on time >= {STAT_TARGET}, "
            f"all on time >= {OVERALL_TARGET}, nothing failed"
        ),
        per_fleet_size={
            d: {
                str(n): {
                    "on_time_rate": runs[(d, n)]["on_time_rate"],
                    "stat": runs[(d, n)]["on_time_rate_by_priority"]["STAT"],
                    "robot_distance_m": runs[(d, n)]["robot_distance_m"],
                    "failed": runs[(d, n)]["orders_failed"],
                }
                for n in sizes
            }
            for d in dispatchers
        },
        machine=machine(),
        wall_seconds=round(time.perf_counter() - wall0, 1),
    )
    if args.json:
        for d in dispatchers:
            print(json.dumps(main_reports[d], sort_keys=True))
        print(json.dumps(summary, sort_keys=True))
    else:
        _print_table(main_reports, summary)
    bad = any(r["conflicts"] or r["safety_violations"] for r in runs.values())
    return 2 if bad else 0


def _print_table(reports: dict[str, dict[str, Any]], summary: dict[str, Any]) -> None:
    head = f"{'dispatcher':<24}{'distance m':>12}{'on time':>9}{'STAT':>7}{'URGENT':>8}"
    head += f"{'ROUTINE':>9}{'p50 s':>8}{'p95 s':>8}{'failed':>8}{'needed':>8}"
    print(head)
    needed = summary.get("robots_needed") or {}
    for name, r in reports.items():
        by = r["on_time_rate_by_priority"]
        print(
            f"{name:<24}{r['robot_distance_m']:>12.0f}{r['on_time_rate']:>9.3f}"
            f"{by['STAT']:>7.3f}{by['URGENT']:>8.3f}{by['ROUTINE']:>9.3f}"
            f"{r['lead_time_p50_s']:>8.0f}{r['lead_time_p95_s']:>8.0f}{r['orders_failed']:>8}"
            f"{needed.get(name, '-')!s:>8}"
        )
    if "target" in summary:
        print("target:", json.dumps(summary["target"], sort_keys=True))


if __name__ == "__main__":
    raise SystemExit(main())
