"""Optimizer: a problem from a snapshot of the fleet, an OR-Tools solve, a plan of routes.

`build_problem(snapshot, travel) -> solve(problem, time_limit_s, seed) -> Plan`, a pure function
pipeline (DESIGN.md principle 4): no I/O, no clock, and a `Problem` pickles to a worker process.
"""

from fleet.planning.plan import Plan, RoutePlan, Stop, StopKind
from fleet.planning.problem import (
    HORIZON_S,
    METAHEURISTICS,
    UNREACHABLE,
    OnboardTask,
    Problem,
    Snapshot,
    Task,
    TravelTime,
    VehicleState,
    build_problem,
)
from fleet.planning.solver import DROP_PENALTY, GLOBAL_SPAN_COST, LATENESS_COST_PER_S, solve

__all__ = [
    "DROP_PENALTY",
    "GLOBAL_SPAN_COST",
    "HORIZON_S",
    "LATENESS_COST_PER_S",
    "METAHEURISTICS",
    "UNREACHABLE",
    "OnboardTask",
    "Plan",
    "Problem",
    "RoutePlan",
    "Snapshot",
    "Stop",
    "StopKind",
    "Task",
    "TravelTime",
    "VehicleState",
    "build_problem",
    "solve",
]
