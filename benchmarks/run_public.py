"""Run the public benchmarks on a list of instances, one after the other, as a markdown table.

    python -m benchmarks.run_public pdptw --time-limit 10
    python -m benchmarks.run_public vrptw --time-limit 10 C101 R101

Without instance names, runs the default list of the set (the six of issue 3's target for Li &
Lim, the six of BENCHMARKS.md for Solomon). Each instance is solved in this process, one at a
time, with the same code path as `python -m benchmarks.pdptw` / `benchmarks.vrptw`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import pdptw, vrptw

DATA = Path(__file__).resolve().parent / "data"
DEFAULTS = {
    "pdptw": ["lc101", "lc201", "lr101", "lr201", "lrc101", "lrc201"],
    "vrptw": ["C101", "R101", "RC101", "C201", "R201", "RC201"],
}


def table(rows: Sequence[dict[str, object]]) -> str:
    lines = [
        "| instance | vehicles | BKS vehicles | distance | BKS distance | gap % | feasible "
        "| wall s |",
        "| --- | --: | --: | --: | --: | --: | --- | --: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['instance']} | {r['vehicles']} | {r['bks_vehicles']} | {r['distance']} "
            f"| {r['bks_distance']} | {r['gap_pct']} | {r['feasible']} | {r['wall_s']} |"
        )
    gaps = [float(str(r["gap_pct"])) for r in rows if r["gap_pct"] is not None]
    if gaps:
        lines.append(f"\nmean gap {sum(gaps) / len(gaps):.3f} %")
    extra = [
        str(r["instance"])
        for r in rows
        if r["bks_vehicles"] is not None and int(str(r["vehicles"])) > int(str(r["bks_vehicles"]))
    ]
    lines.append(f"more vehicles than BKS: {', '.join(extra) if extra else 'none'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run public benchmark instances in a row.")
    parser.add_argument("set", choices=sorted(DEFAULTS))
    parser.add_argument("instances", nargs="*")
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--config", default=None, help="Li & Lim only: a pdptw.CONFIGS name")
    parser.add_argument("--metaheuristic", default=None, help="default: the benchmark's own")
    args = parser.parse_args(argv)
    names = args.instances or DEFAULTS[args.set]
    rows: list[dict[str, object]] = []
    for name in names:
        if args.set == "pdptw":
            path = DATA / "li_lim_100" / f"{name}.txt"
            config = args.config or pdptw.DEFAULT_CONFIG
            meta = args.metaheuristic or pdptw.DEFAULT_METAHEURISTIC
            result = pdptw.run(path, args.time_limit, args.seed, config, meta)
        else:
            path = DATA / "solomon_100" / f"{name}.vrp"
            config = args.config or vrptw.DEFAULT_CONFIG
            meta = args.metaheuristic or vrptw.DEFAULT_METAHEURISTIC
            result = vrptw.run(path, args.time_limit, args.seed, config, meta)
        print(pdptw.summary(result), file=sys.stderr, flush=True)
        rows.append(result)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
